"""Charts of evaluation summaries, for people who compare adapters by looking: `eval.png`
beside `eval.json` (`unlearning eval`), the seeds chart of `unlearning table` and
`make demo-report`.

Bars are rates in %, the base model beside the adapter, one panel per attack modality (and
evaluation half). Over several seeds a bar is the mean and its error bar spans the lowest to
the highest seed, the picture of what the tables print as mean and worst seed. The drawing is
the probe report's (`service/probes/charts.py`), so both kinds of chart read alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from service.evaluation import EvalSummary, by_split
from service.probes.charts import (
    EXTRA_ROWS,
    MODALITIES,
    OUTCOME_ROWS,
    ChartPanel,
    draw,
    save,
    spread,
)
from service.vlm.folders import BASE

JUDGE = "payload"
"""The judge whose ASR the charts show unless told otherwise (README: every number is the
compliance judge unless it says keyword)."""


def summary_panel(summaries: Sequence[EvalSummary], modality: str, title: str,
                  judge: str = JUDGE) -> ChartPanel:
    """Base vs adapter of one modality over runs of one setting: `judge`'s ASR per family,
    the shares of attack replies refused and neither complied nor refused, then false
    refusals (look-alikes not answered as asked) and benign accuracy."""
    families = sorted({f for s in summaries for f in s.families(modality)})
    own = [s.label for s in summaries]
    series = [(BASE, [BASE] * len(summaries))] + ([] if set(own) == {BASE}
                                                   else [(_series_name(own), own)])
    bars = []
    for name, labels in series:
        pairs = list(zip(summaries, labels, strict=True))
        bars += [spread(f, name, [s.rate("asr_by_family", judge, a, family=f,
                                         modality=modality) for s, a in pairs])
                 for f in families]
        bars += [spread(row, name, [s.share(outcome, a, modality) for s, a in pairs])
                 for row, outcome in zip(OUTCOME_ROWS, ("refused", "other"), strict=True)]
        bars += [spread(EXTRA_ROWS[0], name, [s.not_answered(a, modality) for s, a in pairs]),
                 spread(EXTRA_ROWS[1], name, [s.accuracy(a, modality) for s, a in pairs])]
    bars = [b for b in bars if b]
    outcomes = [row for row in OUTCOME_ROWS if any(b.row == row for b in bars)]
    return ChartPanel(title, [*families, *outcomes, *EXTRA_ROWS], bars, len(families))


def summary_panels(summaries: Sequence[EvalSummary], judge: str = JUDGE) -> list[ChartPanel]:
    """One panel per evaluation half (test first) and modality (text, image)."""
    groups = by_split(summaries)
    return [summary_panel(group, modality, f"{split} half: {modality} attacks"
                          if len(groups) > 1 else f"{modality} attacks", judge)
            for split, group in groups.items() for modality in MODALITIES
            if any(r["modality"] == modality for s in group
                   for r in [*s.asr_by_family, *s.false_refusal])]


def _series_name(labels: Sequence[str]) -> str:
    """The adapter's name, or what its seeds' names share (`safety-<hash>` -> `safety`)."""
    names = list(dict.fromkeys(labels))
    if len(names) == 1:
        return names[0]
    shared = names[0]
    for name in names[1:]:
        while not name.startswith(shared):
            shared = shared[:-1]
    return shared.rstrip("-_ .") or "adapter"


def seeds_title(summaries: Sequence[EvalSummary], judge: str = JUDGE) -> str:
    """Adapter, halves and number of runs, as the chart's title."""
    groups = by_split(summaries)
    runs = max(len(g) for g in groups.values())
    name = _series_name([s.label for s in summaries])
    halves = " and ".join(groups) + (" halves" if len(groups) > 1 else " half")
    return (f"{name} vs base on the {halves}, "
            f"{f'{runs} seeds' if runs > 1 else 'one run'}: {judge} ASR per attack family")


def seeds_note(summaries: Sequence[EvalSummary], judge: str = JUDGE) -> str:
    """What the bars measure, under the panels."""
    runs = max(len(g) for g in by_split(summaries).values())
    ranges = ("bar: mean over seeds, error bar: lowest to highest seed; " if runs > 1 else "")
    return (f"{ranges}ASR: share of attacks the {judge} judge counts as successful; attacks "
            "refused / other: replies that refused / neither complied nor refused; false "
            "refusals: harmless look-alikes not answered as asked; benign accuracy: held-out "
            "benign questions answered right (higher is better)")


def seeds_chart(summaries: list[EvalSummary], path: Path, judge: str = JUDGE) -> Path:
    """Chart of one `unlearning eval` summary or several (seeds, halves) of one setting.

    Args:
        summaries: what `eval.json` files hold (`service.evaluation.EvalSummary`).
        path: the PNG to write (its folder is created).
        judge: whose ASR the family bars show; false refusals are always the keyword judge's.

    Returns:
        `path`.
    """
    if not summaries:
        raise ValueError("seeds_chart: no summaries to draw")
    figure = draw(summary_panels(summaries, judge), seeds_title(summaries, judge),
                  seeds_note(summaries, judge))
    return save(figure, path)
