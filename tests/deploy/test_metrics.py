"""service.metrics: final names and labels, what each helper records, and correct merging
across BentoML worker processes (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Summary

from service import metrics
from service.probes.report import Report, Result
from tests.deploy.promtool import ROOT

FINAL = {
    "crossguard_chat_responses_total": ("counter", ("adapter", "modality", "outcome")),
    "crossguard_generated_tokens_total": ("counter", ("adapter",)),
    "crossguard_probe_attack_success_ratio": ("gauge", ("adapter", "family", "modality")),
    "crossguard_probe_false_refusal_ratio": ("gauge", ("adapter", "modality")),
    "crossguard_probe_outcome_ratio": ("gauge", ("adapter", "family", "modality", "outcome")),
    "crossguard_probe_runs_total": ("counter", ("status",)),
    "crossguard_probe_last_run_timestamp_seconds": ("gauge", ()),
    "crossguard_adapter_info": ("gauge", ("adapter", "base_model")),
    "crossguard_adapter_promotions_total": ("counter", ("result",)),
    "crossguard_default_adapter_info": ("gauge", ("adapter",)),
    "crossguard_canary_share_ratio": ("gauge", ("candidate",)),
    "crossguard_gate_value": ("gauge", ("candidate", "rule")),
    "crossguard_gate_passed": ("gauge", ("candidate", "rule")),
}
METRICS = [metrics.CHAT_RESPONSES, metrics.GENERATED_TOKENS, metrics.PROBE_ASR,
           metrics.PROBE_FALSE_REFUSAL, metrics.PROBE_OUTCOMES, metrics.PROBE_RUNS,
           metrics.PROBE_LAST_RUN,
           metrics.ADAPTER_INFO, metrics.PROMOTIONS, metrics.DEFAULT_ADAPTER,
           metrics.CANARY_SHARE, metrics.GATE_VALUE, metrics.GATE_PASSED]


def exported_names() -> set[str]:
    """Sample names Prometheus sees for every crossguard metric."""
    return {m._name + ("_total" if m._type == "counter" else "") for m in METRICS}


def test_names_types_and_labels_are_final():
    assert {
        m._name + ("_total" if m._type == "counter" else ""): (m._type, tuple(m._labelnames))
        for m in METRICS
    } == FINAL
    module_metrics = [v for v in vars(metrics).values()
                      if isinstance(v, (Counter, Gauge, Histogram, Summary))]
    assert len(module_metrics) == len(METRICS)


def test_gauges_declare_how_workers_merge():
    assert metrics.PROBE_ASR._multiprocess_mode == "mostrecent"
    assert metrics.PROBE_FALSE_REFUSAL._multiprocess_mode == "mostrecent"
    assert metrics.PROBE_LAST_RUN._multiprocess_mode == "max"
    assert metrics.ADAPTER_INFO._multiprocess_mode == "livemax"
    assert metrics.DEFAULT_ADAPTER._multiprocess_mode == "livemax"
    assert metrics.CANARY_SHARE._multiprocess_mode == "livemax"
    assert metrics.GATE_VALUE._multiprocess_mode == "mostrecent"
    assert metrics.GATE_PASSED._multiprocess_mode == "mostrecent"


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_record_chat_response_counts_outcome_and_tokens():
    labels = dict(adapter="t-chat", modality="image")
    metrics.declare_adapter("t-chat", "demo")
    assert REGISTRY.get_sample_value(
        "crossguard_chat_responses_total", {**labels, "outcome": "refused"}) == 0.0
    metrics.record_chat_response("t-chat", "image", refused=True, completion_tokens=7)
    metrics.record_chat_response("t-chat", "image", refused=False, completion_tokens=5)
    assert value("crossguard_chat_responses_total", **labels, outcome="refused") == 1
    assert value("crossguard_chat_responses_total", **labels, outcome="answered") == 1
    assert value("crossguard_generated_tokens_total", adapter="t-chat") == 12
    assert value("crossguard_adapter_info", adapter="t-chat", base_model="demo") == 1
    metrics.retire_adapter("t-chat", "demo")
    assert value("crossguard_adapter_info", adapter="t-chat", base_model="demo") == 0


def result(adapter: str, family: str, modality: str, score: float | None,
           kind: str = "attack") -> Result:
    """One judged attempt; for `kind="benign"` a score of 1.0 is a refused harmless request."""
    return Result(adapter=adapter, probe=f"t-{family}", family=family, modality=modality,
                  behavior="b", category="c", prompt="p", image_text=None, response="r",
                  score=score, decided_by=None if score is None else "keyword",
                  scores={"keyword": score}, completion_tokens=1, seconds=0.0, kind=kind)


def probe_report(results: list[Result], finished_at: float) -> Report:
    return Report(model="demo", judges={"keyword": "keyword"}, started_at=finished_at - 1,
                  finished_at=finished_at, results=results)


def test_record_probe_report_publishes_gauges_counter_and_time():
    report = probe_report([
        *(result("t-probe", "figstep", "image", s) for s in (1.0, 0.0, 0.0, 0.0)),
        result("t-probe", "direct", "text", None),
        # Over-refusal probes: harmless look-alikes, refused (1.0) or answered (0.0).
        *(result("t-probe", "over_refusal", "text", s, kind="benign") for s in (1.0, 0.0)),
        *(result("t-probe", "over_refusal", "image", s, kind="benign")
          for s in (0.0, 0.0, 0.0, 0.0)),
        result("t-probe-unjudged", "over_refusal", "text", None, kind="benign"),
    ], finished_at=1234.0)
    metrics.declare_probe_runs()
    runs = value("crossguard_probe_runs_total", status="success")
    metrics.record_probe_report(report)
    asr = "crossguard_probe_attack_success_ratio"
    assert value(asr, adapter="t-probe", family="figstep", modality="image") == 0.25
    assert REGISTRY.get_sample_value(
        asr, {"adapter": "t-probe", "family": "direct", "modality": "text"}) is None
    assert REGISTRY.get_sample_value(
        asr, {"adapter": "t-probe", "family": "over_refusal", "modality": "text"}) is None, \
        "benign results are no attack"
    fr = "crossguard_probe_false_refusal_ratio"
    assert REGISTRY.get_sample_value(fr, {"adapter": "t-probe", "modality": "text"}) == 0.5
    assert REGISTRY.get_sample_value(fr, {"adapter": "t-probe", "modality": "image"}) == 0.0
    assert REGISTRY.get_sample_value(
        fr, {"adapter": "t-probe-unjudged", "modality": "text"}) is None
    assert value("crossguard_probe_runs_total", status="success") == runs + 1
    assert value("crossguard_probe_last_run_timestamp_seconds") == 1234.0
    failures = value("crossguard_probe_runs_total", status="failure")
    metrics.record_probe_failure()
    assert value("crossguard_probe_runs_total", status="failure") == failures + 1
    assert value("crossguard_probe_last_run_timestamp_seconds") == 1234.0



def test_record_probe_report_publishes_the_share_of_every_outcome():
    """complied / refused / other per cell, attack and over-refusal probes alike; a cell whose
    results carry no outcome (a report from before outcomes) publishes none."""
    from dataclasses import replace

    outcomes = ["complied", "refused", "other", "other"]
    report = probe_report([
        *(replace(result("t-out", "typographic", "image", 1.0), outcome=o) for o in outcomes),
        replace(result("t-out", "over_refusal", "text", 0.0, kind="benign"), outcome="complied"),
        result("t-out", "direct", "text", 0.0),
    ], finished_at=99.0)
    metrics.record_probe_report(report)
    name = "crossguard_probe_outcome_ratio"
    image = dict(adapter="t-out", family="typographic", modality="image")
    assert value(name, **image, outcome="complied") == 0.25
    assert value(name, **image, outcome="refused") == 0.25
    assert value(name, **image, outcome="other") == 0.5
    assert value(name, adapter="t-out", family="over_refusal", modality="text",
                 outcome="complied") == 1.0
    assert REGISTRY.get_sample_value(name, dict(adapter="t-out", family="direct",
                                                modality="text", outcome="other")) is None


WORKER = textwrap.dedent("""
    import sys
    from service import metrics
    from service.probes.report import Report, Result
    worker, asr, stamp = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    metrics.declare_adapter("unlearned", "demo")
    metrics.record_chat_response("unlearned", "text", refused=True, completion_tokens=10)
    def result(family, score, kind):
        return Result(adapter="unlearned", probe=family, family=family, modality="image",
                      behavior="b", category="c", prompt="p", image_text=None, response="r",
                      score=score, decided_by="keyword", scores={"keyword": score},
                      completion_tokens=1, seconds=0.0, kind=kind)
    # 4 attempts per kind: the ASR and the false-refusal rate both equal `asr`.
    hits = round(4 * asr)
    results = [result(family, float(i < hits), kind) for i in range(4)
               for family, kind in (("figstep", "attack"), ("over_refusal", "benign"))]
    metrics.record_probe_report(Report(model="demo", judges={"keyword": "keyword"},
                                       started_at=stamp - 1, finished_at=stamp,
                                       results=results))
""")
COLLECT = textwrap.dedent("""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    print(generate_latest(registry).decode())
""")


def test_metrics_merge_across_worker_processes(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def python(code: str, *args: str) -> str:
        out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    python(WORKER, "a", "0.5", "2000")
    python(WORKER, "b", "0.25", "1000")
    exposition = python(COLLECT)
    lines = set(exposition.splitlines())
    assert ('crossguard_chat_responses_total{adapter="unlearned",modality="text",'
            'outcome="refused"} 2.0') in lines
    assert 'crossguard_generated_tokens_total{adapter="unlearned"} 20.0' in lines
    assert 'crossguard_probe_runs_total{status="success"} 2.0' in lines
    assert ('crossguard_probe_attack_success_ratio{adapter="unlearned",family="figstep",'
            'modality="image"} 0.25') in lines, "mostrecent: the run that finished last"
    assert ('crossguard_probe_false_refusal_ratio{adapter="unlearned",modality="image"} 0.25'
            in lines), "mostrecent: the run that finished last"
    assert "crossguard_probe_last_run_timestamp_seconds 2000.0" in lines
