"""storage.epochs on real databases: the table beside Optuna's, the writer, the incremental
reader and its cursor (late commits included), the binned first load, and Optuna's
delete_study still working with the table there."""

from __future__ import annotations

import math

import optuna
import pytest
import sqlalchemy

from storage import open_storage, resolve_storage_url
from storage.schema import TABLE
from storage.epochs import Cursor, budget, epoch_grid, epochs_after, epochs_trained, record_target, write_epochs


@pytest.fixture
def pg_url(local_pg_url):
    """The machine's PostgreSQL where it answers, else the embedded one (never a skip)."""
    return local_pg_url


@pytest.fixture(params=["postgresql", "sqlite"])
def storage(request, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path}/epochs.db"
    s = open_storage(resolve_storage_url(url), heartbeat=False)
    try:
        yield s
    finally:
        s.engine.dispose()


def _study(storage, name, rates=(0.1, 0.01, 0.001)):
    import uuid

    study = optuna.create_study(study_name=f"{name}-{uuid.uuid4().hex[:8]}", storage=storage, direction="maximize")
    asked = []
    for lr in rates:
        study.enqueue_trial({"learning_rate": lr})
        t = study.ask()
        t.suggest_float("learning_rate", 1e-5, 1.0, log=True)
        asked.append(t)
    return study, asked


def _metrics(e, lr):
    return {"loss": 1.0 / (e + 1) + lr, "val_loss": 1.2 / (e + 1) + lr, "accuracy": 0.9, "val_accuracy": 0.5 + e / 100, "epoch_seconds": 0.25}


def test_epochs_read_back_in_order_then_only_what_is_new(storage):
    study, (a, b, c) = _study(storage, "read")
    sid = study._study_id
    write_epochs(storage.engine, sid, [(a._trial_id, e, _metrics(e, 0.1)) for e in range(3)])
    write_epochs(storage.engine, sid, [(b._trial_id, 0, {"loss": math.nan, "val_loss": math.inf, "accuracy": None})])
    first = epochs_after(storage.engine, sid)
    assert [(r.trial, r.epoch) for r in first.epochs] == [(a.number, 0), (a.number, 1), (a.number, 2), (b.number, 0)]
    assert first.epochs[0].learning_rate == pytest.approx(0.1) and first.epochs[1].loss == pytest.approx(0.6)
    assert first.epochs[3].loss is None and first.epochs[3].val_loss is None  # non-finite: null
    assert first.epochs[0].epoch_seconds == pytest.approx(0.25)
    assert sorted((t.number, t.state) for t in first.trials) == [(a.number, "RUNNING"), (b.number, "RUNNING"), (c.number, "RUNNING")]
    cursor = Cursor.decode(first.cursor.encode())
    assert cursor == first.cursor

    empty = epochs_after(storage.engine, sid, cursor)
    assert empty.epochs == [] and empty.trials == []  # nothing new: nothing sent

    write_epochs(storage.engine, sid, [(c._trial_id, 0, _metrics(0, 0.001))])
    study.tell(a, 0.52)
    study.tell(b, state=optuna.trial.TrialState.PRUNED)
    later = epochs_after(storage.engine, sid, empty.cursor)
    assert [(r.trial, r.epoch) for r in later.epochs] == [(c.number, 0)]
    assert sorted((t.number, t.state) for t in later.trials) == [(a.number, "COMPLETE"), (b.number, "PRUNED")]
    assert budget(storage.engine, sid).finished == 2 and budget(storage.engine, sid).target is None


def test_an_epoch_budget_counts_the_epochs_of_trials_that_did_not_fail(storage):
    study, (a, b, c) = _study(storage, "spent")
    sid = study._study_id
    assert epochs_trained(storage.engine, sid) == 0
    write_epochs(storage.engine, sid, [(a._trial_id, e, _metrics(e, 0.1)) for e in range(3)])
    write_epochs(storage.engine, sid, [(b._trial_id, e, _metrics(e, 0.01)) for e in range(2)])
    write_epochs(storage.engine, sid, [(c._trial_id, 0, _metrics(0, 0.001))])
    study.tell(b, state=optuna.trial.TrialState.FAIL)  # its retry carries (and counts) its epochs
    assert epochs_trained(storage.engine, sid) == 4
    record_target(storage, sid, None, 4)
    state = budget(storage.engine, sid)
    assert (state.target, state.epoch_budget, state.epochs, state.running) == (None, 4, 4, 2)
    assert not state.done  # spent, but two trials still run
    study.tell(a, 0.52)
    study.tell(c, state=optuna.trial.TrialState.PRUNED)
    assert budget(storage.engine, sid).done
    record_target(storage, sid, 5, None)  # a later run without an epoch budget clears it
    state = budget(storage.engine, sid)
    assert (state.target, state.epoch_budget, state.finished) == (5, None, 2) and not state.done


def test_a_page_limit_continues_where_it_stopped(storage):
    study, (a, _, _) = _study(storage, "page")
    write_epochs(storage.engine, study._study_id, [(a._trial_id, e, _metrics(e, 0.1)) for e in range(25)])
    seen, cursor, calls = [], None, 0
    while True:
        batch = epochs_after(storage.engine, study._study_id, cursor, limit=10)
        seen += [r.epoch for r in batch.epochs]
        cursor, calls = batch.cursor, calls + 1
        if not batch.more:
            break
    assert seen == list(range(25)) and calls == 3


def test_other_studies_epochs_are_not_in_the_feed_and_make_no_gaps(storage):
    one, (a, _, _) = _study(storage, "one")
    two, (x, _, _) = _study(storage, "two")
    for e in range(4):
        write_epochs(storage.engine, one._study_id, [(a._trial_id, e, _metrics(e, 0.1))])
        write_epochs(storage.engine, two._study_id, [(x._trial_id, e, _metrics(e, 0.1))])
    batch = epochs_after(storage.engine, one._study_id)
    assert [r.trial for r in batch.epochs] == [a.number] * 4
    assert batch.cursor.gaps == ()


def test_an_epoch_that_commits_after_a_later_one_is_still_delivered(pg_url):
    """Two workers: A's insert takes id n and commits after B's insert (id n+1). A reader
    between the two commits sees n+1 only; the cursor remembers n and the next poll gets it."""
    storage = open_storage(resolve_storage_url(pg_url), heartbeat=False)
    try:
        study, (a, b, _) = _study(storage, "late")
        sid = study._study_id
        start = epochs_after(storage.engine, sid).cursor
        insert = sqlalchemy.text(f"INSERT INTO {TABLE} (study_id, trial_id, epoch, loss) VALUES (:s, :t, :e, 0.5)")
        slow = storage.engine.connect()
        try:
            tx = slow.begin()
            slow.execute(insert, {"s": sid, "t": a._trial_id, "e": 0})  # id n, not committed yet
            write_epochs(storage.engine, sid, [(b._trial_id, 0, {"loss": 0.4})])  # id n+1, committed
            between = epochs_after(storage.engine, sid, start)
            assert [r.trial for r in between.epochs] == [b.number]
            assert len(between.cursor.gaps) == 1
            tx.commit()
        finally:
            slow.close()
        after = epochs_after(storage.engine, sid, between.cursor)
        assert [(r.trial, r.loss) for r in after.epochs] == [(a.number, 0.5)]
        assert after.cursor.gaps == ()
        assert epochs_after(storage.engine, sid, after.cursor).epochs == []
    finally:
        storage.engine.dispose()


def test_the_first_load_bins_every_epoch_per_trial(storage):
    study, (a, b, _) = _study(storage, "grid")
    rows = [(a._trial_id, e, _metrics(e, 0.1)) for e in range(7)] + [(b._trial_id, e, _metrics(e, 0.01)) for e in range(2)]
    write_epochs(storage.engine, study._study_id, rows)
    grid = epoch_grid(storage.engine, study._study_id, bin_epochs=3)
    i, j = [t.number for t in grid.trials].index(a.number), [t.number for t in grid.trials].index(b.number)
    assert grid.epochs_run[i] == 7 and grid.epochs_run[j] == 2
    expected = [sum(1.0 / (e + 1) + 0.1 for e in es) / len(es) for es in ((0, 1, 2), (3, 4, 5), (6,))]
    assert grid.loss[i] == pytest.approx(expected, rel=1e-5)
    assert grid.best[i] == pytest.approx(0.56)
    assert epochs_after(storage.engine, study._study_id, grid.cursor).epochs == []  # the cursor is after all of them


def test_optuna_deletes_a_study_and_its_epochs_go_with_it(storage):
    study, (a, _, _) = _study(storage, "delete")
    write_epochs(storage.engine, study._study_id, [(a._trial_id, 0, _metrics(0, 0.1))])
    optuna.delete_study(study_name=study.study_name, storage=storage)
    with storage.engine.connect() as conn:
        left = conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {TABLE} WHERE study_id = :s"), {"s": study._study_id}).scalar()
    assert left == 0


def test_a_cursor_round_trips_and_stays_short_with_many_running_trials():
    cursor = Cursor(523_412, ((523_400, 1_800_000_000),), 2_064, tuple((i, "RUNNING") for i in range(2_001, 2_065)) + ((2_070, "WAITING"),))
    text = cursor.encode()
    assert Cursor.decode(text) == cursor
    assert len(text) < 180, text


def test_a_bad_cursor_is_a_value_error():
    for text in ("", "abc", "1_2_3", "1_2__9X", "-1_0__", "1_2__R1.x", "1_2__R"):
        with pytest.raises(ValueError, match="is not a cursor of this feed"):
            Cursor.decode(text)
