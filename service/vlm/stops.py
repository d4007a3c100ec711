"""Stop sequences with OpenAI's semantics: the text ends before the earliest one, which is not
returned (streamed rows hold back what could be the start of one: `service.vlm.batching`)."""

from __future__ import annotations

from collections.abc import Iterable


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """Text up to the earliest stop sequence, and whether one was found."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(positions)], True) if positions else (text, False)
