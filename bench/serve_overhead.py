"""What the HTTP service adds on top of generating: p50 latency ratio, measured side by side.

Three paths on the same prompt, settings and thread count, interleaved round by round so that
machine noise hits them alike: raw `model.generate` (the model loaded on its own, as the engine
loads it), `VLMEngine.generate` (prompt building, adapter selection, decoding) and
`POST /v1/chat/completions` on a real `bentoml serve`.

    python -m bench.serve_overhead [--model PATH] [--tokens 32] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

from bench.server import BentoServer
from service.settings import ServiceSettings
from service.vlm.engine import VLMEngine
from service.vlm.loading import load_vlm
from service.vlm.messages import Message
from service.vlm.prompts import encode
from service.vlm.protocol import SamplingParams

PROMPT = "what is two plus three ?"


def _timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=ServiceSettings().model_path)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)

    engine = VLMEngine.from_pretrained(args.model)
    params = SamplingParams(max_tokens=args.tokens, min_tokens=args.tokens, temperature=0.0)
    messages = [Message.of("user", PROMPT)]
    model, processor, _ = load_vlm(str(args.model), device="cpu")
    inputs = encode(processor, messages).to(model.device)
    gen_kwargs = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "do_sample": False}

    def raw() -> int:
        with torch.inference_mode():
            output = model.generate(**inputs, **gen_kwargs)
        return output.shape[1] - inputs["input_ids"].shape[1]

    def direct() -> int:
        return engine.generate(messages, params).completion_tokens

    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": args.tokens,
            "min_tokens": args.tokens, "temperature": 0}
    env = {"CROSSGUARD_MODEL": str(args.model), "CROSSGUARD_CPU_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp, BentoServer(env, Path(tmp)) as server, \
            httpx.Client(base_url=server.url, timeout=120) as client:

        def http() -> int:
            response = client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

        paths = {"raw model.generate": raw, "engine.generate": direct, "HTTP /v1/chat": http}
        for fn in paths.values():
            fn()
        samples: dict[str, list[float]] = {name: [] for name in paths}
        tokens: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, fn in paths.items():
                seconds, tokens[name] = _timed(fn)
                samples[name].append(seconds)

    p50 = {name: statistics.median(s) * 1000 for name, s in samples.items()}
    print(f"model={args.model} threads={args.threads} rounds={args.rounds}")
    for name in paths:
        print(f"  {name:20s} p50 {p50[name]:8.2f} ms  ({tokens[name]} new tokens)")
    print(f"ratio HTTP / raw generate    = {p50['HTTP /v1/chat'] / p50['raw model.generate']:.3f}")
    print(f"ratio HTTP / engine.generate = {p50['HTTP /v1/chat'] / p50['engine.generate']:.3f}")
    print(f"ratio torch default threads ({default_threads}) / {args.threads} thread(s), raw "
          f"generate = {_thread_ratio(raw, default_threads, args.threads, args.rounds):.2f}")


def _thread_ratio(fn, default_threads: int, threads: int, rounds: int) -> float:
    """p50 of `fn` with torch's default thread count over p50 with `threads`, interleaved."""
    samples: dict[int, list[float]] = {default_threads: [], threads: []}
    for _ in range(max(5, rounds // 3)):
        for n in samples:
            torch.set_num_threads(n)
            samples[n].append(_timed(fn)[0])
    torch.set_num_threads(threads)
    return statistics.median(samples[default_threads]) / statistics.median(samples[threads])


if __name__ == "__main__":
    main()
