import threading
import time

import pytest

from service.errors import NotReady, TooManyRequests
from service.vlm.admission import Admission


def hold(admission: Admission, release: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=lambda: _run(admission, release))
    thread.start()
    return thread


def _run(admission, release):
    with admission.slot():
        release.wait(10)


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_queue_bound_gives_429_with_retry_after():
    admission = Admission(max_waiting=1, wait_timeout_s=10)
    release = threading.Event()
    running, waiting = hold(admission, release), hold(admission, release)
    wait_for(lambda: admission.admitted == 2)
    with pytest.raises(TooManyRequests) as refused:
        admission.acquire()
    assert refused.value.status_code == 429
    assert int(refused.value.headers()["Retry-After"]) >= 1
    release.set()
    running.join(), waiting.join()
    assert admission.admitted == 0
    with admission.slot():
        assert admission.admitted == 1


def test_waiting_too_long_gives_503_and_frees_the_place():
    admission = Admission(max_waiting=4, wait_timeout_s=0.05)
    release = threading.Event()
    running = hold(admission, release)
    wait_for(lambda: admission.admitted == 1)
    with pytest.raises(NotReady, match="waited") as timed_out:
        admission.acquire()
    assert timed_out.value.status_code == 503 and "Retry-After" in timed_out.value.headers()
    assert admission.admitted == 1
    release.set()
    running.join()


def test_exclusive_waits_for_the_running_generation_but_ignores_the_bound():
    admission = Admission(max_waiting=0, wait_timeout_s=10)
    release = threading.Event()
    running = hold(admission, release)
    wait_for(lambda: admission.admitted == 1)
    order = []

    def maintain():
        with admission.exclusive():
            order.append("maintenance")

    maintenance = threading.Thread(target=maintain)
    maintenance.start()
    time.sleep(0.05)
    order.append("generation done")
    release.set()
    maintenance.join(5)
    assert order == ["generation done", "maintenance"]
    running.join()
