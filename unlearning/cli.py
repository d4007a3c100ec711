"""Command line of textual unlearning (`python -m unlearning`, `crossguard-unlearn`).

    train     train a LoRA unlearning adapter from text-only data
    ablate    remove an adapter's false-refusal direction (a post-training weight edit)
    eval      probe ASR per family and modality + utility, base vs adapter
    register  import an adapter folder into the BentoML model store (`--gate`: only if its
              validation evaluation meets the service's promotion gate)
    table     merge several eval.json files (e.g. seeds) into one Markdown table and a chart

A thin shell: `transformers.HfArgumentParser` turns the config dataclasses into the flags of
`train` and `eval` (help text from each field's metadata, choices from `Literal` types) and the
parsed flags back into configs, handed to `train`, `evaluate`, `register` (`as_flags` writes
configs back as flags). Multi-GPU:
`accelerate launch -m unlearning train ...` runs the same command under DDP/FSDP.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import get_args

from transformers import HfArgumentParser

from service.atomic import describe
from service.errors import CrossguardError
from service.gate import RULES, Thresholds
from service.probes.splits import Split
from unlearning.config import (
    DataConfig,
    EvalConfig,
    LoraSettings,
    LossConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

logger = logging.getLogger(__name__)

TRAIN_GROUPS = {"run": RunConfig, "data": DataConfig, "lora": LoraSettings, "loss": LossConfig,
                "optim": OptimConfig}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, unless it has none."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossguard-unlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True,
                                     parser_class=HfArgumentParser)
    commands.add_parser("train", dataclass_types=TRAIN_GROUPS.values(),
                        formatter_class=_HelpFormatter, help="train an unlearning adapter",
                        description="Train a textual-unlearning LoRA adapter: "
                        "w_forget*L_forget + w_refusal*L_refusal + w_retain*KL.")
    ablate = commands.add_parser(
        "ablate", formatter_class=_HelpFormatter,
        help="remove an adapter's false-refusal direction",
        description="Write a copy of ADAPTER with the false-refusal direction (look-alike minus "
        "harmless mean state where the reply starts, orthogonalised against the harmful minus "
        "harmless refusal direction; Wang et al. 2024, arXiv 2410.03415) projected out of "
        "every residual writer it adapts: one more LoRA rank on those modules, base untouched. "
        "The three sets take any `train` data format; only their prompts are read.")
    ablate.add_argument("--model", required=True, help="base VLM the adapter was trained on")
    ablate.add_argument("--adapter", required=True, type=Path, help="adapter folder to edit")
    ablate.add_argument("--out", required=True, type=Path, help="edited adapter folder")
    for name, text in (("harmful", "harmful requests (e.g. the forget set)"),
                       ("lookalikes", "harmless requests that look harmful (training data)"),
                       ("harmless", "plainly harmless requests (training data)")):
        ablate.add_argument(f"--{name}", required=True, nargs="+", help=text)
    ablate.add_argument("--layer", type=int, default=None,
                        help="hidden_states index the directions are read at (default: the "
                        "middle of the decoder)")
    ablate.add_argument("--max-examples", type=int, default=256,
                        help="requests per set (an even spread over each set)")
    commands.add_parser("eval", dataclass_types=EvalConfig, formatter_class=_HelpFormatter,
                        help="probe ASR and utility, base vs adapter",
                        description=EvalConfig.__doc__)
    register = commands.add_parser("register", formatter_class=argparse.HelpFormatter,
                                   help="import an adapter into the model store",
                                   description="Copy an adapter folder (without checkpoints) "
                                   "into the BentoML model store, metadata as labels.")
    register.add_argument("adapter", type=Path, help="adapter folder written by train")
    register.add_argument("--name", default=None, help="model-store name (default: the "
                          "folder name)")
    _add_gate_flags(register)
    table = commands.add_parser("table", formatter_class=argparse.HelpFormatter,
                                help="merge eval.json files into one Markdown table and a chart",
                                description="Mean and range over several eval.json files: the "
                                "table on stdout, the chart (mean bars, seed-range error bars) "
                                "as a PNG.")
    table.add_argument("summaries", nargs="+", type=Path, help="eval.json files")
    table.add_argument("--chart", type=Path, default=Path("table.png"),
                       help="where to write the chart (default: table.png)")
    return parser


def _add_gate_flags(register: argparse.ArgumentParser) -> None:
    """`--gate`, its half and one flag per `service.gate.Thresholds` field: the limits and
    their defaults stay in service.gate, which the service's promotion reads too."""
    gate = register.add_argument_group(
        "promotion gate", "Register only if the adapter's latest evaluation on --gate-split "
        "meets service.gate's rules, the base model of that evaluation as the reference. "
        + Thresholds.__doc__)
    gate.add_argument("--gate", action="store_true", help="judge the adapter before registering")
    gate.add_argument("--gate-split", choices=get_args(Split), default="validation",
                      help="evaluation half the gate reads (default: %(default)s; the test half "
                      "is for reporting: README \"Evaluation protocol\")")
    gate.add_argument("--gate-skip", nargs="+", choices=RULES, default=[], metavar="RULE",
                      help="rules turned off, marked skipped in the verdict (as "
                      "CROSSGUARD_GATE_SKIP): %(choices)s")
    for field in dataclasses.fields(Thresholds):
        default = getattr(Thresholds(), field.name)
        gate.add_argument(f"--{field.name.replace('_', '-')}", type=type(default),
                          default=default, metavar="LIMIT", help="(default: %(default)s)")


def gate_limits(args: argparse.Namespace) -> Thresholds:
    """The parsed threshold flags as `service.gate.Thresholds`."""
    return Thresholds(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Thresholds)})


def configs(args: argparse.Namespace, *types) -> tuple:
    """The parsed flags as one instance of each dataclass in `types`, split the way
    `HfArgumentParser.parse_args_into_dataclasses` splits them."""
    return HfArgumentParser(types).parse_dict(vars(args), allow_extra_keys=True)


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**dict(zip(TRAIN_GROUPS, configs(args, *TRAIN_GROUPS.values()),
                                  strict=True)))


def as_flags(*groups) -> list[str]:
    """The flags that parse back into `groups` (config dataclass instances, e.g. a
    `TrainConfig`'s run, data, lora, loss, optim): one per field that differs from its default,
    for a run in another process (`python -m unlearning train ...`).

    Raises:
        ValueError: for a field set to None whose default is not (no flag says None).
    """
    flags = []
    for group in groups:
        for field in dataclasses.fields(group):
            value = getattr(group, field.name)
            default = field.default if field.default_factory is dataclasses.MISSING \
                else field.default_factory()
            if value == default:
                continue
            if value is None:
                raise ValueError(f"{field.name}: None cannot be written as a flag")
            values = value if isinstance(value, list) else [value]
            flags += [f"--{field.name.replace('_', '-')}", *map(str, values)]
    return flags


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    try:
        _dispatch(args)
    except (ValueError, FileNotFoundError, CrossguardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        raise SystemExit(1) from None


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "train":
        from accelerate import PartialState

        from unlearning.trainer import train

        out = train(train_config(args))
        if PartialState().is_main_process:
            print(out)
    elif args.command == "ablate":
        from unlearning.ablation import ablate
        from unlearning.data import load_sets

        def requests(paths: list[str]) -> list:
            examples = load_sets(paths, "retain")[0]
            step = max(1, len(examples) // args.max_examples)
            return examples[::step][: args.max_examples]

        print(ablate(args.model, args.adapter, args.out, requests(args.harmful),
                     requests(args.lookalikes), requests(args.harmless), args.layer))
    elif args.command == "eval":
        from unlearning.evaluate import evaluate
        from unlearning.tables import summary_markdown

        print(summary_markdown(evaluate(*configs(args, EvalConfig))))
    elif args.command == "register":
        from unlearning.register import register_adapter

        if args.gate:
            _gate(args)
        elif gate_limits(args) != Thresholds() or args.gate_skip:
            raise ValueError("max_*, gate_skip: the gate's limits and rules need --gate")
        print(register_adapter(args.adapter, args.name))
    else:
        from service.evaluation import EvalSummary
        from unlearning.charts import seeds_chart
        from unlearning.tables import seeds_markdown

        summaries = [EvalSummary.from_json(p.read_text(), str(p)) for p in args.summaries]
        print(seeds_markdown(summaries))
        print(f"chart: {seeds_chart(summaries, args.chart)}", file=sys.stderr)


def _gate(args: argparse.Namespace) -> None:
    """Exit 1 unless the adapter passes the gate: one stderr line per failed rule, or one
    saying which evaluation to run first; on a pass the verdict is logged."""
    from unlearning.register import gate_verdict

    try:
        verdict = gate_verdict(args.adapter, args.gate_split, gate_limits(args), args.gate_skip)
    except LookupError as exc:
        print(exc.args[0], file=sys.stderr)
        raise SystemExit(1) from None
    for line in verdict.failures:
        print(f"gate: {line}", file=sys.stderr)
    if not verdict.passed:
        raise SystemExit(1)
    for check in verdict.checks:
        logger.info("gate: %s: %s", check.rule, check.detail)
