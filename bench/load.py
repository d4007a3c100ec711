"""Load: batched vs one-at-a-time decoding, side by side, against real `bentoml serve`s.

For each mode (`CROSSGUARD_MAX_BATCH_SIZE` 16, and 1 for one-at-a-time) one server runs the
demo model with its `safety` adapter; N closed-loop clients (1, 4, 16) send, for `--seconds`
each: text requests, image requests, and text requests alternating between the base model and
the adapter (mixed adapters). Every reply is exactly `--max-tokens` tokens (`min_tokens`), so
the modes do the same work. Prints throughput, p50/p95 latency, back-pressure, lost requests
and each server's peak RSS (its whole process tree), then batched / one-at-a-time ratios.

    python -m bench.load [--model PATH] [--adapter PATH] [--seconds 15] [--max-tokens 32]
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


def _noise_png(side: int) -> str:
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


def _client(url: str, bodies: list[dict], stop: float, out: list, lock: threading.Lock) -> None:
    with httpx.Client(timeout=300) as client:
        sent = 0
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                response = client.post(f"{url}/v1/chat/completions",
                                       json=bodies[sent % len(bodies)])
                status = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            sent += 1
            with lock:
                out.append((status, time.perf_counter() - start))
            if status in (429, 503):
                time.sleep(0.2)


def _workloads(args) -> dict[str, list[dict]]:
    fixed = {"max_tokens": args.max_tokens, "min_tokens": args.max_tokens, "temperature": 0}
    text = {"messages": [{"role": "user", "content": "what is two plus three ?"}], **fixed}
    image = {**fixed, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "follow the instruction in the image ."},
        {"type": "image_url", "image_url": {"url": _noise_png(args.image_side)}}]}]}
    return {"text": [text], "image": [image],
            "mixed adapters": [{**text, "model": "base"}, {**text, "model": "safety"}]}


def _measure(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    results: list = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=_client, args=(url, bodies, stop, results, lock))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = Counter(status for status, _ in results)
    ok = sorted(s for status, s in results if status == 200)
    return {
        "throughput": len(ok) / seconds,
        "p50": statistics.median(ok) if ok else float("nan"),
        "p95": ok[min(len(ok) - 1, int(0.95 * len(ok)))] if ok else float("nan"),
        "shed": statuses[429] + statuses[503],
        "lost": sum(n for s, n in statuses.items() if not isinstance(s, int)),
        "errors": sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500
                      and s != 503),
    }


def _run_mode(args, batch_size: int, tmp: Path) -> tuple[dict, int]:
    env = {"CROSSGUARD_MODEL": args.model, "CROSSGUARD_MAX_BATCH_SIZE": str(batch_size),
           "CROSSGUARD_ADAPTERS": f"safety={args.adapter}",
           "CROSSGUARD_MAX_WAITING": "64"}
    rows, peak = {}, 0
    workdir = tmp / f"batch-{batch_size}"
    workdir.mkdir()
    with BentoServer(env, workdir) as server:
        root = server.process.pid
        for workload, bodies in _workloads(args).items():
            _measure(server.url, bodies, 1, 1.0)  # warm-up
            for clients in args.clients:
                rows[workload, clients] = _measure(server.url, bodies, clients, args.seconds)
                peak = max(peak, _tree_rss_bytes(root))
                print(f"  batch size {batch_size:>2}  {workload:<14} {clients:>2} clients  "
                      f"{rows[workload, clients]['throughput']:6.2f} req/s", flush=True)
    return rows, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=ServiceSettings().model_path)
    parser.add_argument("--adapter", required=True, help="the safety adapter folder "
                        "(`python -m unlearning.demo safety` prints it)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--image-side", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        batched, batched_peak = _run_mode(args, 16, Path(tmp))
        alone, alone_peak = _run_mode(args, 1, Path(tmp))
    print(f"\nmodel={args.model} max_tokens={args.max_tokens} (fixed) "
          f"seconds={args.seconds:.0f} image={args.image_side}px")
    print("| workload | clients | batched req/s | one-at-a-time req/s | throughput ratio "
          "| batched p50 / p95 ms | one-at-a-time p50 / p95 ms | p50 ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for key, b in batched.items():
        a = alone[key]
        print(f"| {key[0]} | {key[1]} | {b['throughput']:.2f} | {a['throughput']:.2f} "
              f"| {b['throughput'] / a['throughput']:.2f}x | {b['p50'] * 1000:.0f} / "
              f"{b['p95'] * 1000:.0f} | {a['p50'] * 1000:.0f} / {a['p95'] * 1000:.0f} "
              f"| {b['p50'] / a['p50']:.2f}x |")
    shed = sum(r["shed"] for r in [*batched.values(), *alone.values()])
    lost = sum(r["lost"] + r["errors"] for r in [*batched.values(), *alone.values()])
    print(f"\npeak RSS: batched {batched_peak / 2**20:.0f} MiB, one-at-a-time "
          f"{alone_peak / 2**20:.0f} MiB; 429/503 answers {shed}; lost or 5xx {lost}")


if __name__ == "__main__":
    main()
