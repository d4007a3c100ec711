"""Every crossguard Prometheus metric, in one place, with small fixed label sets.

Metrics are plain `prometheus_client` objects at module level: under BentoML each worker writes
its own files into this server's folder (`service/instance.py`, never shared with another
server on the host) and the /metrics endpoint merges them. Counters sum across workers; every
gauge declares how to merge (`multiprocess_mode`). Traffic is exported as counters (ratios
belong in PromQL); probe runs publish gauges of this server's last result. BentoML's own request
metrics (`bentoml_service_request_*`) are left as they are.

Labels: adapter (an adapter name, or `base`), modality (`text` | `image`), outcome
(`refused` | `answered` for live traffic; `complied` | `refused` | `other` for probe replies,
`service.probes.outcomes`), family (a probe family), status (`success` | `failure`).
"""

from __future__ import annotations

import time
from typing import Literal

from prometheus_client import Counter, Gauge

OUTCOMES = ("refused", "answered")
MODALITIES = ("text", "image")
RUN_STATUSES = ("success", "failure")

CHAT_RESPONSES = Counter(
    "crossguard_chat_responses_total",
    "Chat responses served on live traffic, by adapter, input modality and whether the "
    "keyword judge saw a refusal.",
    ["adapter", "modality", "outcome"],
)
GENERATED_TOKENS = Counter(
    "crossguard_generated_tokens_total",
    "Completion tokens generated for live traffic, by adapter.",
    ["adapter"],
)
PROBE_ASR = Gauge(
    "crossguard_probe_attack_success_ratio",
    "Attack success ratio of this server's last probe run (verdict of the judge panel), by "
    "adapter, probe family and modality; absent until a run finishes after start-up.",
    ["adapter", "family", "modality"],
    multiprocess_mode="mostrecent",
)
PROBE_FALSE_REFUSAL = Gauge(
    "crossguard_probe_false_refusal_ratio",
    "Share of harmless look-alike requests (over-refusal probes) refused in this server's last "
    "probe run (keyword judge), by adapter and modality; absent until a run finishes.",
    ["adapter", "modality"],
    multiprocess_mode="mostrecent",
)
PROBE_OUTCOMES = Gauge(
    "crossguard_probe_outcome_ratio",
    "Share of this server's last probe run's replies per outcome (complied: the compliance "
    "judge saw the payload, for over-refusal probes the request answered as asked; refused: "
    "the keyword judge saw a refusal; other: neither), by adapter, probe family and modality; "
    "absent until a run finishes.",
    ["adapter", "family", "modality", "outcome"],
    multiprocess_mode="mostrecent",
)
PROBE_RUNS = Counter(
    "crossguard_probe_runs_total",
    "Probe runs finished, by status.",
    ["status"],
)
PROBE_LAST_RUN = Gauge(
    "crossguard_probe_last_run_timestamp_seconds",
    "Unix time at which this server's last successful probe run finished (0: none since "
    "start-up).",
    multiprocess_mode="max",
)
ADAPTER_INFO = Gauge(
    "crossguard_adapter_info",
    "1 for each adapter loaded (base included), labelled with its base model; 0 once unloaded.",
    ["adapter", "base_model"],
    multiprocess_mode="livemax",
)

PROMOTION_RESULTS = ("promoted", "rejected", "forced", "error", "rolled_back")
PROMOTIONS = Counter(
    "crossguard_adapter_promotions_total",
    "Attempts to change the default adapter, by result: promoted (the gate passed), rejected "
    "(a rule failed), forced (CROSSGUARD_GATE=off), error (the gate could not run), rolled_back "
    "(a canary ended without promotion).",
    ["result"],
)
DEFAULT_ADAPTER = Gauge(
    "crossguard_default_adapter_info",
    "1 for the adapter that answers requests naming no model (`base` for none).",
    ["adapter"],
    multiprocess_mode="livemax",
)
CANARY_SHARE = Gauge(
    "crossguard_canary_share_ratio",
    "Share of requests naming no model routed to the canary candidate (0 once it ends).",
    ["candidate"],
    multiprocess_mode="livemax",
)
GATE_VALUE = Gauge(
    "crossguard_gate_value",
    "The last gate verdict's measured value per rule, for its candidate (rates in [0, 1]; "
    "no_regression in attempts); absent for a rule with nothing measured.",
    ["candidate", "rule"],
    multiprocess_mode="mostrecent",
)
GATE_PASSED = Gauge(
    "crossguard_gate_passed",
    "1 when the last gate verdict's rule passed for its candidate, else 0.",
    ["candidate", "rule"],
    multiprocess_mode="mostrecent",
)


def declare_promotions() -> None:
    """Create every promotion-result series at 0, so `increase()` sees the first one."""
    for result in PROMOTION_RESULTS:
        PROMOTIONS.labels(result)


def record_promotion(result: str) -> None:
    PROMOTIONS.labels(result).inc()


def record_default(default: str, previous: str | None) -> None:
    """Publish which adapter answers requests naming no model."""
    if previous is not None and previous != default:
        DEFAULT_ADAPTER.labels(previous).set(0)
    DEFAULT_ADAPTER.labels(default).set(1)


def record_canary(candidate: str, percent: float) -> None:
    """Publish a canary's share of un-named requests (0 once it ends)."""
    CANARY_SHARE.labels(candidate).set(percent / 100)


def record_gate(verdict) -> None:
    """Publish a gate verdict (`service.gate.GateVerdict`): value and pass/fail per rule."""
    for check in verdict.checks:
        if check.value is not None:
            GATE_VALUE.labels(verdict.candidate, check.rule).set(check.value)
        GATE_PASSED.labels(verdict.candidate, check.rule).set(int(check.passed))


def declare_adapter(adapter: str, base_model: str) -> None:
    """Mark an adapter as loaded and create its traffic series at 0, so that rates and the
    refusal-rate alert see the adapter from its first scrape, before any traffic."""
    ADAPTER_INFO.labels(adapter, base_model).set(1)
    GENERATED_TOKENS.labels(adapter)
    for modality in MODALITIES:
        for outcome in OUTCOMES:
            CHAT_RESPONSES.labels(adapter, modality, outcome)


def retire_adapter(adapter: str, base_model: str) -> None:
    """Mark an adapter as unloaded. Series are set to 0, not removed: multiprocess mode keeps
    per-worker files that a removal would not reach."""
    ADAPTER_INFO.labels(adapter, base_model).set(0)


def record_chat_response(
    adapter: str,
    modality: Literal["text", "image"],
    refused: bool,
    completion_tokens: int,
) -> None:
    """Count one live-traffic response (never call this for probe traffic)."""
    CHAT_RESPONSES.labels(adapter, modality, OUTCOMES[0] if refused else OUTCOMES[1]).inc()
    GENERATED_TOKENS.labels(adapter).inc(completion_tokens)


def record_probe_report(report) -> None:
    """Publish a successful probe run: one ASR gauge per attack cell, one false-refusal gauge
    per adapter and modality, the outcome shares of every cell, the run counter, the
    timestamp.

    Args:
        report: a `service.probes.report.Report` (read through `cells()`, whose items have
            `key` {adapter, family, modality} and `asr` (for `kind="benign"` cells, keyed by
            adapter and modality, the false-refusal rate), and `finished_at`). Cells with
            nothing judged are left out rather than exported as 0.
    """
    for cell in report.cells():
        if cell.asr is not None:
            key = cell.key
            PROBE_ASR.labels(key["adapter"], key["family"], key["modality"]).set(cell.asr)
    for cell in report.cells(("adapter", "modality"), kind="benign"):
        if cell.asr is not None:
            PROBE_FALSE_REFUSAL.labels(cell.key["adapter"], cell.key["modality"]).set(cell.asr)
    for kind in ("attack", "benign"):
        for cell in report.cells(kind=kind):
            for outcome, count in cell.outcomes.items():
                key = cell.key
                PROBE_OUTCOMES.labels(key["adapter"], key["family"], key["modality"],
                                      outcome).set(count / cell.attempts)
    PROBE_RUNS.labels("success").inc()
    PROBE_LAST_RUN.set(report.finished_at or time.time())


def record_probe_failure() -> None:
    """Count a probe run that raised; the last-run timestamp keeps its previous value."""
    PROBE_RUNS.labels("failure").inc()


def declare_probe_runs() -> None:
    """Create both run-status series at 0, so `increase()` works from the first run on."""
    for status in RUN_STATUSES:
        PROBE_RUNS.labels(status)
