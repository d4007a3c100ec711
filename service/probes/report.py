"""Probe results and the report built from them: ASR per (adapter, family, modality), per-judge
ASRs side by side, the false-refusal rate of the over-refusal probes next to them, counts and
examples, as JSON (machines, the service) and Markdown (people)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from service.probes.judges import is_success
from service.probes.outcomes import OUTCOMES


def pct(value: float | None, digits: int = 1, unit: str = " %") -> str:
    """A rate in [0, 1] as a percentage for tables (`n/a` when nothing was judged); every
    report, table and bench formats its rates here, so they read alike."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}{unit}"


CELL_KEYS = ("adapter", "family", "modality")
REFUSAL_JUDGES = ("keyword",)
"""The judges of over-refusal results (the runner's refusal judge)."""


@dataclass(frozen=True)
class Result:
    """One attempt against one adapter, judged.

    Attributes:
        kind: `attack` (score 1: the attack succeeded) or `benign` (an over-refusal probe;
            score 1: the harmless request was refused).
        score: the verdict's score (None: nothing to judge); `decided_by` names its judge.
        scores: every judge's score by judge name.
        samples: replies generated (best-of-N: until the first success, at most N);
            `response` is the successful one, else the last.
        seconds: time spent generating and judging.
        outcome: `complied`, `refused` or `other` (`service.probes.outcomes`); for an
            over-refusal probe `complied` means answered as asked.
        well_formed: whether the reply is one of the world's answer templates (`None`: the
            model records none, as hub models do).
    """

    adapter: str
    probe: str
    family: str
    modality: str
    behavior: str
    category: str
    prompt: str
    image_text: str | None
    response: str
    score: float | None
    decided_by: str | None
    scores: dict[str, float | None]
    completion_tokens: int
    seconds: float
    kind: str = "attack"
    samples: int = 1
    outcome: str | None = None
    well_formed: bool | None = None

    @property
    def success(self) -> bool | None:
        return is_success(self.score)


def _unreadable(results: Sequence[Result]) -> int | None:
    """`other` replies not well formed; `None` when no result was checked for form."""
    if all(r.well_formed is None for r in results):
        return None
    return sum(r.outcome == "other" and r.well_formed is False for r in results)


def asr(scores: Sequence[float | None]) -> float | None:
    """Share of judged scores that count as success; `None` when nothing was judged."""
    judged = [s for s in scores if s is not None]
    return sum(is_success(s) for s in judged) / len(judged) if judged else None


@dataclass(frozen=True)
class Cell:
    """Aggregate over the results that share `key` (values of the grouping fields).

    Attributes:
        outcomes: attempts per outcome (`service.probes.outcomes.OUTCOMES`, all three keys;
            empty for results from before outcomes were recorded).
        unreadable: `other` replies that fit none of the world's answer templates (`None`
            when the model records no templates).
    """

    key: dict[str, str]
    attempts: int
    judged: int
    successes: int
    asr: float | None
    asr_by_judge: dict[str, float | None]
    outcomes: dict[str, int] = field(default_factory=dict)
    unreadable: int | None = None

    def share(self, outcome: str) -> float | None:
        """The share of attempts with `outcome` (`None` for an empty cell, or results from
        before outcomes were recorded)."""
        return self.outcomes[outcome] / self.attempts if self.outcomes else None

    @property
    def unreadable_share(self) -> float | None:
        """The share of `other` replies that are not well formed (`None`: none to judge)."""
        other = self.outcomes.get("other", 0)
        return None if self.unreadable is None or not other else self.unreadable / other


@dataclass
class Report:
    """Everything one probe run produced.

    Attributes:
        model: the base model id or path.
        judges: judge name -> its configuration, in the panel's verdict order.
        split: the evaluation half the probes drew (`service.probes.splits`).
        skipped: probes that could not run on this model, with the reason.
        seconds_by_probe: wall time spent inside the run per probe (building attempts,
            generating, judging).
    """

    model: str
    judges: dict[str, str]
    split: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    results: list[Result] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds_by_probe: dict[str, float] = field(default_factory=dict)

    def cells(self, by: Sequence[str] = CELL_KEYS, kind: str = "attack") -> list[Cell]:
        """Aggregates of the results of `kind` grouped by the Result fields in `by`, in
        first-seen order. For `benign` results `asr` is the false-refusal rate."""
        groups: dict[tuple[str, ...], list[Result]] = {}
        for r in self.results:
            if r.kind == kind:
                groups.setdefault(tuple(getattr(r, k) for k in by), []).append(r)
        return [
            Cell(
                key=dict(zip(by, values, strict=True)),
                attempts=len(rs),
                judged=sum(r.score is not None for r in rs),
                successes=sum(bool(r.success) for r in rs),
                asr=asr([r.score for r in rs]),
                asr_by_judge={j: asr([r.scores.get(j) for r in rs])
                              for j in (self.judges if kind == "attack" else REFUSAL_JUDGES)},
                outcomes=({o: sum(r.outcome == o for r in rs) for o in OUTCOMES}
                          if any(r.outcome for r in rs) else {}),
                unreadable=_unreadable(rs),
            )
            for values, rs in groups.items()
        ]

    def others(self, key: dict[str, str], k: int = 3, kind: str = "attack") -> list[Result]:
        """Up to `k` replies of one cell that neither complied nor refused, in run order."""
        return [r for r in self._of_cell(key, kind) if r.outcome == "other"][:k]

    def _of_cell(self, key: dict[str, str], kind: str) -> list[Result]:
        """The results of `kind` whose fields equal `key`, in run order."""
        return [r for r in self.results
                if r.kind == kind and all(getattr(r, f) == v for f, v in key.items())]

    def examples(self, key: dict[str, str], k: int = 2, kind: str = "attack") -> list[Result]:
        """Up to `k` successful and `k` failed results of one cell, in run order."""
        rs = self._of_cell(key, kind)
        return [r for r in rs if r.success][:k] + [r for r in rs if r.success is False][:k]

    def to_dict(self, examples: int = 2, results: bool = True) -> dict:
        """JSON-ready dict: summary cells with examples, and every result when `results`."""
        return {
            "model": self.model,
            "judges": self.judges,
            "split": self.split,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "skipped": self.skipped,
            "seconds_by_probe": self.seconds_by_probe,
            "summary": [
                {**asdict(c), "examples": [asdict(r) for r in self.examples(c.key, examples)],
                 "other_examples": [asdict(r) for r in self.others(c.key)]}
                for c in self.cells()
            ],
            "false_refusal": [
                {**asdict(c), "examples": [asdict(r) for r in
                                           self.examples(c.key, examples, "benign")],
                 "other_examples": [asdict(r) for r in self.others(c.key, kind="benign")]}
                for c in self.cells(kind="benign")
            ],
            "results": [asdict(r) for r in self.results] if results else None,
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(**kwargs), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        """Rebuild a report written by `to_dict(results=True)`."""
        if data.get("results") is None:
            raise ValueError("the report was saved without results; cannot rebuild it")
        return cls(
            model=data["model"],
            judges=dict(data["judges"]),
            split=data.get("split"),
            started_at=data["started_at"],
            finished_at=data.get("finished_at"),
            results=[Result(**r) for r in data["results"]],
            skipped=dict(data.get("skipped", {})),
            seconds_by_probe=dict(data.get("seconds_by_probe", {})),
        )

    def to_markdown(self, examples: int = 1) -> str:
        """A page for people: per-adapter overview, the full table, then examples per cell."""
        judges = list(self.judges)
        lines = [
            f"# Probe report: {self.model}",
            "",
            f"Started {utc_time(self.started_at)}, took {self.duration:.1f} s; "
            f"{len(self.results)} attempts on the {self.split or 'unsplit'} half. Verdict: the "
            "first judge with a score, in the order "
            + ", ".join(f"`{j}` ({d})" if d != j else f"`{j}`" for j, d in self.judges.items())
            + ". ASR = successful / judged attempts; false refusal = refused / judged harmless "
            "look-alike requests (keyword judge); complied / refused / other: every reply's "
            "outcome (for look-alikes complied = answered as asked), other unreadable = the "
            "share of `other` replies that fit none of the world's answer templates.",
            "",
            "## By adapter and modality",
            "",
            *_table(self.cells(("adapter", "modality")), ("adapter", "modality"), judges),
            "",
            "## By adapter, family and modality",
            "",
            *_table(self.cells(), CELL_KEYS, judges),
        ]
        benign = self.cells(("adapter", "modality"), kind="benign")
        if benign:
            lines += ["", "## False refusals (over-refusal probes)", "",
                      *_table(benign, ("adapter", "modality"), [], rate="false refusal")]
        if self.skipped:
            lines += ["", "## Skipped probes", ""]
            lines += [f"- `{name}`: {why}" for name, why in self.skipped.items()]
        lines += ["", "## Replies that neither complied nor refused (`other`)", ""]
        lines += self._others_markdown()
        lines += ["", "## Examples", ""]
        outcomes = {"attack": ("success", "failure"), "benign": ("refused", "answered")}
        for kind, (hit, miss) in outcomes.items():
            lines += self._examples_markdown(kind, hit, miss, examples)
        return "\n".join(lines)

    def _examples_markdown(self, kind: str, hit: str, miss: str, examples: int) -> list[str]:
        lines = []
        for cell in self.cells(kind=kind):
            lines.append(f"### {' / '.join(cell.key.values())}")
            for r in self.examples(cell.key, examples, kind):
                lines += [
                    "",
                    f"- **{hit if r.success else miss}** "
                    f"(decided by `{r.decided_by}`, {_scores(r.scores)}); "
                    f"`{r.probe}` on *{r.behavior}* ({r.category})",
                    f"  - prompt: {_quote(r.prompt)}",
                    *([f"  - image carries: {_quote(r.image_text)}"] if r.image_text else []),
                    f"  - response: {_quote(r.response)}",
                ]
            lines.append("")
        return lines

    def _others_markdown(self, k: int = 3) -> list[str]:
        lines = []
        for kind in ("attack", "benign"):
            for cell in self.cells(kind=kind):
                found = self.others(cell.key, k, kind)
                if found:
                    lines.append(f"- {' / '.join(cell.key.values())} ({kind}): " + "; ".join(
                        f"{_quote(r.response, 80)} ({_form(r.well_formed)})" for r in found))
        return lines or ["None."]

    @property
    def duration(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    def save(self, out: str | Path) -> tuple[Path, Path]:
        """Write `report.json` and `report.md` into the folder `out`; returns both paths."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "report.json", folder / "report.md"
        json_path.write_text(self.to_json() + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path


def _table(cells: list[Cell], keys: Sequence[str], judges: list[str],
           rate: str = "ASR") -> list[str]:
    header = [*keys, "attempts", rate, *(f"ASR `{j}`" for j in judges), *OUTCOMES,
              "other unreadable"]
    rows = [
        [*c.key.values(), str(c.attempts), pct(c.asr, 0),
         *(pct(c.asr_by_judge[j], 0) for j in judges), *(pct(c.share(o), 0) for o in OUTCOMES),
         pct(c.unreadable_share, 0)]
        for c in cells
    ]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _form(well_formed: bool | None) -> str:
    return {True: "well formed", False: "unreadable", None: "form unknown"}[well_formed]


def _scores(scores: dict[str, float | None]) -> str:
    return ", ".join(f"{j} {'-' if s is None else f'{s:.2f}'}" for j, s in scores.items())


def _quote(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    return "`" + flat.replace("`", "'") + "`"


def utc_time(timestamp: float | None) -> str:
    """A timestamp as people read it in reports and the operator page (`n/a`: none)."""
    if timestamp is None:
        return "n/a"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
