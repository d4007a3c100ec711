"""Soak: one real `bentoml serve` under steady mixed load for a bounded time, on loopback.

The demo model with its `safety` adapter, batching on (default settings). `--clients`
closed-loop clients cycle through text and image requests on the base model and the adapter
(text/base, image/safety, text/safety, image/base), each starting at a different point of the
cycle so that batches mix modalities and adapters; every reply is exactly `--max-tokens` tokens
(`min_tokens`). Every request's outcome is kept: it is lost on a connection error or timeout, a
status other than 200, or a body that is not a complete chat completion of `--max-tokens`
tokens. The server's RSS (its whole process tree: arbiter and workers) is sampled every
`--rss-every-s`. After `--warmup-s` of load, `--minutes` are measured.

Goals: 0 lost requests (warm-up included); RSS growth from the end of warm-up to the end
<= 10 %; p50 latency of the last minute within 20 % of the first minute after warm-up (either
way). Prints a line per minute and a summary, writes the summary as JSON with `--out`, and
exits 1 when a goal fails. `--minute-s` shortens the "minutes" and `--no-check` exits 0 whatever
the goals say: a smoke run of seconds (tests/test_bench_runs.py), too short to hold them.

    python -m bench.soak --adapter PATH [--model PATH] [--minutes 10] [--clients 8]
                         [--warmup-s 60] [--out FILE] [--minute-s 60] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import httpx
from pydantic import ValidationError

from bench.load import p50_p95, tree_rss_bytes, workload_bodies
from bench.server import BentoServer
from service.schemas import ChatCompletionResponse
from service.settings import ServiceSettings

MAX_RSS_GROWTH = 0.10
MAX_P50_DRIFT = 0.20
MIB = 2**20


class Outcome(NamedTuple):
    end: float
    """Seconds from the start of the load to the reply (or the failure)."""
    latency: float
    status: int | str
    """HTTP status, or the name of the httpx exception."""
    complete: bool
    """A valid chat completion of the expected length."""

    @property
    def lost(self) -> bool:
        return self.status != 200 or not self.complete

    @property
    def label(self) -> str:
        return f"{self.status}" + ("" if self.complete or self.status != 200 else " incomplete")


def is_complete(body: bytes, max_tokens: int) -> bool:
    """Whether `body` is a whole chat completion of one choice and exactly `max_tokens` tokens
    (the requests set `min_tokens`, so a shorter reply was cut, e.g. by the generation timeout)."""
    try:
        reply = ChatCompletionResponse.model_validate_json(body)
    except ValidationError:
        return False
    return len(reply.choices) == 1 and reply.usage.completion_tokens == max_tokens


def soak_bodies(max_tokens: int, image_side: int) -> list[bytes]:
    """The load bench's text and image requests, each on the base model and on `safety`, in
    the order a client cycles through them (modality alternates every request)."""
    workloads = workload_bodies(max_tokens, image_side)
    text, image = json.loads(workloads["text"][0]), json.loads(workloads["image"][0])
    cycle = [(text, "base"), (image, "safety"), (text, "safety"), (image, "base")]
    return [json.dumps({**body, "model": model}).encode() for body, model in cycle]


def _client(url: str, bodies: list[bytes], first: int, t0: float, stop: threading.Event,
            args: argparse.Namespace, out: list[Outcome]) -> None:
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=args.timeout_s) as client:
        sent = first
        while not stop.is_set():
            start = time.perf_counter()
            try:
                response = client.post(f"{url}/v1/chat/completions", headers=headers,
                                       content=bodies[sent % len(bodies)])
                status = response.status_code
                complete = is_complete(response.content, args.max_tokens)
            except httpx.HTTPError as exc:
                status, complete = type(exc).__name__, False
            now = time.perf_counter()
            out.append(Outcome(now - t0, now - start, status, complete))
            sent += 1


def window(outcomes: list[Outcome], start: float, end: float) -> dict:
    """Requests finished in [start, end): count, lost, and p50/p95 of the complete ones (ms)."""
    inside = [o for o in outcomes if start <= o.end < end]
    p50, p95 = p50_p95(sorted(o.latency for o in inside if not o.lost))
    return {"requests": len(inside), "lost": sum(o.lost for o in inside),
            "p50_ms": p50 * 1000, "p95_ms": p95 * 1000}


def _progress(outcomes: list[Outcome], start: float, end: float, rss: int, name: str) -> None:
    w = window(list(outcomes), start, end)
    print(f"  {name:<10} {end:5.0f} s  requests {w['requests']:>5}  lost {w['lost']}  "
          f"p50 {w['p50_ms']:4.0f} ms  p95 {w['p95_ms']:4.0f} ms  RSS {rss / MIB:.0f} MiB",
          flush=True)


def run(server: BentoServer, args: argparse.Namespace) -> tuple[list, list, float]:
    """Load `server` for warm-up plus the measured minutes, sampling its RSS and printing a line
    per minute. Returns the outcomes, the RSS samples `(seconds, bytes)` and the seconds the
    load lasted (less than planned only if the server exited)."""
    bodies = soak_bodies(args.max_tokens, args.image_side)
    outcomes: list[Outcome] = []
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    total = args.warmup_s + args.minutes * args.minute_s
    marks = [args.warmup_s + args.minute_s * m for m in range(int(args.minutes) + 1)]
    marks = sorted({*(m for m in marks if 0 < m < total), total})
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_client, args=(server.url, bodies, i, t0, stop, args,
                                                      outcomes)) for i in range(args.clients)]
    for t in threads:
        t.start()
    previous, now = 0.0, 0.0
    try:
        while now < total and server.process.poll() is None:
            stop.wait(min(args.rss_every_s, marks[0] - now))
            now = time.perf_counter() - t0
            samples.append((now, tree_rss_bytes(server.process.pid)))
            if now >= marks[0]:
                minute = math.ceil((marks[0] - args.warmup_s) / args.minute_s)
                name = f"minute {minute}" if minute > 0 else "warm-up"
                _progress(outcomes, previous, marks[0], samples[-1][1], name)
                previous = marks.pop(0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return outcomes, samples, min(now, total)


def summarise(outcomes: list[Outcome], samples: list[tuple[float, int]], warmup_s: float,
              total_s: float, minute_s: float = 60.0) -> dict:
    """Totals, RSS after warm-up against the end, the first and last measured minutes (of
    `minute_s` seconds), and the goals met. RSS "after warm-up" is the first sample at or after
    `warmup_s`."""
    after = [rss for t, rss in samples if t >= warmup_s] or [0]
    growth = after[-1] / after[0] - 1 if after[0] else math.nan
    first = window(outcomes, warmup_s, warmup_s + minute_s)
    last = window(outcomes, max(warmup_s, total_s - minute_s), total_s)
    drift = last["p50_ms"] / first["p50_ms"] - 1
    lost = sum(o.lost for o in outcomes)
    goals = {
        "no lost requests": lost == 0,
        f"RSS growth <= {MAX_RSS_GROWTH:.0%}": growth <= MAX_RSS_GROWTH,
        f"|p50 drift| <= {MAX_P50_DRIFT:.0%}": abs(drift) <= MAX_P50_DRIFT,
    }
    return {
        "seconds": total_s,
        "requests": len(outcomes),
        "warmup_requests": sum(o.end < warmup_s for o in outcomes),
        "lost": lost,
        "by_status": dict(Counter(o.label for o in outcomes).most_common()),
        "rss_mib": {"after_warmup": after[0] / MIB, "end": after[-1] / MIB,
                    "peak": max(after) / MIB, "growth_pct": growth * 100},
        "first_minute": first,
        "last_minute": last,
        "p50_drift_pct": drift * 100,
        "goals": goals,
        "passed": all(goals.values()),
        "rss_samples": [(round(t, 1), round(rss / MIB, 1)) for t, rss in samples],
    }


def report(summary: dict, args: argparse.Namespace) -> None:
    rss, first, last = summary["rss_mib"], summary["first_minute"], summary["last_minute"]
    print(f"\nmodel={args.model} adapter={args.adapter} {args.clients} clients, "
          f"{args.warmup_s:.0f} s warm-up + {args.minutes:g} x {args.minute_s:g} s measured, "
          "loopback, "
          f"max_tokens={args.max_tokens} (fixed), image={args.image_side}px")
    print(f"requests {summary['requests']} ({summary['warmup_requests']} in warm-up), "
          f"lost {summary['lost']}; by status: "
          + ", ".join(f"{s} {n}" for s, n in summary["by_status"].items()))
    print(f"RSS (whole process tree): after warm-up {rss['after_warmup']:.0f} MiB, "
          f"end {rss['end']:.0f} MiB, growth {rss['growth_pct']:+.1f} %, "
          f"peak {rss['peak']:.0f} MiB")
    print(f"latency p50 / p95: first minute {first['p50_ms']:.0f} / {first['p95_ms']:.0f} ms "
          f"({first['requests']} requests), last minute {last['p50_ms']:.0f} / "
          f"{last['p95_ms']:.0f} ms ({last['requests']} requests); "
          f"p50 drift {summary['p50_drift_pct']:+.1f} %")
    print("goals: " + "; ".join(f"{goal} {'PASS' if ok else 'FAIL'}"
                                for goal, ok in summary["goals"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ServiceSettings().model_path)
    parser.add_argument("--adapter", required=True,
                        help="the safety adapter folder (`python -m unlearning.demo safety` "
                        "prints it)")
    parser.add_argument("--minutes", type=float, default=10,
                        help="measured after warm-up; at least 2, so that the first and the "
                        "last minute are distinct")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup-s", type=float, default=60)
    parser.add_argument("--rss-every-s", type=float, default=5)
    parser.add_argument("--timeout-s", type=float, default=60, help="per request")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--image-side", type=int, default=256)
    parser.add_argument("--out", type=Path, help="write the summary here as JSON")
    parser.add_argument("--minute-s", type=float, default=60,
                        help="seconds in a measured \"minute\"; shorter only for a smoke run")
    parser.add_argument("--no-check", action="store_true",
                        help="exit 0 whatever the goals say (a smoke run)")
    args = parser.parse_args()
    if args.minutes < 2 or args.warmup_s < 0 or args.clients < 1 or args.minute_s <= 0:
        parser.error("need --minutes >= 2, --warmup-s >= 0, --clients >= 1 and --minute-s > 0")

    with tempfile.TemporaryDirectory() as tmp, BentoServer(
        {"CROSSGUARD_MODEL": args.model, "CROSSGUARD_ADAPTERS": f"safety={args.adapter}"},
        Path(tmp), timeout_s=300,
    ) as server:
        outcomes, samples, seconds = run(server, args)
        exited = server.process.poll()
    summary = summarise(outcomes, samples, args.warmup_s, seconds, args.minute_s)
    if exited is not None:
        summary["goals"]["server kept running"] = summary["passed"] = False
    summary["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report(summary, args)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    sys.exit(0 if summary["passed"] or args.no_check else 1)


if __name__ == "__main__":
    main()
