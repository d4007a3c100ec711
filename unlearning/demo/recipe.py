"""Every knob of the demo model in one frozen dataclass.

The recipe is one input of the cache key that names the model folder (`unlearning.demo.build`
adds the data and the code that write it), so a stale model is never served after it moved on.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearning.options import option


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of the demo world, model and training phases."""

    # world
    seed: int = option(0, "Seed of the world, the initial weights and the training batches.")
    heldout_fraction: float = option(0.5, "Share of each category's harmful phrases held out.")
    eval_per_task: int = option(
        32, "Held-out benign questions kept per task and modality (half validation, half "
        "test); 16 left a test half where one miss moved accuracy by 2.5 points.")
    # typography / vision
    image_size: int = option(256, "Side of the square image; images of other sizes are resized.")
    patch_size: int = option(64, "Vision patch side; word slots are whole multiples of it.")
    cell_width: int = option(64, "Word slot width in pixels (one patch: one word, one token).")
    cell_height: int = option(64, "Word slot height in pixels (one patch).")
    vision_hidden: int = option(128, "CLIP hidden size.")
    vision_layers: int = option(3, "CLIP encoder layers.")
    vision_heads: int = option(4, "CLIP attention heads.")
    # language model
    text_hidden: int = option(128, "Llama hidden size.")
    text_intermediate: int = option(384, "Llama MLP size.")
    text_layers: int = option(4, "Llama decoder layers.")
    heads: int = option(8, "Llama attention heads; small (16-d) heads learn to copy fast.")
    max_positions: int = option(256, "Llama max positions: image tokens + prompt + reply fit.")
    init_std: float = option(
        0.06,
        "Init std of the Llama weights (initializer_range); 3x Llama's 0.02 "
        "escapes the plateau before copying (induction) heads form.",
    )
    embedding_std: float = option(
        0.1,
        "Init std of the frozen token embeddings. Larger than Llama's "
        "0.02 so tied logits are decisive without growing the final norm.",
    )
    tie_embeddings: bool = option(
        True,
        "Tie lm_head to the (frozen) input embeddings: copying a "
        "word then only needs attention, which held-out requests rely on.",
    )
    # phase 1: alignment of vision patches to token embeddings
    align_steps: int = option(
        1600,
        "Steps mapping each word slot's patches to its token embedding. 400 already read "
        "every word right (nearest embedding) but left patches at cosine 0.5 and a third of "
        "the embedding's norm; 1600 reach cosine 0.96 at its norm.",
    )
    align_batch: int = option(32, "Images per alignment step.")
    align_lr: float = option(1e-3, "AdamW learning rate of the alignment phase.")
    temperature: float = option(0.05, "Temperature of the cosine logits in the alignment loss.")
    # phase 2: instruction tuning on mixed text and image chats
    sft_steps: int = option(1300, "Instruction-tuning steps (1000 read held-out wordings poorly).")
    sft_batch: int = option(32, "Chats per instruction-tuning step.")
    sft_lr: float = option(2e-3, "AdamW learning rate of instruction tuning.")
    image_share: float = option(0.4, "Share of chats that carry an image.")
    reading_share: float = option(0.35, "Share of chats that copy or read random words.")
    system_share: float = option(0.15, "Share of chats with a (behaviour-neutral) system message.")
    history_share: float = option(
        0.3, "Share of chats that follow 1-2 earlier benign turns (answered as trained), so "
        "that attacks after a benign conversation reach a model that can hold one.")

    def __post_init__(self) -> None:
        for name in ("cell_width", "cell_height"):
            if getattr(self, name) % self.patch_size:
                raise ValueError(f"{name} must be a multiple of patch_size")
        if self.image_size % self.cell_width or self.image_size % self.cell_height:
            raise ValueError("image_size must be a multiple of cell_width and cell_height")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must lie strictly between 0 and 1")

    @property
    def cell(self) -> tuple[int, int]:
        return (self.cell_width, self.cell_height)
