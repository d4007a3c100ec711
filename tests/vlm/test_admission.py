import threading
import time

import pytest

from service.errors import NotReady, TooManyRequests
from service.vlm.admission import Admission
from service.vlm.batching import Row
from service.vlm.protocol import SamplingParams, Stream


def rows(count: int) -> list[Row]:
    return [Row(Stream(prompt_tokens=1, index=i), {}, SamplingParams(), 4, None)
            for i in range(count)]


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
    admission.done(0.1)
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
    admission.take()
    admission.done(0.1)
    first, later = rows(1), rows(1)
    admission.put(first)
    threading.Timer(0.05, admission.put, args=(later,)).start()
    assert admission.take() == first + later


def test_clients_that_do_not_come_back_cost_at_most_the_window():
    admission = Admission(max_batch_size=4, batch_wait_s=0.1)
    admission.put(rows(3))
    admission.take()
    admission.done(0.1)
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


def test_the_timeout_answer_is_503_with_retry_after():
    timed_out = Admission(wait_timeout_s=0.05).timed_out()
    assert isinstance(timed_out, NotReady) and "waited" in timed_out.message
    assert timed_out.status_code == 503 and int(timed_out.headers()["Retry-After"]) >= 1


def test_a_waiter_hears_of_a_timeout_or_an_early_error_at_once():
    waiting, failed = (row.stream for row in rows(2))
    started = time.monotonic()
    assert waiting.wait_started(0.05) is False
    assert time.monotonic() - started < 1.0
    failed.fail(NotReady("adapter gone", code="model_not_found"))
    with pytest.raises(NotReady, match="adapter gone"):
        failed.wait_started(5.0)


def test_a_client_answered_before_its_batch_ends_is_not_expected_twice():
    """A lone client often sends its next request before the loop has closed its batch; the
    next batch must not wait for a second client that does not exist."""
    admission = Admission(max_batch_size=4, batch_wait_s=5.0)
    admission.put(rows(1))
    batch = admission.take()
    batch[0].done = True  # its reply went out ...
    again = rows(1)
    admission.put(again)  # ... and the same client is back before `done`
    admission.done(0.1)
    started = time.monotonic()
    assert admission.take() == again
    assert time.monotonic() - started < 1.0


def test_clients_that_arrived_while_a_batch_ran_are_expected_with_its_own():
    """Half the clients arrive while the other half decodes: the next batch waits for all of
    them instead of the two halves alternating (image requests at 16 clients did, at 0.8x the
    throughput of whole batches; README "Batching")."""
    admission = Admission(max_batch_size=4, batch_wait_s=5.0)
    admission.put(rows(2))
    first_half = admission.take()
    second_half = rows(2)
    admission.put(second_half)  # while the first half decodes
    for row in first_half:
        row.done = True
    admission.done(0.1)
    back = rows(2)
    threading.Timer(0.05, admission.put, args=(back,)).start()
    assert admission.take() == second_half + back
