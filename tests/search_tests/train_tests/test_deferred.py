"""Deferred storage writes: order, errors at the next flush, and the synchronous fallback."""

import threading
import time

import pytest

from search.train.deferred import DeferredWrites


def test_writes_run_in_order_off_the_calling_thread():
    seen, threads = [], set()

    def write(i):
        threads.add(threading.current_thread().name)
        seen.append(i)

    writes = DeferredWrites()
    for i in range(50):
        writes.submit(write, i, what=f"write {i}")
    writes.flush()
    assert seen == list(range(50))
    assert threads and all(name.startswith("hpsearch-writes") for name in threads)
    writes.close()


def test_a_failed_write_is_raised_once_and_writes_queued_behind_it_are_dropped():
    """A write fails only after retrying for the whole limit: the ones queued behind it would
    each wait out the limit in turn, so they are dropped and the error is raised at once."""
    seen = []
    release = threading.Event()

    def fail():
        release.wait(5)
        raise RuntimeError("the database went away")

    writes = DeferredWrites()
    writes.submit(fail, what="reporting epoch 3")
    for epoch in (4, 5, 6):
        writes.submit(seen.append, epoch, what=f"reporting epoch {epoch}")
    release.set()
    with pytest.raises(RuntimeError, match="went away"):
        writes.flush()
    assert seen == []
    writes.flush()  # the error is raised once
    writes.submit(seen.append, 7, what="reporting epoch 7")
    writes.flush()
    assert seen == [7]


def test_the_next_submit_raises_a_failure_that_has_happened():
    """Training goes on submitting an epoch's write after each epoch; once a write has failed,
    a submit raises it (no flush needed) and the writes queued behind it never ran."""
    seen = []

    def fail():
        raise RuntimeError("the database went away")

    writes = DeferredWrites()
    writes.submit(fail, what="reporting epoch 3")
    deadline = time.monotonic() + 5
    epoch = 4
    with pytest.raises(RuntimeError, match="went away"):
        while time.monotonic() < deadline:
            writes.submit(seen.append, epoch, what=f"reporting epoch {epoch}")
            epoch += 1
            time.sleep(0.01)
    assert seen == []
    writes.close(raise_errors=False)


def test_writes_go_through_the_call_wrapper_and_can_run_at_once():
    labels = []

    def call(fn, *args, what, **kwargs):
        labels.append((what, threading.current_thread() is threading.main_thread()))
        return fn(*args, **kwargs)

    seen = []
    now = DeferredWrites(call, background=False)
    now.submit(seen.append, 1, what="recording where the trial runs")
    assert seen == [1] and labels == [("recording where the trial runs", True)]
    later = DeferredWrites(call)
    later.submit(seen.append, 2, what="reporting epoch 0")
    later.close()
    assert seen == [1, 2] and labels[-1] == ("reporting epoch 0", False)
