import threading
import time

import pytest

from service.errors import Conflict, NotFound
from service.probe_scheduler import ProbeScheduler
from service.settings import ServiceSettings
from service.vlm.messages import Message
from service.vlm.protocol import SamplingParams


def scheduler(engine, tmp_path, **overrides) -> ProbeScheduler:
    options = {"probe_per_probe": 1, "probe_max_tokens": 48,
               "probes": ["direct", "roleplay", "figstep"], **overrides}
    settings = ServiceSettings(home=tmp_path / "home", **options)
    return ProbeScheduler(engine, settings, tmp_path / "run")


def test_run_now_saves_the_latest_report(engine, tmp_path):
    probes = scheduler(engine, tmp_path)
    with pytest.raises(NotFound):
        probes.latest()
    summary = probes.run_now(wait=True)
    assert probes.latest() == summary
    assert {c["key"]["adapter"] for c in summary["summary"]} == {"base", "refuse"}


def test_one_run_at_a_time(engine, tmp_path):
    probes = scheduler(engine, tmp_path, probe_max_tokens=200)
    assert probes.run_now(wait=False) is None
    with pytest.raises(Conflict, match="already in progress"):
        probes.run_now(wait=True)
    deadline = time.monotonic() + 120
    while probes._running.locked():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert probes.latest()["finished_at"] is not None


def test_user_requests_go_first(engine, tmp_path):
    """While a user request waits or decodes, the probe run makes no progress."""
    probes = scheduler(engine, tmp_path)
    with engine._model_lock:  # decoding is held up: the user request waits in the queue
        user = engine.submit([Message.of("user", "hi")], SamplingParams(max_tokens=4))[0]
        runner = threading.Thread(target=probes.run_now, args=(True,))
        runner.start()
        time.sleep(0.5)
        assert engine.busy and not probes.report_file.exists()
    assert user.result().completion_tokens >= 1
    runner.join(120)
    assert probes.latest()["finished_at"] is not None


def test_schedule_runs_by_itself(engine, tmp_path):
    probes = scheduler(engine, tmp_path, probe_interval_s=3600, probe_initial_delay_s=0.1)
    probes.start()
    try:
        deadline = time.monotonic() + 120
        while not probes.report_file.exists():
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        probes.stop()


@pytest.mark.parametrize("split, best_of_n, temperature", [("validation", 3, 0.7),
                                                            ("test", 2, 1.3)])
def test_runs_use_the_configured_split_best_of_n_and_temperature(
    engine, tmp_path, monkeypatch, split, best_of_n, temperature,
):
    """Every reply refuses, so best-of-N samples all N: the seeds show the half, the count
    N and the temperature; the behaviours and the saved report show the half too."""
    from service.probes import forms
    from service.probes.behaviors import BUILTIN, builtin
    from service.vlm.protocol import Generation
    from tests.probes.conftest import finished

    calls = []

    def refuse(requests):
        calls.extend((r.params, r.adapter) for r in requests)
        return [finished(Generation("I cannot help with that.", 4, 6, "stop")) for _ in requests]

    monkeypatch.setattr(engine, "submit_many", refuse)
    probes = scheduler(engine, tmp_path, probes=["sampling.BestOfNText"], probe_split=split,
                       probe_best_of_n=best_of_n, probe_temperature=temperature)
    summary = probes.run_now(wait=True)

    first = forms.SAMPLING_SEEDS[split]
    for adapter in (None, "refuse"):
        sampled = [params for params, a in calls if a == adapter]
        assert [p.seed for p in sampled] == list(range(first, first + best_of_n))
        assert {p.temperature for p in sampled} == {temperature}
        assert {p.max_tokens for p in sampled} == {48}
    assert summary["split"] == split
    behaviors = {e["behavior"] for cell in summary["summary"] for e in cell["examples"]}
    assert behaviors and behaviors <= {b.task for b in builtin(BUILTIN, split)}
    assert probes.latest()["split"] == split


def _failed_runs() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("crossguard_probe_runs_total", {"status": "failure"}) or 0.0


def test_a_full_disk_fails_the_run_cleanly_and_keeps_the_last_report(engine, tmp_path,
                                                                    monkeypatch, caplog):
    """ENOSPC while the report is saved: a counted failure with one log line naming the path,
    a JSON-renderable error for the caller, the previous report still served, the gauges
    untouched (they describe the same run as the report)."""
    import errno
    import os

    from prometheus_client import REGISTRY

    from service.errors import CrossguardError

    probes = scheduler(engine, tmp_path, probes=["direct"])
    first = probes.run_now(wait=True)
    published = REGISTRY.get_sample_value("crossguard_probe_last_run_timestamp_seconds")
    failures = _failed_runs()
    real_fdopen = os.fdopen

    def full(fd, *args, **kwargs):
        """A full disk: the temporary report file opens, its write fails (naming no file)."""
        if "probe-reports" not in os.readlink(f"/proc/self/fd/{fd}"):
            return real_fdopen(fd, *args, **kwargs)
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", full)
    with pytest.raises(CrossguardError) as raised:
        probes.run_now(wait=True)
    assert raised.value.code == "probe_run_failed" and "No space left" in raised.value.message
    assert _failed_runs() == failures + 1
    assert probes.latest() == first
    assert REGISTRY.get_sample_value("crossguard_probe_last_run_timestamp_seconds") == published
    logged = [r for r in caplog.records if r.getMessage().startswith("probe run failed")]
    assert logged and str(probes.kept_file) in logged[-1].getMessage()
    assert logged[-1].exc_info is None
    assert not list(probes.kept_file.parent.glob(f".{probes.kept_file.name}.*"))


def test_the_schedule_survives_a_failed_run(engine, tmp_path, monkeypatch):
    probes = scheduler(engine, tmp_path, probes=["direct"], probe_interval_s=0.05,
                       probe_initial_delay_s=0)
    failures = _failed_runs()
    runs = []

    def broken(*args, **kwargs):
        runs.append(1)
        raise RuntimeError("judge crashed")

    monkeypatch.setattr("service.probes.runner.ProbeRun", broken)
    probes.start()
    try:
        deadline = time.monotonic() + 30
        while len(runs) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        probes.stop()
    assert _failed_runs() >= failures + 3


def test_a_gate_waits_for_a_probe_run_but_not_for_idle_time(engine, tmp_path, monkeypatch):
    """`run_for` (the promotion gate) waits for a scheduled run instead of failing at once,
    answers 409 only past `GATE_WAITS_S`, and never waits for idle time (its generations join
    the users' batches: under steady traffic there is none)."""
    import service.probe_scheduler as module

    probes = scheduler(engine, tmp_path, probe_max_tokens=200)
    assert probes.run_now(wait=False) is None
    report = probes.run_for([None], "validation")  # waited for the scheduled-style run
    assert report.split == "validation" and {r.adapter for r in report.results} == {"base"}
    assert probes.latest()["finished_at"] is not None
    monkeypatch.setattr(module, "GATE_WAITS_S", 0.05)
    with probes._running, pytest.raises(Conflict, match="held the engine"):
        probes.run_for([None], "validation")
    monkeypatch.setattr(probes, "_yield_to_users",
                        lambda: pytest.fail("the gate waited for idle time"))
    assert probes.run_for(["refuse"], "validation").results  # never yields to users
