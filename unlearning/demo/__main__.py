"""CLI for the embedded demo VLM. Every command builds (or reuses, or copies from the shipped
files, `unlearning.demo.shipping`) what it needs; `--force` builds from code. The last
stdout line of `build` and `safety` is the folder, for scripts. A folder that cannot be written
(read-only or full home) is a one-line error naming it, exit status 1; what was being written
is left unfinished or removed, never looking complete.

python -m unlearning.demo build [--home DIR] [--force]   # model folder; links models/default
python -m unlearning.demo safety [--home DIR] [--seed N] [--force]
                                                         # the `safety` adapter folder
python -m unlearning.demo drawn [--home DIR]             # the safety adapter's image retain
                                                         # rows (`unlearning.demo.drawn`)
python -m unlearning.demo rebuild [--home DIR] [--ship] [--adapters-only]
                                                         # build from code, compare with (or
                                                         # refresh) the shipped files
python -m unlearning.demo rekey --old-home DIR --new-home DIR
                                                         # carry the shipped files over a
                                                         # change that builds the same bytes
python -m unlearning.demo report [--home DIR] [--out DIR] [--seeds 0 1 2]
                                                         # README's demo and unlearning tables
python -m unlearning.demo check [--out DIR]              # a report's guards; exit 1 on a miss
python -m unlearning.demo eval PATH [--split HALF]       # held-out table of a saved model
python -m unlearning.demo path [--home DIR]              # folder the current code builds into
python -m unlearning.demo draw TEXT --out FILE [--home DIR]
                                                         # TEXT as an image the demo model reads
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from service.atomic import describe, naming
from service.vlm.folders import models_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m unlearning.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home",
                      help="cache root (default: $CROSSGUARD_HOME or ~/.cache/crossguard)")
    build = commands.add_parser("build", parents=[home], help="train the demo model unless cached")
    build.add_argument("--force", action="store_true",
                       help="build from code even if cached or shipped")
    safety = commands.add_parser("safety", parents=[home],
                                 help="train the demo's safety adapter unless cached or shipped")
    safety.add_argument("--seed", type=int, default=0)
    safety.add_argument("--force", action="store_true",
                        help="train from code even if cached or shipped")
    commands.add_parser("drawn", parents=[home], help="write the safety adapter's image retain "
                        "rows, drawn from the model's text retain set; prints the file")
    rebuild = commands.add_parser("rebuild", help="build the model and every report seed's "
                                  "adapter from code and compare them with the shipped files "
                                  "(exit 1 on a difference), or refresh those with --ship")
    rebuild.add_argument("--home", type=Path, default=None,
                         help="where to build (default: a temporary folder, removed after)")
    rebuild.add_argument("--ship", action="store_true",
                         help="replace the shipped files with the rebuild")
    rebuild.add_argument("--adapters-only", action="store_true",
                         help="keep the model (cached or shipped, if it fits this code) and "
                         "retrain the adapters only: a change of the trainer's inputs alone")
    rekey = commands.add_parser("rekey", help="carry the shipped files over a code change that "
                                "builds the same bytes: compare a build of the shipped files' "
                                "code (--old-home) with one of this code (--new-home), made on "
                                "one CPU (`make demo-rekey`); exit 1 naming what differs")
    rekey.add_argument("--old-home", type=Path, required=True)
    rekey.add_argument("--new-home", type=Path, required=True)
    report = commands.add_parser("report", parents=[home],
                                 help="evaluate the base model and the safety adapter per seed")
    report.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2")
    report.add_argument("--out", type=Path, default=Path("demo-report"),
                        help="folder for report.md and each seed's evaluation")
    evaluate = commands.add_parser("eval", help="score a saved demo model on its held-out sets")
    evaluate.add_argument("path")
    evaluate.add_argument("--split", choices=("validation", "test"), default="test",
                          help="the half (base-world checks are made on validation)")
    checking = commands.add_parser("check", help="hold a report's seeds to MEASURED; exit 1 "
                                   "naming every miss")
    checking.add_argument("--out", type=Path, default=Path("demo-report"),
                          help="the report folder")
    commands.add_parser("path", parents=[home], help="print the folder the current code builds")
    draw = commands.add_parser("draw", parents=[home],
                               help="draw TEXT as a PNG the demo model can read (words only)")
    draw.add_argument("text")
    draw.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    try:
        with naming(written(args)):
            _dispatch(args)
    except OSError as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        raise SystemExit(1) from None


def written(args: argparse.Namespace) -> Path:
    """What the command writes, named in errors that name no file (a full disk under
    safetensors or a buffered write): `--out`, else the cache's models folder."""
    return getattr(args, "out", None) or models_dir(getattr(args, "home", None))


def _dispatch(args: argparse.Namespace) -> None:
    from unlearning.demo.build import build, model_dir
    from unlearning.demo.recipe import Recipe

    if args.command == "path":
        print(model_dir(Recipe(), home=args.home))
        return
    if args.command == "eval":
        from unlearning.demo.evaluate import evaluate_folder

        print(evaluate_folder(args.path, split=args.split).markdown())
        return
    if args.command == "check":
        fail_on_misses(args.out)
        print(f"{args.out}: every guard holds")
        return
    if args.command == "rekey":
        from unlearning.demo import rebuild, shipping

        disagree = rebuild.rekey(args.old_home, args.new_home)
        for line in disagree:
            print(f"differs: {line}", file=sys.stderr)
        if disagree:
            print(f"the code change builds other bytes: refresh with `{shipping.REFRESH}`",
                  file=sys.stderr)
            raise SystemExit(1)
        print(f"re-keyed {shipping.BUILT}")
        return
    if args.command == "rebuild":
        rebuild_command(args.home, args.ship, args.adapters_only)
        return
    model = build(Recipe(), home=args.home, force=args.command == "build" and args.force)
    link_default(model)
    if args.command == "build":
        print(model)
    elif args.command == "draw":
        draw_text(model, args.text, args.out)
        print(args.out)
    elif args.command == "drawn":
        from unlearning.demo import drawn

        print(drawn.write(model))
    elif args.command == "safety":
        from unlearning.demo.safety import safety_adapter

        print(safety_adapter(model, args.seed, force=args.force))
    else:
        from unlearning.demo.report import write_report

        path = write_report(model, args.out, args.seeds)
        fail_on_misses(args.out)
        print(path)


def rebuild_command(home: Path | None, ship: bool, adapters_only: bool) -> None:
    """`rebuild`: exit 1 naming what a rebuild does not reproduce; with `ship`, refresh."""
    import tempfile

    from unlearning.demo import rebuild, shipping

    with tempfile.TemporaryDirectory(prefix="crossguard-rebuild-") as scratch:
        home = home or Path(scratch)
        if ship:
            print(rebuild.ship(*rebuild.rebuild(home, adapters_only=adapters_only)))
            return
        disagree = rebuild.compare_rebuild(home, adapters_only)
        for line in disagree:
            print(f"differs: {line}", file=sys.stderr)
        if disagree:
            print(f"the rebuild does not reproduce the shipped files; if the code changed on "
                  f"purpose, refresh them with `{shipping.REFRESH}`", file=sys.stderr)
            raise SystemExit(1)
        print(f"the rebuild reproduces {shipping.BUILT}")


def fail_on_misses(out: Path) -> None:
    """Exit 1 with one line per guard a report folder misses (`unlearning.demo.report.check`)."""
    from unlearning.demo.report import check

    misses = check(out)
    for line in misses:
        print(f"missed: {line}", file=sys.stderr)
    if misses:
        raise SystemExit(1)


def draw_text(model: Path, text: str, out: Path) -> None:
    """Draw `text` the way the probes and the demo's training images are drawn, on the grid the
    model learned to read (a question's punctuation is dropped, as in training)."""
    from transformers import AutoConfig, AutoProcessor

    from unlearning.batching import Typography

    typography = Typography.for_model(AutoProcessor.from_pretrained(model),
                                      AutoConfig.from_pretrained(model), str(model))
    typography.image(text).save(out)


def link_default(model: Path) -> None:
    """Point `models/default` (what the service serves when no model is configured) at `model`."""
    from service.vlm.folders import DEFAULT_MODEL

    link = model.parent / DEFAULT_MODEL
    temporary = link.with_name(f".{DEFAULT_MODEL}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(model)
    temporary.replace(link)


if __name__ == "__main__":
    main()
