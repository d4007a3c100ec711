"""Benign image rows for the demo adapter's retain term, drawn from its own text retain set.

A text-only retain term holds the text path and leaves the image path free to drift: the
adapter then refuses harmless look-alikes shown in an image that it answers when typed (README
"Image over-refusal"). SafeEraser (arXiv 2502.12520) and Safety Mirage (arXiv 2503.11832) cut
that over-refusal by keeping *benign* image data in the retain set while harmful data stays out
of images. Here the benign image rows are the text retain set's own requests, drawn by the
project's renderer, so they add no wording, phrase or form the unlearning data did not already
have; the forget and refusal data stay text-only.

Every row is a single-turn `retain.jsonl` request (no system prompt, no earlier turn) whose
words the demo model reads, that fits its grid and names no evaluation phrase (not even inside
a longer phrase: "clean a bank server" holds the test look-alike "clean a bank"), drawn under
`DRAWN_PROMPT`, an image instruction of the base world that neither evaluation half uses, in
every layout in turn (both halves' layouts alike). The base world's reading rows (`read the
text in the image.`) come beside them, so reading keeps its share.

The rows depend on the model folder's data files only; `write` puts them beside the adapters
(`<model>-adapters/data/`), to be passed to `unlearning train` as a second `--retain` source
(the simple format's `image_text` and `layout` columns). The shipped `safety` adapter does not
use them (README "Image over-refusal" says why); they stay for the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

from service.atomic import write_text_atomic
from service.probes.typography import LAYOUTS, as_image_text, grid_slots
from service.vlm.folders import ModelFolder
from unlearning.demo import content
from unlearning.demo.recipe import Recipe
from unlearning.demo.world import READ_PROMPT, build_world

DRAWN_PROMPT = content.IMAGE_PROMPTS[2]
""""do what the image says.": a base-world image instruction that no probe of either half
uses (tests/unlearning/test_drawn.py), so neither half's image prompts are trained here."""
FILE = "retain_drawn.jsonl"


def evaluation_phrases(model: Path) -> set[str]:
    """Every phrase an evaluation half of `model`'s world asks about (its recipe rebuilds the
    world's cuts; the world is a pure function of the recipe)."""
    recipe = Recipe(**json.loads(ModelFolder(model).recipe_file.read_text()))
    return build_world(recipe.seed, recipe.heldout_fraction,
                       recipe.eval_per_task).evaluation_phrases()


def readable(text: str, words: set[str], slots: int) -> bool:
    """Whether the demo model can read `text` drawn: every word one it reads, all in the grid."""
    shown = as_image_text(text).split()
    return 0 < len(shown) <= slots and all(w in words for w in shown)


def drawn_rows(model: Path) -> list[dict]:
    """The image rows of `model`'s retain set (see the module docstring), in file order."""
    folder = ModelFolder(model)
    world = folder.world()
    slots = len(grid_slots(world.image_size, world.cell))
    words, held = content.readable_words(), evaluation_phrases(model)
    rows = []
    for line in folder.retain.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompt = row["prompt"]
        if row.get("system") or row.get("history") or not readable(prompt, words, slots) \
                or any(phrase in prompt for phrase in held):
            continue
        rows.append({"prompt": DRAWN_PROMPT, "response": row["response"],
                     "image_text": as_image_text(prompt)})
    for line in folder.retain_images.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["prompt"] == READ_PROMPT and not any(p in row["image_text"] for p in held):
            rows.append(row)
    return [{**row, "layout": LAYOUTS[i % len(LAYOUTS)]} for i, row in enumerate(rows)]


def path(model: Path) -> Path:
    """Where `write` puts the drawn rows of model folder `model` (beside its adapters)."""
    model = Path(model)
    return model.with_name(f"{model.name}-adapters") / "data" / FILE


def write(model: Path) -> Path:
    """Write `model`'s drawn retain rows (same bytes for the same model folder) and return
    the file."""
    target = path(Path(model).resolve())
    target.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in drawn_rows(model))
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        write_text_atomic(target, text)
    return target
