"""Wall time of the default probe suite, in total and per probe family.

The suite is what the service runs on schedule: every registered probe, the default sample of
behaviours (`service.probes.runner.DEFAULT_PER_PROBE`), the default judges, base model plus the
given adapters. It runs twice in one process: *cold* optimises the adversarial images (the first
run after start-up), *warm* reuses them from the in-memory cache (every later run). Goal: the
cold run within 60 s on 2 CPU cores with the demo model.

    python -m bench.probe_suite [--model PATH] [--adapter NAME=PATH ...] [--per-probe N]
                                [--probes SPEC,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from service.probes.report import Report
from service.probes.runner import DEFAULT_PER_PROBE, run
from service.settings import ServiceSettings
from service.vlm.engine import VLMEngine

GOAL_SECONDS = 60.0


def family_table(report: Report) -> list[str]:
    """One line per family and modality: generations, seconds (building + generating +
    judging) of the probes behind it, ASR. Probes are named by module and class
    (`adversarial.JailbreakInPieces`), so a probe's family and modality come from its
    results, not from its name."""
    cell_of = {r.probe: (r.family, r.modality) for r in report.results}
    seconds: dict[tuple[str, str], float] = {}
    for probe, spent in report.seconds_by_probe.items():
        if probe in cell_of:
            seconds[cell_of[probe]] = seconds.get(cell_of[probe], 0.0) + spent
    lines = [f"  {'family':22} {'modality':8} {'gens':>5} {'seconds':>8} {'s/gen':>6} {'ASR':>5}"]
    for cell in report.cells(("family", "modality")):
        family, modality = cell.key["family"], cell.key["modality"]
        spent = seconds.get((family, modality), 0.0)
        asr = "n/a" if cell.asr is None else f"{100 * cell.asr:.0f}%"
        lines.append(f"  {family:22} {modality:8} {cell.attempts:5d} "
                     f"{spent:8.2f} {spent / cell.attempts:6.3f} {asr:>5}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="model folder (default: the service's default model)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--per-probe", type=int, default=DEFAULT_PER_PROBE)
    parser.add_argument("--probes", default="all", metavar="SPEC,...",
                        help="families, modules or probe names, comma-separated, as `python -m "
                        "service.probes run` takes them (default: every registered probe, the "
                        "suite the service runs)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model or ServiceSettings().model_path
    if not Path(model).exists():
        sys.exit(f"no model at {model}: run `make demo-model` or pass --model")

    engine = VLMEngine.from_pretrained(model, adapters=dict(a.split("=", 1) for a in args.adapter))
    print(f"model {model}; adapters: base + {engine.adapter_names or 'none'}; "
          f"{args.per_probe} behaviours per probe; {torch.get_num_threads()} thread(s)")
    for label in ("cold", "warm"):
        start = time.perf_counter()
        report = run(engine, probes=args.probes.split(","), per_probe=args.per_probe)
        wall = time.perf_counter() - start
        tokens = sum(r.completion_tokens for r in report.results)
        print(f"\n{label}: {len(report.results)} generations, {tokens} tokens, "
              f"wall {wall:.1f} s ({'within' if wall <= GOAL_SECONDS else 'OVER'} the "
              f"{GOAL_SECONDS:.0f} s goal)")
        print("\n".join(family_table(report)))
        print("  ASR by adapter: " + ", ".join(
            f"{c.key['adapter']}/{c.key['modality']} "
            + ("n/a" if c.asr is None else f"{100 * c.asr:.0f}%")
            for c in report.cells(("adapter", "modality"))
        ))
        if report.skipped:
            print(f"  skipped: {report.skipped}")


if __name__ == "__main__":
    main()
