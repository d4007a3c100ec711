"""Turn world examples into model inputs, through the same chat template and processor the
service uses, so the model is trained on exactly the prompts it will be served."""

from __future__ import annotations

import dataclasses
import random

import torch
from PIL import Image
from transformers import LlavaProcessor

from service.probes.typography import LAYOUTS, layout_words, render_words
from unlearning.demo import content
from unlearning.demo.recipe import Recipe
from unlearning.demo.tokenizer import ROLES, word_token_id
from unlearning.demo.world import READ_PROMPT, World, WorldExample


def conversation(example: WorldExample, with_answer: bool) -> list[dict]:
    """HF-style chat (content always a list of parts), as the service builds it: system
    message, earlier turns with their answers, the example's turn (and its answer)."""
    chat = []
    if example.system:
        chat.append({"role": "system", "content": [{"type": "text", "text": example.system}]})
    for turn in (*example.history, example):
        parts = [{"type": "image"}] if turn.image_text is not None else []
        chat.append({"role": "user", "content": parts + [{"type": "text", "text": turn.prompt}]})
        if turn is not example or with_answer:
            chat.append({"role": "assistant",
                         "content": [{"type": "text", "text": turn.response}]})
    return chat


def images_of(example: WorldExample, recipe: Recipe) -> list[Image.Image]:
    """The conversation's images in the order its turns show them."""
    return [render_words(turn.image_text, recipe.image_size, recipe.cell, layout=turn.layout)
            for turn in (*example.history, example) if turn.image_text is not None]


def encode_chats(
    processor: LlavaProcessor, examples: list[WorldExample], recipe: Recipe, with_answer: bool
) -> dict[str, torch.Tensor]:
    """Tokenised batch; with answers it is right-padded for training and carries `labels`
    that score only the assistant reply and its closing `</s>`; without answers it is
    left-padded, ready for `generate`."""
    template = processor.tokenizer.apply_chat_template
    texts = [
        template(
            conversation(e, with_answer), add_generation_prompt=not with_answer, tokenize=False
        )
        for e in examples
    ]
    images = [image for e in examples for image in images_of(e, recipe)]
    batch = processor(
        text=texts,
        images=images or None,
        return_tensors="pt",
        padding=True,
        padding_side="right" if with_answer else "left",
    )
    if with_answer:
        batch["labels"] = reply_labels(batch["input_ids"], batch["attention_mask"], processor)
    return dict(batch)


def reply_labels(ids: torch.Tensor, mask: torch.Tensor, processor: LlavaProcessor) -> torch.Tensor:
    """Labels that keep only the tokens after the last `<|assistant|>` marker."""
    assistant = processor.tokenizer.convert_tokens_to_ids(ROLES["assistant"])
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    start = torch.where(ids == assistant, positions, -1).max(dim=1, keepdim=True).values
    labels = ids.masked_fill((positions <= start) | (mask == 0), -100)
    return labels


def group_by_task(examples: list[WorldExample]) -> tuple[list[list[WorldExample]], list[float]]:
    """Examples grouped by task, each group weighted by the square root of its size: the 16
    capitals are not drowned by 100 sums or 140 how-to pairs, yet the large groups, which
    teach general skills (adding, copying a request), still get most of the batch."""
    groups: dict[str, list[WorldExample]] = {}
    for example in examples:
        groups.setdefault(example.task, []).append(example)
    ordered = [groups[task] for task in sorted(groups)]
    return ordered, [len(g) ** 0.5 for g in ordered]


def sample_chats(world: World, recipe: Recipe, rng: random.Random, n: int) -> list[WorldExample]:
    """A training batch mixing text and image chats, random reading tasks, system messages
    and earlier benign turns (both must leave behaviour unchanged), in the recipe's
    proportions."""
    pools = group_by_task(world.train_text), group_by_task(world.train_image)
    benign = [[e for e in pool if e.behavior is None] for pool in
              (world.train_text, world.train_image)]
    batch = []
    for _ in range(n):
        example = sample_turn(world, recipe, rng, pools)
        if rng.random() < recipe.history_share:
            history = tuple(rng.choice(benign[rng.random() < recipe.image_share])
                            for _ in range(rng.randint(1, 2)))
            example = dataclasses.replace(example, history=history)
        if rng.random() < recipe.system_share:
            example = dataclasses.replace(example, system=rng.choice(content.SYSTEM_PROMPTS))
        batch.append(example)
    return batch


def sample_turn(world: World, recipe: Recipe, rng: random.Random, pools) -> WorldExample:
    """One chat turn: a random reading task, or an example of a task group (weighted)."""
    if rng.random() < recipe.reading_share:
        return random_reading(world.read_words, rng, image=rng.random() < recipe.image_share)
    groups, weights = pools[rng.random() < recipe.image_share]
    return rng.choice(rng.choices(groups, weights)[0])


def random_reading(words: list[str], rng: random.Random, image: bool) -> WorldExample:
    """Copy (text) or read (image, anywhere on the grid) 1-8 random world words; this is what
    teaches the model to produce every word, including those of held-out requests."""
    sequence = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
    if image:
        return WorldExample(READ_PROMPT, f"{sequence}.", "read", image_text=sequence,
                       layout=rng.choice(LAYOUTS))
    return WorldExample(f"repeat after me: {sequence}", f"{sequence}.", "copy")


def alignment_batch(
    processor: LlavaProcessor, words: list[str], recipe: Recipe, rng: random.Random, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of random words and, per vision patch, the token id it should map to: the
    word's token for every patch of its slot, `<unk>` for blank patches (`<pad>` has a zero
    embedding, which a cosine target cannot reach)."""
    tokenizer = processor.tokenizer
    n_patches = (recipe.image_size // recipe.patch_size) ** 2
    slots = (recipe.image_size // recipe.cell_width) * (recipe.image_size // recipe.cell_height)
    images, targets = [], torch.full((n, n_patches), tokenizer.unk_token_id)
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, slots)))
        images.append(render_words(text, recipe.image_size, recipe.cell))
        for word, slot in layout_words(text, recipe.image_size, recipe.cell):
            targets[i, slot.patches(recipe.patch_size, recipe.image_size)] = word_token_id(
                tokenizer, word
            )
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, targets
