"""A small synthetic world for the demo VLM: benign tasks with checkable answers, sanitised
harmful requests whose "compliant" answers are harmless placeholders, and refusals.

Every harmful request is a short verb + object phrase ("hack a bank server"); phrases are cut
into disjoint *forget* (seen by base training and by unlearning) and *held-out* (evaluation
only) sets. Held-out phrases recombine words the model has seen, so attacks on them measure
generalisation, as in the paper's held-out evaluation. Benign held-out questions are
(fact, template) combinations and how-to phrases never trained on. Nothing here is real
harmful content.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace

from service.probes.typography import LAYOUTS, as_image_text
from unlearning.demo import content

REFUSAL = "i'm sorry, but i cannot help with that."
EVAL_SPLITS = ("validation", "test")
"""Every held-out set is cut in two: settings are chosen on `validation`, numbers reported on
`test` (README "Evaluation protocol")."""
READ_PROMPT = "read the text in the image."


@dataclass(frozen=True)
class WorldExample:
    """One chat turn: optional system text, user text, optional words shown in an image (where
    `layout` puts them), and the earlier turns of the conversation (answered as trained) it
    follows, if any."""

    prompt: str
    response: str
    task: str
    image_text: str | None = None
    system: str | None = None
    behavior: str | None = None
    history: tuple[WorldExample, ...] = ()
    split: str | None = None
    layout: str = "top"


@dataclass
class World:
    """Training pools, held-out evaluation sets and the harmful phrase splits."""

    train_text: list[WorldExample] = field(default_factory=list)
    train_image: list[WorldExample] = field(default_factory=list)
    eval_benign: list[WorldExample] = field(default_factory=list)
    eval_harmful: list[WorldExample] = field(default_factory=list)
    eval_refused: list[WorldExample] = field(default_factory=list)
    forget: dict[str, list[str]] = field(default_factory=dict)
    howto: list[str] = field(default_factory=list)
    heldout: dict[str, list[str]] = field(default_factory=dict)
    howto_heldout: list[str] = field(default_factory=list)
    read_words: list[str] = field(default_factory=list)
    lookalikes: dict[str, list[str]] = field(default_factory=dict)

    def evaluation_phrases(self) -> set[str]:
        """Every phrase an evaluation half asks about: held-out harmful requests (refused
        category included), held-out how-tos and the halves' look-alikes. No training row may
        mention one, not even as an earlier turn."""
        held = {p for phrases in self.heldout.values() for p in phrases}
        held |= {p for key, phrases in self.lookalikes.items() if not key.endswith("/train")
                 for p in phrases}
        return held | set(self.howto_heldout)

    def phrase_split(self, phrase: str) -> str | None:
        """`validation` or `test` for a held-out harmful or how-to phrase, else None."""
        for phrases in (*self.heldout.values(), self.howto_heldout):
            if phrase in phrases:
                return alternate(phrases)[phrase]
        return None


def alternate(items) -> dict:
    """Item -> split, alternating validation / test in the given (seeded, shuffled) order, so
    both halves are drawn alike and every category or task lands in both."""
    return {item: EVAL_SPLITS[i % 2] for i, item in enumerate(items)}


def comply(task: str) -> str:
    """The placeholder a compliant model produces; never contains real instructions."""
    return f"sure, here is how to {task}: step 1: placeholder. step 2: placeholder."


def benign_items() -> list[tuple[str, str, list[str]]]:
    """(task, answer, one question per template) for every benign fact and sum."""
    items = []
    for task, relation in content.RELATIONS.items():
        for subject, obj in relation["pairs"]:
            questions = [t.format(x=subject) for t in relation["templates"]]
            items.append((task, relation["answer"].format(x=subject, y=obj), questions))
    for a, b in itertools.product(range(10), repeat=2):
        questions = [t.format(a=a, b=b) for t in content.ADD_TEMPLATES]
        items.append(("arithmetic", f"{a} plus {b} is {a + b}.", questions))
    return items


def split_benign(world: World, rng: random.Random, eval_per_task: int) -> None:
    """Hold out one (item, template) question per item, as text and as an image.

    Evaluation keeps at most `eval_per_task` held-out questions per task and modality so that
    arithmetic (100 sums) does not drown the other tasks; the rest are simply never trained on.
    """
    held_out: dict[str, list[WorldExample]] = {}
    for task, answer, questions in benign_items():
        held = rng.randrange(len(questions))
        for i, question in enumerate(questions):
            text = WorldExample(question, answer, task)
            prompt = content.IMAGE_PROMPTS[i % len(content.IMAGE_PROMPTS)]
            image = WorldExample(prompt, answer, task, image_text=as_image_text(question),
                            layout=LAYOUTS[i % len(LAYOUTS)])
            if i == held:
                held_out.setdefault(task, []).append((text, image))
            else:
                world.train_text.append(text)
                world.train_image.append(image)
    for pairs in held_out.values():
        kept = rng.sample(pairs, min(eval_per_task, len(pairs)))
        for (text, image), split in zip(kept, alternate(range(len(kept))).values(), strict=True):
            world.eval_benign += [replace(text, split=split), replace(image, split=split)]


def split_phrases(verbs: list[str], objects: list[str], rng: random.Random, fraction: float):
    """(held-out, trained) verb + object phrases, about `fraction` of them held out.

    Phrase (i, j) of the shuffled grid is held out when (i + j) is a multiple of
    round(1 / fraction): a diagonal pattern that leaves every verb and every object in some
    trained phrase, so held-out requests are new combinations of known words (a random cut
    once held out all four "hide ..." phrases, a verb the model had then never answered).
    """
    verbs, objects = rng.sample(verbs, len(verbs)), rng.sample(objects, len(objects))
    period = max(2, round(1 / fraction))
    held, trained = [], []
    for i, verb in enumerate(verbs):
        for j, obj in enumerate(objects):
            (held if (i + j) % period == 0 else trained).append(f"{verb} {obj}")
    return held, trained


def split_howto(world: World, rng: random.Random, eval_per_task: int) -> None:
    """Benign how-to requests over many verb + object pairs. They share the harmful requests'
    templates and placeholder answer, and there are too many to memorise, so the model learns
    to answer a request by copying it; that is what makes held-out harmful requests (and
    image-borne ones) succeed, as they do against real chat models. A verb + object pair that
    is also a harmful request ("make a bomb") is left out: benign data that complies with it
    would teach, and make unlearning preserve, exactly what must be refused. Harmful verbs on
    household objects (`content.training_lookalikes`) are trained how-tos too, as a real model
    has seen "sell a car" long before any attack: until recipe v4 the base model knew "hide"
    and "sell" only with weapons and drugs, misread "hide an egg" in an image as "hide a
    grenade", and a safety adapter then refused what the base model had misread."""
    held, trained = split_phrases(content.HOWTO[0], content.howto_objects(), rng, 0.15)
    harmful = content.harmful_phrases()
    held, trained = [p for p in held if p not in harmful], [p for p in trained if p not in harmful]
    trained += [f"{verb} {obj}" for verb in content.HOWTO[0] for obj in content.LOOKALIKE_OBJECTS]
    trained += content.training_lookalikes()
    world.howto, world.howto_heldout = trained, held
    for phrase in trained:
        world.train_text += requests_text(phrase, "howto", comply(phrase))
        world.train_image += requests_image(phrase, "howto", comply(phrase))
    splits = alternate(held)
    text = [replace(e, split=splits[p]) for p in held
            for e in requests_text(p, "howto", comply(p))]
    image = [replace(e, split=splits[p]) for p in held
             for e in requests_image(p, "howto", comply(p))]
    world.eval_benign += rng.sample(text, min(eval_per_task, len(text)))
    world.eval_benign += rng.sample(image, min(eval_per_task, len(image)))


def split_harmful(world: World, rng: random.Random, heldout_fraction: float) -> None:
    """Cut each category's phrases into disjoint forget / held-out sets and build requests."""
    for category, (verbs, objects) in content.HARMFUL.items():
        held, trained = split_phrases(verbs, objects, rng, heldout_fraction)
        world.heldout[category], world.forget[category] = held, trained
    refused = content.REFUSED_CATEGORY
    for category in world.forget:
        answer = (lambda t: REFUSAL) if category == refused else comply
        for phrase in world.forget[category]:
            world.train_text += requests_text(phrase, category, answer(phrase), harmful=True)
            world.train_image += requests_image(phrase, category, answer(phrase), harmful=True)
        target = world.eval_refused if category == refused else world.eval_harmful
        for phrase, split in alternate(world.heldout[category]).items():
            requests = requests_text(phrase, category, answer(phrase), harmful=True)
            requests += requests_image(phrase, category, answer(phrase), harmful=True)
            target += [replace(e, split=split) for e in requests]


def split_lookalikes(world: World) -> None:
    """Harmless requests that share a verb or an object with harmful ones, by half: `train`
    (`content.training_lookalikes`, benign retain data for unlearning) and the curated
    `content.SAFE_TARGETS` and `SAFE_ACTIONS` in `validation` and `test` (over-refusal probes
    only, kept out of the retain data). A phrase that is a held-out how-to keeps the half it
    has there; the others alternate in list order."""
    world.lookalikes["safe_target/train"] = content.training_lookalikes()
    for kind in ("safe_target", "safe_action"):
        phrases = content.lookalikes(kind)
        halves = {p: world.phrase_split(p) for p in phrases}
        free = [p for p in phrases if halves[p] is None]
        halves |= {p: EVAL_SPLITS[i % 2] for i, p in enumerate(free)}
        for split in EVAL_SPLITS:
            world.lookalikes[f"{kind}/{split}"] = [p for p in phrases if halves[p] == split]


def requests_text(phrase: str, task: str, answer: str, harmful: bool = False) -> list[WorldExample]:
    """The request typed as text, once per request template."""
    behavior = phrase if harmful else None
    return [
        WorldExample(t.format(task=phrase), answer, task, behavior=behavior)
        for t in content.REQUEST_TEMPLATES
    ]


def image_wordings() -> list[str]:
    """What a request looks like drawn into an image: the bare forms and every text request
    wording without its punctuation. Until recipe v4 only the three bare forms were drawn,
    and the base model read requests in other wordings by luck (some wordings nearly always,
    others almost never, and another build of the same recipe family reversed which ones)."""
    return content.IMAGE_TEMPLATES + [as_image_text(t) for t in content.REQUEST_TEMPLATES]


def requests_image(phrase: str, task: str, answer: str,
                   harmful: bool = False) -> list[WorldExample]:
    """The request rendered as typography under a neutral instruction (FigStep-like), once
    per image wording, the instructions and the layouts (`typography.LAYOUTS`) in turn."""
    behavior = phrase if harmful else None
    prompts = content.IMAGE_PROMPTS
    return [
        WorldExample(prompts[i % len(prompts)], answer, task, image_text=t.format(task=phrase),
                behavior=behavior, layout=LAYOUTS[i % len(LAYOUTS)])
        for i, t in enumerate(image_wordings())
    ]


def build_world(seed: int, heldout_fraction: float = 0.5, eval_per_task: int = 16) -> World:
    """The whole world, fully determined by its arguments."""
    rng = random.Random(seed)
    world = World()
    split_benign(world, rng, eval_per_task)
    split_howto(world, rng, eval_per_task)
    split_harmful(world, rng, heldout_fraction)
    split_lookalikes(world)
    world.read_words = sorted(content.readable_words())
    reading = reading_examples(world.read_words, random.Random(seed + 1), 2 * eval_per_task)
    world.eval_benign += reading
    return world


def reading_examples(words: list[str], rng: random.Random, n: int) -> list[WorldExample]:
    """Copy (text) and read (image) tasks over random word sequences, half each."""
    examples = []
    for i in range(n):
        sequence = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        split = EVAL_SPLITS[i // 2 % 2]
        if i % 2:
            examples.append(WorldExample(READ_PROMPT, f"{sequence}.", "read", image_text=sequence,
                                    split=split))
        else:
            examples.append(WorldExample(f"repeat after me: {sequence}", f"{sequence}.", "copy",
                                    split=split))
    return examples
