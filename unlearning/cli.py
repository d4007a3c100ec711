"""Command line of textual unlearning (`python -m unlearning`, `crossguard-unlearn`).

    train     train a LoRA unlearning adapter from text-only data
    ablate    remove an adapter's false-refusal direction (a post-training weight edit)
    eval      probe ASR per family and modality + utility, base vs adapter
    register  import an adapter folder into the BentoML model store
    table     merge several eval.json files (e.g. seeds) into one Markdown table and a chart

A thin shell: `transformers.HfArgumentParser` turns the config dataclasses into the flags of
`train` and `eval` (help text from each field's metadata, choices from `Literal` types) and the
parsed flags back into configs, handed to `train`, `evaluate`, `register`. Multi-GPU:
`accelerate launch -m unlearning train ...` runs the same command under DDP/FSDP.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from transformers import HfArgumentParser

from service.errors import CrossguardError
from unlearning.atomic import describe
from unlearning.config import (
    DataConfig,
    EvalConfig,
    LoraSettings,
    LossConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

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
    table = commands.add_parser("table", formatter_class=argparse.HelpFormatter,
                                help="merge eval.json files into one Markdown table and a chart",
                                description="Mean and range over several eval.json files: the "
                                "table on stdout, the chart (mean bars, seed-range error bars) "
                                "as a PNG.")
    table.add_argument("summaries", nargs="+", type=Path, help="eval.json files")
    table.add_argument("--chart", type=Path, default=Path("table.png"),
                       help="where to write the chart (default: table.png)")
    return parser


def configs(args: argparse.Namespace, *types) -> tuple:
    """The parsed flags as one instance of each dataclass in `types`, split the way
    `HfArgumentParser.parse_args_into_dataclasses` splits them."""
    return HfArgumentParser(types).parse_dict(vars(args), allow_extra_keys=True)


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**dict(zip(TRAIN_GROUPS, configs(args, *TRAIN_GROUPS.values()),
                                  strict=True)))


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
        from unlearning.register import register

        print(register(args.adapter, args.name))
    else:
        from unlearning.charts import seeds_chart
        from unlearning.tables import seeds_markdown

        summaries = [json.loads(p.read_text()) for p in args.summaries]
        print(seeds_markdown(summaries))
        print(f"chart: {seeds_chart(summaries, args.chart)}", file=sys.stderr)
