"""The build stays the source of truth: rebuild the demo files from code, compare them with the
shipped ones, and refresh those (`python -m unlearning.demo rebuild [--ship]`).

The model and the adapters each record the CPU that built them (`manifest.json` `built_on` for
the model, each adapter's `crossguard.json` `built_on`: the adapters can be retrained alone on
the shipped model, on another machine). On the model's CPU a rebuild must reproduce every model
file bitwise (sha256); on another CPU the float rounding differs, so the check is the demo
eval's table instead: no rate of the rebuilt base model more than one attempt below the shipped
one's, on the validation half (the check decides nothing, but the test half stays for
reports). The adapters are retrained on the *shipped* model, their input, and must reproduce
bitwise on their own CPU; elsewhere they are not compared (their tables would differ by the
rounding of thousands of steps). `make demo-report` runs it before reporting on the shipped
files; `freshness` is CI's check that the shipped files were built from this code at all.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from service.vlm import folders
from service.vlm.folders import AdapterFolder, ModelFolder, file_sha256
from unlearning import fingerprint
from unlearning.demo import shipping
from unlearning.demo.build import BuildPlan, build, model_dir, shipped_problem, stale_model
from unlearning.demo.recipe import Recipe
from unlearning.demo.safety import (
    REPORT_SEEDS,
    adapter_dir,
    safety_adapter,
    shipped_adapter_problem,
    stale_adapter,
)

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = (folders.ADAPTER_WEIGHTS, folders.ADAPTER_CONFIG)
"""What a rebuilt adapter must reproduce; its crossguard.json and train log carry timings."""


def freshness(recipe: Recipe | None = None) -> list[str]:
    """Why the shipped files are not what this code builds, one line each (empty when they
    are), each naming the command that refreshes them."""
    plan = BuildPlan.of(recipe or Recipe())
    problems = [f"model: {p}" for p in [shipped_problem(plan)] if p]
    model = Path(plan.name)
    problems += [f"safety seed {s}: {p}" for s in REPORT_SEEDS
                 for p in [shipped_adapter_problem(model, s)] if p]
    return [f"shipped demo files stale, {p}; refresh them with `{shipping.REFRESH}`"
            for p in problems]


def rebuild(home: Path, seeds=REPORT_SEEDS, adapters_only: bool = False,
            ) -> tuple[Path, dict[int, Path]]:
    """Build the model and train the seeds' adapters from code into `home`, ignoring what is
    cached or shipped; `adapters_only` takes the model as cached or shipped (it must still fit
    this code) and retrains the adapters only, for a change of the trainer's inputs alone."""
    model = build(Recipe(), home, force=not adapters_only)
    return model, {seed: safety_adapter(model, seed, force=True) for seed in seeds}


def model_differences(model: Path) -> list[str]:
    """Files of a rebuilt model whose bytes differ from the shipped one's (`build.json`
    `files`)."""
    recorded, rebuilt = (_record(folder)["files"] for folder in (shipping.MODEL, model))
    return [f"model/{name}" for name in sorted(set(recorded) | set(rebuilt))
            if recorded.get(name) != rebuilt.get(name)]


def adapter_differences(model: Path, adapters: dict[int, Path]) -> list[str]:
    """Files of retrained adapters (on model folder `model`) whose bytes differ from the
    shipped ones: each adapter's weights and config."""
    found = []
    for seed, folder in sorted(adapters.items()):
        shipped = shipping.adapter(seed)
        for name in ADAPTER_WEIGHTS:
            if _portable_bytes(shipped / name, model) != _portable_bytes(folder / name, model):
                found.append(f"adapters/seed-{seed}/{name}")
    return found


def tables_worse(shipped, rebuilt) -> list[str]:
    """Cells of two demo eval reports (`unlearning.demo.evaluate.DemoEvaluation`) where the rebuilt
    model is more than one attempt *below* the shipped one. Every rate of the table is one the
    demo world wants high (benign accuracy, the base model falling for held-out attacks, the
    refused category refused, look-alikes answered as asked), so a rebuild on another CPU may
    land above the shipped model's level but not below it (measured: README "Shipped
    weights")."""
    found = []
    for metric in ("benign", "asr", "refusal", "lookalike"):
        for modality, rate in getattr(shipped, metric).items():
            other = getattr(rebuilt, metric).get(modality)
            attempts = shipped.attempts.get(f"{metric}/{modality}", 1)
            if other is None or other < rate - 1 / attempts - 1e-9:
                found.append(f"{metric} {modality}: shipped {rate:.3f}, rebuilt {other}")
            elif abs(other - rate) > 1 / attempts + 1e-9:
                log.info("%s %s: shipped %.3f, rebuilt %.3f (above: not a difference)",
                         metric, modality, rate, other)
    return found


def compare_rebuild(home: Path, adapters_only: bool = False) -> list[str]:
    """Rebuild into `home` and compare with the shipped files (module docstring): the model
    bitwise on its CPU and by the validation table elsewhere (unless `adapters_only`), the
    adapters bitwise on their CPU. Returns what disagrees (empty when the rebuild
    reproduces)."""
    here = fingerprint.machine()
    shipped_model = build(Recipe(), home / "shipped")
    found = [] if adapters_only else _check_model(home, shipped_model, here)
    adapter_cpu = AdapterFolder(shipping.adapter(REPORT_SEEDS[0])).metadata().get("built_on")
    if here != adapter_cpu:
        log.info("adapters trained on %s, not on this CPU (%s): not retrained here",
                 (adapter_cpu or {}).get("cpu"), here["cpu"])
        return found
    adapters = {seed: safety_adapter(shipped_model, seed, force=True) for seed in REPORT_SEEDS}
    differ = adapter_differences(shipped_model, adapters)
    log.info("adapters retrained on the adapters' CPU (%s): %d files differ", here["cpu"],
             len(differ))
    return found + differ


def _check_model(home: Path, shipped_model: Path, here: dict) -> list[str]:
    model = build(Recipe(), home, force=True)
    reference = shipping.manifest()["built_on"]
    if here == reference:
        found = model_differences(model)
        log.info("model rebuilt on its CPU (%s): %d files differ", here["cpu"], len(found))
        return found
    log.info("model rebuilt on %s, shipped one built on %s: comparing the validation table",
             here["cpu"], reference["cpu"])
    from unlearning.demo.evaluate import evaluate_folder

    return tables_worse(evaluate_folder(shipped_model, split="validation"),
                           evaluate_folder(model, split="validation"))


def ship(model: Path, adapters: dict[int, Path]) -> Path:
    """Replace the shipped files with a rebuild's: the model folder as built, the adapters
    with their model path made portable and no evaluation history, then the manifest."""
    shutil.rmtree(shipping.BUILT, ignore_errors=True)
    shutil.copytree(model, shipping.MODEL)
    for seed, folder in sorted(adapters.items()):
        target = shipping.adapter(seed)
        shipping.copy_adapter(folder, target, model, to_shipped=True)
        metadata = AdapterFolder(target).metadata()
        metadata.pop("evaluations", None)
        AdapterFolder(target).write_metadata(metadata)
    shipping.write_manifest(model.name, {s: a.name for s, a in adapters.items()},
                            _record(model)["built_on"])
    size = sum(p.stat().st_size for p in shipping.BUILT.rglob("*") if p.is_file())
    log.info("shipped %s (%.1f MB): model sha256 %s", shipping.BUILT, size / 1e6,
             file_sha256(shipping.MODEL / "model.safetensors")[:12])
    return shipping.BUILT


def _record(model: Path) -> dict:
    """A model folder's `build.json`."""
    return json.loads(ModelFolder(model).build_file.read_text())


RUN_VARIANT = ("built_on", "build_seconds", "started_at", "finished_at", "seconds",
               "seconds_per_step", "start_memory_mb", "peak_memory_mb", "evaluations")
"""Fields of `build.json` / `crossguard.json` that differ between two runs of the same code
(timings, the machine, later evaluations): never carried over by `rekey`."""


def rekey(old_home: Path, new_home: Path) -> list[str]:
    """Carry the shipped files over a code change that computes the same bytes, instead of
    rebuilding them (a rebuild on another CPU than the shipping one gives other weights, and
    other README numbers, for a mere refactor).

    The proof is two builds on one CPU: `old_home` holds the model and the report seeds'
    adapters built by the code that built the shipped files (same keys as the shipped ones),
    `new_home` those built by this code (`build --force`, `safety --force`). Every model file
    and every adapter's weights and peft config must be equal byte for byte (paths aside). Then
    the shipped weights stay, and only what the code change changed in their records (the keys,
    the config's field names) is taken from the new build. Returns what disagrees; nothing is
    changed then.
    """
    manifest = shipping.manifest()
    old_model = folders.models_dir(old_home) / manifest["model"]
    new_model = model_dir(Recipe(), home=new_home)
    old_record, new_record = _record(old_model), _record(new_model)
    found = []
    if old_record["inputs"] != _record(shipping.MODEL)["inputs"]:
        found.append(f"{old_model}: not built by the shipped files' code")
    found += [f"{new_model}: {p}" for p in [stale_model(new_model, BuildPlan.of(Recipe()))] if p]
    if old_record["built_on"] != new_record["built_on"]:
        found.append(f"the two builds ran on different CPUs ({old_record['built_on']['cpu']}, "
                     f"{new_record['built_on']['cpu']}): bytes cannot be compared")
    found += [f"model/{name}" for name in sorted(set(old_record["files"]) |
                                                 set(new_record["files"]))
              if old_record["files"].get(name) != new_record["files"].get(name)]
    pairs = {}
    for seed in REPORT_SEEDS:
        old = old_model.with_name(f"{old_model.name}-adapters") / manifest["adapters"][str(seed)]
        new = adapter_dir(new_model, seed)
        shipped_key = AdapterFolder(shipping.adapter(seed)).metadata()["cache_key"]
        if _portable(old, old_model)["cache_key"] != shipped_key:
            found.append(f"{old}: not trained by the shipped files' code")
        found += [f"{new}: {p}" for p in [stale_adapter(new, new_model, seed)] if p]
        found += [f"adapters/seed-{seed}/{name}" for name in ADAPTER_WEIGHTS
                  if _portable_bytes(old / name, old_model) != _portable_bytes(new / name,
                                                                                new_model)]
        pairs[seed] = (old, new)
    if found:
        return found
    _carry(shipping.MODEL / "build.json", old_record, new_record)
    for seed, (old, new) in pairs.items():
        _carry(shipping.adapter(seed) / folders.ADAPTER_METADATA, _portable(old, old_model),
               _portable(new, new_model))
    shipping.write_manifest(
        new_model.name, {seed: new.name for seed, (_, new) in pairs.items()},
        manifest["built_on"],
        rekeyed=[*manifest.get("rekeyed", []),
                 {"from": {"model": manifest["model"], "adapters": manifest["adapters"]},
                  "proved_on": new_record["built_on"], "files_compared":
                  len(new_record["files"]) + len(pairs) * len(ADAPTER_WEIGHTS)}])
    log.info("re-keyed the shipped files to this code: %s (was %s)", new_model.name,
             manifest["model"])
    return []


def _portable_bytes(path: Path, model: Path) -> bytes | None:
    """A file's bytes (None when missing), the model folder's path written as
    `shipping.MODEL_PATH` in text files (`shipping.PORTABLE_SUFFIXES`), as a shipped copy
    holds it."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    if path.suffix not in shipping.PORTABLE_SUFFIXES:
        return data
    return data.replace(str(model).encode(), shipping.MODEL_PATH.encode())


def _portable(adapter: Path, model: Path) -> dict:
    """An adapter's crossguard.json with the model folder's path made portable."""
    return json.loads(_portable_bytes(adapter / folders.ADAPTER_METADATA, model) or b"{}")


def _carry(shipped_file: Path, old: dict, new: dict) -> None:
    """Rewrite the shipped record `shipped_file` with the fields in which the new build's
    record differs from the old build's, run-to-run fields (`RUN_VARIANT`) aside."""
    record = json.loads(shipped_file.read_text())
    for name in sorted(set(old) | set(new)):
        if name in RUN_VARIANT or old.get(name) == new.get(name):
            continue
        if name in new:
            record[name] = new[name]
        else:
            record.pop(name, None)
    shipped_file.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
