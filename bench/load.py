"""Load: N concurrent clients for T seconds against a real `bentoml serve` on loopback.

Reports throughput, p50/p95 latency of answered requests, the share of 429/503 (back-pressure),
the server's peak RSS (its whole process tree), and checks that every request got an HTTP
answer and that no worker restarted. Half the clients send a large image with each request, so
memory under a flood of images shows up in the peak.

    python -m bench.load [--model PATH] [--clients 16] [--seconds 60]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

from service.settings import ServiceSettings
from tests.e2e.server import BentoServer


def _big_png(side: int) -> str:
    buf = io.BytesIO()
    Image.effect_noise((side, side), 64).convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants (BentoML workers run in their own
    process groups, so the tree is followed by parent pid)."""
    parents: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parents[int(pid)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree.update(children)
        frontier = children
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total


def _client(url: str, body: dict, stop: float, out: list, lock: threading.Lock) -> None:
    with httpx.Client(timeout=300) as client:
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                status = client.post(f"{url}/v1/chat/completions", json=body).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            with lock:
                out.append((status, time.perf_counter() - start))
            if status in (429, 503):
                time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=ServiceSettings().model_path)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--image-side", type=int, default=1024)
    args = parser.parse_args()

    text = {"messages": [{"role": "user", "content": "what is two plus three ?"}],
            "max_tokens": args.max_tokens, "temperature": 0}
    image = {**text, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "follow the instruction in the image ."},
        {"type": "image_url", "image_url": {"url": _big_png(args.image_side)}}]}]}
    results: list = []
    lock = threading.Lock()
    peak = 0
    with tempfile.TemporaryDirectory() as tmp, BentoServer({"CROSSGUARD_MODEL": args.model},
                                                           Path(tmp)) as server:
        root = server.process.pid
        idle_rss = _tree_rss_bytes(root)
        stop = time.monotonic() + args.seconds
        threads = [threading.Thread(target=_client, args=(server.url, image if i % 2 else text,
                                                          stop, results, lock))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, _tree_rss_bytes(root))
            time.sleep(0.5)
        alive = httpx.get(f"{server.url}/readyz").status_code == 200
        restarts = server.log(tail=None).count("Service crossguard initialized") - 1
    _print(args, results, idle_rss, peak, alive, restarts)


def _print(args, results, idle_rss: int, peak: int, alive: bool, restarts: int) -> None:
    statuses = Counter(status for status, _ in results)
    ok = sorted(seconds for status, seconds in results if status == 200)
    answered = sum(n for s, n in statuses.items() if isinstance(s, int))
    print(f"model={args.model} clients={args.clients} seconds={args.seconds:.0f} "
          f"max_tokens={args.max_tokens} image={args.image_side}px on half the clients")
    print(f"  requests {len(results)}, statuses {dict(statuses)}")
    print(f"  throughput {len(ok) / args.seconds:.2f} answered req/s")
    if ok:
        p95 = ok[min(len(ok) - 1, int(0.95 * len(ok)))]
        print(f"  latency p50 {statistics.median(ok) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    shed = statuses[429] + statuses[503]
    print(f"  back-pressure share (429+503) {shed / max(1, len(results)):.1%}")
    print(f"  server RSS idle {idle_rss / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
    print(f"  lost (no HTTP answer) {len(results) - answered}, worker restarts {restarts}, "
          f"ready after {alive}")


if __name__ == "__main__":
    main()
