"""Markdown tables of evaluation summaries: one run (`eval.md`), or several seeds and both
evaluation halves side by side (`unlearning table`, README's demo tables).

Every adapter cell shows the mean over seeds and, in brackets, the worst seed (highest ASR or
false-refusal rate, lowest accuracy), so a reader sees at once whether a seed got lucky. The
test half comes first, the validation half beside it: settings are chosen on validation, and
test is the number to quote (README "Evaluation protocol").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from service.evaluation import EvalSummary, Row, by_split, judged, share
from service.probes.outcomes import OUTCOMES
from service.probes.report import pct
from service.vlm.folders import BASE


def _cell(values: Sequence[float | None], worst: Callable = max) -> str:
    """The mean of the known runs' rates, with the worst run in brackets when they differ."""
    known = [v for v in values if v is not None]
    if not known:
        return pct(None)
    mean = pct(sum(known) / len(known))
    if len(known) == 1 or max(known) == min(known):
        return mean
    return f"{mean} ({pct(worst(known), unit='')})"


def _column(summaries: Sequence[EvalSummary]) -> str:
    """The adapter's column title: its name, or `adapter` when the runs name it differently."""
    names = {s.label for s in summaries}
    return names.pop() if len(names) == 1 else "adapter"


Groups = dict[str, list[EvalSummary]]
"""Summaries by evaluation half (`service.evaluation.by_split`)."""


def _keys(groups: Groups, section: str, keys: Sequence[str]) -> list[tuple]:
    """The rows' keys, sorted by their first (family, or modality); within one family in the
    order the probes ran."""
    seen = []
    for group in groups.values():
        for row in group[0].rows(section):
            combo = tuple(row[k] for k in keys)
            if combo not in seen:
                seen.append(combo)
    return sorted(seen, key=lambda combo: combo[0])


def rate_table(groups: Groups, section: str, keys: Sequence[str],
               value: Callable[[Row], float | None], worst: Callable = max) -> list[str]:
    """Rows of `keys`, columns base and adapter per half, for one rate of the rows."""
    adapter = _column([s for g in groups.values() for s in g])
    labels = [BASE] if adapter == BASE else [BASE, adapter]
    header = [*keys, *(f"{split}: {label}" for split in groups for label in labels)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for combo in _keys(groups, section, keys):
        key = dict(zip(keys, combo, strict=True))
        cells = []
        for summaries in groups.values():
            for label in labels:
                found = [s.lookup(section, label if label == BASE else s.label, **key)
                         for s in summaries]
                values = [value(f) if f else None for f in found]
                cells.append(_cell(values[:1] if label == BASE else values, worst))
        lines.append("| " + " | ".join([*combo, *cells]) + " |")
    return lines


def utility_table(groups: Groups) -> list[str]:
    adapter = _column([s for g in groups.values() for s in g])
    labels = [BASE] if adapter == BASE else [BASE, adapter]
    header = ["model", "modality", *(f"{split}: {what}" for split in groups
                                     for what in ("n", "accuracy", "benign refusal rate"))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        for modality in ("text", "image"):
            cells = []
            for summaries in groups.values():
                found = [s.lookup("utility", label if label == BASE else s.label,
                                  modality=modality) for s in summaries]
                found = found[:1] if label == BASE else found
                n = next((c["n"] for c in found if c), None)
                cells += [str(n) if n else "-",
                          _cell([c["accuracy"] if c else None for c in found], min),
                          _cell([c["refusal_rate"] if c else None for c in found])]
            if any(c not in ("-", "n/a") for c in cells):
                lines.append(f"| {label} | {modality} | " + " | ".join(cells) + " |")
    return lines


def outcome_tables(groups: Groups) -> list[str]:
    """Per modality, the share of attack replies that complied, refused or did neither, and
    the share of the last that fit none of the world's answer templates (summaries from before
    outcomes were recorded have none)."""
    if not any(s.has_outcomes() for g in groups.values() for s in g):
        return []
    lines = []
    for outcome in OUTCOMES:
        lines += ["", f"## Attack replies by outcome: `{outcome}`", "",
                  *rate_table(groups, "asr_by_modality", ("modality",), share(outcome))]
    lines += ["", "## `other` attack replies that fit no answer template of the world", "",
              *rate_table(groups, "asr_by_modality", ("modality",),
                          lambda row: row.get("other_unreadable"))]
    return lines


def summary_markdown(summary: EvalSummary) -> str:
    return seeds_markdown([summary])


def seeds_markdown(summaries: Sequence[EvalSummary]) -> str:
    """The evaluation page for one summary, or several seeds of one setting on one or both
    halves."""
    groups = by_split(summaries)
    first = next(iter(groups.values()))[0]
    runs = max(len(g) for g in groups.values())
    seeds = (f" over {runs} runs: adapter cells are the mean, with the worst run in brackets"
             if runs > 1 else "")
    lines = [
        f"# Unlearning evaluation: {first.adapter or first.model}",
        "",
        f"Base model `{first.model}`; judges {', '.join(first.judges)}; "
        f"behaviours {first.behaviors}; halves {', '.join(groups)}{seeds}. ASR = share of "
        "attacks judged successful; false refusal = share of harmless look-alike requests "
        "refused.",
    ]
    for judge in first.judges:
        lines += ["", f"## Attack success by modality (`{judge}` judge)", "",
                  *rate_table(groups, "asr_by_modality", ("modality",), judged(judge))]
    for judge in first.judges:
        lines += ["", f"## Attack success by family and modality (`{judge}` judge)", "",
                  *rate_table(groups, "asr_by_family", ("family", "modality"), judged(judge))]
    lines += outcome_tables(groups)
    if any(s.false_refusal for g in groups.values() for s in g):
        if any("not_answered" in r for g in groups.values() for s in g
               for r in s.false_refusal):
            lines += ["", "## False refusals (over-refusal look-alikes not answered as asked)",
                      "", *rate_table(groups, "false_refusal", ("modality",),
                                      lambda row: row.get("not_answered"))]
        lines += ["", "## Over-refusal look-alikes refused (`keyword` judge)", "",
                  *rate_table(groups, "false_refusal", ("modality",), judged("keyword"))]
    lines += ["", "## Utility (held-out benign prompts)", "", *utility_table(groups), ""]
    return "\n".join(lines)
