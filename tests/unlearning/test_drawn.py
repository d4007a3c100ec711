"""The demo adapter's image retain rows (`unlearning.demo.drawn`): the text retain set's own
requests drawn, never a probe's image prompt, wording or evaluation phrase; harmful data stays
out of images."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from service.probes.base import normalise_template, probe_classes
from service.probes.typography import LAYOUTS
from service.vlm.folders import ModelFolder
from unlearning.data import DataError, load_examples
from unlearning.demo import content, drawn, shipping
from unlearning.demo.world import READ_PROMPT


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The shipped model folder's files (the rows depend on nothing else)."""
    import shutil

    copy = tmp_path_factory.mktemp("models") / "demo"
    shutil.copytree(shipping.MODEL, copy)
    return copy


@pytest.fixture(scope="module")
def rows(model):
    return drawn.drawn_rows(model)


def probe_image_prompts() -> set[str]:
    return {normalise_template(variant.text) for cls in probe_classes().values()
            if cls.modality == "image" for half in cls.variants.values() for variant in half
            if variant.text}


def test_rows_are_retain_requests_drawn_under_a_prompt_no_probe_uses(model, rows):
    retain = {json.loads(line)["prompt"] for line in ModelFolder(model).retain.read_text()
              .splitlines()}
    prompts = Counter(row["prompt"] for row in rows)
    assert set(prompts) == {drawn.DRAWN_PROMPT, READ_PROMPT}
    assert prompts[drawn.DRAWN_PROMPT] > 1000
    assert not {normalise_template(p) for p in prompts} & probe_image_prompts()
    drawn_requests = [row["image_text"] for row in rows if row["prompt"] == drawn.DRAWN_PROMPT]
    from service.probes.typography import as_image_text

    assert set(drawn_requests) <= {as_image_text(p) for p in retain}


def test_no_row_names_an_evaluation_phrase_even_inside_a_longer_one(model, rows):
    held = drawn.evaluation_phrases(model)
    assert "clean a bank" in held
    assert not [row for row in rows if any(p in row["image_text"] for p in held)]
    assert any("clean a bank server" in json.loads(line)["prompt"]
               for line in ModelFolder(model).retain.read_text().splitlines()), \
        "the retain set holds a row the containment filter must drop"


def test_every_row_is_readable_and_every_layout_is_drawn_alike(rows):
    words = content.readable_words()
    assert all(len(r["image_text"].split()) <= 16 and set(r["image_text"].split()) <= words
               for r in rows)
    layouts = Counter(row["layout"] for row in rows)
    assert set(layouts) == set(LAYOUTS) and max(layouts.values()) - min(layouts.values()) <= 1


def test_written_file_is_stable_and_loads_as_image_retain_rows(model, tmp_path):
    path = drawn.write(model)
    assert path == drawn.path(model) and path.parent.name == "data"
    assert path.parent.parent.name == f"{model.name}-adapters"
    first = path.read_bytes()
    assert drawn.write(model).read_bytes() == first
    examples, source = load_examples(path, "retain")
    assert source.examples == len(examples) and all(e.image_text for e in examples)
    assert {e.layout for e in examples} == set(LAYOUTS)


def test_a_layout_outside_the_renderers_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response": "r", "image_text": "a b",
                               "layout": "left"}) + "\n")
    with pytest.raises(DataError, match="row 1: layout 'left' is not one of top"):
        load_examples(bad, "retain")
