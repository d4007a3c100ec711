"""Build, cache and load the demo model folder.

The folder holds what `from_pretrained` needs (config, weights, generation config, tokenizer,
chat template, processor), plus `recipe.json`, `eval.json` / `eval.md` (the base model's
held-out scores) and `data/` (see `unlearning.demo.data`). It is built in a temporary sibling
folder and renamed into place, so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from unlearning.demo.data import read_examples, write_data
from unlearning.demo.evaluate import Report, evaluate
from unlearning.demo.model import build_model, build_processor
from unlearning.demo.recipe import Recipe, model_dir
from unlearning.demo.tokenizer import train_tokenizer
from unlearning.demo.train import train
from unlearning.demo.world import REFUSAL, World, build_world

log = logging.getLogger(__name__)


def corpus(world: World) -> list[str]:
    """Every text of the world, so every world word (held-out ones included) gets a token."""
    examples = world.train_text + world.train_image
    examples += world.eval_benign + world.eval_harmful + world.eval_refused
    texts = [f"{e.system or ''} {e.prompt} {e.response} {e.image_text or ''}" for e in examples]
    return texts + [REFUSAL, "repeat after me:", *world.read_words]


def build(recipe: Recipe, home: str | Path | None = None, force: bool = False) -> Path:
    """The model folder for `recipe`, trained now unless a finished one is already cached."""
    target = model_dir(recipe, home)
    if target.exists() and not force:
        log.info("demo model already built: %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)
    try:
        build_into(recipe, staging)
        replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("demo model written to %s", target)
    return target


def build_into(recipe: Recipe, folder: Path) -> Report:
    """Generate the world, train, evaluate and save everything into `folder`."""
    start = time.perf_counter()
    torch.set_num_threads(1)
    world = build_world(recipe.seed, recipe.heldout_fraction, recipe.eval_per_task)
    tokenizer = train_tokenizer(corpus(world))
    model = build_model(recipe, tokenizer)
    processor = build_processor(recipe, tokenizer)
    train(model, processor, world, recipe)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_data(world, recipe, folder / "data")
    report = evaluate(model, processor, world, recipe)
    report.build_seconds = time.perf_counter() - start
    (folder / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")
    (folder / "eval.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (folder / "eval.md").write_text(report.markdown())
    log.info("base demo model:\n%s", report.markdown())
    return report


def replace(staging: Path, target: Path) -> None:
    """Move `staging` to `target`; an existing target (rebuild with --force) is swapped out
    first so readers see either the old or the new folder, never a mix."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def load(path: str | Path):
    """(model, processor) from a demo folder, loaded as the service loads any hub model."""
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    model.eval()
    return model, processor


def evaluate_folder(path: str | Path) -> Report:
    """Re-score a saved demo model on the held-out sets stored in its `data/` folder."""
    path = Path(path)
    recipe = Recipe(**json.loads((path / "recipe.json").read_text()))
    world = World(
        eval_benign=read_examples(path / "data" / "eval_benign.jsonl"),
        eval_harmful=read_examples(path / "data" / "eval_harmful.jsonl"),
        eval_refused=read_examples(path / "data" / "eval_refused.jsonl"),
    )
    model, processor = load(path)
    return evaluate(model, processor, world, recipe)
