"""The untrained demo VLM (LLaVA: CLIP vision tower, projector, Llama) and its processor.

Built from configs only, so it saves and reloads exactly like a hub checkpoint
(`AutoModelForImageTextToText` + `AutoProcessor`), with no download.
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from unlearning.demo.recipe import Recipe


def build_config(recipe: Recipe, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    """LLaVA config; the vision feature is the last CLIP layer (-2 starves a 3-layer tower)."""
    vision = CLIPVisionConfig(
        hidden_size=recipe.vision_hidden,
        intermediate_size=2 * recipe.vision_hidden,
        num_hidden_layers=recipe.vision_layers,
        num_attention_heads=recipe.vision_heads,
        image_size=recipe.image_size,
        patch_size=recipe.patch_size,
        projection_dim=recipe.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.text_hidden,
        intermediate_size=recipe.text_intermediate,
        num_hidden_layers=recipe.text_layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=recipe.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
        image_seq_length=num_image_tokens(recipe),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=recipe.tie_embeddings,
    )


def num_image_tokens(recipe: Recipe) -> int:
    """Patches per image; the CLS token is dropped by the "default" selection strategy."""
    return (recipe.image_size // recipe.patch_size) ** 2


def build_model(
    recipe: Recipe, tokenizer: PreTrainedTokenizerFast
) -> LlavaForConditionalGeneration:
    """Freshly initialised demo model, seeded by the recipe, with generation ids filled in.

    The language model's linear layers get a wider init than the vision side (which aligns
    best at the default); the token embeddings stay frozen through training (they are the
    targets the vision side is aligned to), so their scale is set here rather than learnt.
    """
    model = build_seeded_model(recipe, tokenizer, max_new_tokens=48)
    with torch.no_grad():
        for module in model.model.language_model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, recipe.init_std)
        embeddings = model.get_input_embeddings().weight
        embeddings.normal_(0.0, recipe.embedding_std)
        embeddings[tokenizer.pad_token_id].zero_()
    return model


def build_seeded_model(
    recipe: Recipe, tokenizer: PreTrainedTokenizerFast, max_new_tokens: int
) -> LlavaForConditionalGeneration:
    """The recipe's model at transformers' default init, seeded by the recipe, greedy by
    default and stopping at the tokenizer's eos.

    `build_model` widens this init for the demo; the tests' tiny fixture keeps it, so both
    come out of one builder. The recipe's `init_std` and `embedding_std` are not used here.
    """
    torch.manual_seed(recipe.seed)
    model = LlavaForConditionalGeneration(build_config(recipe, tokenizer))
    generation = model.generation_config
    generation.bos_token_id = tokenizer.bos_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    generation.do_sample = False
    generation.max_new_tokens = max_new_tokens
    return model


def build_processor(recipe: Recipe, tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    """Processor that resizes any image to the native square size and leaves a native-size
    image untouched (no centre crop: a crop would cut typography off the page edges)."""
    side = {"height": recipe.image_size, "width": recipe.image_size}
    image_processor = CLIPImageProcessor(size=side, crop_size=side, do_center_crop=False)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=recipe.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
