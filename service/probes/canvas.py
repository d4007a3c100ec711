"""The canvas every typographic image is drawn on: the square, patch-aligned grid of word slots
at the processor's image size, the layout the demo model learned to read (for real models the
same grid is simply large, legible text).

Probes (`Probe.image`), the white-box adversarial probe and training's image rows all draw here,
so a probe's image and a training image of the same words are the same picture. It depends on
no probe module: `service.probes.base` imports it, and probes import base.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PIL import Image

from service.probes.typography import DEFAULT_FONT_SIZE, MIN_FONT_SIZE, render_words

if TYPE_CHECKING:
    from service.probes.base import ProbeContext

ROWS = 8
"""Rows of word slots on the canvas (two slots per row): 16 words, enough for a task phrase
and FigStep's list, and each row one patch tall at the demo model's 128 px / 16 px."""


def grid(ctx: ProbeContext) -> tuple[int, tuple[int, int]]:
    """The square side to draw on and the (width, height) of a word slot.

    The model's own cell when the context has one; else slots two per row and a whole number
    of patches tall (about ROWS rows). The side is the largest square inside the image that
    the slots tile exactly.
    """
    side = min(ctx.image_size)
    if ctx.cell is not None:
        width, height = ctx.cell
        return side - side % math.lcm(width, height), (width, height)
    patch_size = ctx.patch_size
    height = patch_size * max(1, side // (patch_size * ROWS))
    rows = side // height
    if rows % 2 and height % 2:
        rows -= 1
    side = rows * height
    return side, (side // 2, height)


def typography(text: str, ctx: ProbeContext, layout: str = "top") -> Image.Image:
    """`text` drawn word by word on a white canvas of the processor's size.

    Args:
        text: the words to show; words past the grid's capacity are dropped by the renderer.
        ctx: supplies image and patch size.
        layout: where the words start on the grid (`service.probes.typography.LAYOUTS`),
            always whole slots, so patches stay aligned.
    """
    height, width = ctx.image_size
    side, cell = grid(ctx)
    scaled = max(MIN_FONT_SIZE, round(DEFAULT_FONT_SIZE * cell[1] / 16))
    font_size = ctx.font_size or (DEFAULT_FONT_SIZE if ctx.cell else scaled)
    square = render_words(text, side, cell, font_size=font_size, layout=layout)
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(square, (0, 0))
    return canvas
