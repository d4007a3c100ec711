"""Training phases of the demo VLM, on one CPU thread.

1. Alignment: only the vision tower and projector learn; every patch of a word slot is pulled
   to that word's (frozen) input embedding. Without it the image path collapses to a constant.
2. Instruction tuning on mixed text and image chats; the vision side and the input embeddings
   stay frozen so the alignment keeps meaning, and images reach the language space as the
   very embeddings the words have as text.
"""

from __future__ import annotations

import logging
import math
import random

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from unlearning.demo.batches import alignment_batch, encode_chats, sample_chats
from unlearning.demo.recipe import Recipe
from unlearning.demo.world import World

log = logging.getLogger(__name__)


def alignment_loss(
    features: torch.Tensor, targets: torch.Tensor, embeddings: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy over cosine logits against every token embedding, plus an MSE scaled by
    the mean squared embedding norm so the projected patch matches the embedding's size too.
    (Dot-product logits against small-norm embeddings stall at ln|V|.)"""
    logits = F.normalize(features, dim=-1) @ F.normalize(embeddings, dim=-1).T / temperature
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    scale = embeddings.pow(2).sum(-1).mean()
    mse = (features - embeddings[targets]).pow(2).sum(-1).mean() / scale
    return ce + mse


def image_features(model: LlavaForConditionalGeneration, pixels: torch.Tensor) -> torch.Tensor:
    """Projected patch features, exactly as LLaVA feeds them to the language model."""
    out = model.model.get_image_features(
        pixel_values=pixels, vision_feature_layer=-1, vision_feature_select_strategy="default"
    )
    return torch.stack(out.pooler_output)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over 5 % of the steps, then cosine decay to 5 % of the peak."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_trainable(model: LlavaForConditionalGeneration, vision: bool) -> list[torch.nn.Parameter]:
    """Train the vision side (phase 1) or the language model minus its input embeddings
    (phase 2; a tied lm_head stays frozen with them); returns the parameters to optimise."""
    for p in model.parameters():
        p.requires_grad_(False)
    if vision:
        modules = [model.model.vision_tower, model.model.multi_modal_projector]
    else:
        modules = [
            model.model.language_model.layers,
            model.model.language_model.norm,
            model.lm_head,
        ]
    frozen = model.get_input_embeddings().weight
    params = [p for m in modules for p in m.parameters() if p is not frozen]
    for p in params:
        p.requires_grad_(True)
    return params


def run_phase(name: str, steps: int, lr: float, params: list, step_loss) -> None:
    """Optimise `step_loss(step)` for `steps` steps with AdamW + cosine, showing progress."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = cosine_schedule(optimizer, steps)
    bar = tqdm(range(steps), desc=name, unit="step", mininterval=2.0)
    for step in bar:
        loss = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % 100 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f", name, step + 1, steps, loss.item())


def align(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, world: World, recipe: Recipe
) -> None:
    """Phase 1: map word-slot patches onto the words' frozen input embeddings."""
    params = set_trainable(model, vision=True)
    embeddings = model.get_input_embeddings().weight.detach()
    rng = random.Random(recipe.seed + 11)

    def step_loss(_: int) -> torch.Tensor:
        pixels, targets = alignment_batch(
            processor, world.read_words, recipe, rng, recipe.align_batch
        )
        return alignment_loss(
            image_features(model, pixels), targets, embeddings, recipe.temperature
        )

    model.train()
    run_phase("align", recipe.align_steps, recipe.align_lr, params, step_loss)
    log.info(
        "alignment: %.1f%% of word patches read as their word",
        100 * alignment_accuracy(model, processor, world, recipe),
    )


@torch.no_grad()
def alignment_accuracy(model, processor, world: World, recipe: Recipe) -> float:
    """Share of word patches, on fresh images, whose nearest embedding (cosine) is the word."""
    model.eval()
    pixels, targets = alignment_batch(processor, world.read_words, recipe, random.Random(7), 64)
    embeddings = F.normalize(model.get_input_embeddings().weight, dim=-1)
    predicted = (F.normalize(image_features(model, pixels), dim=-1) @ embeddings.T).argmax(-1)
    words = targets != processor.tokenizer.unk_token_id
    model.train()
    return (predicted[words] == targets[words]).float().mean().item()


def instruction_tune(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, world: World, recipe: Recipe
) -> None:
    """Phase 2: next-token loss on the assistant replies of mixed text / image chats."""
    params = set_trainable(model, vision=False)
    rng = random.Random(recipe.seed + 23)

    def step_loss(_: int) -> torch.Tensor:
        chats = sample_chats(world, recipe, rng, recipe.sft_batch)
        return model(**encode_chats(processor, chats, recipe, with_answer=True)).loss

    model.train()
    run_phase("instruct", recipe.sft_steps, recipe.sft_lr, params, step_loss)


def train_model(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, world: World, recipe: Recipe
) -> None:
    """Both phases, deterministic for a given recipe; leaves the model in eval mode."""
    torch.manual_seed(recipe.seed)
    align(model, processor, world, recipe)
    instruction_tune(model, processor, world, recipe)
    model.eval()
