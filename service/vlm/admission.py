"""Admission to the single generation slot of an engine: a bounded, timed wait queue.

One generation runs at a time per engine (peft's active adapter is global state, and one CPU
thread per worker measured fastest). Requests beyond the queue bound are refused at once with
429 and a Retry-After estimate; requests that wait longer than the timeout get 503. Either way
the caller hears back quickly and memory stays bounded under a flood.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager

from service.errors import NotReady, TooManyRequests


class Admission:
    def __init__(self, max_waiting: int = 16, wait_timeout_s: float = 60.0):
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self._slot = threading.Lock()
        self._mutex = threading.Lock()
        self._admitted = 0
        self._mean_s = 1.0

    @property
    def admitted(self) -> int:
        """Requests running or waiting."""
        return self._admitted

    def acquire(self) -> float:
        """Take the slot (waiting if needed); returns the monotonic time it was taken."""
        with self._mutex:
            if self._admitted > self.max_waiting:
                raise TooManyRequests(
                    f"{self._admitted} requests are running or queued on this worker; "
                    "retry later",
                    retry_after=max(1, math.ceil(self._mean_s * self._admitted)),
                    code="queue_full",
                )
            self._admitted += 1
        if not self._slot.acquire(timeout=self.wait_timeout_s):
            with self._mutex:
                self._admitted -= 1
            raise NotReady(
                f"waited {self.wait_timeout_s:.0f}s for a generation slot",
                code="queue_timeout",
                retry_after=max(1, math.ceil(self._mean_s)),
            )
        return time.monotonic()

    def release(self, started: float) -> None:
        """Give the slot back; `started` (from `acquire`) feeds the Retry-After estimate."""
        with self._mutex:
            self._admitted -= 1
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)
        self._slot.release()

    @contextmanager
    def slot(self):
        started = self.acquire()
        try:
            yield
        finally:
            self.release(started)

    @contextmanager
    def exclusive(self):
        """The slot for maintenance (adapter load/unload): waits for the running generation,
        bypasses the queue bound, and does not count as traffic."""
        with self._slot:
            yield
