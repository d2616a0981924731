"""Deferred storage writes: order, errors at the next flush, and the synchronous fallback."""

import threading

import pytest

from search.deferred import DeferredWrites


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


def test_a_failed_write_is_raised_at_the_next_flush_and_later_writes_still_land():
    seen = []

    def fail():
        raise RuntimeError("the database went away")

    writes = DeferredWrites()
    writes.submit(fail, what="reporting epoch 3")
    writes.submit(seen.append, 4, what="reporting epoch 4")
    with pytest.raises(RuntimeError, match="went away"):
        writes.flush()
    assert seen == [4]
    writes.flush()  # the error is raised once
    writes.submit(fail, what="reporting epoch 5")
    writes.close(raise_errors=False)  # a failing trial drops it


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
