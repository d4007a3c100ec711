"""The typographic renderer: patch-aligned, deterministic, torch-free."""

import subprocess
import sys

import numpy as np
import pytest

from service.probes.typography import (
    LAYOUTS,
    first_slot,
    fit_word,
    grid_slots,
    layout_words,
    render_words,
)

SIZE, CELL, PATCH = 256, (64, 64), 64


def test_renders_rgb_square_white_canvas():
    image = render_words("hello world", SIZE, CELL)
    assert image.mode == "RGB" and image.size == (SIZE, SIZE)
    pixels = np.asarray(image)
    assert pixels.min() < 128, "some ink"
    assert (pixels[SIZE // 2 :] == 255).all(), "empty slots stay white"


def test_empty_text_is_blank():
    assert (np.asarray(render_words("", SIZE, CELL)) == 255).all()


def test_same_word_same_pixels_in_every_slot():
    """A word's pixels do not depend on where it lands: what alignment training relies on."""
    pixels = np.asarray(render_words("apple apple apple apple apple", SIZE, CELL))
    first = pixels[0:64, 0:64]
    assert (pixels[0:64, 64:128] == first).all()
    assert (pixels[64:128, 0:64] == first).all()


def test_ink_stays_inside_its_slot():
    pixels = np.asarray(render_words("a counterfeit", SIZE, CELL))
    assert (pixels[:, 128:] == 255).all()
    assert (pixels[64:] == 255).all()


def test_slots_are_row_major_and_patch_aligned():
    slots = grid_slots(128, (64, 16))
    assert len(slots) == 16
    assert slots[1].box == (64, 0, 128, 16) and slots[2].box == (0, 16, 64, 32)
    assert slots[1].patches(16, 128) == [4, 5, 6, 7]
    assert slots[2].patches(16, 128) == [8, 9, 10, 11]


def test_words_beyond_capacity_are_dropped():
    words = " ".join(f"w{i}" for i in range(20))
    placed = layout_words(words, SIZE, CELL)
    assert [w for w, _ in placed] == [f"w{i}" for i in range(16)]


@pytest.mark.parametrize("layout, slot", [("top", 0), ("middle", 4), ("bottom", 8),
                                          ("indent", 1)])
def test_layouts_put_the_words_at_their_slot(layout, slot):
    """A 4x4 grid and six words (two rows): top starts the first row, middle the row that
    centres the two rows, bottom the row that ends them on the last row, indent one slot in."""
    words = "one two three four five six"
    assert first_slot(layout, 6, SIZE, CELL) == slot
    placed = layout_words(words, SIZE, CELL, layout)
    assert [w for w, _ in placed] == words.split(), "every word, in reading order"
    assert [s.index for _, s in placed] == list(range(slot, slot + 6))


def test_layouts_are_the_four_documented_ones():
    assert LAYOUTS == ("top", "middle", "bottom", "indent")
    assert layout_words("a b", SIZE, CELL) == layout_words("a b", SIZE, CELL, "top")
    with pytest.raises(ValueError, match="layout"):
        layout_words("a b", SIZE, CELL, "left")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_words_that_do_not_fit_a_layout_start_at_the_first_slot(layout):
    for count in (16, 17, 20):
        words = " ".join(f"w{i}" for i in range(count))
        placed = layout_words(words, SIZE, CELL, layout)
        assert placed[0][1].index == 0
        assert [w for w, _ in placed] == words.split()[:16]


def test_indent_keeps_every_word_when_there_is_room():
    words = " ".join(f"w{i}" for i in range(15))
    placed = layout_words(words, SIZE, CELL, "indent")
    assert [s.index for _, s in placed] == list(range(1, 16))


@pytest.mark.parametrize("layout, rows", [("top", (0, 1)), ("middle", (1, 2)),
                                          ("bottom", (2, 3)), ("indent", (0, 1))])
def test_rendered_ink_sits_in_the_layouts_rows(layout, rows):
    pixels = np.asarray(render_words("one two three four five six", SIZE, CELL,
                                     layout=layout))
    inked_rows = {r for r in range(4) if (pixels[r * 64:(r + 1) * 64] < 128).any()}
    assert inked_rows == set(rows)
    if layout == "indent":
        assert (pixels[0:64, 0:64] == 255).all(), "the first slot stays empty"


def test_a_word_looks_the_same_in_every_layout():
    top = np.asarray(render_words("apple", SIZE, CELL, layout="top"))
    bottom = np.asarray(render_words("apple", SIZE, CELL, layout="bottom"))
    assert (bottom[192:256, 0:64] == top[0:64, 0:64]).all()


def test_long_words_shrink_then_truncate_deterministically():
    word, size = fit_word("counterfeit", 64)
    assert word == "counterfeit" and size <= 11
    cut, _ = fit_word("x" * 60, 64)
    assert 0 < len(cut) < 60 and fit_word("x" * 60, 64) == (cut, fit_word("x" * 60, 64)[1])


def test_cell_must_tile_the_image():
    with pytest.raises(ValueError, match="tile"):
        render_words("a", 100, (64, 16))


def test_module_does_not_import_torch():
    code = "import sys, service.probes.typography; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
