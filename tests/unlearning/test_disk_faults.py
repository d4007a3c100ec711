"""A full or read-only disk: `unlearning train` and `python -m unlearning.demo build` / `safety`
fail with one line naming the path (exit status 1, no traceback) and leave no half-written
adapter or model behind: no staging folder, no folder with the mark of a finished one.

The write errors are mocked as the libraries raise them on a full disk (measured on a tmpfs:
a buffered write's `OSError(ENOSPC)` without the file, safetensors' `SafetensorError` with the
errno in its text), and, where this machine lets the tests mount a tmpfs, are real."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import SafetensorError

from service import atomic
from service.vlm.folders import ADAPTER_METADATA, ModelFolder
from service.vlm.folders import ADAPTER_WEIGHTS as WEIGHTS_FILE
from tests.unlearning.conftest import train_argv
from unlearning.checkpoints import CHECKPOINTS
from unlearning.cli import main
from unlearning.config import OptimConfig
from unlearning.demo.__main__ import main as demo_main

FULL = f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}"
READ_ONLY = f"[Errno {errno.EROFS}] {os.strerror(errno.EROFS)}"
SAFETENSORS_FULL = ("Error while serializing: I/O error: No space left on device "
                    f"(os error {errno.ENOSPC})")
"""What safetensors raises when a tmpfs fills under it."""


class FullDiskFile:
    """A file whose write stores half its bytes, then fails as a full disk does."""

    def __init__(self, path, mode):
        self.file = open(path, mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data: bytes) -> None:
        self.file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def full_disk_safetensors(tensors, filename, metadata=None) -> None:
    from safetensors.torch import save

    data = save(tensors, metadata)
    Path(filename).write_bytes(data[: len(data) // 2])
    raise SafetensorError(SAFETENSORS_FULL)


def fail(command, argv: list[str], capsys) -> str:
    """The one error line `command(argv)` prints before exiting with status 1."""
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def assert_nothing_half_written(root: Path) -> None:
    assert not list(root.rglob(".*.tmp-*")), list(root.rglob(".*.tmp-*"))
    assert not list(root.rglob(ADAPTER_METADATA))


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mount a tmpfs with the given options for a real full or read-only disk; skips where
    this machine does not allow it (not root, or a container without CAP_SYS_ADMIN)."""
    mounted = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mount{len(mounted)}"
        point.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


@pytest.fixture(params=["mocked", "chmod", "mount"])
def read_only(request, tmp_path, monkeypatch, mount_tmpfs) -> tuple[Path, str]:
    """A folder nothing can be created in, and the error that creating something there gives:
    mocked EROFS, chmod 0o555 (not for root, who writes through it) or a read-only tmpfs."""
    if request.param == "mount":
        return mount_tmpfs("ro,size=64k"), READ_ONLY
    folder = tmp_path / "read-only"
    folder.mkdir()
    if request.param == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes into a chmod 0o555 folder")
        folder.chmod(0o555)
        request.addfinalizer(lambda: folder.chmod(0o755))
        return folder, f"[Errno {errno.EACCES}] {os.strerror(errno.EACCES)}"
    mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.is_relative_to(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    return folder, READ_ONLY


def test_train_on_a_full_disk_mid_checkpoint(tiny_model, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "adapter"
    monkeypatch.setattr(atomic, "open", FullDiskFile, raising=False)
    line = fail(main, train_argv(tiny_model, data, out, "--max-steps", "3", "--save-every", "2"),
                capsys)
    staging = atomic.staging_dir(out / CHECKPOINTS / "step-000002")
    assert line == f"error: {staging / 'optimizer.pt'}: {FULL}"
    assert not list((out / CHECKPOINTS).iterdir())
    assert_nothing_half_written(out)


def test_train_on_a_full_disk_mid_adapter(tiny_model, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "adapter"
    monkeypatch.setattr("peft.peft_model.safe_save_file", full_disk_safetensors)
    line = fail(main, train_argv(tiny_model, data, out, "--max-steps", "2"), capsys)
    assert line == f"error: {out}: {FULL}"
    assert not (out / WEIGHTS_FILE).exists()
    assert_nothing_half_written(out)


def test_a_failed_rerun_leaves_the_finished_adapter_as_it_was(tiny_model, data, tmp_path,
                                                              monkeypatch, capsys):
    out = tmp_path / "adapter"
    main(train_argv(tiny_model, data, out, "--max-steps", "2"))
    before = {name: (out / name).read_bytes() for name in (WEIGHTS_FILE, ADAPTER_METADATA)}
    monkeypatch.setattr("peft.peft_model.safe_save_file", full_disk_safetensors)
    fail(main, train_argv(tiny_model, data, out, "--max-steps", "3"), capsys)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.rglob(".*.tmp-*"))


def test_train_into_a_read_only_folder(tiny_model, data, read_only, capsys):
    folder, error = read_only
    out = folder / "adapter"
    line = fail(main, train_argv(tiny_model, data, out, "--max-steps", "2"), capsys)
    assert line == f"error: {out}: {error}"
    assert not out.exists()


@pytest.mark.parametrize(("size", "save_every", "failing"), [
    ("64k", "0", r"{out}"),
    ("200k", "2", r"{out}/checkpoints/\.step-000002\.tmp-\d+/optimizer\.pt"),
], ids=["adapter weights", "checkpoint"])
def test_train_on_a_real_full_disk(tiny_model, data, mount_tmpfs, size, save_every, failing):
    """The real thing, end to end: `python -m unlearning train` on a tmpfs too small for the
    adapter's weights, or for the first checkpoint's optimizer state."""
    out = mount_tmpfs(f"size={size}") / "adapter"
    argv = train_argv(tiny_model, data, out, "--max-steps", "3", "--save-every", save_every)
    done = subprocess.run([sys.executable, "-m", "unlearning", *argv], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert re.fullmatch(f"error: {failing.format(out=re.escape(str(out)))}: "
                        f"{re.escape(FULL)}", last), last
    assert not list(out.glob(f"{CHECKPOINTS}/step-*"))
    assert_nothing_half_written(out)


@pytest.mark.parametrize("error", ["oserror", "safetensors"])
def test_demo_build_on_a_full_disk(tmp_path, monkeypatch, capsys, error):
    """A build from code (`--force`: not the shipped folder's copy) fails where it saves the
    trained model (training itself mocked away)."""
    from unlearning.demo import build

    def save_half(plan, folder: Path) -> None:
        weights = folder / "model.safetensors"
        (folder / "config.json").write_text("{}")
        weights.write_bytes(b"\0" * 100)
        if error == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(weights))
        raise SafetensorError(SAFETENSORS_FULL)

    monkeypatch.setattr(build, "build_into", save_half)
    line = fail(demo_main, ["build", "--force", "--home", str(tmp_path)], capsys)
    models = tmp_path / "models"
    named = rf"{re.escape(str(models))}/\.demo-\w+\.tmp-\d+/model\.safetensors" \
        if error == "oserror" else rf"{re.escape(str(models))}/demo-\w+"
    assert re.fullmatch(f"error: {named}: {re.escape(FULL)}", line), line
    assert list(models.iterdir()) == []


def test_demo_build_in_a_read_only_home(read_only, capsys):
    home, error = read_only
    line = fail(demo_main, ["build", "--home", str(home)], capsys)
    assert line == f"error: {home / 'models'}: {error}"
    assert list(home.iterdir()) == []


def test_demo_safety_on_a_full_disk(tiny_model, data, tmp_path, monkeypatch, capsys):
    """`safety` on a built model (the tiny one with the demo's data files, mocked as the
    build's result) with a short run whose adapter weights meet a full disk."""
    from unlearning.demo import build, safety

    model = tmp_path / "models" / "demo-tiny"
    shutil.copytree(tiny_model, model)
    folder = ModelFolder(model)
    folder.data.mkdir()
    shutil.copy(data[0], folder.forget)
    shutil.copy(data[1], folder.retain)
    monkeypatch.setattr(build, "build", lambda recipe, home, force: model)
    settings = safety.safety_config
    monkeypatch.setattr(safety, "safety_config", lambda *args: dataclasses.replace(
        settings(*args), optim=OptimConfig(max_steps=2, batch_size=2)))
    monkeypatch.setattr("peft.peft_model.safe_save_file", full_disk_safetensors)
    line = fail(demo_main, ["safety", "--home", str(tmp_path)], capsys)
    adapter = safety.adapter_dir(model)
    assert line == f"error: {adapter}: {FULL}"
    assert not (adapter / WEIGHTS_FILE).exists()
    assert_nothing_half_written(adapter.parent)
