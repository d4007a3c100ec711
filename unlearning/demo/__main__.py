"""CLI for the embedded demo VLM.

python -m unlearning.demo build [--home DIR] [--force]   # last stdout line: model folder
python -m unlearning.demo eval PATH                      # held-out table of a saved model
python -m unlearning.demo path [--home DIR]              # folder the current recipe uses
"""

from __future__ import annotations

import argparse
import logging
import os

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m unlearning.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="train the demo model unless already cached")
    build.add_argument(
        "--home", help="cache root (default: $CROSSGUARD_HOME or ~/.cache/crossguard)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    evaluate = commands.add_parser("eval", help="score a saved demo model on its held-out sets")
    evaluate.add_argument("path")
    path = commands.add_parser("path", help="print the folder the current recipe builds into")
    path.add_argument("--home")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from unlearning.demo.build import build as build_model
    from unlearning.demo.build import evaluate_folder
    from unlearning.demo.recipe import Recipe, model_dir

    if args.command == "build":
        print(build_model(Recipe(), home=args.home, force=args.force))
    elif args.command == "eval":
        print(evaluate_folder(args.path).markdown())
    else:
        print(model_dir(Recipe(), home=args.home))


if __name__ == "__main__":
    main()
