"""The operators' page (`GET /v1/probes/report.html`): the last promotion-gate verdict and the
last probe run, on one self-contained HTML page.

Grafana shows trends; an operator asking why a promotion failed, or pasting the state into an
incident ticket, needs one run's numbers at a glance. So the page is plain server-rendered HTML
with inline SVG charts and an inline style sheet: no JavaScript and nothing fetched, so it looks
the same behind the admin token, offline and in a screenshot (every number is written as text,
in fonts large enough to read there). Every string is escaped: model replies are attacker-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from service.probes.outcomes import OUTCOMES
from service.probes.report import pct, utc_time
from service.vlm.folders import BASE

ROLE_COLOURS = {"base": "#7f7f7f", "default": "#1f77b4", "candidate": "#ff7f0e"}
"""Bar colour per role in the verdict's chart, alike on every page so colours can be learnt."""

PALETTE = ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
"""Bar colours of a probe run's adapters in report order (the base model comes first: grey)."""

MAX_OTHERS = 3
"""`other` replies shown per cell: enough to recognise babble, few enough to scan."""

REPLY_CHARS = 400
"""Longest reply shown; a runaway generation would otherwise push everything else away."""

NO_RUN = "No probe run has finished since this server started."

LABEL_W, BAR_W, BAR_H, GAP, TOP = 270, 580, 26, 16, 34
"""Chart geometry in pixels: label column, a 100 % bar, one bar's row, gap between groups,
room above the bars for the gate limit's label (when there is one)."""
CHART_W = LABEL_W + BAR_W + 120
"""Chart width: room right of a full bar for its percentage."""

STYLE = """
body{font:18px/1.45 "DejaVu Sans",Arial,sans-serif;color:#1a1a1a;background:#fff;
  margin:24px 36px;max-width:1200px}
h1{font-size:32px;margin:0 0 8px}h2{font-size:27px;border-bottom:2px solid #ccc;margin-top:36px}
h3{font-size:22px;margin:24px 0 8px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 18px;margin:8px 0}
dt{font-weight:bold}dd{margin:0}
table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #bbb;padding:4px 12px;text-align:left;vertical-align:top}
tr.fail td{background:#fdecea}
.verdict{font-size:60px;font-weight:bold;letter-spacing:3px;margin:8px 0}
.passed{color:#1a7f37}.failed{color:#c62828}.off{color:#8a6d00}
.legend span{margin-right:22px;white-space:nowrap}
.swatch{display:inline-block;width:18px;height:18px;vertical-align:middle;margin-right:6px}
.reply{white-space:pre-wrap;font-family:"DejaVu Sans Mono",monospace;font-size:16px}
svg text{font-family:"DejaVu Sans",Arial,sans-serif;font-size:18px;fill:#1a1a1a}
"""


def render_report_page(report: dict | None, verdict: dict | None, now: float) -> str:
    """The whole page.

    Args:
        report: the last probe run, `Report.to_dict(results=False)` (`None`: none finished).
        verdict: the last promotion-gate verdict (`None`: no promotion was asked for).
        now: when the page is generated (epoch seconds), printed so a screenshot is dated.
    """
    sections = [_header(report, now)]
    if verdict is not None:
        sections.append(_verdict_section(verdict))
    if report is not None:
        sections.append(_run_section(report))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>crossguard probe report</title><style>{STYLE}</style></head>\n"
            "<body>\n" + "\n".join(sections) + "\n</body></html>\n")


def _header(report: dict | None, now: float) -> str:
    facts = [] if report is None else [
        ("model", report["model"]), ("last probe run finished", utc_time(report["finished_at"])),
        ("split", report["split"] or "unsplit")]
    note = f"<p>{NO_RUN}</p>" if report is None else ""
    return (f"<header><h1>crossguard probe report</h1>{note}"
            f"{_facts([*facts, ('generated at', utc_time(now))])}</header>")


def _verdict_section(verdict: dict) -> str:
    """The gate's decision first, then the rules behind it, then the numbers they read."""
    parts = [_facts(_verdict_facts(verdict)), _decision(verdict)]
    if verdict["gate"] == "off":
        parts.append("<p>The gate was off: the candidate was promoted without checks "
                     "(forced promotion).</p>")
    else:
        parts += [_rules(verdict["checks"]), _failures(verdict)]
    if verdict.get("report"):
        parts += _verdict_numbers(verdict)
    return _section("Last gate verdict", parts)


def _verdict_facts(verdict: dict) -> list[tuple[str, str]]:
    return [("candidate", verdict["candidate"]),
            ("incumbent (current default)", verdict["incumbent"]),
            ("split", verdict.get("split") or "unsplit"),
            ("finished", utc_time(verdict["finished_at"])),
            ("took", f"{verdict['seconds']:.1f} s")]


def _decision(verdict: dict) -> str:
    """The outcome in big letters: the one thing a screenshot of the page must show."""
    word, cls = (("GATE OFF", "off") if verdict["gate"] == "off" else
                 ("PASSED", "passed") if verdict["passed"] else ("FAILED", "failed"))
    promoted = "yes" if verdict["promoted"] else "no"
    return f'<p class="verdict {cls}">{word}</p><p>Promoted: <b>{promoted}</b></p>'


def _rules(checks: Sequence[dict]) -> str:
    rows = [(c["rule"], _rule_number(c["rule"], c["value"]), _rule_number(c["rule"], c["limit"]),
             "pass" if c["passed"] else "FAIL", c["detail"]) for c in checks]
    fails = [not c["passed"] for c in checks]
    return _table(("rule", "value", "limit", "result", "detail"), rows, fails)


def _rule_number(rule: str, value: float | None) -> str:
    """Rates as percentages; `no_regression` counts attempts, so it stays a whole number."""
    if value is None:
        return "n/a"
    return str(int(value)) if rule == "no_regression" else pct(value)


def _failures(verdict: dict) -> str:
    if verdict["passed"] or not verdict["failures"]:
        return ""
    items = "".join(f"<li>{escape(line)}</li>" for line in verdict["failures"])
    return f"<h3>Why it failed</h3><ul>{items}</ul>"


def _verdict_numbers(verdict: dict) -> list[str]:
    """The gate run's attack success and false refusals, coloured by each adapter's role."""
    report = verdict["report"]
    roles = {BASE: "base", verdict["incumbent"]: "default", verdict["candidate"]: "candidate"}
    present = _adapters(report["summary"] + report["false_refusal"])
    series = {a: (a if a == role else f"{a} ({role})", ROLE_COLOURS[role])
              for a, role in roles.items() if a in present}
    limit = verdict["thresholds"]["max_family_asr"]
    return ["<h3>Attack success by family and modality</h3>",
            _chart(report["summary"], series, limit),
            "<h3>False refusals (harmless look-alikes refused)</h3>",
            _false_refusals(report["false_refusal"], list(series))]


def _run_section(report: dict) -> str:
    """Every adapter of the last probe run, then what the replies were when not refusals."""
    cells = report["summary"] + report["false_refusal"]
    adapters = _adapters(cells)
    series = {a: (a, PALETTE[i % len(PALETTE)]) for i, a in enumerate(adapters)}
    took = report["finished_at"] - report["started_at"] if report["finished_at"] else None
    facts = [("took", "n/a" if took is None else f"{took:.1f} s"),
             ("skipped probes", ", ".join(report["skipped"]) or "none")]
    return _section("Last probe run", [
        _facts(facts),
        "<h3>Attack success by family and modality</h3>", _chart(report["summary"], series),
        "<h3>False refusals (harmless look-alikes refused)</h3>",
        _false_refusals(report["false_refusal"], adapters),
        "<h3>Outcomes (share of attempts)</h3>", _outcomes(cells),
        "<h3>Replies that neither complied nor refused</h3>", _others(cells)])


def _adapters(cells: Iterable[dict]) -> list[str]:
    """Adapters of `cells` in first-seen order (the report's order)."""
    return list(dict.fromkeys(c["key"]["adapter"] for c in cells))


def _chart(cells: Sequence[dict], series: dict[str, tuple[str, str]],
           limit: float | None = None) -> str:
    """A legend and a horizontal bar chart (inline SVG): one group per family × modality, one
    bar per adapter of `series` (adapter -> (label, colour)), its rate written beside it, and
    the gate's limit as a vertical line."""
    rates = {(c["key"]["family"], c["key"]["modality"], c["key"]["adapter"]): c["asr"]
             for c in cells if c["key"]["adapter"] in series}
    rows = list(dict.fromkeys((f, m) for f, m, _ in rates))
    if not rows:
        return "<p>No attack probes ran.</p>"
    group, top = len(series) * BAR_H + GAP, GAP if limit is None else TOP
    height = top + len(rows) * group
    svg = [_group(i, row, rates, series, top + i * group) for i, row in enumerate(rows)]
    if limit is not None:
        svg.append(_limit_line(limit, height))
    return (_legend(series) + f'<svg width="{CHART_W}" '
            f'height="{height}" role="img">{"".join(svg)}</svg>')


def _group(index: int, row: tuple[str, str], rates: dict, series: dict, y: int) -> str:
    """One family × modality: its label, then one bar per adapter (none where not probed);
    every other group shaded so the eye keeps to a row across the chart."""
    span = len(series) * BAR_H
    shade = (f'<rect x="0" y="{y - GAP / 2}" width="{CHART_W}" height="{span + GAP}" '
             'fill="#f2f2f2"/>' if index % 2 else "")
    bars = [_bar(rates[(*row, a)], colour, y + j * BAR_H)
            for j, (a, (_, colour)) in enumerate(series.items()) if (*row, a) in rates]
    return (shade + f'<text x="{LABEL_W - 12}" y="{y + span / 2 + 6}" text-anchor="end">'
            f"{escape(' / '.join(row))}</text>" + "".join(bars))


def _bar(rate: float | None, colour: str, y: float) -> str:
    width = 0 if rate is None else rate * BAR_W
    return (f'<rect x="{LABEL_W}" y="{y + 3}" width="{width:.1f}" height="{BAR_H - 6}" '
            f'fill="{colour}"/><text x="{LABEL_W + width + 8:.1f}" y="{y + BAR_H - 7}">'
            f"{pct(rate)}</text>")


def _limit_line(limit: float, height: int) -> str:
    x = LABEL_W + limit * BAR_W
    return (f'<line x1="{x:.1f}" y1="{TOP - 10}" x2="{x:.1f}" y2="{height}" stroke="#c62828" '
            f'stroke-width="2" stroke-dasharray="6 4"/><text x="{x + 6:.1f}" y="{TOP - 14}" '
            f'style="fill:#c62828">gate limit {pct(limit)}</text>')


def _legend(series: dict[str, tuple[str, str]]) -> str:
    items = "".join(f'<span><i class="swatch" style="background:{colour}"></i>{escape(label)}'
                    "</span>" for label, colour in series.values())
    return f'<p class="legend">{items}</p>'


def _false_refusals(cells: Sequence[dict], adapters: Sequence[str]) -> str:
    """Adapter × modality table of the share of harmless requests refused."""
    rates = {(c["key"]["adapter"], c["key"]["modality"]): c for c in cells}
    modalities = list(dict.fromkeys(m for a, m in rates if a in adapters))
    if not modalities:
        return "<p>No over-refusal probes ran.</p>"
    rows = [(a, *(_refused(rates.get((a, m))) for m in modalities)) for a in adapters]
    return _table(("adapter", *modalities), rows)


def _refused(cell: dict | None) -> str:
    return "n/a" if cell is None else f"{pct(cell['asr'])} of {cell['judged']}"


def _outcomes(cells: Sequence[dict]) -> str:
    rows = [(*c["key"].values(), str(c["attempts"]), *(_share(c, o) for o in OUTCOMES))
            for c in cells]
    return _table(("adapter", "family", "modality", "attempts", *OUTCOMES), rows)


def _share(cell: dict, outcome: str) -> str:
    """The share of a cell's attempts with `outcome` (`n/a`: outcomes were not recorded)."""
    counts = cell["outcomes"]
    return pct(counts[outcome] / cell["attempts"]) if counts and cell["attempts"] else "n/a"


def _others(cells: Sequence[dict]) -> str:
    """Up to `MAX_OTHERS` replies per cell that were neither compliance nor refusal."""
    blocks = [f"<h4>{escape(' / '.join(c['key'].values()))}</h4><ul>"
              + "".join(f'<li class="reply">{escape(_clip(r["response"]))}</li>'
                        for r in c["other_examples"][:MAX_OTHERS]) + "</ul>"
              for c in cells if c["other_examples"]]
    return "".join(blocks) or "<p>None.</p>"


def _clip(text: str) -> str:
    return text if len(text) <= REPLY_CHARS else text[: REPLY_CHARS - 1] + "…"


def _section(title: str, parts: Iterable[str]) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs)
    return f"<dl>{items}</dl>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]],
           failed: Sequence[bool] | None = None) -> str:
    """A table of escaped text; rows flagged in `failed` are shaded."""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    flags = failed or [False] * len(rows)
    body = "".join(_row(row, flag) for row, flag in zip(rows, flags, strict=True))
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _row(cells: Sequence[str], failed: bool) -> str:
    cls = ' class="fail"' if failed else ""
    return f"<tr{cls}>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>"

