"""Markdown tables of evaluation summaries: one run (`eval.md`), or several seeds side by side.

With several summaries (one per training seed) every cell shows the mean and, in brackets, the
range over seeds, so a reader sees at once whether a seed got lucky.
"""

from __future__ import annotations

from collections.abc import Sequence

BASE = "base"


def _pct(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    mean = 100 * sum(known) / len(known)
    if len(known) == 1 or max(known) == min(known):
        return f"{mean:.1f} %"
    return f"{mean:.1f} % ({100 * min(known):.0f}–{100 * max(known):.0f})"


def _lookup(summary: dict, section: str, **key) -> dict | None:
    return next((r for r in summary[section] if all(r.get(k) == v for k, v in key.items())),
                None)


def _adapter_label(summary: dict) -> str:
    return summary.get("adapter_name") or BASE


def _column(summaries: Sequence[dict]) -> str:
    """The adapter's column title: its name, or `adapter` when the runs name it differently."""
    names = {_adapter_label(s) for s in summaries}
    return names.pop() if len(names) == 1 else "adapter"


def asr_table(summaries: Sequence[dict], section: str, keys: Sequence[str]) -> list[str]:
    """Rows of `keys` (family/modality), columns base vs adapter for every judge."""
    first = summaries[0]
    judges = first["judges"]
    adapter = _column(summaries)
    labels = [BASE] if adapter == BASE else [BASE, adapter]
    header = [*keys, *(f"{j} ASR {lab}" for j in judges for lab in labels)]
    seen = []
    for row in first[section]:
        combo = tuple(row[k] for k in keys)
        if combo not in seen:
            seen.append(combo)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for combo in seen:
        key = dict(zip(keys, combo, strict=True))
        cells = []
        for judge in judges:
            for label in labels:
                found = [_lookup(s, section, adapter=(label if label == BASE else
                                                      _adapter_label(s)), **key)
                         for s in summaries]
                cells.append(_pct([f["asr"].get(judge) if f else None for f in found]))
        lines.append("| " + " | ".join([*combo, *cells]) + " |")
    return lines


def utility_table(summaries: Sequence[dict]) -> list[str]:
    adapter = _column(summaries)
    labels = [BASE] if adapter == BASE else [BASE, adapter]
    lines = ["| model | modality | n | accuracy | benign refusal rate |", "|---|---|---|---|---|"]
    for label in labels:
        for modality in ("text", "image"):
            cells = [s["utility"].get(f"{label if label == BASE else _adapter_label(s)}/"
                                      f"{modality}") for s in summaries]
            if not any(cells):
                continue
            n = next(c["n"] for c in cells if c)
            lines.append(f"| {label} | {modality} | {n} | "
                         f"{_pct([c['accuracy'] if c else None for c in cells])} | "
                         f"{_pct([c['refusal_rate'] if c else None for c in cells])} |")
    return lines


def summary_markdown(summary: dict) -> str:
    return seeds_markdown([summary])


def seeds_markdown(summaries: Sequence[dict]) -> str:
    """The evaluation page for one summary or several seeds of the same setting."""
    first = summaries[0]
    seeds = f" over {len(summaries)} runs: mean (min–max)" if len(summaries) > 1 else ""
    lines = [
        f"# Unlearning evaluation: {first.get('adapter') or first['model']}",
        "",
        f"Base model `{first['model']}`; judges {', '.join(first['judges'])}; "
        f"behaviours {first['behaviors']}{seeds}. ASR = share of attacks judged successful.",
        "",
        "## Attack success by modality",
        "",
        *asr_table(summaries, "asr_by_modality", ("modality",)),
        "",
        "## Attack success by family and modality",
        "",
        *asr_table(summaries, "asr_by_family", ("family", "modality")),
        "",
        "## Utility (held-out benign prompts)",
        "",
        *utility_table(summaries),
        "",
    ]
    return "\n".join(lines)
