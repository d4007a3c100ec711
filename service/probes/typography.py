"""Typographic rendering of text into images, laid out on a grid aligned to the vision patches.

The demo VLM learns to read by mapping every vision patch of a word slot to that word's token
embedding, so the layout must be fully deterministic: fixed font, one word per slot, slots whose
edges fall on patch boundaries, row-major order. Attack probes (FigStep-style typographic
jailbreaks) reuse the same renderer so that what they show the model is exactly what it was
taught to read. Free of torch on purpose: probes and data generation only need Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

DEFAULT_FONT_SIZE = 11
MIN_FONT_SIZE = 7
PAD_LEFT = 1
LAYOUTS = ("top", "middle", "bottom", "indent")
"""Where the words start on the grid; they always run on in reading order, whole words in
whole slots, so every layout stays readable to a model that reads the grid: `top` (first
slot), `middle` (first slot of the row that centres them), `bottom` (first slot of the row
that ends them on the last row, MM-SafetyBench's caption position), `indent` (second slot)."""


@dataclass(frozen=True)
class Slot:
    """One word slot: its index in row-major order and its pixel box (left, top, right, bottom)."""

    index: int
    box: tuple[int, int, int, int]

    def patches(self, patch_size: int, image_size: int) -> list[int]:
        """Row-major indices of the vision patches this slot covers (patch grid of image_size)."""
        left, top, right, bottom = self.box
        per_row = image_size // patch_size
        return [
            row * per_row + col
            for row in range(top // patch_size, bottom // patch_size)
            for col in range(left // patch_size, right // patch_size)
        ]


def as_image_text(question: str) -> str:
    """A question as typography shows it: words only, no punctuation."""
    return " ".join(w.strip("?.,:!") for w in question.split())


def grid_slots(image_size: int, cell: tuple[int, int]) -> list[Slot]:
    """All word slots of a square image, row-major; `cell` is (width, height) in pixels.

    Raises:
        ValueError: if the cell does not tile the image exactly.
    """
    width, height = cell
    if width <= 0 or height <= 0 or image_size % width or image_size % height:
        raise ValueError(f"cell {cell} must tile image_size {image_size} exactly")
    cols, rows = image_size // width, image_size // height
    return [
        Slot(r * cols + c, (c * width, r * height, (c + 1) * width, (r + 1) * height))
        for r in range(rows)
        for c in range(cols)
    ]


def layout_words(text: str, image_size: int, cell: tuple[int, int],
                 layout: str = "top") -> list[tuple[str, Slot]]:
    """Assign whitespace-separated words to slots in reading order from the layout's first
    slot (`LAYOUTS`); words past the last slot are dropped (deterministically), so callers can
    see exactly what the image shows.

    Raises:
        ValueError: for a layout not in LAYOUTS.
    """
    slots = grid_slots(image_size, cell)
    words = text.split()
    return list(zip(words, slots[first_slot(layout, len(words), image_size, cell):],
                    strict=False))


def first_slot(layout: str, words: int, image_size: int, cell: tuple[int, int]) -> int:
    """Index of the slot the first word goes to; a layout the words do not fit starts at 0."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    columns, rows = image_size // cell[0], image_size // cell[1]
    spare_rows = rows - -(-words // columns)
    if spare_rows < 0 or layout == "top":
        return 0
    if layout == "indent":
        return 1 if words < columns * rows else 0
    return (spare_rows // 2 if layout == "middle" else spare_rows) * columns


def fit_word(word: str, width: int, font_size: int = DEFAULT_FONT_SIZE) -> tuple[str, int]:
    """The (possibly shortened) word and font size that fit in `width` pixels.

    A long word first gets a smaller font (down to MIN_FONT_SIZE); if it still does not fit,
    trailing characters are cut. Both steps depend only on the word, so a word always looks
    the same wherever it lands.
    """
    usable = width - PAD_LEFT
    for size in range(font_size, MIN_FONT_SIZE - 1, -1):
        if _text_width(word, size) <= usable:
            return word, size
    while word and _text_width(word, MIN_FONT_SIZE) > usable:
        word = word[:-1]
    return word, MIN_FONT_SIZE


def render_words(
    text: str,
    image_size: int,
    cell: tuple[int, int],
    font_size: int = DEFAULT_FONT_SIZE,
    layout: str = "top",
) -> Image.Image:
    """Render `text` as black words on a white square RGB canvas, one word per grid slot.

    Args:
        text: words separated by whitespace; words beyond the grid's capacity are dropped.
        image_size: side of the square image in pixels.
        cell: (width, height) of a word slot; choose multiples of the vision patch size.
        font_size: preferred size of Pillow's bundled default font (no download needed).
        layout: where the words start (`LAYOUTS`).

    Returns:
        The rendered image.
    """
    image = Image.new("RGB", (image_size, image_size), "white")
    draw = ImageDraw.Draw(image)
    for word, slot in layout_words(text, image_size, cell, layout):
        shown, size = fit_word(word, cell[0], font_size)
        font = _font(size)
        left, top, _, bottom = slot.box
        y = top + (bottom - top - size) // 2 - 1
        draw.text((left + PAD_LEFT, y), shown, fill="black", font=font)
    return image


_FONTS: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size`, cached because loading it costs more than drawing."""
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size)
    return _FONTS[size]


def _text_width(word: str, size: int) -> int:
    return int(_font(size).getlength(word))
