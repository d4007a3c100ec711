"""Command line: run the probe battery against a model and its adapters, or list probes/judges.

    python -m service.probes run --model PATH [--adapter NAME=PATH ...] [--probes SPEC,...]
        [--judge SPEC ...] [--behaviors FILE] [--split validation|test] [--per-probe N]
        [--best-of-n N] [--temperature T] --out DIR
    python -m service.probes list

A thin shell over `service.probes.runner.run`: everything it does is callable from Python.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.probes.charts import report_chart
from service.probes.report import Report
from service.probes.splits import SPLITS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.probes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run probes and write report.json, .md and .png")
    run.add_argument("--model", required=True, help="base model folder or cached hub id")
    run.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                     help="load a LoRA adapter (repeatable); every loaded adapter is attacked")
    run.add_argument("--no-base", action="store_true", help="do not attack the base model")
    run.add_argument("--probes", default="all",
                     help="comma-separated probe names, families or 'all' (default)")
    run.add_argument("--judge", action="append", default=None, metavar="SPEC",
                     help="judge spec, repeatable: keyword, payload, classifier:PATH, guard:PATH "
                          "(default: payload+keyword for demo models, keyword otherwise)")
    run.add_argument("--behaviors", type=Path, default=None,
                     help="JSONL/JSON/CSV behaviours (AdvBench, HarmBench, SafeBench or ours); "
                          "default: the demo model's held-out set, else the built-in set")
    run.add_argument("--split", default="test", choices=SPLITS,
                     help="evaluation half: its probe variants and its behaviours (default: test; "
                          "README \"Evaluation protocol\")")
    run.add_argument("--best-of-n", type=int, default=8,
                     help="replies sampled per best-of-N attempt (default: 8)")
    run.add_argument("--temperature", type=float, default=1.0,
                     help="sampling temperature of best-of-N attempts (default: 1.0)")
    run.add_argument("--per-probe", type=int, default=None,
                     help="behaviours per probe (default: the runner's DEFAULT_PER_PROBE); "
                          "0 takes all")
    run.add_argument("--max-tokens", type=int, default=None, help="tokens per reply")
    run.add_argument("--device", default="auto")
    run.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads (0 = torch's default; 1 is fastest on small hosts)")
    run.add_argument("--cache-dir", type=Path, default=None,
                     help="where adversarial images are cached between runs")
    run.add_argument("--out", type=Path, required=True, help="folder for report.json/.md/.png")
    commands.add_parser("list", help="list registered probes and judges")
    return parser.parse_args(argv)


def list_registry() -> None:
    from service.probes.base import probe_classes
    from service.probes.judges import judge_classes

    print("probes:")
    for name, cls in probe_classes().items():
        print(f"  {name:45} {cls.modality:5}  {cls.goal}")
    print("judges:")
    for name, cls in judge_classes().items():
        print(f"  {name:45} {cls.kind}")


def run_command(args: argparse.Namespace) -> Report:
    from tqdm import tqdm

    from service.probes.behaviors import load_behaviors
    from service.probes.runner import DEFAULT_MAX_TOKENS, DEFAULT_PER_PROBE, ProbeRun
    from service.vlm.engine import VLMEngine
    from service.vlm.loading import configure_cpu_threads
    from service.vlm.protocol import SamplingParams

    configure_cpu_threads(args.threads)
    adapters = dict(a.split("=", 1) for a in args.adapter)
    engine = VLMEngine.from_pretrained(args.model, adapters=adapters, device=args.device)
    per_probe = DEFAULT_PER_PROBE if args.per_probe is None else (args.per_probe or None)
    probe_run = ProbeRun(
        engine,
        adapters=([] if args.no_base else [None]) + engine.adapter_names,
        probes=[p.strip() for p in args.probes.split(",") if p.strip()],
        judge=args.judge,
        behaviors=load_behaviors(args.behaviors, args.split) if args.behaviors else None,
        per_probe=per_probe,
        params=SamplingParams(max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS, temperature=0.0),
        cache_dir=args.cache_dir,
        split=args.split,
        best_of_n=args.best_of_n,
        temperature=args.temperature,
    )
    with tqdm(total=probe_run.total, unit="gen", file=sys.stderr) as bar:
        for result in probe_run:
            bar.set_postfix_str(f"{result.adapter} {result.probe}", refresh=False)
            bar.update()
    return probe_run.report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "list":
        list_registry()
        return
    report = run_command(args)
    json_path, md_path = report.save(args.out)
    chart = report_chart(report, args.out / "report.png")
    for kind, rate in (("attack", "ASR"), ("benign", "false refusal")):
        for cell in report.cells(("adapter", "modality"), kind):
            value = "n/a" if cell.asr is None else f"{100 * cell.asr:.0f} %"
            print(f"{cell.key['adapter']:>16} {cell.key['modality']:5} {rate} {value:>6} "
                  f"({cell.attempts} attempts)")
    print(f"wrote {json_path}, {md_path} and {chart}")
