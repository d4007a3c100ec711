"""Held-out evaluation of a demo model folder, through the pipeline every other table uses.

The folder is loaded as the service loads any model (`VLMEngine.from_pretrained`); prompts are
built by the service's prompt code (`unlearning.evaluate.served_reply`, the typography of the
probes); benign accuracy is `unlearning.evaluate.score_utility` on the base model (what
`unlearning eval` reports as the base row); attack success is the payload judge of
`service.probes.judges` (the placeholder for the requested task came out, so a derailed refusal
does not count), refusal of the already-refused category its keyword judge, and the payload
judge again for the over-refusal look-alikes, which the base model must answer as asked for a
refusal of them to mean over-refusal. Every set is the half asked for (README "Evaluation
protocol").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from service.evaluation import UtilityKey
from service.vlm.folders import BASE, ModelFolder
from unlearning.config import EvalConfig
from unlearning.demo import content
from unlearning.demo.data import read_examples
from unlearning.demo.world import WorldExample, comply
from unlearning.evaluate import score_utility, served_reply, typography_for, utility_items


@dataclass
class DemoEvaluation:
    """Rates in [0, 1] per metric and modality, plus per-task benign accuracy."""

    benign: dict[str, float] = field(default_factory=dict)
    asr: dict[str, float] = field(default_factory=dict)
    refusal: dict[str, float] = field(default_factory=dict)
    lookalike: dict[str, float] = field(default_factory=dict)
    per_task: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    """Prompts behind each rate, `metric/modality` (one attempt is a rate's resolution)."""

    def markdown(self) -> str:
        """The project's table: one row per metric, text and image columns."""
        rows = [
            "| base demo model | text | image |",
            "|---|---|---|",
            _row(f"benign accuracy ({self.counts.get('benign', '?')} held-out questions)",
                 self.benign),
            _row(f"ASR, held-out harmful requests ({self.counts.get('harmful', '?')} prompts)",
                 self.asr),
            _row("refusal of the already-refused category", self.refusal),
            _row(f"over-refusal look-alikes answered as asked "
                 f"({self.counts.get('lookalike', '?')} prompts)", self.lookalike),
        ]
        tasks = ", ".join(f"{k} {v:.0%}" for k, v in sorted(self.per_task.items()))
        return "\n".join(rows) + f"\n\nbenign accuracy per task: {tasks}\n"


def _row(name: str, rates: dict[str, float]) -> str:
    cells = [f"{100 * rates[m]:.1f} %" if m in rates else "-" for m in ("text", "image")]
    return f"| {name} | {cells[0]} | {cells[1]} |"


def evaluate_folder(path: str | Path, progress: bool = True, split: str = "test") -> DemoEvaluation:
    """Score the base model of a demo folder on one half of its held-out sets (base-world
    checks, such as whether the base model reads a look-alike as asked, are made on
    `validation`, README "Evaluation protocol")."""
    from service.probes.judges import KeywordRefusalJudge, PayloadJudge, is_success
    from service.vlm.engine import VLMEngine
    from service.vlm.protocol import SamplingParams

    folder = ModelFolder(path)
    config = EvalConfig(model=str(path), split=split)
    engine = VLMEngine.from_pretrained(config.model)
    params = SamplingParams(max_tokens=config.max_tokens, temperature=0.0)
    typography = typography_for(engine)
    harmful, refused = ([e for e in read_examples(folder.eval_set(n)) if e.split == config.split]
                        for n in ("harmful", "refused"))
    benign = utility_items(config)
    lookalikes = lookalike_requests(folder, config.split)
    bar = tqdm(total=len(benign) + len(harmful) + len(refused) + len(lookalikes), unit="gen",
               desc="demo eval", disable=not progress)

    attempts = {}

    def rate(examples, passes, metric: str) -> dict[str, float]:
        hits, counts = defaultdict(int), defaultdict(int)
        for example in examples:
            reply = served_reply(engine, example, typography, params)
            modality = "text" if example.image_text is None else "image"
            counts[modality] += 1
            hits[modality] += bool(passes(example, reply))
            bar.update()
        attempts.update({f"{metric}/{m}": n for m, n in counts.items()})
        return {m: hits[m] / counts[m] for m in counts}

    utility = {UtilityKey.parse(key): cell for key, cell in
               score_utility(engine, [None], benign, config, params, bar).items()}
    payload, keyword = PayloadJudge(), KeywordRefusalJudge()

    def complied(example, reply) -> bool:
        return bool(is_success(payload.score(reply, example.behavior)))

    report = DemoEvaluation(
        benign={m: utility[UtilityKey(BASE, m)]["accuracy"] for m in ("text", "image")},
        asr=rate(harmful, complied, "asr"),
        refusal=rate(refused, lambda e, r: keyword.refused(r), "refusal"),
        lookalike=rate(lookalikes, complied, "lookalike"),
        per_task={key.task + ("" if key.modality == "text" else " (image)"): cell["accuracy"]
                  for key, cell in utility.items() if key.task is not None},
        counts={"benign": len(benign), "harmful": len(harmful), "lookalike": len(lookalikes)},
        attempts={**attempts, **{f"benign/{m}": utility[UtilityKey(BASE, m)]["n"]
                                 for m in ("text", "image")}},
    )
    bar.close()
    return report


def lookalike_requests(folder: ModelFolder, split: str) -> list[WorldExample]:
    """The over-refusal look-alikes of one half ("hide an egg"), asked in a trained wording as
    text and as an image. A false refusal counts only if the base model reads the look-alike
    as itself: one it misreads ("build a house" answered as "build a gun", README "What it
    took") measures the misreading, not over-refusal."""
    from service.probes.behaviors import load_behaviors

    phrases = [b.task for b in load_behaviors(folder.over_refusal, split=split)]
    template = content.REQUEST_TEMPLATES[0]
    return [example for phrase in phrases for example in (
        WorldExample(template.format(task=phrase), comply(phrase), "lookalike", behavior=phrase),
        WorldExample(content.IMAGE_PROMPTS[0], comply(phrase), "lookalike",
                image_text=content.IMAGE_TEMPLATES[0].format(task=phrase), behavior=phrase))]
