"""The probe context for a served engine, asked through the engine contract only.

`ProbeContext.from_engine` (service/probes/base.py) builds the same context from an engine's
processor and model config; the trainer still draws its images through it
(`unlearning.batching.Typography`). It is left as it is on purpose: `base.py` is part of the demo
build's key (`unlearning.fingerprint`), and a changed key means rebuilding the shipped weights,
which another CPU does not rebuild bit for bit (README "Reproducing the numbers",
Determinism); tests/probes/test_context.py holds the two to the same context.
"""

from __future__ import annotations

from pathlib import Path

from service.probes.base import ProbeContext
from service.vlm.folders import ModelFolder
from service.vlm.protocol import Engine


def probe_context(engine: Engine, cache_dir: str | Path | None = None,
                  **options) -> ProbeContext:
    """Image and patch size from the engine, the typography cell (and font size) from the model
    folder's demo world when it has one; `options` set the other fields (split, best_of_n,
    temperature)."""
    world = ModelFolder(engine.base_model_id).world()
    return ProbeContext(
        image_size=tuple(engine.image_size),
        patch_size=int(engine.patch_size or ProbeContext.patch_size),
        cell=world.cell if world else None,
        font_size=world.font_size if world else None,
        engine=engine,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        **options,
    )
