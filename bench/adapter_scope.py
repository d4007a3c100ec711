"""What serving an adapter scoped to the reply (peft's Activated LoRA) costs over plain LoRA.

The same adapter weights are served twice: as saved, and as a twin whose `adapter_config.json`
scopes it to the reply (`alora_invocation_tokens` = the chat template's generation prompt), so
only the scope differs. Three workloads, interleaved round by round so that machine noise hits
the compared paths alike, each timed through `VLMEngine` (prompt building, batching, adapter
routing, decoding): one request at a time, a batch whose rows all use the adapter, and a mixed
batch (adapter rows beside base rows, peft's per-row dispatch). Printed: p50 per path and the
scoped / plain ratios.

    python -m bench.adapter_scope [--model PATH] [--adapter PATH] [--tokens 32] [--rounds 20]
                                  [--batch 16]

Defaults: the demo model and its `safety` adapter (built or copied in by `unlearning.demo`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from service.vlm.admission import Admission
from service.vlm.engine import VLMEngine
from service.vlm.folders import AdapterFolder
from service.vlm.messages import Message
from service.vlm.prompts import generation_prompt_ids
from service.vlm.protocol import SamplingParams

PROMPTS = ("how do i bake a cake ?", "what is two plus three ?", "what color is the sky ?",
           "name the capital of france .")


def twins(adapter: Path, processor, folder: Path) -> dict[str, Path]:
    """The adapter without and with a reply scope, same weights (copies under `folder`)."""
    out = {}
    for scope in ("plain", "scoped"):
        target = folder / scope
        shutil.copytree(adapter, target, ignore=shutil.ignore_patterns("checkpoints", "eval"))
        config_file = AdapterFolder(target).config_file
        config = json.loads(config_file.read_text())
        scoped = scope == "scoped"
        config["alora_invocation_tokens"] = generation_prompt_ids(processor) if scoped else None
        config["task_type"] = "CAUSAL_LM" if scoped else None
        config_file.write_text(json.dumps(config))
        out[scope] = target
    return out


def demo_safety() -> tuple[str, str]:
    """The demo model and its seed-0 `safety` adapter, as `unlearning.demo` provides them."""
    def last_line(command: str) -> str:
        out = subprocess.run([sys.executable, "-m", "unlearning.demo", command], check=True,
                             stdout=subprocess.PIPE, text=True)
        return out.stdout.strip().splitlines()[-1]

    return last_line("build"), last_line("safety")


def workloads(engine: VLMEngine, params: SamplingParams, batch: int):
    """name -> a function timing one round of that workload for an adapter name."""
    def one(adapter: str) -> float:
        start = time.perf_counter()
        engine.admission.expect_rows(1)
        engine.generate([Message.of("user", PROMPTS[0])], params, adapter)
        return time.perf_counter() - start

    def together(adapters: list[str | None]) -> float:
        start = time.perf_counter()
        engine.admission.expect_rows(len(adapters))
        streams = [engine.submit([Message.of("user", PROMPTS[i % len(PROMPTS)])], params, a)[0]
                   for i, a in enumerate(adapters)]
        for stream in streams:
            stream.result()
        return time.perf_counter() - start

    return {
        "one request": one,
        f"batch of {batch}, all adapter": lambda a: together([a] * batch),
        f"batch of {batch}, half base": lambda a: together([a, None] * (batch // 2)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: the demo model")
    parser.add_argument("--adapter", type=Path, default=None,
                        help="default: the demo's safety adapter")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if (args.model is None) != (args.adapter is None):
        parser.error("give --model and --adapter together, or neither (the demo's)")
    model, adapter = (args.model, args.adapter) if args.model else demo_safety()
    params = SamplingParams(max_tokens=args.tokens, min_tokens=args.tokens, temperature=0.0)
    with tempfile.TemporaryDirectory(prefix="adapter-scope-") as tmp:
        from transformers import AutoProcessor

        paths = twins(Path(adapter), AutoProcessor.from_pretrained(model), Path(tmp))
        engine = VLMEngine.from_pretrained(
            model, adapters=paths,
            admission=BatchAdmission(max_batch_size=args.batch, batch_wait_s=0.05))
        runs = workloads(engine, params, args.batch)
        samples = {(w, s): [] for w in runs for s in paths}
        for round_ in range(args.rounds + 1):
            for name, run in runs.items():
                for scope in paths:
                    seconds = run(scope)
                    if round_:  # the first round warms up
                        samples[(name, scope)].append(seconds)
    print(f"model={model} adapter={adapter} tokens={args.tokens} rounds={args.rounds}")
    for name in runs:
        plain, scoped = (statistics.median(samples[(name, s)]) * 1000 for s in paths)
        print(f"  {name:28s} plain p50 {plain:8.1f} ms  scoped p50 {scoped:8.1f} ms  "
              f"scoped / plain = {scoped / plain:.2f}")


class BatchAdmission(Admission):
    """Admission that holds a batch until the rows a workload submits together are queued, so
    every round decodes as one batch."""

    def expect_rows(self, rows: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self._batch)
            self._in_flight = rows


if __name__ == "__main__":
    main()
