"""Faults on a real `bentoml serve`: two servers on one host, restarts, a worker killed
mid-request, a full or read-only `CROSSGUARD_HOME` (README "Operating it safely")."""

import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.server import BentoServer
from tests.conftest import REPLY

pytestmark = pytest.mark.e2e

ADMIN = "faults-admin-token-0123456789"
PROBES = {"CROSSGUARD_ADMIN_TOKEN": ADMIN, "CROSSGUARD_PROBES": "direct",
          "CROSSGUARD_PROBE_PER_PROBE": "1", "CROSSGUARD_PROBE_MAX_TOKENS": "8"}


def samples(server: BentoServer, name: str) -> dict[tuple, float]:
    """`name`'s samples on the server's /metrics, keyed by their sorted labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name}


def chat(server: BentoServer, model: str | None = None, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 8,
            **({"model": model} if model else {}), **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)


def run_probes(server: BentoServer) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/probes/run", params={"wait": "true"},
                      headers={"Authorization": f"Bearer {ADMIN}"}, timeout=300)


def probe_report(server: BentoServer) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/probes/report",
                     headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)


def test_two_servers_on_one_host_keep_their_own_metrics(tiny_model, reply_adapter, tmp_path):
    """Same BENTOML_HOME, as `make serve` twice gives: B's start used to empty the folder A's
    workers write to, so A showed none of its own traffic, only B's."""
    other_path = tmp_path / "tiny-b"
    other_path.symlink_to(tiny_model)
    shared = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = BentoServer({**shared, "CROSSGUARD_MODEL": str(tiny_model),
                     "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter}"}, tmp_path / "a")
    b = BentoServer({**shared, "CROSSGUARD_MODEL": str(other_path)}, tmp_path / "b")
    with a:
        assert all(chat(a, "refuse").status_code == 200 for _ in range(2))
        with b:
            assert chat(b).status_code == 200
            mine = samples(a, "crossguard_chat_responses_total")
            theirs = samples(b, "crossguard_chat_responses_total")
            a_info = samples(a, "crossguard_adapter_info")
            b_info = samples(b, "crossguard_adapter_info")
    served = {k: v for k, v in mine.items() if v}
    assert served == {(("adapter", "refuse"), ("modality", "text"), ("outcome", "refused")): 2}
    assert {k: v for k, v in theirs.items() if v} == {
        (("adapter", "base"), ("modality", "text"), ("outcome", "answered")): 1}
    assert not any(("adapter", "refuse") in k for k in theirs)
    assert {dict(k)["base_model"] for k in a_info} == {str(tiny_model)}
    assert {dict(k)["base_model"] for k in b_info} == {str(other_path)}


def test_probe_report_and_gauges_describe_this_servers_runs(tiny_model, reply_adapter,
                                                           tmp_path):
    """Before: after a restart the report endpoint served the previous process's report from
    disk while the gauges were empty. Now both describe this server's last run, or neither
    exists; the report is still kept in CROSSGUARD_HOME for people."""
    env = {"CROSSGUARD_MODEL": str(tiny_model), "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter}",
           **PROBES}
    with BentoServer(env, tmp_path) as server:
        assert probe_report(server).status_code == 404
        assert run_probes(server).status_code == 200
        report = probe_report(server).json()
        gauges = samples(server, "crossguard_probe_attack_success_ratio")
        stamp = samples(server, "crossguard_probe_last_run_timestamp_seconds")
    cells = {tuple(sorted(c["key"].items())): c["asr"] for c in report["summary"]
             if c["asr"] is not None}
    assert cells and gauges == pytest.approx(cells)
    assert list(stamp.values()) == [pytest.approx(report["finished_at"])]
    assert (tmp_path / "home" / "probe-reports" / "latest.json").is_file()

    with BentoServer(env, tmp_path) as restarted:
        missing = probe_report(restarted)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "no_probe_report"
        assert samples(restarted, "crossguard_probe_attack_success_ratio") == {}
        assert list(samples(restarted, "crossguard_probe_last_run_timestamp_seconds").values()) \
            == [0]


def _worker(server: BentoServer) -> psutil.Process:
    workers = [p for p in psutil.Process(server.process.pid).children(recursive=True)
               if "_bentoml_impl.worker" in " ".join(p.cmdline())]
    assert len(workers) == 1, workers
    return workers[0]


def test_a_worker_killed_mid_request_is_replaced_and_fails_closed_again(tiny_model,
                                                                       reply_adapter, tmp_path):
    """SIGKILL during a streamed and a non-streamed reply: both clients see the connection
    end (no hang); BentoML starts a new worker, which is not ready until the model and the
    safety adapter are loaded; then the default adapter answers again and no request is left
    counted as in progress."""
    env = {"CROSSGUARD_MODEL": str(tiny_model), "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter}",
           "CROSSGUARD_DEFAULT_ADAPTER": "refuse"}
    long = {"max_tokens": 480, "min_tokens": 480}
    with BentoServer(env, tmp_path) as server:
        victim = _worker(server)
        outcomes: dict[str, object] = {}

        def whole():
            started = time.monotonic()
            try:
                outcomes["whole"] = chat(server, **long).status_code
            except httpx.HTTPError as exc:
                outcomes["whole"] = type(exc).__name__
            outcomes["whole_s"] = time.monotonic() - started

        thread = threading.Thread(target=whole)
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "n": 4, **long}
        started = time.monotonic()
        with pytest.raises(httpx.HTTPError):
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                              timeout=120) as response:
                lines = response.iter_lines()
                assert response.status_code == 200 and next(lines).startswith("data:")
                thread.start()  # queued behind the stream's batch: surely in flight at the kill
                while sum(samples(server, "bentoml_service_request_in_progress").values()) < 2:
                    time.sleep(0.02)
                victim.send_signal(signal.SIGKILL)
                for _ in lines:
                    pass
        assert time.monotonic() - started < 60
        thread.join(120)
        assert outcomes["whole"] in ("RemoteProtocolError", "ReadError") \
            or 500 <= outcomes["whole"] < 600, outcomes
        assert outcomes["whole_s"] < 60

        readiness = []
        deadline = time.monotonic() + 120
        while not readiness or readiness[-1] != 200:
            assert time.monotonic() < deadline, server.log()
            try:
                readiness.append(httpx.get(f"{server.url}/readyz", timeout=1).status_code)
            except httpx.HTTPError:
                readiness.append(None)
            time.sleep(0.1)
        loaded = server.log(tail=None).count("with adapters ['refuse']")
        assert readiness[0] != 200 and loaded == 2, (readiness, server.log())
        assert _worker(server).pid != victim.pid

        reply = chat(server)
        assert reply.status_code == 200
        assert reply.headers["x-crossguard-adapter"] == "refuse"
        assert reply.json()["choices"][0]["message"]["content"].strip() == REPLY
        in_progress = samples(server, "bentoml_service_request_in_progress")
        assert in_progress and sum(in_progress.values()) == 0, in_progress


@contextmanager
def small_disk(folder, mode: str):
    """A 1 MiB tmpfs at `folder`, filled up (`full`) or mounted read-only; skipped where this
    user may not mount (CI and this machine run as root)."""
    folder.mkdir()
    options = "size=1m" + (",ro" if mode == "read-only" else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        if mode == "full":
            with open(folder / "filler", "wb") as filler, pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
                    os.fsync(filler.fileno())
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("mode", ["full", "read-only"])
def test_a_full_or_read_only_home_fails_probe_runs_not_chat(tiny_model, reply_adapter,
                                                            tmp_path, mode):
    env = {"CROSSGUARD_MODEL": str(tiny_model), "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter}",
           "CROSSGUARD_HOME": str(tmp_path / "home"), **PROBES}
    with small_disk(tmp_path / "home", mode), BentoServer(env, tmp_path) as server:
        failed = run_probes(server)
        assert failed.status_code == 500
        error = failed.json()["error"]
        assert error["code"] == "probe_run_failed", error
        assert ("No space left" if mode == "full" else "Read-only") in error["message"]
        runs = samples(server, "crossguard_probe_runs_total")
        assert runs == {(("status", "failure"),): 1, (("status", "success"),): 0}
        assert probe_report(server).status_code == 404
        assert samples(server, "crossguard_probe_attack_success_ratio") == {}
        assert chat(server, "refuse").json()["choices"][0]["message"]["content"].strip() == REPLY
        assert "probe run failed: [Errno" in server.log(tail=None)
        assert "Traceback" not in server.log(tail=None)
