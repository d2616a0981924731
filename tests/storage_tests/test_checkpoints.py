"""The checkpoints table (issue 24): one row per trial, never moved back, found across attempts, removed with the series."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy

from storage import open_storage, requeue, resolve_storage_url
from storage.checkpoints import checkpoint_sizes, delete_checkpoints, latest_checkpoint, save_checkpoint
from storage.retry import drop_checkpoints, earlier_attempts
from storage.schema import CHECKPOINTS


@pytest.fixture(scope="module")
def storage(local_pg_url):
    s = open_storage(resolve_storage_url(local_pg_url))
    yield s
    s.engine.dispose()


def _trial(study):
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-3, 1.0, log=True)
    return trial


def test_one_row_per_trial_and_a_late_write_never_moves_it_back(storage):
    study = optuna.create_study(storage=storage, study_name="rows")
    t = _trial(study)
    assert save_checkpoint(storage.engine, study._study_id, t._trial_id, 1, b"one")
    assert save_checkpoint(storage.engine, study._study_id, t._trial_id, 3, b"three!")
    assert not save_checkpoint(storage.engine, study._study_id, t._trial_id, 2, b"two")  # a late periodic write
    assert checkpoint_sizes(storage.engine, study._study_id) == {t._trial_id: (3, 6)}
    stored = latest_checkpoint(storage.engine, [t._trial_id])
    assert (stored.trial_id, stored.epoch, stored.data) == (t._trial_id, 3, b"three!")
    with storage.engine.connect() as c:
        assert c.exec_driver_sql(f"SELECT attstorage FROM pg_attribute WHERE attrelid = '{CHECKPOINTS}'::regclass AND attname = 'data'").scalar() == "e"


def test_a_retry_finds_the_furthest_checkpoint_of_its_earlier_attempts_and_the_series_ends_clean(storage):
    study = optuna.create_study(storage=storage, study_name="series")
    first = _trial(study)
    save_checkpoint(storage.engine, study._study_id, first._trial_id, 4, b"first")
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    assert requeue(study, first, "interrupted by SIGTERM")
    second = study.ask()
    second.suggest_float("learning_rate", 1e-3, 1.0, log=True)
    assert earlier_attempts(study, second) == [first._trial_id]
    save_checkpoint(storage.engine, study._study_id, second._trial_id, 2, b"second")  # resumed from nothing usable
    assert latest_checkpoint(storage.engine, [first._trial_id, second._trial_id]).data == b"first"
    assert latest_checkpoint(storage.engine, []) is None
    assert drop_checkpoints(study, second) == 2
    assert checkpoint_sizes(storage.engine, study._study_id) == {}


def test_a_failure_past_the_last_attempt_removes_its_checkpoint(storage):
    study = optuna.create_study(storage=storage, study_name="last")
    t = _trial(study)
    t.set_user_attr("attempt", 3)
    save_checkpoint(storage.engine, study._study_id, t._trial_id, 0, b"x")
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert not requeue(study, t, "out of memory")
    assert checkpoint_sizes(storage.engine, study._study_id) == {}


def test_rows_go_with_their_study_and_a_database_from_before_gets_the_table(storage):
    study = optuna.create_study(storage=storage, study_name="gone")
    t = _trial(study)
    save_checkpoint(storage.engine, study._study_id, t._trial_id, 0, b"x")
    optuna.delete_study(study_name="gone", storage=storage)
    with storage.engine.connect() as c:
        assert c.exec_driver_sql(f"SELECT count(*) FROM {CHECKPOINTS} WHERE trial_id = {t._trial_id}").scalar() == 0
    # A database made before issue 24 has the epochs table but not this one: it is added.
    from storage.schema import _ready, ensure_table

    with storage.engine.begin() as c:
        c.exec_driver_sql(f"DROP TABLE {CHECKPOINTS}")
    _ready.discard(storage.engine)
    ensure_table(storage.engine)
    assert sqlalchemy.inspect(storage.engine).has_table(CHECKPOINTS)
