import threading
import time

import pytest

from service.errors import NotReady, TooManyRequests
from service.vlm.admission import Admission
from service.vlm.batching import Row
from service.vlm.protocol import SamplingParams, Stream


def rows(count: int, waited_s: float = 0.0) -> list[Row]:
    made = [Row(Stream(prompt_tokens=1, index=i), {}, SamplingParams(), 4, None)
            for i in range(count)]
    for row in made:
        row.submitted -= waited_s
    return made


def test_queue_bound_gives_429_with_retry_after_and_frees_on_take():
    admission = Admission(max_waiting=2, wait_timeout_s=10)
    admission.put(rows(2))
    with pytest.raises(TooManyRequests) as refused:
        admission.put(rows(1))
    assert refused.value.status_code == 429
    assert int(refused.value.headers()["Retry-After"]) >= 1
    batch = admission.take()
    assert len(batch) == 2 and admission.admitted == 2
    admission.put(rows(1))  # the queue is empty again: running rows do not count against it
    admission.done(batch, 0.1)
    assert admission.admitted == 1


def test_one_request_with_more_choices_than_the_bound_is_still_admitted_alone():
    admission = Admission(max_waiting=1)
    admission.put(rows(3))
    with pytest.raises(TooManyRequests):
        admission.put(rows(1))


def test_batches_take_what_waits_up_to_the_batch_size():
    admission = Admission(max_batch_size=2, batch_wait_s=0.0)
    waiting = rows(3)
    admission.put(waiting)
    assert admission.take() == waiting[:2]
    assert admission.take() == waiting[2:]


def test_a_lone_request_is_taken_at_once():
    admission = Admission(batch_wait_s=5.0)
    lone = rows(1)
    admission.put(lone)
    started = time.monotonic()
    assert admission.take() == lone
    assert time.monotonic() - started < 1.0


def test_the_clients_of_the_last_batch_are_waited_for():
    """Two rows were answered together: the next batch waits (up to the window) for both."""
    admission = Admission(max_batch_size=4, batch_wait_s=5.0)
    admission.put(rows(2))
    admission.done(admission.take(), 0.1)
    first, later = rows(1), rows(1)
    admission.put(first)
    threading.Timer(0.05, admission.put, args=(later,)).start()
    assert admission.take() == first + later


def test_clients_that_do_not_come_back_cost_at_most_the_window():
    admission = Admission(max_batch_size=4, batch_wait_s=0.1)
    admission.put(rows(3))
    admission.done(admission.take(), 0.1)
    only = rows(1)
    admission.put(only)
    started = time.monotonic()
    assert admission.take() == only
    assert 0.09 <= time.monotonic() - started < 1.0


def test_cancelled_rows_are_dropped_before_decoding():
    admission = Admission(batch_wait_s=0.0)
    gone, staying = rows(2)
    gone.stream.cancel()
    admission.put([gone, staying])
    assert admission.take() == [staying]


def test_waiting_too_long_gives_503_with_retry_after():
    admission = Admission(wait_timeout_s=0.05, batch_wait_s=0.0)
    stale, fresh = rows(1, waited_s=1.0) + rows(1)
    admission.put([stale, fresh])
    assert admission.take() == [fresh]
    with pytest.raises(NotReady, match="waited") as timed_out:
        stale.stream.wait_started(1.0)
    assert timed_out.value.status_code == 503 and "Retry-After" in timed_out.value.headers()


def test_a_client_that_stops_waiting_withdraws_its_row():
    admission = Admission(batch_wait_s=0.0)
    row, other = rows(2)
    admission.put([row])
    started = time.monotonic()
    with pytest.raises(NotReady, match="waited"):
        row.stream.wait_started(0.05)
    assert time.monotonic() - started < 1.0
    admission.put([other])
    assert admission.take() == [other]
