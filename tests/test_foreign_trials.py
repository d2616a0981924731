"""Studies shared with plain Optuna (issue 15, group 5): trials hpsearch did not make never
crash it, are never reported or counted as its own, and are never failed without a heartbeat
record; the heartbeat settings are the study's, whatever a worker's environment says."""

from __future__ import annotations

import json
import os
import time

import optuna
import pytest

from tests.conftest import run_cli

GIVEN = {"epochs": 1, "batch_size": None, "train_size": 300, "validation": "test", "lr_min": None, "lr_max": None, "pruner": None, "seed": None}


@pytest.fixture(scope="module")
def db_url(local_pg_url):
    """The machine's PostgreSQL when it answers, else the embedded one (never a skip)."""
    return local_pg_url


def _storage(url: str, heartbeat_s: str, grace_s: str):
    from storage import open_storage, resolve_storage_url

    saved = {k: os.environ.get(k) for k in ("HPSEARCH_HEARTBEAT_S", "HPSEARCH_GRACE_S")}
    os.environ.update(HPSEARCH_HEARTBEAT_S=heartbeat_s, HPSEARCH_GRACE_S=grace_s)
    try:
        return open_storage(resolve_storage_url(url))
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _open(storage, name, mnist_raw, notes=None):
    from search.study.create import open_study

    return open_study(storage, name, GIVEN, mnist_raw.fingerprint(), say=(notes.append if notes is not None else None))


def test_counts_and_heartbeat_agreement_without_training(db_url, mnist_raw):
    from search.study.create import HEARTBEAT_ATTR, is_foreign, summarize
    from storage import foreign_counts, own_counts

    first = _storage(db_url, "1", "3")
    study, config, created = _open(first, "agree", mnist_raw)
    assert created and study.user_attrs[HEARTBEAT_ATTR] == {"interval_s": 1, "grace_s": 3}
    # A plain objective takes two of the recipe's queued trials and suggests its own parameter.
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    plain_running = study.ask()  # a plain ask takes the third queued rate: RUNNING, no heartbeat record
    assert foreign_counts(first.engine, study._study_id)["COMPLETE"] == 2
    assert own_counts(first.engine, study._study_id) == {"RUNNING": 0, "WAITING": 0, "COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    assert foreign_counts(first.engine, study._study_id)["RUNNING"] == 1
    assert all(is_foreign(t) for t in study.trials if t.state.name == "COMPLETE")

    # A second worker with other settings uses the study's and says so; it restores the rates taken.
    notes = []
    second = _storage(db_url, "2", "9")
    study2, _, created = _open(second, "agree", mnist_raw, notes)
    assert not created and (second.heartbeat_interval, second.grace_period) == (1, 3)
    assert len(notes) == 1 and "using the study's" in notes[0] and "grace 9 s" in notes[0] and "grace 3 s" in notes[0]
    waiting = sorted(t.system_attrs["fixed_params"]["learning_rate"] for t in study2.get_trials(states=(optuna.trial.TrialState.WAITING,)))
    assert waiting == [0.0001, 0.01, 0.1]

    summary = summarize(study2, second, config, 5)
    assert summary["finished_trials"] == 0 and summary["best"] is None and summary["recipe_trials"] == []
    assert summary["foreign_trials"] == {"RUNNING": 1, "COMPLETE": 2}
    assert study2._storage.get_trial(plain_running._trial_id).state.name == "RUNNING"


def test_a_stale_trial_records_why_it_failed_and_a_plain_one_is_left_alone(db_url, mnist_raw):
    from search.fleet.worker import sweep_stale

    storage = _storage(db_url, "1", "2")
    study, _, _ = _open(storage, "sweep", mnist_raw)
    dead = study.ask()
    storage.record_heartbeat(dead._trial_id)  # hpsearch's claim: it beats, then its worker dies
    plain = study.ask()
    time.sleep(3.2)
    assert sweep_stale(study, storage) == 1
    assert storage.get_trial(plain._trial_id).state.name == "RUNNING"
    failed = storage.get_trial(dead._trial_id)
    assert failed.state.name == "FAIL" and "sent no heartbeat for over 2 s" in failed.user_attrs["fail_reason"]
    retried = [t for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,)) if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1


def test_a_stale_trial_whose_row_is_locked_is_left_for_a_later_sweep_not_waited_for(db_url, mnist_raw):
    """A worker frozen inside a write holds its trial row's lock (an epoch row's foreign key
    share-locks it): the sweep skips that trial instead of waiting until the process runs
    again, and fails it at the first sweep after the lock is gone."""
    import threading

    import sqlalchemy

    from search.fleet.worker import sweep_stale

    storage = _storage(db_url, "1", "2")
    study, _, _ = _open(storage, "locked", mnist_raw)
    frozen, dead = study.ask(), study.ask()
    storage.record_heartbeat(frozen._trial_id)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3.2)  # both stale
    holder = sqlalchemy.create_engine(db_url).connect()
    try:
        lock = holder.begin()
        holder.execute(sqlalchemy.text("SELECT 1 FROM trials WHERE trial_id = :t FOR KEY SHARE"), {"t": frozen._trial_id})
        result = []
        sweeper = threading.Thread(target=lambda: result.append(sweep_stale(study, storage)), daemon=True)
        started = time.monotonic()
        sweeper.start()
        sweeper.join(timeout=30)
        waited = time.monotonic() - started
        assert not sweeper.is_alive(), "the sweep waited on the locked trial"
        assert result == [1] and waited < 10, (result, waited)
        assert storage.get_trial(frozen._trial_id).state.name == "RUNNING"
        assert storage.get_trial(dead._trial_id).state.name == "FAIL"
        lock.rollback()  # the frozen worker runs again (or dies): its lock is gone
    finally:
        holder.close()
    assert sweep_stale(study, storage) == 1
    assert storage.get_trial(frozen._trial_id).state.name == "FAIL"
    retried = {t.system_attrs.get("failed_trial") for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))}
    assert {frozen.number, dead.number} <= retried


@pytest.mark.slow
def test_run_on_a_study_shared_with_plain_optuna(db_url, mnist_raw, mnist, tmp_path):
    """hpsearch run exits 0, trains the recipe's rates itself, counts only its trials, and the
    summary names the others; a plain RUNNING trial without a heartbeat is not failed."""
    storage = _storage(db_url, "1", "2")
    study, _, _ = _open(storage, "shared", mnist_raw)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    plain = study.ask()
    time.sleep(2.5)  # older than the study's grace period
    data = ["--data", mnist] if mnist else []
    out = run_cli("run", "--study", "shared", "--storage", db_url, "--trials", "3", "--format", "json", *data,
                  env={"HPSEARCH_HEARTBEAT_S": "1", "HPSEARCH_GRACE_S": "30", "HPSEARCH_HOME": str(tmp_path)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "using the study's" in out.stderr
    summary = json.loads(out.stdout)
    assert summary["finished_trials"] == 3 and summary["foreign_trials"] == {"RUNNING": 1, "COMPLETE": 2}
    assert sorted(r["learning_rate"] for r in summary["recipe_trials"]) == [0.0001, 0.01, 0.1]
    assert summary["best"]["learning_rate"] in (0.0001, 0.01, 0.1)
    assert storage.get_trial(plain._trial_id).state.name == "RUNNING"
