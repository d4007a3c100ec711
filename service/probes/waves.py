"""Many probe conversations decoded together, in waves, as the engine batches concurrent users.

A conversation is a generator that yields the `Request`s it needs one after another (a live
earlier turn, then the attack, or best-of-N's sampled replies until the first success), is sent
each reply, and returns its `Result`. `in_waves` keeps up to `width` conversations live: a wave
submits the next request of every live one together (`Engine.submit_many`: one batch, as far as
the engine's batch size allows), waits for all of them, then sends each its reply. A
conversation's own requests stay in order, so what it asks never depends on the others: a greedy
reply is the one it gets alone, a sampled one keeps its seed (each row samples from a generator
seeded with its own seed, `service.vlm.batching`), and best-of-N still stops at the first
success.

Between waves nothing of the run is in flight: new conversations are started then (a white-box
probe builds its images with the model to itself) and finished results are handed over then,
so a caller that waits for `engine.busy` to clear sees only other traffic.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import replace

from service.errors import TooManyRequests
from service.probes.report import Result
from service.vlm.protocol import Engine, Generation, Request, Stream

Conversation = Generator[Request, Generation, Result]


def in_waves(engine: Engine, conversations: Iterable[Conversation],
             width: int) -> Iterator[Result]:
    """Run `conversations` up to `width` at a time (see module docstring); yields their results
    in the order the conversations came, each as soon as it and those before it are done.
    Conversations are started (their first `next`) only when nothing is in flight."""
    pending = iter(conversations)
    live: list[tuple[int, Conversation, Request]] = []
    finished: dict[int, Result] = {}
    started = handed = 0
    while True:
        while len(live) < width and (conversation := next(pending, None)) is not None:
            live.append((started, conversation, next(conversation)))
            started += 1
        if not live:
            return
        replies = _wave(engine, [request for _, _, request in live])
        still = []
        for (index, conversation, request), reply in zip(live, replies, strict=True):
            if reply is None:  # the engine's queue was full: asked again next wave
                still.append((index, conversation, request))
                continue
            try:
                still.append((index, conversation, conversation.send(reply)))
            except StopIteration as end:
                finished[index] = end.value
        live = still
        while handed in finished:
            yield finished.pop(handed)
            handed += 1


def _wave(engine: Engine, requests: list[Request]) -> list[Generation | None]:
    """Submit the requests together, then wait for each reply (None for a request left for
    the next wave: see `_submit`). On any error the wave's other requests are cancelled."""
    requests = [replace(r, params=replace(r.params, deltas=False)) for r in requests]
    submitted: list[list[Stream]] = []
    try:
        submitted = _submit(engine, requests)
        replies: list[Generation | None] = []
        for streams in submitted:
            engine.wait_started(streams)
            replies.append(streams[0].result())
    except BaseException:
        for streams in submitted:
            for stream in streams:
                stream.cancel()
        raise
    return replies + [None] * (len(requests) - len(submitted))


def _submit(engine: Engine, requests: list[Request]) -> list[list[Stream]]:
    """The streams of the requests the engine's queue takes: all of them at once, else (other
    traffic fills the queue) as many as it takes one by one, the rest left for the next wave;
    a 429 for the first one is raised, as a lone request's would be."""
    try:
        return engine.submit_many(requests)
    except TooManyRequests:
        if len(requests) == 1:
            raise
    submitted: list[list[Stream]] = []
    for request in requests:
        try:
            submitted += engine.submit_many([request])
        except TooManyRequests:
            if not submitted:
                raise
            break
    return submitted
