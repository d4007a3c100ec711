"""Turn world examples into model inputs, through the same chat template and processor the
service uses, so the model is trained on exactly the prompts it will be served."""

from __future__ import annotations

import random

import torch
from PIL import Image
from transformers import LlavaProcessor

from service.probes.typography import layout_words, render_words
from unlearning.demo import content
from unlearning.demo.recipe import Recipe
from unlearning.demo.tokenizer import ROLES, word_token_id
from unlearning.demo.world import READ_PROMPT, Example, World


def conversation(example: Example, with_answer: bool) -> list[dict]:
    """HF-style chat (content always a list of parts), as the service builds it."""
    chat = []
    if example.system:
        chat.append({"role": "system", "content": [{"type": "text", "text": example.system}]})
    parts = [{"type": "image"}] if example.image_text is not None else []
    chat.append({"role": "user", "content": parts + [{"type": "text", "text": example.prompt}]})
    if with_answer:
        reply = [{"type": "text", "text": example.response}]
        chat.append({"role": "assistant", "content": reply})
    return chat


def image_of(example: Example, recipe: Recipe) -> Image.Image:
    return render_words(example.image_text, recipe.image_size, recipe.cell)


def encode(
    processor: LlavaProcessor, examples: list[Example], recipe: Recipe, with_answer: bool
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
    images = [image_of(e, recipe) for e in examples if e.image_text is not None]
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


def group_by_task(examples: list[Example]) -> tuple[list[list[Example]], list[float]]:
    """Examples grouped by task, each group weighted by the square root of its size: the 16
    capitals are not drowned by 100 sums or 140 how-to pairs, yet the large groups, which
    teach general skills (adding, copying a request), still get most of the batch."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.task, []).append(example)
    ordered = [groups[task] for task in sorted(groups)]
    return ordered, [len(g) ** 0.5 for g in ordered]


def sample_chats(world: World, recipe: Recipe, rng: random.Random, n: int) -> list[Example]:
    """A training batch mixing text and image chats, random reading tasks and system
    messages (which must leave behaviour unchanged), in the recipe's proportions."""
    text, image = group_by_task(world.train_text), group_by_task(world.train_image)
    batch = []
    for _ in range(n):
        if rng.random() < recipe.reading_share:
            example = random_reading(world.read_words, rng, image=rng.random() < recipe.image_share)
        else:
            groups, weights = image if rng.random() < recipe.image_share else text
            example = rng.choice(rng.choices(groups, weights)[0])
        if rng.random() < recipe.system_share:
            example = Example(**{**example.__dict__, "system": rng.choice(content.SYSTEM_PROMPTS)})
        batch.append(example)
    return batch


def random_reading(words: list[str], rng: random.Random, image: bool) -> Example:
    """Copy (text) or read (image) 1-8 random world words; this is what teaches the model to
    produce every word, including those of held-out requests."""
    sequence = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
    if image:
        return Example(READ_PROMPT, f"{sequence}.", "read", image_text=sequence)
    return Example(f"repeat after me: {sequence}", f"{sequence}.", "copy")


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
