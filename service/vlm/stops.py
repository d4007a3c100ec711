"""Stop sequences for streamed and whole text, with OpenAI's semantics (stops are not returned)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """Text up to the earliest stop sequence, and whether one was found."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(positions)], True) if positions else (text, False)


class StopStream:
    """Filters streamed text so that no part of a stop sequence is ever emitted.

    A stop can straddle two chunks, so the last `len(longest stop) - 1` characters are held back
    until the next chunk shows they are not the start of a stop.
    """

    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, chunks: Iterable[str]) -> Iterator[str]:
        for chunk in chunks:
            self.pending += chunk
            text, self.stopped = cut_at_stop(self.pending, self.stops)
            if self.stopped:
                if text:
                    yield text
                return
            safe = len(self.pending) - self.hold
            if safe > 0:
                yield self.pending[:safe]
                self.pending = self.pending[safe:]
        if self.pending:
            yield self.pending
