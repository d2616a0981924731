"""Fleet coordination on a real PostgreSQL: one lock namespace, counts, running epochs."""

from __future__ import annotations

import threading
import time

import optuna
import pytest

from storage import open_storage, resolve_storage_url, running_epochs, state_counts, study_lock, try_study_lock
from storage.locks import lock_key


@pytest.fixture(scope="module")
def storage(local_pg_url):
    s = open_storage(resolve_storage_url(local_pg_url), heartbeat=False)
    yield s
    s.engine.dispose()


def test_lock_keys_are_stable_nonzero_and_differ_by_purpose_and_study():
    assert lock_key("s", "slots") == lock_key("s", "slots") != 0
    assert len({lock_key("s", "slots"), lock_key("s", "landscape"), lock_key("t", "slots")}) == 3
    assert all(-(2**31) <= lock_key(f"s{i}", "p") < 2**31 for i in range(50))


def test_a_held_study_lock_is_seen_by_the_try_lock_of_the_same_purpose_only(storage):
    name = f"locks-{time.time_ns()}"
    seen = {}
    with study_lock(storage, name, "landscape"):
        def other():
            with try_study_lock(storage.engine, name, "landscape") as a:
                seen["same purpose"] = a
            with try_study_lock(storage.engine, name, "slots") as b:
                seen["other purpose"] = b

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
    assert seen == {"same purpose": False, "other purpose": True}
    with try_study_lock(storage.engine, name, "landscape") as again:
        assert again, "the lock is released when the block ends"


def test_study_lock_makes_a_second_holder_wait(storage):
    name = f"wait-{time.time_ns()}"
    order = []
    entered = threading.Event()

    def second():
        entered.wait(10)
        with study_lock(storage, name, "slots"):
            order.append("second")

    t = threading.Thread(target=second)
    t.start()
    with study_lock(storage, name, "slots"):
        entered.set()
        time.sleep(0.5)
        order.append("first")
    t.join(30)
    assert order == ["first", "second"]


def test_running_epochs_counts_the_steps_each_running_trial_reported(storage):
    study = optuna.create_study(storage=storage, study_name=f"epochs-{time.time_ns()}", direction="maximize")
    done = study.ask()
    for step in range(5):
        done.report(0.5, step)
    study.tell(done, 0.5)
    running = study.ask()
    for step in range(3):
        running.report(0.5, step)
    fresh = study.ask()
    assert running_epochs(storage.engine, study._study_id) == {running.number: 3, fresh.number: 0}
    assert state_counts(storage, study._study_id) == {"RUNNING": 2, "WAITING": 0, "COMPLETE": 1, "PRUNED": 0, "FAIL": 0}
