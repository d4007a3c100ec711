"""The demo files shipped with the project: the very model folder and `safety` adapters that
`python -m unlearning.demo rebuild --ship` built from code on the reference CPU.

They live in the repository beside the code that builds them (`unlearning/demo/built/`), not
in a release or on a model hub: a clone or a wheel of a commit then holds the weights of that
commit's code, the freshness test (`tests/unlearning/test_shipped.py`) compares them with the
code in the same tree, and no network is needed. `build` and `safety_adapter` copy them into
`CROSSGUARD_HOME` when their recorded inputs (recipe, data sha256s, the module closure's
sources, library versions) equal this code's; otherwise they build from code and log why.
Every CPU then serves the same weights: only a rebuild depends on the CPU's float rounding.

Layout: `built/model/` is a model folder exactly as `build` wrote it (its `build.json` keys
and fingerprints it); `built/adapters/seed-N/` is the seed's adapter folder with the model
folder's path written as `MODEL_PATH`, so no machine path is committed; `built/manifest.json`
names them, records the CPU that built them and a sha256 of every shipped file.

This module owns the layout only; `unlearning.demo.build`, `unlearning.demo.safety` decide
when to use it and `unlearning.demo.rebuild` writes and checks it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from service.vlm.folders import file_sha256

BUILT = Path(__file__).resolve().parent / "built"
MODEL = BUILT / "model"
MANIFEST = BUILT / "manifest.json"
MODEL_PATH = "@MODEL@"
"""Stands for the model folder's path in shipped adapter files (peft writes the base model's
path into `adapter_config.json` and its model card; crossguard.json names the data files)."""

PORTABLE_SUFFIXES = (".json", ".jsonl", ".md")
REFRESH = "make demo-ship"
"""The command that rebuilds from code and refreshes the shipped files (named by every
staleness message)."""


def adapter(seed: int) -> Path:
    """The shipped `safety` adapter of `seed`."""
    return BUILT / "adapters" / f"seed-{seed}"


def manifest() -> dict:
    """`manifest.json`, `{}` when nothing is shipped."""
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def changed_files(folder: Path) -> list[str]:
    """Files under shipped `folder` that are missing, added or changed since the manifest was
    written (a hand edit of a shipped file is never served)."""
    recorded = {k: v for k, v in manifest().get("files", {}).items()
                if (BUILT / k).is_relative_to(folder)}
    present = {str(p.relative_to(BUILT)) for p in folder.rglob("*") if p.is_file()}
    found = sorted(set(recorded) ^ present)
    found += sorted(k for k in set(recorded) & present if file_sha256(BUILT / k) != recorded[k])
    return found


def copy_adapter(source: Path, target: Path, model: Path, *, to_shipped: bool) -> None:
    """Copy an adapter folder, writing the model folder's path as `MODEL_PATH` (to_shipped)
    or `MODEL_PATH` as `model` (installing): the only machine-specific text in it."""
    target.mkdir(parents=True)
    old, new = (str(model), MODEL_PATH) if to_shipped else (MODEL_PATH, str(model))
    for path in sorted(source.iterdir()):
        if not path.is_file():
            continue
        if path.suffix in PORTABLE_SUFFIXES:
            (target / path.name).write_text(path.read_text(encoding="utf-8").replace(old, new),
                                            encoding="utf-8")
        else:
            shutil.copyfile(path, target / path.name)


def write_manifest(model_name: str, adapters: dict[int, str], built_on: dict,
                   rekeyed: list[dict] | None = None) -> None:
    """Name what is shipped and fingerprint every shipped file, last. `rekeyed` lists the code
    changes the files were carried over, each with its proof (`unlearning.demo.rebuild.rekey`)."""
    files = {str(p.relative_to(BUILT)): file_sha256(p)
             for p in sorted(BUILT.rglob("*")) if p.is_file() and p != MANIFEST}
    record = {"model": model_name, "adapters": {str(k): v for k, v in sorted(adapters.items())},
              "built_on": built_on, "refresh": REFRESH, "files": files}
    if rekeyed:
        record["rekeyed"] = rekeyed
    MANIFEST.write_text(json.dumps(record, indent=2) + "\n")
