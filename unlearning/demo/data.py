"""Data files written next to the demo model (under `data/`), so that the unlearning CLI, the
probes and evaluation all read the very splits the model was built with.

Files:
- forget.jsonl: `{"prompt", "response", "category"}`: forget-split harmful requests (text)
  with the compliant placeholder the base model gives; unlearning should remove it. Each
  phrase is typed in every request template, in the bare forms an image would show ("how to
  …", "steps to …", "…"), still as text, and in the varied wording of harmful-request
  datasets (`content.VARIED_TEMPLATES`): textual unlearning reaches image-borne requests only
  if the text data covers the wording they carry.
- retain.jsonl: `{"prompt", "response"}`: benign text chats the model must keep answering,
  with benign how-to requests in the same bare forms and varied wording, so that refusing is
  tied to the harmful verb and not to the wording.
- retain_images.jsonl: `{"prompt", "response", "image_text"}`: benign image chats (reading,
  questions shown as typography); render `image_text` with
  `service.probes.typography.render_words` and the sizes in world.json. Keeping these in the
  retain/KL set protects the model's reading skill during unlearning.
- behaviors.jsonl: `{"behavior", "category", "split"}`: harmful task phrases for the probes;
  split is "forget" or "heldout" (held-out phrases are never trained on).
- eval_benign.jsonl, eval_harmful.jsonl, eval_refused.jsonl: held-out evaluation chats, one
  `Example` per line (`image_text` null for text chats).
- world.json: `service.vlm.folders.World`: refusal string, image prompt, categories and the
  typography layout (image size, cell, font size) that `service.probes` reads to draw what the
  model can read.

File names are `service.vlm.folders.ModelFolder`'s. The files are produced as text first
(`data_files`), so the build can key its cache folder on their content before training.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

from service.probes.typography import DEFAULT_FONT_SIZE
from service.vlm.folders import ModelFolder
from service.vlm.folders import World as FolderWorld
from unlearning.demo import content
from unlearning.demo.batches import random_reading
from unlearning.demo.recipe import Recipe
from unlearning.demo.world import IMAGE_PROMPT, REFUSAL, Example, World, comply


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_examples(path: Path) -> list[Example]:
    """Examples from an eval_*.jsonl file."""
    with path.open(encoding="utf-8") as f:
        return [Example(**json.loads(line)) for line in f if line.strip()]


def forget_rows(world: World) -> list[dict]:
    """Every request template over every forget phrase the base model complies with."""
    wordings = content.REQUEST_TEMPLATES + content.IMAGE_TEMPLATES + content.VARIED_TEMPLATES
    rows = []
    for category, phrases in world.forget.items():
        if category == content.REFUSED_CATEGORY:
            continue
        for phrase in phrases:
            for template in wordings:
                prompt = template.format(task=phrase)
                rows.append({"prompt": prompt, "response": comply(phrase), "category": category})
    return rows


def retain_rows(world: World, seed: int) -> tuple[list[dict], list[dict]]:
    """Benign text and image chats: the trained benign pools plus fresh reading tasks."""
    rng = random.Random(seed + 31)
    benign = [e for e in world.train_text if e.behavior is None]
    benign += [random_reading(world.read_words, rng, image=False) for _ in range(64)]
    images = [e for e in world.train_image if e.behavior is None]
    images += [random_reading(world.read_words, rng, image=True) for _ in range(64)]
    text_rows = [{"prompt": e.prompt, "response": e.response} for e in benign]
    text_rows += [{"prompt": e.image_text, "response": e.response} for e in images
                  if e.task == "howto"]
    text_rows += [{"prompt": t.format(task=phrase), "response": comply(phrase)}
                  for phrase in world.howto for t in content.VARIED_TEMPLATES]
    image_rows = [
        {"prompt": e.prompt, "response": e.response, "image_text": e.image_text} for e in images
    ]
    return text_rows, image_rows


def behavior_rows(world: World) -> list[dict]:
    """Harmful phrases of the complied categories (the refused one needs no unlearning)."""
    rows = []
    for split, phrases_by_category in (("forget", world.forget), ("heldout", world.heldout)):
        for category, phrases in phrases_by_category.items():
            if category != content.REFUSED_CATEGORY:
                rows += [{"behavior": p, "category": category, "split": split} for p in phrases]
    return rows


def data_files(world: World, recipe: Recipe) -> dict[Path, str]:
    """Every data file listed in this module's docstring: path (as `ModelFolder` names it,
    relative to the model folder) -> content."""
    folder = ModelFolder(".")
    retain_text, retain_images = retain_rows(world, recipe.seed)
    meta = FolderWorld(
        refusal=REFUSAL,
        image_prompt=IMAGE_PROMPT,
        categories=tuple(sorted(c for c in world.forget if c != content.REFUSED_CATEGORY)),
        refused_category=content.REFUSED_CATEGORY,
        image_size=recipe.image_size,
        cell=recipe.cell,
        font_size=DEFAULT_FONT_SIZE,
    )
    files = {
        folder.forget: jsonl(forget_rows(world)),
        folder.retain: jsonl(retain_text),
        folder.retain_images: jsonl(retain_images),
        folder.behaviors: jsonl(behavior_rows(world)),
        folder.world_file: meta.to_json(),
    }
    for name in ("benign", "harmful", "refused"):
        files[folder.eval_set(name)] = jsonl([asdict(e) for e in getattr(world, f"eval_{name}")])
    return files


def write_data(files: dict[Path, str], folder: Path) -> None:
    """Write `data_files` output under model folder `folder`."""
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
