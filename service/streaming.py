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

from service.errors import CrossguardError
from service.schemas import ChatCompletionChunk, ChunkChoice, DeltaMessage, Usage
from service.vlm.engine import Stream

logger = logging.getLogger(__name__)


def _frame(chunk: ChatCompletionChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=False)}\n\n"


def sse_events(stream: Stream, model: str, include_usage: bool, completion_id: str,
               on_finish: Callable[[Stream], None] | None = None) -> Iterator[str]:
    """Role chunk, one chunk per text delta, a finish chunk, optional usage chunk, `[DONE]`.

    `on_finish` runs once the whole reply is known (metrics, audit), not for broken streams.
    """
    base = {"id": completion_id, "created": int(time.time()), "model": model}

    def chunk(delta: DeltaMessage, finish: str | None = None) -> str:
        return _frame(
            ChatCompletionChunk(
                **base, choices=[ChunkChoice(delta=delta, finish_reason=finish)]
            )
        )

    yield chunk(DeltaMessage(role="assistant", content=""))
    try:
        for text in stream:
            yield chunk(DeltaMessage(content=text))
    except Exception as exc:
        # Headers are already sent: report in-band, as vLLM does, and end the stream cleanly.
        logger.exception("generation failed mid-stream")
        error = exc if isinstance(exc, CrossguardError) else CrossguardError("generation failed")
        yield f"data: {json.dumps(error.body())}\n\n"
        yield "data: [DONE]\n\n"
        return
    if on_finish is not None:
        on_finish(stream)
    yield chunk(DeltaMessage(), stream.finish_reason)
    if include_usage:
        usage = Usage(
            prompt_tokens=stream.prompt_tokens,
            completion_tokens=stream.completion_tokens,
            total_tokens=stream.prompt_tokens + stream.completion_tokens,
        )
        yield _frame(ChatCompletionChunk(**base, choices=[], usage=usage))
    yield "data: [DONE]\n\n"


async def relay(events: Iterator[str], stream: Stream) -> AsyncIterator[str]:
    """Serve `events` from a worker thread; if the client disconnects (the response task is
    cancelled), stop the generation at once instead of when the abandoned generator is
    garbage-collected."""
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        stream.cancel()
