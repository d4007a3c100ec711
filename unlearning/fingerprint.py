"""Content keys for cached artefacts: everything that decides what a build writes, hashed.

A cached demo model or adapter is reused only under a key made of its settings, the data it is
trained on, the source of every project module that can run while building it and the versions
of the libraries that compute it; the CPU that ran it is recorded beside the key (`machine`).
A stale folder then has another name and is rebuilt, never reused: a key made of the recipe
alone once kept serving a model that the committed code does not build (README "Reproducing
the numbers").

The module closure is found by reading the `import` statements of the entry module and of every
project module they reach, function-level imports included (the build imports lazily), so a new
module joins the key without being listed anywhere.
"""

from __future__ import annotations

import ast
import hashlib
import json
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "unlearning")
"""Top-level packages of this project; imports of anything else are libraries."""

LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "safetensors",
             "pillow", "numpy")
"""Libraries whose version can change the numbers a build computes."""


def module_file(name: str) -> Path | None:
    """The source file of project module `name`, or None when it is not one."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, name: str) -> set[str]:
    """Module names that `path` (module `name`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            prefix = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            stem = ".".join(p for p in (prefix, node.module or "") if p)
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def closure(*entries: str) -> dict[str, Path]:
    """Every project module reachable from `entries` by imports, with the packages above them."""
    seen: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        for module in [*parents, name]:
            path = module_file(module)
            if path is None or module in seen:
                continue
            seen[module] = path
            todo += sorted(_imported(path, module))
    return dict(sorted(seen.items()))


def sources_digest(*entries: str) -> str:
    """sha256 over the closure's module names and file contents."""
    digest = hashlib.sha256()
    for module, path in closure(*entries).items():
        digest.update(module.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cpu_model() -> str:
    """Vendor, family, model and name of the CPU (Linux's /proc/cpuinfo, else `platform`).
    MKL picks its kernels by vendor and model, not only by instruction set: two machines that
    both report AVX512 to torch built the same demo recipe into different weights (README
    "Reproducing the numbers")."""
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = ("vendor_id", "cpu family", "model", "model name")
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in fields and name.strip() not in found:
            found[name.strip()] = value.strip()
    return " / ".join(found.get(f, "?") for f in fields)


def library_versions() -> dict[str, str | None]:
    """Versions of `LIBRARIES`: part of every key, since another version may compute other
    numbers from the same code."""
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in LIBRARIES}


def machine() -> dict[str, str]:
    """The CPU model and the kernel set torch dispatches to (`AVX512`, `AVX2`, ...), recorded
    beside a build, not keyed: float results are bitwise repeatable on one kind of CPU, not
    across kinds, so the shipped demo files (`unlearning.demo.shipping`) say which CPU made
    them and every other CPU serves those very files instead of its own rounding of them."""
    import torch

    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": cpu_model()}


def key(payload: dict) -> str:
    """12 hex digits naming `payload` (any JSON-able dict, key order irrelevant)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def differences(recorded: dict, current: dict) -> list[str]:
    """The entries in which two key payloads differ, one level deep (`recipe.sft_steps`,
    `sources`, `libraries.torch`), so a refused cache says what changed."""
    recorded, current = (json.loads(json.dumps(d, sort_keys=True, default=str))
                         for d in (recorded, current))
    found = []
    for name in sorted(set(recorded) | set(current)):
        old, new = recorded.get(name), current.get(name)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            found += [f"{name}.{k}" for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k)]
        else:
            found.append(name)
    return found


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
