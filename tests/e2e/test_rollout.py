"""Promotion gate, canary and the operator page on a real `bentoml serve` of the tiny model.

The tiny model's probe panel is the keyword judge alone, so `accuracy_drop` and `other_share`
measure nothing: by default they fail (a gate never passes on an empty cell); the servers
that must pass skip them by setting, as an operator of a hub model would. The demo's version,
with the payload judge and real adapters, is tests/e2e/test_rollout_demo.py.
"""

import contextlib
import signal
import threading
import time

import httpx
import psutil
import pytest

from bench.server import BentoServer
from tests.e2e.test_faults import samples

pytestmark = pytest.mark.e2e

ADMIN = "rollout-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
BATTERY = {"CROSSGUARD_ADMIN_TOKEN": ADMIN, "CROSSGUARD_PROBES": "direct,best_of_n,over_refusal",
           "CROSSGUARD_PROBE_PER_PROBE": "2", "CROSSGUARD_PROBE_BEST_OF_N": "2",
           "CROSSGUARD_PROBE_TEMPERATURE": "0.01",
           "CROSSGUARD_PROBE_MAX_TOKENS": "4"}
LENIENT = {"CROSSGUARD_GATE_MAX_FALSE_REFUSAL": "1",
           "CROSSGUARD_GATE_SKIP": "accuracy_drop,other_share"}
"""What the `refuse` adapter (a refusal to everything) meets: no attack succeeds, and every
look-alike is refused (false refusals 100 %). Best-of-N samples near greedy (temperature 0.01):
at 1.0 the tiny adapter's samples are noise, which the keyword judge counts as compliance."""


def served(tiny_model, reply_adapter, tmp_path, **env):
    return BentoServer({"CROSSGUARD_MODEL": str(tiny_model),
                        "CROSSGUARD_ADAPTERS": f"refuse={reply_adapter},twin={reply_adapter}",
                        **BATTERY, **env}, tmp_path)


def post(server, path: str, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1{path}", headers=AUTH, json=body or None, timeout=300)


def state(server) -> dict:
    return httpx.get(f"{server.url}/v1/rollout", headers=AUTH, timeout=10).json()


def answered_by(server, **extra) -> str:
    """The adapter that answered a request naming no model (`x-crossguard-adapter`)."""
    headers = extra.pop("headers", {})
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **extra}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers,
                          timeout=60)
    assert response.status_code == 200, response.text
    return response.headers["x-crossguard-adapter"]


def test_default_gate_refuses_an_over_refusing_adapter_and_keeps_the_default(
        tiny_model, reply_adapter, tmp_path):
    with served(tiny_model, reply_adapter, tmp_path) as server:
        response = post(server, "/adapters/refuse/promote")
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["error"]["code"] == "gate_failed"
        verdict = body["verdict"]
        failed = {c["rule"] for c in verdict["checks"] if not c["passed"]}
        # refuses every look-alike; the keyword judge alone measures no accuracy nor `other`
        assert failed == {"false_refusal", "accuracy_drop", "other_share"}, verdict["checks"]
        assert next(c for c in verdict["checks"] if c["rule"] == "false_refusal")["value"] == 1
        assert verdict["passed"] is False and verdict["promoted"] is False
        assert verdict["split"] == "validation" and verdict["report"]["split"] == "validation"
        assert state(server)["default"] == "base" and answered_by(server) == "base"
        saved = httpx.get(f"{server.url}/v1/probes/gate", headers=AUTH, timeout=10).json()
        assert saved["checks"] == verdict["checks"]
        assert samples(server, "crossguard_adapter_promotions_total")[
            (("result", "rejected"),)] == 1
        passed = samples(server, "crossguard_gate_passed")
        assert passed[(("candidate", "refuse"), ("rule", "false_refusal"))] == 0
        assert passed[(("candidate", "refuse"), ("rule", "worst_family_asr"))] == 1
        value = samples(server, "crossguard_gate_value")
        assert value[(("candidate", "refuse"), ("rule", "false_refusal"))] == 1
        assert (("candidate", "refuse"), ("rule", "accuracy_drop")) not in value
        assert samples(server, "crossguard_default_adapter_info")[(("adapter", "base"),)] == 1
        # a failing candidate stays loaded and reachable by name
        assert answered_by(server, model="refuse") == "refuse"


def test_bad_rollout_requests_get_clear_4xx(tiny_model, reply_adapter, tmp_path):
    with served(tiny_model, reply_adapter, tmp_path, CROSSGUARD_DEFAULT_ADAPTER="refuse") as s:
        cases = [
            ("/adapters/nope/promote", {}, 404, "model_not_found"),
            ("/adapters/base/promote", {}, 400, "base_not_adapter"),
            ("/adapters/refuse/promote", {}, 400, "already_default"),
            ("/rollout/canary", {"candidate": "base", "percent": 25}, 400, "base_not_adapter"),
            ("/rollout/canary", {"candidate": "nope", "percent": 25}, 404, "model_not_found"),
            ("/rollout/canary", {"candidate": "twin", "percent": 0}, 400, None),
            ("/rollout/canary", {"candidate": "twin", "percent": 101}, 400, None),
            ("/rollout/canary/promote", {}, 404, "no_canary"),
        ]
        for path, body, status, code in cases:
            response = post(s, path, **body)
            assert response.status_code == status, (path, response.text)
            assert "error" in response.json()
            if code:
                assert response.json()["error"]["code"] == code, (path, response.text)
        response = httpx.delete(f"{s.url}/v1/adapters/refuse", headers=AUTH, timeout=10)
        assert response.status_code == 409 and response.json()["error"]["code"] == \
            "adapter_in_use"
        assert httpx.post(f"{s.url}/v1/adapters/twin/promote", timeout=10).status_code == 401
        assert s.process.poll() is None and state(s)["default"] == "refuse"


def test_a_passing_gate_promotes_and_a_second_promote_meanwhile_is_refused(
        tiny_model, reply_adapter, tmp_path):
    with served(tiny_model, reply_adapter, tmp_path, **LENIENT,
                CROSSGUARD_DEFAULT_ADAPTER="refuse") as server:
        first: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: first.append(
            post(server, "/adapters/twin/promote")))
        worker.start()
        while state(server)["promoting"] != "twin":
            assert worker.is_alive(), first[0].text
            time.sleep(0.01)
        second = post(server, "/adapters/twin/promote")
        assert second.status_code == 409, second.text
        assert second.json()["error"]["code"] == "promotion_in_progress"
        worker.join()
        assert first[0].status_code == 200, first[0].text
        verdict = first[0].json()
        assert verdict["passed"] and verdict["promoted"] and verdict["incumbent"] == "refuse"
        skipped = {c["rule"] for c in verdict["checks"] if "skipped" in c["detail"]}
        assert skipped == {"accuracy_drop", "other_share"}
        assert state(server)["default"] == "twin" and answered_by(server) == "twin"
        info = samples(server, "crossguard_default_adapter_info")
        assert info[(("adapter", "twin"),)] == 1 and info[(("adapter", "refuse"),)] == 0
        assert samples(server, "crossguard_adapter_promotions_total")[
            (("result", "promoted"),)] == 1
        page = httpx.get(f"{server.url}/v1/probes/report.html", headers=AUTH, timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "twin" in page.text and "<script" not in page.text
        assert httpx.get(f"{server.url}/v1/probes/report.html", timeout=10).status_code == 401


def test_canary_routes_its_share_sticky_per_client_then_rolls_back(tiny_model, reply_adapter,
                                                                  tmp_path):
    with served(tiny_model, reply_adapter, tmp_path, CROSSGUARD_DEFAULT_ADAPTER="refuse") as s:
        started = post(s, "/rollout/canary", candidate="twin", percent=25)
        assert started.status_code == 200, started.text
        assert started.json()["canary"]["candidate"] == "twin"
        assert post(s, "/rollout/canary", candidate="twin", percent=5).status_code == 409
        first = {f"user-{i}": answered_by(s, user=f"user-{i}") for i in range(400)}
        share = sum(a == "twin" for a in first.values()) / len(first)
        assert 0.18 <= share <= 0.32, share  # 400 clients: 25 % ± 4.6 binomial sd
        again = {user: answered_by(s, user=user) for user in list(first)[:40]}
        assert again == {user: first[user] for user in again}  # sticky per client
        header = [answered_by(s, headers={"x-crossguard-client": "k7"}) for _ in range(10)]
        assert len(set(header)) == 1
        assert answered_by(s, model="refuse") == "refuse"  # a named model is never rerouted
        assert samples(s, "crossguard_canary_share_ratio")[(("candidate", "twin"),)] == 0.25
        routed = [*first.values(), *again.values(), *header]
        counted = samples(s, "crossguard_chat_responses_total")
        assert sum(v for k, v in counted.items() if ("adapter", "twin") in k) == \
            routed.count("twin")  # live metrics see the canary under its own label
        ended = post(s, "/rollout/canary/rollback")
        assert ended.status_code == 200 and ended.json()["canary"] is None
        assert {answered_by(s, user=u) for u in first} == {"refuse"}
        assert samples(s, "crossguard_canary_share_ratio")[(("candidate", "twin"),)] == 0
        assert samples(s, "crossguard_adapter_promotions_total")[
            (("result", "rolled_back"),)] == 1


def test_canary_promotion_reruns_the_gate_and_a_failure_rolls_back(tiny_model, reply_adapter,
                                                                   tmp_path):
    with served(tiny_model, reply_adapter, tmp_path, CROSSGUARD_DEFAULT_ADAPTER="refuse",
                CROSSGUARD_CANARY_ADAPTER="twin", CROSSGUARD_CANARY_PERCENT="50") as s:
        assert state(s)["canary"]["percent"] == 50
        response = post(s, "/rollout/canary/promote")
        assert response.status_code == 409 and response.json()["verdict"]["candidate"] == "twin"
        assert state(s) == {"default": "refuse", "canary": None, "promoting": None,
                            "gate": "on"}


def test_gate_off_promotes_unchecked_and_says_so(tiny_model, reply_adapter, tmp_path):
    with served(tiny_model, reply_adapter, tmp_path, CROSSGUARD_GATE="off") as server:
        response = post(server, "/adapters/refuse/promote")
        assert response.status_code == 200 and response.json()["gate"] == "off"
        assert state(server)["default"] == "refuse"
        assert "PROMOTING 'refuse' WITHOUT THE GATE" in server.log()
        page = httpx.get(f"{server.url}/v1/probes/report.html", headers=AUTH, timeout=10)
        assert page.status_code == 200 and "GATE OFF" in page.text
        assert samples(server, "crossguard_adapter_promotions_total")[
            (("result", "forced"),)] == 1


def test_startup_promotion_runs_the_gate(tiny_model, reply_adapter, tmp_path):
    with served(tiny_model, reply_adapter, tmp_path, **LENIENT,
                CROSSGUARD_PROMOTE="twin") as server:
        deadline = time.monotonic() + 120
        while state(server)["default"] != "twin":
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.2)
        assert httpx.get(f"{server.url}/v1/probes/gate", headers=AUTH,
                         timeout=10).json()["passed"]


def test_a_worker_killed_mid_gate_leaves_the_default(tiny_model, reply_adapter, tmp_path):
    slow = {"CROSSGUARD_PROBE_PER_PROBE": "6", "CROSSGUARD_PROBE_MAX_TOKENS": "64"}
    with served(tiny_model, reply_adapter, tmp_path, **LENIENT, **slow,
                CROSSGUARD_DEFAULT_ADAPTER="refuse") as server:
        def promote():
            with contextlib.suppress(httpx.HTTPError):  # the worker dies under this request
                post(server, "/adapters/twin/promote")

        threading.Thread(target=promote, daemon=True).start()
        while state(server)["promoting"] != "twin":
            time.sleep(0.01)
        victim = next(p for p in psutil.Process(server.process.pid).children(recursive=True)
                      if "_bentoml_impl.worker" in " ".join(p.cmdline()))
        victim.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not server.answers("/readyz"):
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.25)
        assert state(server)["default"] == "refuse" and answered_by(server) == "refuse"
        assert httpx.get(f"{server.url}/v1/probes/gate", headers=AUTH,
                         timeout=10).status_code == 404
