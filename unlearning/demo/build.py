"""Build, cache and load the demo model folder.

The folder holds what `from_pretrained` needs (config, weights, generation config, tokenizer,
chat template, processor), plus `recipe.json`, the world's data files (`unlearning.demo.data`,
named by `service.vlm.folders.ModelFolder`) and `build.json`. It is built in a temporary sibling
folder and renamed into place, so a crash never leaves a half-written model behind.

Its name is a key over everything that decides its content (`BuildPlan.inputs`): the recipe,
the data files as this code writes them, the source of every module the build can run
(`unlearning.fingerprint`) and the library versions. `build.json` records the inputs and a
sha256 of every file written; a cached folder is reused only while they all still match, so a
folder edited by hand or built by other code is rebuilt, not served. With no cached folder, the
shipped one (`unlearning.demo.shipping`) is copied in when it passes the same check; a build
from code happens only when it does not (the reason is logged) or when asked (`force`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from service import atomic
from service.vlm.folders import ModelFolder, file_sha256, models_dir
from unlearning import fingerprint
from unlearning.demo import shipping
from unlearning.demo.data import data_files, write_data
from unlearning.demo.model import build_model, build_processor
from unlearning.demo.recipe import Recipe
from unlearning.demo.tokenizer import train_tokenizer
from unlearning.demo.train import train_model
from unlearning.demo.world import REFUSAL, World, build_world

log = logging.getLogger(__name__)


def corpus(world: World) -> list[str]:
    """Every text of the world, so every world word (held-out ones included) gets a token."""
    examples = world.train_text + world.train_image
    examples += world.eval_benign + world.eval_harmful + world.eval_refused
    texts = [f"{e.system or ''} {e.prompt} {e.response} {e.image_text or ''}" for e in examples]
    return texts + [REFUSAL, "repeat after me:", *world.read_words]


@dataclass(frozen=True)
class BuildPlan:
    """What a build of `recipe` will write, known before training: its world, its data files
    and the inputs whose key names the folder."""

    recipe: Recipe
    world: World
    files: dict[Path, str]

    @classmethod
    def of(cls, recipe: Recipe) -> BuildPlan:
        world = build_world(recipe.seed, recipe.heldout_fraction, recipe.eval_per_task)
        return cls(recipe, world, data_files(world, recipe))

    @cached_property
    def inputs(self) -> dict:
        return {
            "recipe": asdict(self.recipe),
            "data": {str(p): fingerprint.text_sha256(t) for p, t in sorted(self.files.items())},
            "sources": fingerprint.sources_digest(__name__),
            "libraries": fingerprint.library_versions(),
        }

    @property
    def name(self) -> str:
        return f"demo-{fingerprint.key(self.inputs)}"


def model_dir(recipe: Recipe, home: str | Path | None = None) -> Path:
    """Where the model built from `recipe` by this code lives."""
    return models_dir(home) / BuildPlan.of(recipe).name


def build(recipe: Recipe, home: str | Path | None = None, force: bool = False) -> Path:
    """The model folder for `recipe`: the cached one if intact, else the shipped one if this
    code built it, else trained now. `force` trains from code whatever exists."""
    plan = BuildPlan.of(recipe)
    target = models_dir(home) / plan.name
    if target.exists() and not force:
        problem = stale_model(target, plan)
        if problem is None:
            log.info("demo model already built: %s", target)
            return target
        log.warning("rebuilding %s: %s", target, problem)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.write_folder(target) as staging:
        problem = "asked to (force)" if force else shipped_problem(plan)
        if problem is None:
            shutil.copytree(shipping.MODEL, staging, dirs_exist_ok=True)
            log.info("demo model copied from the shipped build %s (built on %s)",
                     shipping.MODEL, shipping.manifest()["built_on"]["cpu"])
        else:
            log.warning("building the demo model from code (20-40 min), not using the "
                        "shipped one: %s", problem)
            build_into(plan, staging)
    log.info("demo model written to %s", target)
    return target


def shipped_problem(plan: BuildPlan) -> str | None:
    """Why the shipped model folder cannot stand for `plan` (None when it can)."""
    if not shipping.MANIFEST.is_file():
        return "nothing is shipped"
    changed = shipping.changed_files(shipping.MODEL)
    if changed:
        return f"shipped files changed since they were shipped: {', '.join(changed[:5])}"
    return stale_model(shipping.MODEL, plan)


def build_into(plan: BuildPlan, folder: Path) -> None:
    """Train on the plan's world and save model, processor, data and `build.json`."""
    start = time.perf_counter()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    recipe, world = plan.recipe, plan.world
    tokenizer = train_tokenizer(corpus(world))
    model = build_model(recipe, tokenizer)
    processor = build_processor(recipe, tokenizer)
    train_model(model, processor, world, recipe)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_data(plan.files, folder)
    ModelFolder(folder).recipe_file.write_text(json.dumps(asdict(recipe), indent=2) + "\n")
    write_record(plan, folder, time.perf_counter() - start)


def write_record(plan: BuildPlan, folder: Path, seconds: float) -> None:
    """`build.json`, last: the plan's inputs and a sha256 of every file in `folder`."""
    written = {str(p.relative_to(folder)): file_sha256(p)
               for p in sorted(folder.rglob("*")) if p.is_file()}
    record = {"name": plan.name, "inputs": plan.inputs, "files": written,
              "built_on": fingerprint.machine(), "build_seconds": round(seconds, 1)}
    ModelFolder(folder).build_file.write_text(json.dumps(record, indent=2) + "\n")


def stale_model(folder: Path, plan: BuildPlan) -> str | None:
    """Why the cached `folder` cannot serve `plan` (None when it can): no or another
    `build.json`, or a file missing or changed since it was written."""
    record_file = ModelFolder(folder).build_file
    if not record_file.is_file():
        return "no build.json (an unfinished or older build)"
    record = json.loads(record_file.read_text())
    differences = fingerprint.differences(record.get("inputs", {}), plan.inputs)
    if differences:
        return f"built from other inputs ({', '.join(differences[:8])})"
    for relative, digest in record.get("files", {}).items():
        path = folder / relative
        if not path.is_file() or file_sha256(path) != digest:
            return f"{relative} changed since it was built"
    return None


def load(path: str | Path):
    """(model, processor) from a demo folder, loaded as the service loads any hub model."""
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    model.eval()
    return model, processor
