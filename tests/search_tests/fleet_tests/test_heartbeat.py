"""A heartbeat the database does not answer is given up and tried again at once, not after a
whole interval: the trial's heartbeat comes back within seconds of the database.

The unanswered statement is a real one: the heartbeat row is locked from another session, so
the beat's UPDATE waits on the server as it would across a network cut (deploy/e2e hosts cuts
the link itself). The interval is 30 s, so a heartbeat that waited for it would be late by far.
"""

from __future__ import annotations

import logging
import time

import optuna
import pytest
import sqlalchemy

from search.fleet.worker import _Heartbeat
from storage import open_storage, resolve_storage_url


@pytest.fixture
def storage(pg_url, monkeypatch):
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_S", "30")
    monkeypatch.setenv("HPSEARCH_GRACE_S", "60")
    storage = open_storage(resolve_storage_url(pg_url))
    yield storage
    storage.engine.dispose()


def _beat_at(engine, trial_id: int):
    with engine.connect() as c:
        return c.execute(sqlalchemy.text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t"), {"t": trial_id}).scalar()


def test_a_beat_the_database_does_not_answer_is_tried_again_at_once(storage, monkeypatch, caplog):
    import threading

    monkeypatch.setattr(_Heartbeat, "WAIT_S", 0.5)
    study = optuna.create_study(storage=storage, study_name=f"beat-{time.time_ns()}", direction="maximize")
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    before = _beat_at(storage.engine, trial._trial_id)
    sweeps = []
    locker = sqlalchemy.create_engine(storage.engine.url, poolclass=sqlalchemy.pool.NullPool)
    held = locker.connect()
    released = []

    def release():  # the database answers again, 3 s on; a timer, so a beat that waits cannot hang the test
        held.rollback()
        released.append(time.monotonic())

    timer = threading.Timer(3.0, release)
    try:
        held.execute(sqlalchemy.text("SELECT 1 FROM trial_heartbeats WHERE trial_id = :t FOR UPDATE"), {"t": trial._trial_id})
        caplog.set_level(logging.WARNING, logger="hpsearch.worker")
        timer.start()
        entered = time.monotonic()
        with _Heartbeat(storage, trial._trial_id, sweep=lambda: sweeps.append(time.monotonic())):
            # The first beat gave up after WAIT_S: the trial starts training, it does not wait.
            assert time.monotonic() - entered < 2.0
            while not released:
                time.sleep(0.05)
            while _beat_at(storage.engine, trial._trial_id) == before and time.monotonic() - released[0] < 10:
                time.sleep(0.05)
            back = time.monotonic() - released[0]
            assert _beat_at(storage.engine, trial._trial_id) > before
            while not sweeps and time.monotonic() - released[0] < 10:
                time.sleep(0.05)
        # Within one given-up wait and a retry, not the 30 s interval.
        assert back < 2.5, f"the heartbeat came back {back:.1f} s after the database did"
        assert sweeps[0] >= released[0]  # no sweep while the database did not answer
        assert len(sweeps) == 1  # a beat that succeeded sweeps, once, and then waits the interval
        failures = [r.getMessage() for r in caplog.records if "heartbeat for trial" in r.getMessage()]
        assert len(failures) == 1, failures  # one line for the outage, not one per try
        assert "(OperationalError: timeout expired)" in failures[0]  # the driver's words, not Optuna's wrapper
        assert any("heartbeats recorded again" in r.getMessage() for r in caplog.records)
    finally:
        timer.cancel()
        timer.join()
        held.close()
        locker.dispose()
    # The given-up connections were discarded, not leaked: the pool has none checked out.
    assert storage.engine.pool.checkedout() == 0


def test_bounded_waits_gives_up_one_thread_and_the_pool_replaces_its_connection(storage):
    from storage import StorageError, bounded_waits
    from storage.engine import connection

    started = time.monotonic()
    stalled = []
    with pytest.raises(StorageError), bounded_waits(0.5), connection(storage.engine) as c:
        stalled.append(c.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        c.exec_driver_sql("SELECT pg_sleep(5)")
    assert time.monotonic() - started < 3
    for _ in range(3):  # unbounded again, and never on the connection given up
        with connection(storage.engine) as c:
            assert c.exec_driver_sql("SELECT pg_sleep(0.5), pg_backend_pid()").one()[1] != stalled[0]
    assert storage.engine.pool.checkedout() == 0


def test_a_database_error_is_one_line_of_the_drivers_own_words():
    """What the heartbeat, the sweep and the checkpoint writes log: psycopg2's message, not
    Optuna's "internal error" wrapper or SQLAlchemy's statement and link."""
    from optuna.exceptions import StorageInternalError

    from storage import error_line
    from tests.conftest import closed_port

    engine = sqlalchemy.create_engine(f"postgresql+psycopg2://u@127.0.0.1:{closed_port()}/db", poolclass=sqlalchemy.pool.NullPool)
    with pytest.raises(sqlalchemy.exc.OperationalError) as refused:
        engine.connect()
    line = error_line(refused.value)
    assert line.startswith("OperationalError: ") and "refused" in line, line
    assert "sqlalche.me" not in line and "\n" not in line
    try:
        raise StorageInternalError("An exception is raised during the commit.") from refused.value
    except StorageInternalError as wrapped:
        assert error_line(wrapped) == line
    assert error_line(ValueError("bad\n  value")) == "ValueError: bad value"


class _Locked:
    """``tables`` locked from another session (ACCESS EXCLUSIVE), released by a timer after
    ``seconds``, so that a wait in the test cannot hang it; ``released`` says when."""

    def __init__(self, storage, tables: str, seconds: float = 4.0):
        import threading

        self.tables = tables
        self.engine = sqlalchemy.create_engine(storage.engine.url, poolclass=sqlalchemy.pool.NullPool)
        self.held = self.engine.connect()
        self.released: list[float] = []
        self.timer = threading.Timer(seconds, self.release)

    def release(self):
        if not self.released:
            self.held.rollback()
            self.released.append(time.monotonic())

    def waiting(self) -> int:
        """Sessions of the database waiting on a lock now."""
        with self.engine.connect() as c:
            return c.execute(sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).scalar()

    def wait_for(self, n: int, limit: float = 2.0) -> None:
        deadline = time.monotonic() + limit
        while self.waiting() < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self):
        self.held.execute(sqlalchemy.text(f"LOCK TABLE {self.tables} IN ACCESS EXCLUSIVE MODE"))
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.timer.join()
        self.release()
        self.held.close()
        self.engine.dispose()


def test_background_writes_leave_a_connection_for_the_heartbeat(storage):
    """The deferred writes and a checkpoint write that both wait on the server hold one of the
    worker's two connections between them, so the heartbeat is recorded meanwhile.

    The two writes wait as they did across deploy/e2e hosts' 15 s network cut, where each
    held a connection and the heartbeat waited for the pool behind them until the link came
    back (docs/faults.md): here their tables are locked from another session for 4 s.
    """
    from types import SimpleNamespace

    import numpy as np

    from search.train.checkpoint import Checkpointer
    from search.train.deferred import DeferredWrites
    from storage.checkpoints import latest_checkpoint
    from storage.schema import CHECKPOINTS

    study = optuna.create_study(storage=storage, study_name=f"slot-{time.time_ns()}", direction="maximize")
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    before = _beat_at(storage.engine, trial._trial_id)
    writes = DeferredWrites()
    checkpoints = Checkpointer(trial, "m", interval=0)
    try:
        with _Locked(storage, f"trial_intermediate_values, {CHECKPOINTS}") as lock:
            writes.submit(trial.report, 0.5, 0, what="reporting epoch 0")
            checkpoints.epoch_end(None, 0, SimpleNamespace(history={}, epoch_seconds=[]), state=lambda: ([np.zeros(3, np.float32)], []))
            lock.wait_for(1)
            time.sleep(0.3)  # both writers have asked for a connection by now
            # One of the two waits on the lock; the other waits for the slot, not on the server.
            assert lock.waiting() == 1
            entered = time.monotonic()
            with _Heartbeat(storage, trial._trial_id):  # its first beat is recorded as it enters
                beat = _beat_at(storage.engine, trial._trial_id)
                assert not lock.released, f"the heartbeat waited {time.monotonic() - entered:.1f} s, until the writes' tables were unlocked"
            assert beat > before
            writes.close()
            checkpoints.close()
    finally:
        writes.close(raise_errors=False)
        checkpoints.close()
    # Both writes went through once the tables were free.
    assert storage.get_trial(trial._trial_id).intermediate_values == {0: 0.5}
    assert latest_checkpoint(storage.engine, [trial._trial_id]).epoch == 0
    assert storage.engine.pool.checkedout() == 0


def test_the_pruners_question_leaves_the_heartbeat_its_connection_too(storage):
    """The main thread asks the pruner inside the same slot: while a background write holds one
    connection in a wait on the server, the pruner's question waits for the slot, not on a
    second connection, and the heartbeat is recorded meanwhile."""
    import threading

    from search.train.monitor import EpochMonitor
    from storage import background_slot

    study = optuna.create_study(storage=storage, study_name=f"ask-{time.time_ns()}", direction="maximize",
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1))
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    before = _beat_at(storage.engine, trial._trial_id)

    def stuck_write():  # a deferred or checkpoint write caught by a cut: the slot and a connection held
        with background_slot(), storage.engine.connect() as c:
            c.execute(sqlalchemy.text("SELECT count(*) FROM trial_system_attributes"))

    monitor = EpochMonitor(trial)
    asked = threading.Thread(target=lambda: monitor.end_epoch(0, {"loss": 1.0, "val_accuracy": 0.5}))
    writer = threading.Thread(target=stuck_write)
    try:
        with _Locked(storage, "trial_system_attributes") as lock:  # what the pruner reads
            writer.start()
            lock.wait_for(1)
            asked.start()
            time.sleep(0.5)  # the question has reported its epoch and asks the pruner by now
            assert lock.waiting() == 1  # the write; the question waits for the slot
            entered = time.monotonic()
            with _Heartbeat(storage, trial._trial_id):
                beat = _beat_at(storage.engine, trial._trial_id)
                assert not lock.released, f"the heartbeat waited {time.monotonic() - entered:.1f} s, until the pruner's table was unlocked"
            assert beat > before
    finally:
        for thread in (writer, asked):
            if thread.is_alive() or thread.ident is not None:
                thread.join(timeout=30)
    assert monitor.pruner_calls == 1 and storage.get_trial(trial._trial_id).intermediate_values == {0: 0.5}
    assert storage.engine.pool.checkedout() == 0
