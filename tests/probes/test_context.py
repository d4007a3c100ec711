"""`probe_context` (engines, through the contract) and `ProbeContext.from_engine` (the trainer,
through a processor) give the same context, on a plain model and on a demo folder's grid."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from service.probes.base import ProbeContext
from service.probes.context import probe_context
from service.vlm.folders import ModelFolder
from tests.worlds import demo_world


@pytest.mark.parametrize("demo", [False, True])
def test_both_builders_give_the_same_context(engine, tmp_path, demo):
    if demo:
        ModelFolder(tmp_path).write_world(demo_world(cell=(32, 16), font_size=9))
    served = SimpleNamespace(image_size=engine.image_size, patch_size=engine.patch_size,
                             base_model_id=str(tmp_path))
    seen_through = SimpleNamespace(processor=engine.processor, model=engine.model,
                                   image_size=engine.image_size, base_model_id=str(tmp_path))
    ours = probe_context(served, split="validation", best_of_n=3)
    theirs = ProbeContext.from_engine(seen_through, split="validation", best_of_n=3)
    assert ours.patch_size == engine.processor.patch_size
    assert (ours.image_size, ours.patch_size, ours.cell, ours.font_size, ours.split,
            ours.best_of_n) == (theirs.image_size, theirs.patch_size, theirs.cell,
                                theirs.font_size, theirs.split, theirs.best_of_n)
    assert (ours.cell is not None) == demo
