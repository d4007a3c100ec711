"""Folders and files written whole or not at all, with errors that name the path.

Training is killed (preempted jobs, OOM killer, Ctrl-C twice) and disks fill. A folder is
therefore written into a hidden staging folder, every file fsync'd, and only then renamed into
place: a reader (a resume, the service, a cache check) sees the complete folder or none; a
single file is written to a temporary sibling and renamed (`write_text_atomic`). This module is
the one owner of those writes and swaps, for the service and the offline tools alike.

A full disk has to name the path to be actionable, and the libraries do not: torch's writer
reports it as `RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos`, and
safetensors as `SafetensorError: ... No space left on device (os error 28)`, neither with the
file. So torch objects are serialised in memory and written here, and `naming` turns what a
write raises back into the `OSError` it stands for, with the path.

Torch is imported where it is used: the command lines import this module for `describe`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

INCOMING = "incoming"
"""Name of the staging folder of `files_into` (`.incoming.tmp-PID` inside the folder)."""


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raise a write error of the block as an `OSError` naming `path`, unless it names a
    file already (a buffered write's `OSError` has no file; safetensors' error has neither)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


def describe(exc: OSError) -> str:
    """One line for a command-line error: the path first, then what went wrong."""
    if exc.filename is None or exc.errno is None:
        return str(exc)
    return f"{exc.filename}: [Errno {exc.errno}] {exc.strerror}"


def torch_bytes(value) -> bytes:
    """`torch.save` of `value`, in memory (see the module docstring for why)."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary sibling, then rename: readers see the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> None:
    with naming(path), open(path, "wb") as f:
        f.write(data)


def sync(path: Path) -> None:
    """fsync a file or a folder (a folder's entries are what a rename changes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    for path in [*sorted(folder.rglob("*")), folder]:
        sync(path)


def staging_dir(final: Path) -> Path:
    """The hidden folder `final` is written in: `.NAME.tmp-PID` beside it."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


@contextmanager
def staged(staging: Path, label: Path) -> Iterator[Path]:
    """The fresh folder `staging` for the block to write into, removed when the block ends;
    what the block raises names `label`."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with naming(label):
            yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def write_folder(final: Path) -> Iterator[Path]:
    """Write the folder `final` whole or not at all: the block writes into a staging folder,
    which is fsync'd and renamed to `final`."""
    with staged(staging_dir(final), final) as staging:
        yield staging
        sync_tree(staging)
        swap_in(staging, final)


@contextmanager
def files_into(folder: Path, last: str) -> Iterator[Path]:
    """Add the files the block writes to `folder` (made if missing), each renamed in whole.

    `last` is the file that marks the others complete: an older copy is removed before any
    file is replaced, and the new one is moved in after all the others. Staging folders of
    killed writers are removed first.
    """
    for leftover in leftovers(folder, INCOMING):
        shutil.rmtree(leftover, ignore_errors=True)
    with staged(staging_dir(folder / INCOMING), folder) as staging:
        yield staging
        sync_tree(staging)
        (folder / last).unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == last):
            os.replace(path, folder / path.name)
        sync(folder)


def swap_in(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`. An existing `final` (a step written again after a resume
    from an older one) is moved aside first: a kill in between leaves no `final`, never a mix;
    the aside copy is a hidden `.NAME.old-PID` that `leftovers` finds."""
    if final.exists():
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
        staging.rename(final)
        shutil.rmtree(aside)
    else:
        staging.rename(final)
    sync(final.parent)


def leftovers(parent: Path, prefix: str) -> list[Path]:
    """Staging and aside folders of `parent/PREFIX*` that a killed writer left behind."""
    return sorted(parent.glob(f".{prefix}*.tmp-*")) + sorted(parent.glob(f".{prefix}*.old-*"))
