"""Resumable checkpoints of an unlearning run.

A checkpoint holds only what training changes: the LoRA weights (peft format, so a checkpoint
is itself a loadable adapter), optimiser and schedule state, the step and the RNG state. The
data order is a pure function of (seed, step), so nothing about the data needs saving; the
data fingerprints are saved to refuse resuming on different data.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
RESUME_KEYS = ("data", "lora", "loss")
"""Config groups that must match for a resume to continue the same run (steps, schedule
length and logging may change)."""


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:06d}"


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint with the highest step under `out`, or None."""
    folder = out / CHECKPOINTS
    found = [p for p in folder.glob("step-*") if re.fullmatch(r"step-\d+", p.name)
             and (p / STATE_FILE).is_file()] if folder.is_dir() else []
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(accelerator, model, optimizer, schedule, out: Path, step: int,
                    state: dict) -> Path:
    """Write checkpoint `step` (main process writes; every process takes part in gathering)."""
    folder = checkpoint_dir(out, step)
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(folder, state_dict=weights)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(schedule.state_dict(), folder / "schedule.pt")
        torch.save(torch.get_rng_state(), folder / "rng.pt")
        (folder / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
        logger.info("checkpoint written: %s", folder)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(folder: Path, peft_model, optimizer, schedule, state: dict) -> int:
    """Restore a checkpoint into the (not yet prepared) model and optimiser; returns its step.

    Raises:
        ValueError: when the checkpoint was trained with other data or loss settings.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((folder / STATE_FILE).read_text())
    state = json.loads(json.dumps(state))
    changed = [k for k in RESUME_KEYS if saved.get(k) != state.get(k)]
    if changed:
        raise ValueError(f"resume: {folder} was trained with different {', '.join(changed)} "
                         "settings; start a new --out or drop --resume")
    set_peft_model_state_dict(peft_model, load_file(str(folder / "adapter_model.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    schedule.load_state_dict(torch.load(folder / "schedule.pt", weights_only=True))
    torch.set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
    logger.info("resumed from %s (step %d)", folder, saved["step"])
    return int(saved["step"])


def resume_state(config, sources: dict) -> dict:
    """What a checkpoint records to check a later resume against."""
    return {"data": {**asdict(config.data), "sources": sources}, "lora": asdict(config.lora),
            "loss": asdict(config.loss)}
