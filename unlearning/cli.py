"""Command line of textual unlearning (`python -m unlearning`, `crossguard-unlearn`).

    train     train a LoRA unlearning adapter from text-only data
    eval      probe ASR per family and modality + utility, base vs adapter
    register  import an adapter folder into the BentoML model store
    table     merge several eval.json files (e.g. seeds) into one Markdown table

A thin shell: flags are generated from the config dataclasses (their help text is the flags'
help), parsed into configs, and handed to `train`, `evaluate`, `register`. Multi-GPU:
`accelerate launch -m unlearning train ...` runs the same command under DDP/FSDP.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

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


def _flag_type(hint):
    """(argparse kwargs) for a field's type: bools, lists, Literals and optionals."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)][0]
        return _flag_type(inner)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is list:
        return {"nargs": "+", "type": args[0]}
    if origin is typing.Literal:
        return {"choices": list(args), "type": type(args[0])}
    return {"type": hint}


def add_config_flags(parser: argparse._ActionsContainer, cls) -> None:
    """One `--flag-name` per dataclass field, its help text and default from the field."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kwargs = _flag_type(hints[f.name])
        required = f.default is MISSING and f.default_factory is MISSING
        default = None if required else (f.default if f.default is not MISSING
                                          else f.default_factory())
        shown = "" if required or default is None else f" (default: {default})"
        if kwargs.get("nargs") == "+":
            kwargs["action"] = "extend"
            default = None
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, required=required,
                            default=default, help=f.metadata.get("help", "") + shown, **kwargs)


def config_from(cls, args: argparse.Namespace):
    """Build `cls` from the parsed flags; flags left out keep the field's default."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if v is not None})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossguard-unlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train an unlearning adapter",
                                description="Train a textual-unlearning LoRA adapter: "
                                "w_forget*L_forget + w_refusal*L_refusal + w_retain*KL.")
    for name, cls in TRAIN_GROUPS.items():
        add_config_flags(train.add_argument_group(name, cls.__doc__), cls)
    evaluate = commands.add_parser("eval", help="probe ASR and utility, base vs adapter",
                                   description=EvalConfig.__doc__)
    add_config_flags(evaluate, EvalConfig)
    register = commands.add_parser("register", help="import an adapter into the model store",
                                   description="Copy an adapter folder (without checkpoints) "
                                   "into the BentoML model store, metadata as labels.")
    register.add_argument("adapter", type=Path, help="adapter folder written by train")
    register.add_argument("--name", default=None, help="model-store name (default: the "
                          "folder name)")
    table = commands.add_parser("table", help="merge eval.json files into one Markdown table",
                                description="Mean and range over several eval.json files.")
    table.add_argument("summaries", nargs="+", type=Path, help="eval.json files")
    return parser


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{name: config_from(cls, args) for name, cls in TRAIN_GROUPS.items()})


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
    elif args.command == "eval":
        from unlearning.evaluate import evaluate
        from unlearning.tables import summary_markdown

        print(summary_markdown(evaluate(config_from(EvalConfig, args))))
    elif args.command == "register":
        from unlearning.register import register

        print(register(args.adapter, args.name))
    else:
        from unlearning.tables import seeds_markdown

        print(seeds_markdown([json.loads(p.read_text()) for p in args.summaries]))
