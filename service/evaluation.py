"""The evaluation summary: what `python -m unlearning eval` writes to `eval.json` and appends to
an adapter's crossguard.json `evaluations`, and what tables, charts, the demo's targets, the
cost bench and the promotion gate (`service.gate`) read.

One type owns the file's shape: its fields, the rows of each section and the keys of the
utility cells (`"base/text"`, `"base/text/capital"`: adapter, modality and task, parsed by
`UtilityKey` and nowhere else). The JSON it writes is what `json.dumps(..., indent=2)` of the
plain dict always wrote, so saved files keep their bytes through a round trip. Summaries from
before a field existed read with its default (no half: the test half; no look-alikes: none);
one missing what every reader needs is refused, naming what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from service.probes.splits import SPLITS
from service.vlm.folders import adapter_label

Row = dict[str, Any]
"""One row of a section: its key fields (`adapter`, `family`, `modality`), `attempts`, `asr`
by judge, and, since outcomes are recorded, `outcomes`, `other_unreadable` (and for
look-alikes `not_answered`)."""

SECTIONS = ("asr_by_family", "asr_by_modality", "false_refusal")
"""The row sections, keyed as their names say; `utility` is keyed by `UtilityKey`."""

UTILITY = "utility"

REQUIRED = ("model", "judges", "asr_by_family", "asr_by_modality")
"""What every summary ever written holds and the readers cannot do without."""

ROW_FIELDS = {"asr_by_family": ("adapter", "family", "modality", "attempts", "asr"),
              "asr_by_modality": ("adapter", "modality", "attempts", "asr"),
              "false_refusal": ("adapter", "modality", "attempts", "asr")}

SPLIT_ORDER = tuple(reversed(SPLITS))
"""Test first, validation beside it: settings are chosen on validation, test is quoted."""


@dataclass(frozen=True)
class UtilityKey:
    """The key of one utility cell: `adapter/modality`, or `adapter/modality/task` for the
    accuracy on one task. Adapter labels are folder names, so they hold no `/`."""

    adapter: str
    modality: str
    task: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.adapter, self.modality, self.task) if p is not None)

    @classmethod
    def parse(cls, key: str) -> UtilityKey:
        """The fields of `key`.

        Raises:
            ValueError: for a key without adapter and modality.
        """
        adapter, slash, rest = key.partition("/")
        modality, _, task = rest.partition("/")
        if not (adapter and slash and modality):
            raise ValueError(f"utility key {key!r} is not adapter/modality[/task]")
        return cls(adapter, modality, task if "/" in rest else None)


def judged(judge: str) -> Callable[[Row], float | None]:
    """A row's rate by one judge."""
    return lambda row: row["asr"].get(judge)


def share(outcome: str) -> Callable[[Row], float | None]:
    """A row's share of one outcome (`service.probes.outcomes`); None in summaries from
    before outcomes were recorded."""
    return lambda row: row.get("outcomes", {}).get(outcome)


@dataclass(frozen=True, kw_only=True)
class EvalSummary:
    """One `unlearning eval` run: base and one adapter on one evaluation half.

    Attributes:
        at: when it ran (UTC, ISO 8601).
        model / adapter: the base model and adapter paths; `adapter_name` the adapter's label
            in the rows (`None`: the base model alone).
        split: the evaluation half.
        judges: the panel, in its verdict order.
        probes / behaviors / best_of_n: what was asked and how best-of-N sampled.
        asr_by_family / asr_by_modality / false_refusal: the rows (`Row`).
        utility: `UtilityKey` string -> `{"n", "accuracy", "refusal_rate"}`.
        skipped: probes skipped by the engine, with why.
        extra: fields of other writers (crossguard.json entries add `report`), kept in order
            after the summary's own.
    """

    at: str | None = None
    model: str
    adapter: str | None = None
    adapter_name: str | None = None
    split: str = "test"
    judges: tuple[str, ...]
    probes: str | None = None
    behaviors: str = "default"
    best_of_n: dict[str, Any] | None = None
    asr_by_family: tuple[Row, ...]
    asr_by_modality: tuple[Row, ...]
    false_refusal: tuple[Row, ...] = ()
    utility: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str = "evaluation summary") -> EvalSummary:
        """A summary from its JSON object (`source` names it in errors).

        Raises:
            ValueError: when `data` is not a summary: not an object, a field every summary
                has is missing, or a row lacks its key fields.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: not an evaluation summary (a JSON object), got "
                             f"{type(data).__name__}")
        missing = [name for name in REQUIRED if data.get(name) is None]
        if missing:
            raise ValueError(f"{source}: not an evaluation summary, missing "
                             f"{', '.join(missing)} (`python -m unlearning eval` writes one)")
        for section, needed in ROW_FIELDS.items():
            for number, row in enumerate(data.get(section) or [], start=1):
                lacking = [k for k in needed if not isinstance(row, dict) or k not in row]
                if lacking:
                    raise ValueError(f"{source}: {section} row {number} lacks "
                                     f"{', '.join(lacking)}")
        own = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in own and v is not None}
        for name in (*SECTIONS, "judges"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values, extra={k: v for k, v in data.items() if k not in own})

    @classmethod
    def from_json(cls, text: str, source: str = "evaluation summary") -> EvalSummary:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not JSON ({error})") from None
        return cls.from_dict(data, source)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, fields in the order `unlearning eval` has always written them."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for name in (*SECTIONS, "judges"):
            data[name] = list(data[name])
        return {**data, **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def label(self) -> str:
        """The adapter's label in the rows (`BASE` when only the base model ran)."""
        return adapter_label(self.adapter_name)

    def rows(self, section: str, adapter: str | None = None, **key) -> list[Row]:
        """The rows of `section` (one of `SECTIONS`) whose fields equal `key`, of `adapter`
        (a label) when given."""
        if section not in SECTIONS:
            raise KeyError(f"no section {section!r}; known: {', '.join(SECTIONS)}")
        if adapter is not None:
            key["adapter"] = adapter
        return [r for r in getattr(self, section)
                if all(r.get(k) == v for k, v in key.items())]

    def lookup(self, section: str, adapter: str, **key) -> Row | None:
        """The row of `section` for `adapter` (a label) whose fields equal `key`, else None;
        `section` may be `utility`, keyed by `modality` (and `task`)."""
        if section == UTILITY:
            return self.utility.get(str(UtilityKey(adapter, **key)))
        return next(iter(self.rows(section, adapter, **key)), None)

    def rate(self, section: str, judge: str, adapter: str, **key) -> float | None:
        """`judge`'s rate in one row; None when the row or the judge's rate is missing."""
        row = self.lookup(section, adapter, **key)
        return None if row is None else judged(judge)(row)

    def share(self, outcome: str, adapter: str, modality: str) -> float | None:
        """The share of `adapter`'s attacks of one modality with `outcome`."""
        row = self.lookup("asr_by_modality", adapter, modality=modality)
        return None if row is None else share(outcome)(row)

    def not_answered(self, adapter: str, modality: str) -> float | None:
        """Look-alikes not answered as asked; the keyword judge's refusals in summaries from
        before outcomes were recorded."""
        row = self.lookup("false_refusal", adapter, modality=modality)
        if row is None:
            return None
        return row["not_answered"] if "not_answered" in row else row["asr"].get("keyword")

    def accuracy(self, adapter: str, modality: str, task: str | None = None) -> float | None:
        cell = self.lookup(UTILITY, adapter, modality=modality, task=task)
        return None if cell is None else cell["accuracy"]

    def families(self, modality: str) -> list[str]:
        """The attack families of one modality, sorted."""
        return sorted({r["family"] for r in self.asr_by_family if r["modality"] == modality})

    def has_outcomes(self) -> bool:
        """Whether the attack rows record outcomes (summaries since 2026-12-04 do)."""
        return any("outcomes" in r for r in self.asr_by_modality)


def by_split(summaries: Iterable[EvalSummary]) -> dict[str, list[EvalSummary]]:
    """Summaries (seeds of one setting) grouped by evaluation half, test first."""
    summaries = list(summaries)
    groups = {split: [s for s in summaries if s.split == split] for split in SPLIT_ORDER}
    return {split: group for split, group in groups.items() if group}
