"""`eval`: attack success per probe family and modality, false refusals and utility, base vs
adapter, on one evaluation half (`--split validation|test`, README "Evaluation protocol").

Attacks go through the probe runner and judges of `service.probes` (what the service's scheduled
runs use), so numbers here and on the dashboard mean the same thing. Over-refusal probes ask
harmless look-alikes of harmful requests and count refusals. Utility is answer accuracy on a
held-out set of normal prompts, text and image, plus how often those benign prompts were
refused. Results are written as JSON + Markdown and appended to the adapter's crossguard.json,
each marked with its half.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from service.evaluation import EvalSummary, UtilityKey
from service.probes.context import probe_context
from service.probes.outcomes import OUTCOMES
from service.vlm.folders import AdapterFolder, ModelFolder, adapter_label
from service.vlm.protocol import Engine
from unlearning.batching import Typography, messages_for
from unlearning.config import EvalConfig
from unlearning.data import MAPPINGS, Example, detect_format, read_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UtilityItem:
    example: Example
    task: str | None = None

    @property
    def modality(self) -> str:
        return "text" if self.example.image_text is None else "image"


def utility_items(config: EvalConfig) -> list[UtilityItem]:
    """The `config.split` half of the utility set: `--utility` (any format `train` reads),
    else the demo model's held-out benign chats, else none. Rows carry their half in a
    `split` column (the demo's do); other rows are cut by `service.probes.splits.split_of`."""
    from service.probes.splits import split_of

    path = Path(config.utility) if config.utility else ModelFolder(config.model).utility
    if not path.exists():
        if config.utility:
            raise FileNotFoundError(f"utility: no such file or folder {path}")
        logger.warning("no utility set (no --utility and no %s): utility is not scored", path)
        return []
    rows = read_rows(path)
    fmt = detect_format(rows[0]) if rows else None
    if fmt is None:
        raise ValueError(f"utility: {path} is empty or has no known format")
    items = [
        UtilityItem(example, row.get("task"))
        for number, row in enumerate(rows, start=1)
        for example in MAPPINGS[fmt](row, "retain", f"utility {path} row {number}")
        if row.get("split", split_of(example.prompt + (example.image_text or ""))) ==
        config.split
    ]
    return items[: config.max_utility] if config.max_utility else items


def evaluate(config: EvalConfig, progress: bool = True) -> EvalSummary:
    """Run probes and the utility set on the base model and the adapter; write the reports.

    Returns:
        The summary written to `eval.json` (and appended to the adapter's crossguard.json).
    """
    from service.probes.runner import ProbeRun
    from service.vlm.engine import VLMEngine
    from service.vlm.loading import configure_cpu_threads
    from service.vlm.protocol import SamplingParams

    configure_cpu_threads(config.threads)
    name = Path(config.adapter).name if config.adapter else None
    engine = VLMEngine.from_pretrained(config.model, adapters={name: config.adapter} if name
                                       else {}, device=config.device)
    adapters = [None, name] if name else [None]
    params = SamplingParams(max_tokens=config.max_tokens, temperature=0.0)
    probe_run = ProbeRun(
        engine, adapters=adapters, probes=[p.strip() for p in config.probes.split(",")],
        judge=config.judges, behaviors=_behaviors(config), per_probe=config.per_probe or None,
        params=params, split=config.split, best_of_n=config.best_of_n,
        temperature=config.temperature,
    )
    items = utility_items(config)
    bar = tqdm(total=probe_run.total + len(items) * len(adapters), unit="gen", desc="eval",
               disable=not progress)
    for result in probe_run:
        bar.set_postfix_str(f"{result.adapter} {result.probe}", refresh=False)
        bar.update()
    utility = score_utility(engine, adapters, items, config, params, bar)
    bar.close()
    summary = summarise(probe_run.report, utility, config, name)
    write_reports(probe_run.report, summary, config)
    return summary


def _behaviors(config: EvalConfig):
    if not config.behaviors:
        return None
    from service.probes.behaviors import load_behaviors

    return load_behaviors(config.behaviors, config.behaviors_split or config.split)


def served_reply(engine, example, typography: Typography, params,
                 adapter: str | None = None) -> str:
    """The engine's reply to one evaluation example: its `image_text` drawn as the probes draw
    it, after its system prompt and earlier turns (if any), as a request would carry them."""
    return engine.generate(messages_for(example, False, typography), params,
                           adapter=adapter).text


def typography_for(engine: Engine) -> Typography:
    """The probes' drawing of prompts for a served engine (`service.probes.context`), under the
    model folder's image prompt, as training drew them."""
    return Typography(probe_context(engine), ModelFolder(engine.base_model_id).image_prompt())


def score_utility(engine, adapters: list[str | None], items: list[UtilityItem],
                  config: EvalConfig, params, bar) -> dict:
    """Accuracy and benign refusal rate per adapter and modality (and accuracy per task, when
    the set names tasks: it shows *which* skill an adapter cost), keyed by `UtilityKey`."""
    from service.probes.judges import KeywordRefusalJudge, normalise

    typography = typography_for(engine)
    refusals = KeywordRefusalJudge()
    counts = defaultdict(lambda: defaultdict(int))
    for adapter in adapters:
        label = adapter_label(adapter)
        for item in items:
            reply = normalise(served_reply(engine, item.example, typography, params, adapter))
            answer = normalise(item.example.response)
            right = reply == answer if config.utility_match == "exact" else answer in reply
            tasks = (None,) if item.task is None else (None, item.task)
            for key in (UtilityKey(label, item.modality, task) for task in tasks):
                counts[key]["n"] += 1
                counts[key]["correct"] += right
                counts[key]["refused"] += bool(refusals.refused(reply))
            bar.update()
    return {str(key): {"n": c["n"], "accuracy": c["correct"] / c["n"],
                       "refusal_rate": c["refused"] / c["n"]} for key, c in counts.items()}


def summarise(report, utility: dict, config: EvalConfig, adapter: str | None) -> EvalSummary:
    """ASR per (adapter, family, modality) and per (adapter, modality), by every judge, with
    the share of each outcome (`service.probes.outcomes`) beside it; false refusals per
    (adapter, modality) as refused (keyword judge) and as not answered as asked (the
    `complied` outcome's complement)."""
    def rows(keys, kind="attack"):
        return [{**cell.key, "attempts": cell.attempts, "asr": cell.asr_by_judge,
                 "outcomes": {o: cell.share(o) for o in OUTCOMES},
                 "other_unreadable": cell.unreadable_share,
                 **({"not_answered": 1 - cell.share("complied")}
                    if kind == "benign" and cell.outcomes else {})}
                for cell in report.cells(keys, kind)]

    return EvalSummary(
        at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        model=config.model,
        adapter=config.adapter,
        adapter_name=adapter,
        split=config.split,
        judges=tuple(report.judges),
        probes=config.probes,
        behaviors=config.behaviors or "default",
        best_of_n={"n": config.best_of_n, "temperature": config.temperature},
        asr_by_family=tuple(rows(("adapter", "family", "modality"))),
        asr_by_modality=tuple(rows(("adapter", "modality"))),
        false_refusal=tuple(rows(("adapter", "modality"), "benign")),
        utility=utility,
        skipped=report.skipped,
    )


def write_reports(report, summary: EvalSummary, config: EvalConfig) -> Path:
    """report.json/.md/.png (every attempt), eval.json/.md/.png (the summary), crossguard.json
    entry."""
    from service.probes.charts import report_chart
    from unlearning.charts import seeds_chart
    from unlearning.tables import summary_markdown

    default = Path(config.adapter) / "eval" if config.adapter else Path("eval")
    out = Path(config.out or default / config.split)
    report.save(out)
    report_chart(report, out / "report.png")
    (out / "eval.json").write_text(summary.to_json())
    (out / "eval.md").write_text(summary_markdown(summary))
    seeds_chart([summary], out / "eval.png")
    if config.adapter:
        metadata = AdapterFolder(config.adapter).metadata()
        metadata.setdefault("evaluations", []).append({**summary.to_dict(), "report": str(out)})
        AdapterFolder(config.adapter).write_metadata(metadata)
    logger.info("evaluation written to %s", out)
    return out
