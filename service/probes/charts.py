"""Charts of probe results, for people who compare adapters by looking: `report.png` beside a
probe run's `report.json` (`python -m service.probes run`, `unlearning eval`), and the drawing
that the unlearning charts (`unlearning/charts.py`: eval, seeds tables, demo report) share.

Bars are rates in %, the base model beside the adapters, one panel per attack modality. Over
several runs a bar is the mean and its error bar spans the lowest to the highest run.

matplotlib is imported inside the drawing functions and draws on an Agg canvas without pyplot's
global state: serving never imports it, and charts draw without a display. Style, size,
resolution and PNG metadata are fixed, so the same numbers give the same bytes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.probes.report import Report

MODALITIES = ("text", "image")
OUTCOME_ROWS = ("attacks refused", "attacks other")
"""Rows of the attack replies' outcome shares beside the ASRs (complied is the ASR itself):
a reply that is neither complied nor refused is not hidden (`service.probes.outcomes`)."""
EXTRA_ROWS = ("false refusals", "benign accuracy")
COLORS = ("#9e9e9e", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
"""Series colours in order: the base model grey, adapters in matplotlib's palette."""
ROW_INCHES, WIDTH_INCHES, DPI = 0.24, 11.0, 100


@dataclass(frozen=True)
class Bar:
    """One drawn bar: a rate's mean over runs and its range (all equal for one run), in [0, 1]."""

    row: str
    series: str
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class ChartPanel:
    """One subplot: bars by row (families, then the extra groups) and series (base, adapter);
    `rows` keeps the order to draw, `separator` the number of rows above a dashed line."""

    title: str
    rows: list[str]
    bars: list[Bar]
    separator: int | None = None


def spread(row: str, series: str, values: Sequence[float | None]) -> Bar | None:
    """The bar of the known values (mean, min, max); None when no run measured the rate."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return Bar(row, series, sum(known) / len(known), min(known), max(known))


def report_panels(report: Report, judge: str | None = None) -> list[ChartPanel]:
    """One panel per modality of a probe report: ASR per family and adapter (`judge`'s, or
    the panel's verdict when None), the shares of attack replies refused and neither complied
    nor refused, then the false-refusal rate of the over-refusal probes."""
    attacks = report.cells()
    benign = report.cells(("adapter", "modality"), kind="benign")
    adapters = list(dict.fromkeys(c.key["adapter"] for c in [*attacks, *benign]))
    panels = []
    seen = dict.fromkeys(c.key["modality"] for c in [*attacks, *benign])
    for modality in sorted(seen, key=lambda m: MODALITIES.index(m) if m in MODALITIES else 2):
        cells = [c for c in attacks if c.key["modality"] == modality]
        families = sorted(dict.fromkeys(c.key["family"] for c in cells))
        bars = [spread(c.key["family"], c.key["adapter"],
                       [c.asr if judge is None else c.asr_by_judge.get(judge)]) for c in cells]
        bars += [spread(row, c.key["adapter"], [c.share(outcome)])
                 for c in report.cells(("adapter", "modality")) if c.key["modality"] == modality
                 for row, outcome in zip(OUTCOME_ROWS, ("refused", "other"), strict=True)]
        bars += [spread(EXTRA_ROWS[0], c.key["adapter"], [c.asr]) for c in benign
                 if c.key["modality"] == modality]
        bars = sorted((b for b in bars if b), key=lambda b: adapters.index(b.series))
        extra = [row for row in (*OUTCOME_ROWS, EXTRA_ROWS[0]) if any(b.row == row
                                                                      for b in bars)]
        panels.append(ChartPanel(f"{modality} attacks", [*families, *extra], bars, len(families)))
    return panels


def report_chart(report: Report, path: Path, judge: str | None = None) -> Path:
    """Chart of one probe run (`report.json`): ASR per family and modality, per adapter."""
    who = (f"the {judge} judge" if judge else
           f"the verdict (first judge with a score: {', '.join(report.judges)})")
    title = (f"Probe report: {Path(report.model).name}, {report.split or 'unsplit'} half: "
             "ASR per attack family")
    note = (f"ASR: share of attacks judged successful by {who}; attacks refused / other: "
            "replies the keyword judge saw refuse / that neither complied nor refused; false "
            "refusals: share of harmless look-alikes refused (keyword judge)")
    return save(draw(report_panels(report, judge), title, note), path)


def draw(panels: Sequence[ChartPanel], title: str, note: str = "", columns: int = 2):
    """The matplotlib Figure of `panels`, `columns` per line: horizontal bar groups (long
    family names stay readable), rates in %, the mean written beside each bar; the legend
    below, with `note` (what the bars measure) as its title."""
    import matplotlib.style
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    panels = panels or [ChartPanel("nothing was measured", [], [])]
    lines = -(-len(panels) // columns)
    rows = max(1, *(len(p.rows) for p in panels))
    series = list(dict.fromkeys(b.series for p in panels for b in p.bars))
    with matplotlib.style.context("default"):
        figure = Figure(figsize=(WIDTH_INCHES, 1.0 + lines * (0.7 + rows * ROW_INCHES)),
                        dpi=DPI, layout="constrained")
        axes = figure.subplots(lines, columns, squeeze=False).ravel()
        for ax, panel in zip(axes, panels, strict=False):
            _draw_panel(ax, panel, series)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        figure.suptitle(title, fontsize=11)
        figure.legend(handles=[Patch(color=COLORS[i % len(COLORS)], label=name)
                               for i, name in enumerate(series)],
                      loc="outside lower center", ncols=len(series), frameon=False, fontsize=9,
                      title=textwrap.fill(note, 150) or None, title_fontsize=8)
    return figure


def _draw_panel(ax, panel: ChartPanel, series: Sequence[str]) -> None:
    """One panel's bars, series side by side within each row; error bars only where the
    runs differ (no caps on rates every seed agrees on)."""
    from matplotlib.ticker import PercentFormatter

    height = 0.8 / max(1, len(series))
    index = {row: i for i, row in enumerate(panel.rows)}
    for j, name in enumerate(series):
        bars = [b for b in panel.bars if b.series == name]
        y = [index[b.row] - 0.4 + height * (j + 0.5) for b in bars]
        ax.barh(y, [100 * b.mean for b in bars], height=height, label=name,
                color=COLORS[j % len(COLORS)])
        ranged = [(at, b) for at, b in zip(y, bars, strict=True) if b.high - b.low > 1e-9]
        if ranged:
            ax.errorbar([100 * b.mean for _, b in ranged], [at for at, _ in ranged],
                        xerr=[[100 * (b.mean - b.low) for _, b in ranged],
                              [100 * (b.high - b.mean) for _, b in ranged]],
                        fmt="none", ecolor="#333333", elinewidth=0.8, capsize=2)
        for at, bar in zip(y, bars, strict=True):
            ax.text(100 * bar.high + 1.5, at, f"{100 * bar.mean:.0f}", va="center", fontsize=6.5)
    if panel.separator and panel.separator < len(panel.rows):
        ax.axhline(panel.separator - 0.5, color="#777777", linewidth=0.6, linestyle="--")
    ax.set_yticks(range(len(panel.rows)), panel.rows, fontsize=8)
    ax.set_ylim(max(1, len(panel.rows)) - 0.5, -0.5)
    ax.set_xlim(0, 112)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.xaxis.set_major_formatter(PercentFormatter(100))
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title(panel.title, fontsize=10)


def save(figure, path: Path) -> Path:
    """Write `figure` as PNG at the fixed resolution, without version or date metadata."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.style.context("default"):
        FigureCanvasAgg(figure).print_png(path, metadata={"Software": None})
    return path
