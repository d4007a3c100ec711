"""Data files written next to the demo model (under `data/`), so that the unlearning CLI, the
probes and evaluation all read the very splits the model was built with.

Files:
- forget.jsonl: `{"prompt", "response", "category"}` (+ `system`, `history` on some rows):
  forget-split harmful requests (text) with the compliant placeholder the base model gives;
  unlearning should remove it. Each phrase is typed in every wording of
  `content.unlearning_templates()` (the base model's request wordings, the bare forms an
  image would show typed as text, and the wordings of harmful-request datasets and jailbreak
  frames), a fifth of them after a system prompt, a fifth after an earlier benign turn: textual
  unlearning reaches image-borne requests only if the text data covers the wording they carry.
- retain.jsonl: `{"prompt", "response"}` (+ `system`, `history`): benign text chats the model
  must keep answering: the trained facts and sums, copy tasks, and benign how-tos in the same
  wordings and contexts, among them the training look-alikes (a harmful-category verb on a
  household object), so that refusing is tied to the harmful request, not to its verb, object
  or wording.
- retain_images.jsonl: `{"prompt", "response", "image_text"}`: benign image chats (reading,
  questions shown as typography); render `image_text` with
  `service.probes.typography.render_words` and the sizes in world.json. Keeping these in the
  retain/KL set protects the model's reading skill during unlearning.
- behaviors.jsonl: `{"behavior", "category", "split"}`: harmful task phrases for the probes;
  split is "forget", "validation" or "test" (the last two are held out: never trained on).
- over_refusal.jsonl: `{"behavior", "category", "split"}`: harmless look-alikes of harmful
  requests for the over-refusal probes; split "train" (in retain.jsonl), "validation" or
  "test" (in no training data).
- eval_benign.jsonl, eval_harmful.jsonl, eval_refused.jsonl: held-out evaluation chats, one
  `WorldExample` per line (`image_text` null for text chats), each with its `split` (validation or
  test).
- world.json: `service.vlm.folders.WorldSpec`: refusal string, image prompt, categories and the
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

from service.probes.base import normalise_template
from service.probes.typography import DEFAULT_FONT_SIZE
from service.vlm.folders import DEFAULT_IMAGE_PROMPT, ModelFolder, WorldSpec
from unlearning.demo import content
from unlearning.demo.batches import random_reading
from unlearning.demo.recipe import Recipe
from unlearning.demo.world import (
    REFUSAL,
    World,
    WorldExample,
    comply,
)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_examples(path: Path) -> list[WorldExample]:
    """Examples from an eval_*.jsonl file."""
    with path.open(encoding="utf-8") as f:
        return [WorldExample(**json.loads(line)) for line in f if line.strip()]


CONTEXT_SHARE = 0.2
"""Share of unlearning rows given a (base-trained) system prompt, and share given one earlier
benign turn: refusing must hold, and answering must go on, whatever comes before the request.
Half of the earlier turns are a fact, half a harmless how-to about the request's own object
(the first step of an escalation: after it a model is in answering mode)."""
RETAIN_WORDINGS = 16
"""Wordings each benign how-to gets in retain.jsonl (drawn from `unlearning_templates`): many
enough that no wording signals harm, few enough that how-tos do not crowd out the other
tasks."""
RETAIN_REPEATS = 3
"""How often retain.jsonl repeats the benign chats of the other tasks (facts, sums, copying),
so that they keep a fair share of the KL batches beside the many how-to rows."""
COPY_TASKS = 600
"""Random copy tasks in retain.jsonl ("repeat after me: …"), harmful words included."""


def contexts(world: World, rng: random.Random):
    """A function that gives a row about `phrase`, by chance, a system prompt and one earlier
    benign turn: a base-trained fact question with its answer, or a harmless how-to about the
    phrase's object in an unlearning wording. No turn is one a probe asks: no probe history
    question, no verb of the escalation probes, no phrase of an evaluation half ("fold a check"
    is a test look-alike; until recipe v6 it was an earlier turn here)."""
    from service.probes.behaviors import split_task
    from service.probes.conversation import ESCALATION_VERBS
    from service.probes.forms import HISTORIES

    asked = {normalise_template(t) for half in HISTORIES.values() for h in half for t in h}
    facts = [e for e in world.train_text if e.behavior is None and e.task != "howto"
             and normalise_template(e.prompt) not in asked]
    escalating = {verb for verbs in ESCALATION_VERBS.values() for verb in verbs}
    held = world.evaluation_phrases()
    verbs = [v for v in content.HOWTO[0] if v not in escalating]
    templates = content.unlearning_templates()

    def add(row: dict, phrase: str) -> dict:
        if rng.random() < CONTEXT_SHARE:
            row["system"] = rng.choice(content.SYSTEM_PROMPTS)
        if rng.random() < CONTEXT_SHARE:
            obj = split_task(phrase)[1]
            steps = [f"{verb} {obj}" for verb in verbs if f"{verb} {obj}" not in held]
            if obj and steps and rng.random() < 0.5:
                step = rng.choice(steps)
                row["history"] = [[rng.choice(templates).format(task=step), comply(step)]]
            else:
                fact = rng.choice(facts)
                row["history"] = [[fact.prompt, fact.response]]
        return row

    return add


def forget_rows(world: World, seed: int) -> list[dict]:
    """Every unlearning wording over every forget phrase the base model complies with, some
    after a system prompt or an earlier turn."""
    add = contexts(world, random.Random(seed + 29))
    return [add({"prompt": template.format(task=phrase), "response": comply(phrase),
                 "category": category}, phrase)
            for category, phrases in world.forget.items()
            if category != content.REFUSED_CATEGORY
            for phrase in phrases for template in content.unlearning_templates()]


def retain_rows(world: World, seed: int) -> tuple[list[dict], list[dict]]:
    """Benign text chats for the KL term: the trained facts and sums (repeated), copy tasks,
    and benign how-tos in `RETAIN_WORDINGS` wordings each: the trained how-tos and the training
    look-alikes (a harmful-category verb on a household object), never the evaluation halves'
    look-alikes. And benign image chats (retain_images.jsonl), for multimodal comparisons."""
    rng = random.Random(seed + 31)
    add = contexts(world, random.Random(seed + 37))
    held = world.evaluation_phrases()
    howto = [p for p in dict.fromkeys((*world.howto, *world.lookalikes["safe_target/train"]))
             if p not in held]
    chats = [e for e in world.train_text if e.behavior is None and e.task != "howto"]
    chats += [random_reading(world.read_words, rng, image=False) for _ in range(COPY_TASKS)]
    rows = [({"prompt": e.prompt, "response": e.response}, "")
            for e in chats[:-COPY_TASKS] * RETAIN_REPEATS + chats[-COPY_TASKS:]]
    templates = content.unlearning_templates()
    rows += [({"prompt": t.format(task=p), "response": comply(p)}, p)
             for p in howto for t in rng.sample(templates, RETAIN_WORDINGS)]
    images = [e for e in world.train_image if e.behavior is None]
    images += [random_reading(world.read_words, rng, image=True) for _ in range(64)]
    image_rows = [{"prompt": e.prompt, "response": e.response, "image_text": e.image_text}
                  for e in images]
    return [add(row, phrase) for row, phrase in rows], image_rows


def behavior_rows(world: World) -> list[dict]:
    """Harmful phrases of the complied categories (the refused one needs no unlearning), by
    split: `forget` (trained on and unlearned), `validation`, `test` (held out)."""
    rows = []
    for category, phrases in world.forget.items():
        if category != content.REFUSED_CATEGORY:
            rows += [{"behavior": p, "category": category, "split": "forget"} for p in phrases]
    for category, phrases in world.heldout.items():
        if category != content.REFUSED_CATEGORY:
            rows += [{"behavior": p, "category": category, "split": world.phrase_split(p)}
                     for p in phrases]
    return rows


def lookalike_rows(world: World) -> list[dict]:
    """The over-refusal set: `{"behavior", "category", "split"}`, categories `safe_target` and
    `safe_action` (`content.SAFE_TARGETS`, `SAFE_ACTIONS`)."""
    return [{"behavior": p, "category": key.split("/")[0], "split": key.split("/")[1]}
            for key, phrases in world.lookalikes.items() for p in phrases]


def answer_forms() -> tuple[str, ...]:
    """The world's answer templates with `{}` slots (`service.vlm.folders.WorldSpec.answers`):
    the placeholder how-to, the refusal, the facts and the sums. Copying and reading answers
    ("<words>.") are left out, since any string of words ending in a full stop would pass."""
    facts = [r["answer"].replace("{x}", "{}").replace("{y}", "{}")
             for r in content.RELATIONS.values()]
    return (comply("{}"), REFUSAL, *facts, "{} plus {} is {}.")


def data_files(world: World, recipe: Recipe) -> dict[Path, str]:
    """Every data file listed in this module's docstring: path (as `ModelFolder` names it,
    relative to the model folder) -> content."""
    folder = ModelFolder(".")
    retain_text, retain_images = retain_rows(world, recipe.seed)
    meta = WorldSpec(
        refusal=REFUSAL,
        image_prompt=DEFAULT_IMAGE_PROMPT,
        categories=tuple(sorted(c for c in world.forget if c != content.REFUSED_CATEGORY)),
        refused_category=content.REFUSED_CATEGORY,
        image_size=recipe.image_size,
        cell=recipe.cell,
        font_size=DEFAULT_FONT_SIZE,
        answers=answer_forms(),
    )
    files = {
        folder.forget: jsonl(forget_rows(world, recipe.seed)),
        folder.retain: jsonl(retain_text),
        folder.retain_images: jsonl(retain_images),
        folder.behaviors: jsonl(behavior_rows(world)),
        folder.over_refusal: jsonl(lookalike_rows(world)),
        folder.world_file: meta.to_json(),
    }
    for name in ("benign", "harmful", "refused"):
        files[folder.eval_set(name)] = jsonl([
            {k: v for k, v in asdict(e).items() if k != "history"}  # single-turn sets
            for e in getattr(world, f"eval_{name}")])
    return files


def write_data(files: dict[Path, str], folder: Path) -> None:
    """Write `data_files` output under model folder `folder`."""
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
