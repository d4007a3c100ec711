"""The demo's `safety` adapter: its documented settings, its cache, and the report README shows.

`SAFETY_ARGS` are the one copy of the settings (`make serve`, the README's by-hand command and
`bench.unlearning_cost` take them from here); the adapter trains on the model folder's text
data only (README "Image over-refusal" says why it keeps no image rows). An adapter is cached
under a key of everything that decides its weights: the model folder (whose name keys the data
it trains on), the flags, the seed, the source of the trainer's module closure and the library
versions. The key's inputs are stored in the adapter's `crossguard.json` (written after
training, so an interrupted run has none and is retrained) and checked on reuse, with the
fingerprint of every data file it was trained on. With no cached adapter, the shipped one of the
seed (`unlearning.demo.shipping`) is copied in when it passes the same check.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from service.vlm.folders import (
    ModelFolder,
    read_adapter_metadata,
    write_adapter_metadata,
)
from unlearning import fingerprint
from unlearning.demo import shipping
from unlearning.demo.world import REFUSAL

log = logging.getLogger(__name__)

SAFETY_ARGS = (
    "--refusals", REFUSAL, "--max-steps", "900", "--batch-size", "16", "--lr", "5e-4",
    "--forget-nll-cap", "6", "--forget-weight", "1", "--refusal-weight", "2",
    "--retain-weight", "2", "--recovery-share", "0.5",
)
"""`unlearning train` flags of the demo `safety` adapter (README "On the demo model")."""

REPORT_SEEDS = (0, 1, 2)


def train_argv(model: Path, out: Path, seed: int) -> list[str]:
    folder = ModelFolder(model)
    return ["train", "--model", str(model), "--forget", str(folder.forget),
            "--retain", str(folder.retain), *SAFETY_ARGS, "--seed", str(seed), "--out", str(out)]


def key_inputs(model: Path, seed: int) -> dict:
    return {
        "model": model.resolve().name,
        "argv": train_argv(Path("MODEL"), Path("OUT"), seed),
        "sources": fingerprint.sources_digest("unlearning.trainer"),
        "libraries": fingerprint.library_versions(),
    }


def adapter_dir(model: Path, seed: int = 0) -> Path:
    model = model.resolve()
    return model.with_name(f"{model.name}-adapters") / \
        f"safety-{fingerprint.key(key_inputs(model, seed))}"


def stale(adapter: Path, model: Path, seed: int) -> str | None:
    """Why a cached adapter cannot be reused (None when it can)."""
    metadata = read_adapter_metadata(adapter)
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


def shipped_problem(model: Path, seed: int) -> str | None:
    """Why the shipped adapter of `seed` cannot stand for the one this code trains on `model`
    (None when it can); its data files are checked once copied in (`stale`)."""
    shipped = shipping.adapter(seed)
    if not shipped.is_dir() or str(seed) not in shipping.manifest().get("adapters", {}):
        return f"no shipped adapter for seed {seed}"
    changed = shipping.changed_files(shipped)
    if changed:
        return f"shipped files changed since they were shipped: {', '.join(changed[:5])}"
    differences = fingerprint.differences(read_adapter_metadata(shipped).get("cache_key", {}),
                                          key_inputs(model, seed))
    return f"trained from other inputs ({', '.join(differences[:8])})" if differences else None


def safety_adapter(model: str | Path, seed: int = 0, progress: bool = True,
                   force: bool = False) -> Path:
    """The `safety` adapter of `model` for `seed`: the cached one if intact, else the shipped
    one if this code trained it, else trained now. `force` trains whatever exists."""
    from unlearning.cli import build_parser, train_config
    from unlearning.trainer import train

    model = Path(model).resolve()
    out = adapter_dir(model, seed)
    if out.exists():
        problem = "asked to (force)" if force else stale(out, model, seed)
        if problem is None:
            log.info("safety adapter already trained: %s", out)
            return out
        log.warning("retraining %s: %s", out, problem)
        shutil.rmtree(out)
    problem = "asked to (force)" if force else shipped_problem(model, seed)
    if problem is None:
        shipping.copy_adapter(shipping.adapter(seed), out, model, to_shipped=False)
        problem = stale(out, model, seed)
        if problem is None:
            log.info("safety adapter copied from the shipped build %s", shipping.adapter(seed))
            return out
        shutil.rmtree(out)
    log.warning("training the safety adapter of seed %d from code, not using the shipped one: "
                "%s", seed, problem)
    args = build_parser().parse_args(train_argv(model, out, seed))
    train(train_config(args), progress=progress)
    write_adapter_metadata(out, {**read_adapter_metadata(out),
                                 "cache_key": key_inputs(model, seed),
                                 "built_on": fingerprint.machine()})
    return out
