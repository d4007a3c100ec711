"""Adapters addressed by BentoML model-store tag as well as by folder.

`unlearning register` imports an adapter folder into the model store; deployments then name it
by tag (`safety:latest`), and BentoML ships it with the Bento. Kept out of `service.vlm`, which
never imports BentoML.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def resolve_adapter_source(name: str, spec: str) -> str:
    """A folder that exists is used as is; anything else must be a model-store tag."""
    try:
        folder = Path(spec).expanduser()
        if folder.exists():
            return str(folder)
    except (OSError, ValueError, UnicodeError):
        raise ValueError(f"adapter {name!r}: {spec!r} is not a usable path or tag") from None
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        return bentoml.models.get(spec).path
    except (BentoMLException, ValueError) as exc:
        raise ValueError(
            f"adapter {name!r}: {spec!r} is neither an existing folder nor a tag in the "
            f"BentoML model store ({exc})"
        ) from None


def resolve_adapters(adapters: Mapping[str, str]) -> dict[str, str]:
    return {name: resolve_adapter_source(name, spec) for name, spec in adapters.items()}
