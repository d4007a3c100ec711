"""Attack probes, judges and the typographic renderer they share.

`service.probes.run(engine, adapters, probes, judge) -> Report` is the entry point; it and
`ProbeRun` are resolved on first use so that importing the package stays light.
"""

from __future__ import annotations

_LAZY = {"run": "service.probes.runner", "ProbeRun": "service.probes.runner",
         "Report": "service.probes.report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
