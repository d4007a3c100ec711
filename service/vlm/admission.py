"""The waiting room in front of an engine's decoding loop: bounded, timed, and batch-forming.

Requests wait here while a batch decodes. When the loop is free it takes what waits, up to
`max_batch_size` rows. Clients answered by one batch come back at slightly different times (each
request is parsed, its images decoded and tokenised first), so the loop expects as many rows as
were in flight together while the last batch ran (its rows not yet finished plus those waiting,
at their peak) and waits for them at most `batch_wait_s`. A lone client is served at once (its
next request arrives after its row finished, so it is counted once), and 16 clients keep
decoding 16 at a time instead of settling into two alternating half batches, each filled while
the other decodes (README "Batching").

Requests beyond `max_waiting` queued rows are refused at once with 429 and a Retry-After
estimate; a request that waits longer than `wait_timeout_s` gets 503 (its waiter withdraws it).
Either way the caller hears back quickly and memory stays bounded under a flood.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from service.errors import NotReady, TooManyRequests
from service.vlm.batching import Row


class Admission:
    def __init__(self, max_waiting: int = 16, wait_timeout_s: float = 60.0,
                 max_batch_size: int = 16, batch_wait_s: float = 0.05):
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._waiting: deque[Row] = deque()
        self._batch: list[Row] = []  # the rows decoding now
        self._in_flight = 1  # peak rows decoding + waiting since the last batch started
        self._changed = threading.Condition()
        self._mean_batch_s = 1.0

    @property
    def admitted(self) -> int:
        """Rows decoding or waiting."""
        with self._changed:
            return len(self._batch) + len(self._waiting)

    def put(self, rows: list[Row]) -> None:
        """Queue the rows of one request, or refuse it with 429 when the queue is full."""
        with self._changed:
            if len(self._waiting) + len(rows) > max(self.max_waiting, len(rows)):
                raise TooManyRequests(
                    f"{len(self._batch) + len(self._waiting)} requests are running or queued on "
                    "this worker; retry later",
                    retry_after=self._retry_after_s(), code="queue_full",
                )
            self._waiting.extend(rows)
            self._note_in_flight()
            self._changed.notify_all()

    def _note_in_flight(self) -> None:
        decoding = sum(not row.done for row in self._batch)
        self._in_flight = max(self._in_flight, decoding + len(self._waiting))

    def timed_out(self) -> NotReady:
        """The 503 for a request that waited `wait_timeout_s` without a place in a batch (its
        waiter withdraws it: `VLMEngine.wait_started`)."""
        with self._changed:
            return NotReady(f"waited {self.wait_timeout_s:.0f}s for a place in a decoding batch",
                            code="queue_timeout", retry_after=self._retry_after_s())

    def _retry_after_s(self) -> int:
        """Seconds until the batches ahead of a new request are likely done."""
        batches = 1 + len(self._waiting) / self.max_batch_size
        return max(1, math.ceil(self._mean_batch_s * batches))

    def take(self) -> list[Row]:
        """Block until rows wait, wait for the expected ones (see module docstring) and return
        the next batch; rows whose client left meanwhile are dropped."""
        with self._changed:
            while True:
                self._changed.wait_for(lambda: self._waiting)
                self._changed.wait_for(self._expected_rows_wait, timeout=self.batch_wait_s)
                batch = self._admit_from_queue()
                if batch:
                    self._batch, self._in_flight = batch, 0
                    self._note_in_flight()
                    return batch

    def _expected_rows_wait(self) -> bool:
        return len(self._waiting) >= min(self.max_batch_size, self._in_flight)

    def _admit_from_queue(self) -> list[Row]:
        batch = []
        while self._waiting and len(batch) < self.max_batch_size:
            row = self._waiting.popleft()
            if not row.stream.cancelled:
                batch.append(row)
        return batch

    def done(self, seconds: float) -> None:
        """The batch ended; its duration feeds the Retry-After estimate."""
        with self._changed:
            self._mean_batch_s = 0.8 * self._mean_batch_s + 0.2 * seconds
            self._batch = []
            self._changed.notify_all()
