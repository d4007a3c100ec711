"""Plugin discovery by package scan, as garak finds its probes and detectors: every module of
`service.probes` is imported once, on the first registry lookup, so a probe or judge in a new
module registers itself without a hand-kept list (and without a list to forget)."""

from __future__ import annotations

import importlib
import pkgutil

SKIPPED = frozenset({"__main__"})
"""Modules that run something when imported."""


def import_all(package: str = "service.probes") -> tuple[str, ...]:
    """Import every module of `package` (not recursively; modules already imported cost a
    dict lookup), including modules on paths added to its `__path__`; returns their names."""
    root = importlib.import_module(package)
    names = tuple(f"{package}.{m.name}" for m in pkgutil.iter_modules(root.__path__)
                  if m.name not in SKIPPED)
    for name in names:
        importlib.import_module(name)
    return names
