"""The demo's `safety` adapter: its documented settings, its cache, and the report README shows.

`safety_config` is the one copy of the settings (`make serve`, the README's by-hand command and
`bench.unlearning_cost` take them from here); the adapter trains on the model folder's text
data only (README "Image over-refusal" says why it keeps no image rows). An adapter is cached
under a key of everything that decides its weights: the model folder (whose name keys the data
it trains on), every field of its training config (defaults and seed included), the source of
the trainer's module closure and the library versions. The key's inputs are stored in the
adapter's `crossguard.json` (written after training, so an interrupted run has none and is
retrained) and checked on reuse, with the fingerprint of every data file it was trained on.
With no cached adapter, the shipped one of the seed (`unlearning.demo.shipping`) is copied in
when it passes the same check.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from service.vlm.folders import AdapterFolder, ModelFolder
from unlearning import fingerprint
from unlearning.config import DataConfig, LossConfig, OptimConfig, RunConfig, TrainConfig
from unlearning.demo import shipping
from unlearning.demo.world import REFUSAL

log = logging.getLogger(__name__)

REPORT_SEEDS = (0, 1, 2)


def safety_config(model: Path, out: Path, seed: int) -> TrainConfig:
    """The training config of the demo `safety` adapter of `model` for `seed`, written to `out`
    (README "On the demo model")."""
    folder = ModelFolder(model)
    return TrainConfig(
        run=RunConfig(model=str(model), out=str(out), seed=seed),
        data=DataConfig(forget=[str(folder.forget)], retain=[str(folder.retain)]),
        loss=LossConfig(refusals=[REFUSAL], forget_nll_cap=6.0, forget_weight=1.0,
                        refusal_weight=2.0, retain_weight=2.0, recovery_share=0.5),
        optim=OptimConfig(max_steps=900, batch_size=16, lr=5e-4),
    )


def key_inputs(model: Path, seed: int) -> dict:
    """The cache key's inputs, the config's groups (`run`, `data`, `lora`, `loss`, `optim`) at
    the top level, so a refused cache names the field that moved (`loss.recovery_share`)."""
    return {
        "model": model.resolve().name,
        **asdict(safety_config(Path("MODEL"), Path("OUT"), seed)),
        "sources": fingerprint.sources_digest("unlearning.trainer"),
        "libraries": fingerprint.library_versions(),
    }


def adapter_dir(model: Path, seed: int = 0) -> Path:
    model = model.resolve()
    return model.with_name(f"{model.name}-adapters") / \
        f"safety-{fingerprint.key(key_inputs(model, seed))}"


def stale_adapter(adapter: Path, model: Path, seed: int) -> str | None:
    """Why a cached adapter cannot be reused (None when it can)."""
    metadata = AdapterFolder(adapter).metadata()
    if not metadata:
        return "no crossguard.json (an unfinished or older run)"
    differences = fingerprint.differences(metadata.get("cache_key", {}), key_inputs(model, seed))
    if differences:
        return f"trained from other inputs ({', '.join(differences[:8])})"
    from unlearning.data import fingerprint as data_fingerprint

    for sources in metadata.get("data", {}).values():
        for source in sources:
            path = Path(source["path"])
            if not path.exists() or data_fingerprint(path) != source["sha256"]:
                return f"{path} changed since it was trained on"
    return None


def shipped_adapter_problem(model: Path, seed: int) -> str | None:
    """Why the shipped adapter of `seed` cannot stand for the one this code trains on `model`
    (None when it can); its data files are checked once copied in (`stale`)."""
    shipped = shipping.adapter(seed)
    if not shipped.is_dir() or str(seed) not in shipping.manifest().get("adapters", {}):
        return f"no shipped adapter for seed {seed}"
    changed = shipping.changed_files(shipped)
    if changed:
        return f"shipped files changed since they were shipped: {', '.join(changed[:5])}"
    differences = fingerprint.differences(AdapterFolder(shipped).metadata().get("cache_key", {}),
                                          key_inputs(model, seed))
    return f"trained from other inputs ({', '.join(differences[:8])})" if differences else None


def safety_adapter(model: str | Path, seed: int = 0, progress: bool = True,
                   force: bool = False) -> Path:
    """The `safety` adapter of `model` for `seed`: the cached one if intact, else the shipped
    one if this code trained it, else trained now. `force` trains whatever exists."""
    from unlearning.trainer import train

    model = Path(model).resolve()
    out = adapter_dir(model, seed)
    if out.exists():
        problem = "asked to (force)" if force else stale_adapter(out, model, seed)
        if problem is None:
            log.info("safety adapter already trained: %s", out)
            return out
        log.warning("retraining %s: %s", out, problem)
        shutil.rmtree(out)
    problem = "asked to (force)" if force else shipped_adapter_problem(model, seed)
    if problem is None:
        shipping.copy_adapter(shipping.adapter(seed), out, model, to_shipped=False)
        problem = stale_adapter(out, model, seed)
        if problem is None:
            log.info("safety adapter copied from the shipped build %s", shipping.adapter(seed))
            return out
        shutil.rmtree(out)
    log.warning("training the safety adapter of seed %d from code, not using the shipped one: "
                "%s", seed, problem)
    train(safety_config(model, out, seed), progress=progress)
    AdapterFolder(out).write_metadata({**AdapterFolder(out).metadata(),
                                 "cache_key": key_inputs(model, seed),
                                 "built_on": fingerprint.machine()})
    return out
