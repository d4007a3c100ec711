"""Checkpoints survive kills: a run SIGKILLed anywhere, in the middle of writing a checkpoint or
the final adapter included, resumes from its newest complete checkpoint and ends with the
weights of a run never interrupted; a checkpoint cut short, missing a file or written by other
code is skipped with a warning and never loaded, and a half-written one is ignored."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from service import atomic
from service.vlm.folders import ADAPTER_WEIGHTS as WEIGHTS_FILE
from tests.unlearning.conftest import config, train_argv
from unlearning.checkpoints import CHECKPOINTS, STATE_FILE, TORCH_FILES
from unlearning.cli import build_parser, train_config
from unlearning.trainer import LOG_FILE, train

KILL_SEED = 13
CHECKPOINT_FILES = {"adapter_config.json", WEIGHTS_FILE, "README.md", STATE_FILE, *TORCH_FILES}
PRELOAD = ["unlearning.cli", "unlearning.trainer", "service.vlm.loading", "peft", "accelerate"]
"""Imported once by the forkserver, so each killed child starts in a second, not six."""


def install_kill(kind: str, count: int) -> None:
    """Make this process SIGKILL itself before its `count`-th training step ("step"), or after
    writing half of its `count`-th checkpoint or adapter file ("write"), or of the final
    adapter's weights ("final"): the honest way to stop a run at an exact point mid-write,
    with the product code unchanged."""
    import peft.peft_model
    from safetensors.torch import save

    from unlearning import trainer

    seen = []

    def reached(point) -> bool:
        seen.append(point)
        return len(seen) == count

    def maybe_die(path, data: bytes) -> None:
        final = kind == "final" and atomic.INCOMING in str(path)
        if (kind == "write" or final) and reached(path):
            Path(path).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

    write_bytes, save_weights, step = (atomic.write_bytes, peft.peft_model.safe_save_file,
                                       trainer.Loop.step)

    def dying_write_bytes(path, data):
        maybe_die(path, data)
        write_bytes(path, data)

    def dying_save_weights(tensors, filename, metadata=None):
        maybe_die(filename, save(tensors, metadata))
        save_weights(tensors, filename, metadata=metadata)

    def dying_step(loop, index):
        if kind == "step" and reached(index):
            os.kill(os.getpid(), signal.SIGKILL)
        return step(loop, index)

    atomic.write_bytes, peft.peft_model.safe_save_file = dying_write_bytes, dying_save_weights
    trainer.Loop.step = dying_step


def killed_run(argv: list[str], kind: str | None, count: int) -> None:
    """`unlearning train ARGV` in a child process, killed as `install_kill` says."""
    from unlearning.cli import main

    if kind is not None:
        install_kill(kind, count)
    main(argv)


def run_child(argv: list[str], kind: str | None = None, count: int = 0) -> int:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    child = context.Process(target=killed_run, args=(argv, kind, count))
    child.start()
    child.join(120)
    return child.exitcode


def assert_checkpoints_complete(out: Path) -> None:
    for folder in (out / CHECKPOINTS).glob("step-*"):
        assert {p.name for p in folder.iterdir()} == CHECKPOINT_FILES, folder
        assert json.loads((folder / STATE_FILE).read_text())["step"] == int(folder.name[5:])
        load_file(folder / WEIGHTS_FILE)


def assert_same_adapter(a: Path, b: Path) -> None:
    first, second = load_file(a / WEIGHTS_FILE), load_file(b / WEIGHTS_FILE)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name])


def test_a_run_killed_anywhere_resumes_to_the_weights_of_an_uninterrupted_run(
        tiny_model, data, tmp_path):
    """Twelve steps, a checkpoint (five files) every two, resumed after each kill at seeded
    points: inside checkpoint 4 or 6, before a step, inside a later checkpoint, inside the
    final weights."""
    out = tmp_path / "killed"
    settings = ("--max-steps", "12", "--log-every", "1")
    argv = train_argv(tiny_model, data, out, *settings, "--save-every", "2", "--resume")
    rng = random.Random(KILL_SEED)
    kills = [("write", rng.randint(6, 15)), ("step", rng.randint(2, 4)),
             ("write", rng.randint(1, 10)), ("final", 1)]
    for kind, count in kills:
        assert run_child(argv, kind, count) == -signal.SIGKILL, (kind, count)
        assert_checkpoints_complete(out)
        if kind == "write":
            assert atomic.leftovers(out / CHECKPOINTS, "step-"), "killed outside a checkpoint"
        assert not (out / "crossguard.json").exists()
    assert atomic.leftovers(out, atomic.INCOMING), "not killed inside the final write"
    assert run_child(argv) == 0
    whole = train(train_config(build_parser().parse_args(
        train_argv(tiny_model, data, tmp_path / "whole", *settings))), progress=False)
    assert_same_adapter(out, whole)
    assert json.loads((out / "crossguard.json").read_text())["steps"] == 12
    assert not atomic.leftovers(out, atomic.INCOMING)
    logged = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    expected = [json.loads(line) for line in (whole / LOG_FILE).read_text().splitlines()]
    assert [row["step"] for row in logged] == list(range(1, 13))
    assert [row["loss"] for row in logged] == pytest.approx([row["loss"] for row in expected],
                                                            abs=1e-5)


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "weights cut in half": lambda folder: cut(folder / WEIGHTS_FILE),
    "optimizer cut in half": lambda folder: cut(folder / "optimizer.pt"),
    "state missing": lambda folder: (folder / STATE_FILE).unlink(),
    "weights of another adapter": lambda folder: save_file({"x": torch.zeros(2)},
                                                           folder / WEIGHTS_FILE),
    "optimiser of another model": lambda folder: torch.save(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0).state_dict(),
        folder / "optimizer.pt"),
}
"""Ways a checkpoint gets damaged after it was written: by hand, by a disk, by older code."""


@pytest.fixture(scope="module")
def checkpointed(tiny_model, data, tmp_path_factory):
    """A six-step run with checkpoints at steps 2 and 4, and the same run never interrupted."""
    folder = tmp_path_factory.mktemp("checkpointed")
    run = train(config(tiny_model, data, folder / "run", optim__max_steps=6, run__save_every=2),
                progress=False)
    return run, train(config(tiny_model, data, folder / "whole", optim__max_steps=6),
                      progress=False)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_or_half_written_checkpoint_is_skipped_for_the_previous_one(
        checkpointed, tiny_model, data, tmp_path, caplog, damage):
    run, whole = checkpointed
    out = tmp_path / "run"
    shutil.copytree(run, out)
    for name in (WEIGHTS_FILE, "crossguard.json"):
        (out / name).unlink()
    previous, newest = (out / CHECKPOINTS / f"step-00000{step}" for step in (2, 4))
    DAMAGES[damage](newest)
    half_written = out / CHECKPOINTS / ".step-000006.tmp-99999"
    shutil.copytree(newest, half_written)
    cut(half_written / "rng.pt")
    caplog.set_level(logging.INFO, logger="unlearning.checkpoints")

    train(config(tiny_model, data, out, optim__max_steps=6, run__save_every=2, run__resume=True),
          progress=False)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"skipping checkpoint {newest}" in w for w in warnings), warnings
    assert any(f"ignoring {half_written}" in w for w in warnings), warnings
    assert f"resumed from {previous} (step 2)" in caplog.messages
    assert_same_adapter(out, whole)
    assert_checkpoints_complete(out)
    assert not half_written.exists()


def test_a_checkpoint_saved_under_the_old_lora_names_resumes_and_is_still_checked(tmp_path):
    """Checkpoints written before `LoraSettings` took peft's names (rank, alpha, dropout,
    targets) are read under today's names: same settings resume, other settings are refused."""
    from unlearning.checkpoints import check_settings, resume_state

    state = resume_state(config("m", ("f", "r"), tmp_path), sources={})
    lora = state["lora"]
    old = {"rank": lora["r"], "alpha": lora["lora_alpha"], "dropout": lora["lora_dropout"],
           "targets": lora["target_modules"], "scope": lora["scope"]}
    saved = {**json.loads(json.dumps(state)), "lora": old}
    check_settings(tmp_path, saved, state)
    with pytest.raises(ValueError, match="different lora settings"):
        check_settings(tmp_path, {**saved, "lora": {**old, "rank": 4}}, state)
