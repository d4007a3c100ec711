"""Resumable checkpoints of an unlearning run.

A checkpoint holds only what training changes: the LoRA weights (peft format, so a checkpoint
is itself a loadable adapter), optimiser and schedule state, the step and the RNG state. The
data order is a pure function of (seed, step), so nothing about the data needs saving; the
data fingerprints are saved to refuse resuming on different data.

A run can be killed at any moment, mid-write included, and resumed: a checkpoint is written
into a hidden staging folder and renamed to `step-NNNNNN` once complete (`service.atomic`),
and a resume reads the newest one whole, checks it, and only then restores it, falling back to
the next older one when a file is missing or cut short.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError

from service import atomic
from service.vlm.folders import AdapterFolder
from unlearning.config import read_lora

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE, SCHEDULE_FILE, RNG_FILE = "optimizer.pt", "schedule.pt", "rng.pt"
TORCH_FILES = (OPTIMIZER_FILE, SCHEDULE_FILE, RNG_FILE)
RESUME_KEYS = ("data", "lora", "loss")
"""Config groups that must match for a resume to continue the same run (steps, schedule
length and logging may change)."""

UNREADABLE = (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError,
              pickle.UnpicklingError, SafetensorError)
"""What reading a missing, truncated or foreign checkpoint file raises (torch reports a cut
zip as RuntimeError, an empty one as EOFError)."""


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:06d}"


def complete_checkpoints(out: Path) -> list[Path]:
    """The `step-NNNNNN` folders under `out`, newest first (a folder gets that name only once
    it is written whole)."""
    folder = out / CHECKPOINTS
    found = [p for p in folder.glob("step-*") if re.fullmatch(r"step-\d+", p.name)] \
        if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def save_checkpoint(accelerator, model, optimizer, schedule, out: Path, step: int,
                    state: dict) -> Path:
    """Write checkpoint `step` whole or not at all, after removing what killed writes left
    (main process writes; every process takes part in gathering)."""
    folder = checkpoint_dir(out, step)
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        for leftover in atomic.leftovers(folder.parent, "step-"):
            shutil.rmtree(leftover, ignore_errors=True)
        values = (optimizer.state_dict(), schedule.state_dict(), torch.get_rng_state())
        with atomic.write_folder(folder) as staging:
            accelerator.unwrap_model(model).save_pretrained(staging, state_dict=weights)
            for name, value in zip(TORCH_FILES, values, strict=True):
                atomic.write_bytes(staging / name, atomic.torch_bytes(value))
            atomic.write_bytes(staging / STATE_FILE,
                               json.dumps({**state, "step": step}, indent=2).encode())
        logger.info("checkpoint written: %s", folder)
    accelerator.wait_for_everyone()
    return folder


class Unreadable(Exception):
    """A checkpoint file is missing, cut short, or not what this run writes."""


def _read(path: Path, load):
    try:
        return load(path)
    except UNREADABLE as exc:
        raise Unreadable(f"{path.name}: {type(exc).__name__}: {exc}") from exc


def _state(path: Path) -> dict:
    state = json.loads(path.read_text())
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError("no step recorded")
    return state


def _weights(path: Path, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = load_file(str(path))
    if {k: v.shape for k, v in weights.items()} != shapes:
        raise ValueError("other tensors than this run's adapter")
    return weights


def _optimizer(path: Path, groups: list[int]) -> dict:
    saved = torch.load(path, weights_only=True)
    if [len(g["params"]) for g in saved["param_groups"]] != groups:
        raise ValueError("other parameter groups than this run's optimiser")
    return saved


def _schedule(path: Path) -> dict:
    saved = torch.load(path, weights_only=True)
    if not isinstance(saved, dict):
        raise TypeError("no schedule state")
    return saved


def _rng(path: Path) -> torch.Tensor:
    rng = torch.load(path, weights_only=True)
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 \
            or rng.shape != torch.get_rng_state().shape:
        raise ValueError("no torch CPU RNG state")
    return rng


@dataclass(frozen=True)
class Checkpoint:
    """Everything a checkpoint folder holds, read into memory and checked against the run
    before anything of the run changes."""

    state: dict
    weights: dict[str, torch.Tensor]
    optimizer: dict
    schedule: dict
    rng: torch.Tensor

    @classmethod
    def read(cls, folder: Path, state: dict, peft_model, optimizer) -> Checkpoint:
        """Raises:
            ValueError: when the checkpoint was trained with other data or loss settings.
            Unreadable: when a file is missing, cut short, or holds other tensors, parameter
                groups or RNG state than this run's.
        """
        from peft import get_peft_model_state_dict

        saved = _read(folder / STATE_FILE, _state)
        check_settings(folder, saved, state)
        shapes = {k: v.shape for k, v in get_peft_model_state_dict(peft_model).items()}
        groups = [len(g["params"]) for g in optimizer.param_groups]
        weights = AdapterFolder(folder).weights_file
        return cls(saved, _read(weights, partial(_weights, shapes=shapes)),
                   _read(folder / OPTIMIZER_FILE, partial(_optimizer, groups=groups)),
                   _read(folder / SCHEDULE_FILE, _schedule), _read(folder / RNG_FILE, _rng))

    @property
    def step(self) -> int:
        return self.state["step"]

    def restore(self, peft_model, optimizer, schedule) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(peft_model, self.weights)
        optimizer.load_state_dict(self.optimizer)
        schedule.load_state_dict(self.schedule)
        torch.set_rng_state(self.rng)


def resume(out: Path, peft_model, optimizer, schedule, state: dict) -> int:
    """Restore the newest checkpoint under `out` that reads back whole into the (not yet
    prepared) model and optimiser; returns its step, 0 when there is none.

    Folders of killed writes are ignored, and a checkpoint that fails to read (cut short,
    copied by hand, written by an older version) is skipped for the next older one, each with
    a warning naming it.

    Raises:
        ValueError: when the checkpoint was trained with other data or loss settings.
    """
    for leftover in atomic.leftovers(out / CHECKPOINTS, "step-"):
        logger.warning("ignoring %s: a checkpoint whose writing was interrupted", leftover)
    for folder in complete_checkpoints(out):
        try:
            saved = Checkpoint.read(folder, state, peft_model, optimizer)
        except Unreadable as exc:
            logger.warning("skipping checkpoint %s: %s", folder, exc)
            continue
        saved.restore(peft_model, optimizer, schedule)
        logger.info("resumed from %s (step %d)", folder, saved.step)
        return saved.step
    return 0


def check_settings(folder: Path, saved: dict, state: dict) -> None:
    state = json.loads(json.dumps(state))
    if "lora" in saved:
        saved = {**saved, "lora": read_lora(saved["lora"])}
    changed = [k for k in RESUME_KEYS if saved.get(k) != state.get(k)]
    if changed:
        raise ValueError(f"resume: {folder} was trained with different {', '.join(changed)} "
                         "settings; start a new --out or drop --resume")


def resume_state(config, sources: dict) -> dict:
    """What a checkpoint records to check a later resume against."""
    return {"data": {**asdict(config.data), "sources": sources}, "lora": asdict(config.lora),
            "loss": asdict(config.loss)}
