"""What an unlearning mechanism costs over another, measured side by side.

The same harmful data, model, seed and settings are trained once per *arm* with `python -m
unlearning train`, each arm adding its own flags; all arms draw the same examples at every step.
By default the arms are `--modality text` (harmful prompts as text) and `--modality multimodal`
(the same prompts drawn as typography under a benign text prompt): what multimodal unlearning
costs over textual unlearning (Chakraborty et al. report up to 6x). `--arm NAME=FLAGS` replaces
them (repeatable), e.g. `--arm kl= --arm scoped='--scope assistant'` for the mechanisms of README
"Image over-refusal". Each run is its own process, so peak memory is its own. Printed: seconds
per step, peak memory and their ratios to the first arm, then what each adapter reaches on one
evaluation half (`--split`, default test; README "Evaluation protocol"): ASR on text and image
probes by both judges, false refusals and benign accuracy.

    python -m bench.unlearning_cost [--model PATH] [--steps N] [--arm NAME=FLAGS ...]
                                    [--split HALF] [--no-eval] [-- TRAIN FLAGS]

Flags after `--` go to every `unlearning train` run unchanged (e.g. `-- --retain more.jsonl
--forget-loss npo`); without them the runs use the demo's documented settings
(`unlearning.demo.safety.safety_config`'s loss and optimiser settings as flags, without the step
count, which `--steps` sets).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from service.probes.report import pct
from service.vlm.folders import BASE, AdapterFolder, ModelFolder
from unlearning.cli import as_flags
from unlearning.config import OptimConfig
from unlearning.demo.safety import safety_config

DEFAULT_ARMS = {"text": ["--modality", "text"], "multimodal": ["--modality", "multimodal"]}


def _safety():
    return safety_config(Path("MODEL"), Path("OUT"), seed=0)


def safety_steps() -> int:
    return _safety().optim.max_steps


def default_train_flags() -> list[str]:
    config = _safety()
    return as_flags(config.loss, replace(config.optim, max_steps=OptimConfig.max_steps))


def demo_model() -> str:
    """The demo model folder (built, or reused from the cache, by `unlearning.demo`)."""
    out = subprocess.run([sys.executable, "-m", "unlearning.demo", "build"], check=True,
                         stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def parse_arm(text: str) -> tuple[str, list[str]]:
    """`NAME=FLAGS` (shell words) as (name, flags)."""
    name, _, flags = text.partition("=")
    if not name.strip() or "/" in name:
        raise argparse.ArgumentTypeError(f"--arm {text!r}: give NAME=FLAGS (a plain name)")
    return name.strip(), shlex.split(flags)


def train_command(model: str, out: Path, flags: list[str], args: argparse.Namespace) -> list[str]:
    folder = ModelFolder(model)
    world = folder.world()
    command = [
        sys.executable, "-m", "unlearning", "train", "--model", model, "--out", str(out),
        "--forget", args.forget or str(folder.forget),
        "--max-steps", str(args.steps), "--seed", str(args.seed),
        "--log-every", str(max(1, args.steps // 5)),
    ]
    if "--retain" not in args.train_flags:
        command += ["--retain", str(folder.retain)]
    if world and "--refusals" not in args.train_flags:
        command += ["--refusals", world.refusal]
    return command + args.train_flags + flags


def run(model: str, folder: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Train every arm in a fresh process; returns each adapter's crossguard.json."""
    results = {}
    for name, flags in args.arms.items():
        out = folder / name
        print(f"training {name} ({shlex.join(flags)}) ...", file=sys.stderr, flush=True)
        subprocess.run(train_command(model, out, flags, args), check=True,
                       stdout=subprocess.DEVNULL)
        results[name] = AdapterFolder(out).metadata()
        results[name]["path"] = str(out)
    return results


def evaluate_all(model: str, results: dict[str, dict], args: argparse.Namespace) -> None:
    from unlearning.config import EvalConfig
    from unlearning.evaluate import evaluate

    for result in results.values():
        result["eval"] = evaluate(EvalConfig(model=model, adapter=result["path"],
                                             per_probe=args.per_probe, split=args.split),
                                  progress=False)


def cost_table(results: dict[str, dict]) -> list[str]:
    """One column per arm, each value with its ratio to the first arm's."""
    first, *others = results
    for r in results.values():
        r["training_memory_mb"] = r["peak_memory_mb"] - r["start_memory_mb"]

    def row(label: str, key: str, unit: str, digits: int) -> str:
        base = results[first][key]
        cells = [f"{base:.{digits}f} {unit}"]
        cells += [f"{results[n][key]:.{digits}f} {unit} ({results[n][key] / base:.2f}x)"
                  if base else f"{results[n][key]:.{digits}f} {unit}" for n in others]
        return f"| {label} | " + " | ".join(cells) + " |"

    return [
        "| per run | " + " | ".join([first, *(f"{n} (/ {first})" for n in others)]) + " |",
        "|---|" + "---|" * len(results),
        row("seconds per step", "seconds_per_step", "s", 3),
        row("peak memory (process or GPU)", "peak_memory_mb", "MB", 0),
        row("memory added by training", "training_memory_mb", "MB", 0),
        "| steps | " + " | ".join(str(r["steps"]) for r in results.values()) + " |",
    ]


def asr_table(results: dict[str, dict]) -> list[str]:
    """ASR by judge, false refusals and benign accuracy of base and every arm's adapter, on the
    evaluated half."""
    first = next(iter(results.values()))["eval"]
    lines = ["| adapter | probe modality | " + " | ".join(
        f"{j} ASR ({first.split})" for j in first.judges) +
        " | false refusals | benign accuracy |",
        "|---|---|" + "---|" * (len(first.judges) + 2)]
    for index, (arm, result) in enumerate(results.items()):
        summary = result["eval"]
        for label, name in ((BASE, BASE), (summary.label, arm)):
            for probe_modality in ("text", "image"):
                row = summary.lookup("asr_by_modality", label, modality=probe_modality)
                if row is None or (label == BASE and index):
                    continue
                refused = summary.rate("false_refusal", "keyword", label, modality=probe_modality)
                cells = [pct(row["asr"][j]) for j in summary.judges]
                lines.append(f"| {name} | {probe_modality} | {' | '.join(cells)} | "
                             f"{pct(refused)} | {pct(summary.accuracy(label, probe_modality))} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base model (default: the demo model)")
    parser.add_argument("--forget", default=None, help="default: the demo model's forget set")
    parser.add_argument("--steps", type=int, default=safety_steps(),
                        help="default: the demo adapter's (safety_config)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arm", type=parse_arm, action="append", default=None,
                        metavar="NAME=FLAGS", help="an arm and its own train flags (repeatable; "
                        "default: text=--modality text, multimodal=--modality multimodal)")
    parser.add_argument("--split", choices=("validation", "test"), default="test",
                        help="the half the adapters are evaluated on (choose on validation)")
    parser.add_argument("--per-probe", type=int, default=0, help="behaviours per probe (0: all)")
    parser.add_argument("--no-eval", action="store_true", help="time and memory only")
    parser.add_argument("--out", type=Path, default=None, help="keep the adapters here")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.train_flags = argv[split + 1:] or default_train_flags()
    args.arms = dict(args.arm) if args.arm else DEFAULT_ARMS
    model = args.model or demo_model()
    with tempfile.TemporaryDirectory(prefix="unlearning-cost-") as tmp:
        results = run(model, args.out or Path(tmp), args)
        print("\n".join(cost_table(results)))
        if not args.no_eval:
            evaluate_all(model, results, args)
            print()
            print("\n".join(asr_table(results)))


if __name__ == "__main__":
    main()
