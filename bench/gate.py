"""What a promotion gate costs: its wall time idle and under traffic, and what it does to chat
latency meanwhile, side by side on one real `bentoml serve`.

One server (the demo model, `safety` as default, the candidate loaded beside it) gets, in
turn: a closed-loop client alone (idle latency), a gate alone (idle gate time), then a gate
with the client running (gate time under traffic, latency during the gate). The gate's limits
are set to 0 so every run fails (409) and the default never moves: each repeat measures the
same work. A gate does not wait for idle time (scheduled probe runs do): its generations join
the running batches, one row each (`service.probe_scheduler`); this measures what that costs the
client and how much longer the gate takes beside it.

    python -m bench.gate --adapter PATH [--candidate PATH] [--model PATH] [--repeats 2]
                         [--seconds 20] [--probes SPEC,...] [--per-probe N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.load import p50_p95
from bench.server import BentoServer
from service.gate import Thresholds
from service.settings import ServiceSettings

ADMIN = "bench-gate-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHAT = {"messages": [{"role": "user", "content": "what is 2 plus 3?"}], "max_tokens": 32,
        "min_tokens": 32, "temperature": 0}
"""A harmless request answered by the default adapter, always 32 tokens."""


def chat_until(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """One closed-loop client: a request, its latency, the next, until `stop`."""
    with httpx.Client(timeout=300) as client:
        while not stop.is_set():
            start = time.perf_counter()
            response = client.post(f"{url}/v1/chat/completions", json=CHAT)
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)


def gate_seconds(url: str) -> float:
    """One gate run on `candidate` (made to fail): its own measured seconds."""
    response = httpx.post(f"{url}/v1/adapters/candidate/promote", headers=AUTH, timeout=900)
    assert response.status_code == 409, response.text
    return response.json()["verdict"]["seconds"]


def with_client(url: str, work) -> tuple[object, list[float]]:
    """`work()` while one client chats; its result and the client's latencies."""
    stop, latencies = threading.Event(), []
    client = threading.Thread(target=chat_until, args=(url, stop, latencies))
    client.start()
    try:
        return work(), latencies
    finally:
        stop.set()
        client.join()


def measure(url: str, seconds: float) -> dict:
    """One repeat: idle latency, idle gate, gate under traffic (latency during it)."""
    _, idle = with_client(url, lambda: time.sleep(seconds))
    alone = gate_seconds(url)
    loaded, during = with_client(url, lambda: gate_seconds(url))
    return {"idle": sorted(idle), "gate_alone": alone, "gate_loaded": loaded,
            "during": sorted(during)}


def report(repeats: list[dict]) -> list[str]:
    lines = [f"  {'repeat':>6} {'gate idle s':>11} {'gate+client s':>13} {'ratio':>6} "
             f"{'chat p50 idle':>13} {'p50 in gate':>11} {'ratio':>6} {'p95 in gate':>11} "
             f"{'chats in gate':>13}"]
    for i, r in enumerate(repeats, start=1):
        idle, during = p50_p95(r["idle"]), p50_p95(r["during"])
        lines.append(
            f"  {i:6d} {r['gate_alone']:11.1f} {r['gate_loaded']:13.1f} "
            f"{r['gate_loaded'] / r['gate_alone']:6.2f} {1000 * idle[0]:10.0f} ms "
            f"{1000 * during[0]:8.0f} ms {during[0] / idle[0]:6.2f} {1000 * during[1]:8.0f} ms "
            f"{len(r['during']):13d}")
    return lines


def server_env(args: argparse.Namespace) -> dict[str, str]:
    never = {f"CROSSGUARD_GATE_{f.upper()}": "0" for f in vars(Thresholds())}
    return {**never, "CROSSGUARD_MODEL": args.model, "CROSSGUARD_ADMIN_TOKEN": ADMIN,
            "CROSSGUARD_ADAPTERS": f"safety={args.adapter},candidate={args.candidate}",
            "CROSSGUARD_DEFAULT_ADAPTER": "safety", "CROSSGUARD_PROBES": args.probes,
            "CROSSGUARD_PROBE_PER_PROBE": str(args.per_probe)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="the default adapter's folder")
    parser.add_argument("--candidate", default=None, help="the gated adapter's folder "
                        "(default: the default adapter's, loaded a second time)")
    parser.add_argument("--model", default=None, help="model folder (default: the service's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="idle latency window")
    parser.add_argument("--probes", default="all", metavar="SPEC,...")
    parser.add_argument("--per-probe", type=int, default=ServiceSettings().probe_per_probe)
    args = parser.parse_args(argv)
    args.model = args.model or ServiceSettings().model_path
    args.candidate = args.candidate or args.adapter
    with tempfile.TemporaryDirectory() as work, \
            BentoServer(server_env(args), Path(work), timeout_s=300) as server:
        repeats = [measure(server.url, args.seconds) for _ in range(args.repeats)]
    print(f"gate on {Path(args.model).name}: probes {args.probes}, {args.per_probe} per probe, "
          "base + default + candidate")
    print("\n".join(report(repeats)))
    print(json.dumps({"repeats": [{k: v for k, v in r.items() if "gate" in k}
                                  for r in repeats]}))


if __name__ == "__main__":
    main()
