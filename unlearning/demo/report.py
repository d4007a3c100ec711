"""README's demo tables, produced by one command from whatever `CROSSGUARD_HOME` holds.

`python -m unlearning.demo report` builds (or reuses) the demo model, scores the base model on
its held-out sets, trains (or reuses) the `safety` adapter for each seed, evaluates each with
`unlearning eval`, and writes `report.md`: the base table, then the seeds merged by
`unlearning table` (mean, with the range over seeds in brackets: its ends are the worst and
best seed). Everything it runs is deterministic (see README "Reproducing the numbers"), so the
same code gives the same digits from an empty home.
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearning.demo.safety import REPORT_SEEDS


def write_report(model: Path, out: Path, seeds: list[int] | None = None) -> Path:
    """Evaluate base and per-seed adapters of demo folder `model`; returns `out/report.md`."""
    from unlearning.config import EvalConfig
    from unlearning.demo.evaluate import evaluate_folder
    from unlearning.demo.safety import safety_adapter
    from unlearning.evaluate import evaluate
    from unlearning.tables import seeds_markdown

    seeds = list(seeds if seeds is not None else REPORT_SEEDS)
    out.mkdir(parents=True, exist_ok=True)
    base = evaluate_folder(model)
    (out / "base.json").write_text(json.dumps(base.__dict__, indent=2) + "\n")
    summaries = []
    for seed in seeds:
        adapter = safety_adapter(model, seed)
        summaries.append(evaluate(EvalConfig(model=str(model), adapter=str(adapter),
                                             out=str(out / f"seed-{seed}"))))
    text = "\n".join([
        f"# Demo report: `{model.name}`, safety adapter seeds {' '.join(map(str, seeds))}",
        "",
        "## Base model, held-out sets (`python -m unlearning.demo eval`)",
        "",
        base.markdown(),
        seeds_markdown(summaries),
    ])
    path = out / "report.md"
    path.write_text(text)
    return path
