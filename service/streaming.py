"""OpenAI-style server-sent events for a streamed chat completion.

BentoML and Starlette send raw chunks, so the `data: ...\n\n` framing and the final
`data: [DONE]` are written here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

from starlette.concurrency import iterate_in_threadpool

from service.conversion import to_logprobs, to_usage
from service.errors import CrossguardError
from service.schemas import ChatCompletionChunk, ChunkChoice, DeltaMessage
from service.vlm.protocol import Stream

logger = logging.getLogger(__name__)


def _frame(chunk: ChatCompletionChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=False)}\n\n"


def sse_events(streams: list[Stream], model: str, include_usage: bool, completion_id: str,
               on_finish: Callable[[Stream], None] | None = None) -> Iterator[str]:
    """Per choice: a role chunk, one chunk per text delta (with its log-probabilities when
    asked), a finish chunk; then the optional usage chunk and `[DONE]`. Choices decode together
    in one batch and are sent one after the other (each chunk names its `index`).

    `on_finish` runs once per whole choice (metrics, audit), not for broken streams.
    """
    base = {"id": completion_id, "created": int(time.time()), "model": model}

    def chunk(index: int, delta: DeltaMessage, finish: str | None = None, logprobs=None) -> str:
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)
        return _frame(ChatCompletionChunk(**base, choices=[choice]))

    for stream in streams:
        yield chunk(stream.index, DeltaMessage(role="assistant", content=""))
        try:
            for delta in stream:
                logprobs = to_logprobs(delta.logprobs) if stream.logprobs is not None else None
                yield chunk(stream.index, DeltaMessage(content=delta.text), logprobs=logprobs)
        except Exception as exc:
            # Headers are already sent: report in-band, as vLLM does, and end the stream cleanly.
            logger.exception("generation failed mid-stream")
            error = exc if isinstance(exc, CrossguardError) else CrossguardError(
                "generation failed")
            yield f"data: {json.dumps(error.body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        if on_finish is not None:
            on_finish(stream)
        yield chunk(stream.index, DeltaMessage(), stream.finish_reason)
    if include_usage:
        yield _frame(ChatCompletionChunk(**base, choices=[], usage=to_usage(streams)))
    yield "data: [DONE]\n\n"


async def relay(events: Iterator[str], streams: list[Stream]) -> AsyncIterator[str]:
    """Serve `events` from a worker thread; if the client disconnects (the response task is
    cancelled), withdraw its choices from the batch at once (the other rows go on)."""
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        for stream in streams:
            stream.cancel()
