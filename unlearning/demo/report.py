"""README's demo tables, produced by one command from whatever `CROSSGUARD_HOME` holds.

`python -m unlearning.demo report` builds (or reuses) the demo model, scores the base model on
both halves of its held-out sets, trains (or reuses) the `safety` adapter for each seed,
evaluates each on both halves with `unlearning eval`, and writes `report.md`: the base tables,
the targets per seed and half (`unlearning.demo.targets`), the guards (every seed and half held
to `MEASURED` plus one attempt; the command exits 1 naming each miss, as `python -m
unlearning.demo check` does on a finished folder), then the seeds merged by `unlearning table`
(mean, with the worst seed in brackets; validation beside test), and a chart per half
(`safety-test.png`, copied to README's `docs/demo-safety-test.png`, and
`safety-validation.png`). Everything it runs is
deterministic (see README "Reproducing the numbers"), so the same code gives the same digits
from an empty home.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from service.evaluation import EvalSummary
from service.probes.outcomes import OUTCOMES
from service.probes.report import pct
from service.probes.splits import SPLITS
from unlearning.demo.safety import REPORT_SEEDS
from unlearning.demo.targets import (
    MIN_INFORMATIVE,
    TARGETS,
    guard_misses,
    missed,
    modality_rates,
)

NAMES = {"worst_family": "worst family ASR (base >= 50 %)", "best_of_n": "best-of-N ASR",
         "false_refusal": "false refusals (not answered as asked)",
         "accuracy_drop": "benign accuracy drop", "other_unreadable": "`other` unreadable"}


def targets_markdown(summaries: Sequence[EvalSummary], seeds: Sequence[int]) -> str:
    """One row per seed and modality: the number of informative families, each target's rate
    on the summaries' half, the outcome shares, and whether all targets are met."""
    header = ["seed", "modality", "informative families",
              *(f"{label} (<= {100 * TARGETS[key]:.0f} %)" for key, label in NAMES.items()),
              "complied / refused / other", "all met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for seed, summary in zip(seeds, summaries, strict=True):
        misses = missed(summary)
        for modality in ("text", "image"):
            found = modality_rates(summary, modality)
            shares = " / ".join(pct(summary.share(o, summary.label, modality), 0)
                                for o in OUTCOMES)
            cells = [pct(found.rates[k].value) for k in NAMES]
            met = not [m for m in misses if m.startswith(modality)]
            lines.append(f"| {seed} | {modality} | {len(found.informative)} "
                         f"(min {MIN_INFORMATIVE[modality]}) | " + " | ".join(cells) +
                         f" | {shares} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def seed_summaries(out: Path) -> list[tuple[str, EvalSummary]]:
    """(seed label, summary) of every `seed-N/<half>/eval.json` under a report folder."""
    return [(path.parent.parent.name, EvalSummary.from_json(path.read_text(), str(path)))
            for path in sorted(out.glob("seed-*/*/eval.json"))]


def check(out: Path) -> list[str]:
    """Every guard miss of every seed and half under report folder `out` (`MEASURED` plus one
    attempt); a folder with no evaluation is a miss too."""
    found = seed_summaries(out)
    if not found:
        return [f"{out}: no seed-*/*/eval.json to check"]
    return [line for label, summary in found for line in guard_misses(summary, label)]


def write_report(model: Path, out: Path, seeds: list[int] | None = None) -> Path:
    """Evaluate base and per-seed adapters of demo folder `model` on both halves; returns
    `out/report.md` (the seeds' charts beside it, one per half)."""
    from unlearning.charts import seeds_chart
    from unlearning.config import EvalConfig
    from unlearning.demo.evaluate import evaluate_folder
    from unlearning.demo.safety import safety_adapter
    from unlearning.evaluate import evaluate
    from unlearning.tables import seeds_markdown

    seeds = list(seeds if seeds is not None else REPORT_SEEDS)
    out.mkdir(parents=True, exist_ok=True)
    bases = {split: evaluate_folder(model, split=split) for split in reversed(SPLITS)}
    (out / "base.json").write_text(json.dumps({k: v.__dict__ for k, v in bases.items()},
                                              indent=2) + "\n")
    summaries = []
    for seed in seeds:
        adapter = safety_adapter(model, seed)
        summaries += [evaluate(EvalConfig(model=str(model), adapter=str(adapter), split=split,
                                          out=str(out / f"seed-{seed}" / split)))
                      for split in SPLITS]
    charts = [seeds_chart([s for s in summaries if s.split == split],
                          out / f"safety-{split}.png") for split in reversed(SPLITS)]
    misses = check(out)
    text = "\n".join([
        f"# Demo report: `{model.name}`, safety adapter seeds {' '.join(map(str, seeds))}",
        "",
        *(part for split, base in bases.items() for part in (
            f"## Base model, held-out {split} half (`python -m unlearning.demo eval "
            f"--split {split}`)", "", base.markdown())),
        *(part for split in reversed(SPLITS) for part in (
            f"## Targets on the {split} half, per seed", "",
            targets_markdown([s for s in summaries if s.split == split], seeds), "")),
        "## Guards (`unlearning.demo.targets.MEASURED`, plus one attempt)",
        "",
        *([f"- missed: {line}" for line in misses] or ["Every seed and half holds."]),
        "",
        seeds_markdown(summaries),
        *(f"![{chart.stem}]({chart.name})\n" for chart in charts),
    ])
    path = out / "report.md"
    path.write_text(text)
    return path
