"""A worker whose trial another worker's stale-trial sweep failed under it (its heartbeat was
silent past the grace period: the process was frozen, or cut off from the database and back)
drops that trial in one line and goes on; no traceback, nothing counted twice.

Found by deploy/e2e's separate hosts: a 15 s silent network cut kept a worker's connection
silent for longer than the grace period, its trial was failed by a sweep, and the worker then
printed Optuna's UpdateFinishedTrialError traceback when it reported the next epoch (and, on
lanes, would have stopped every member with it).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.test_faults import FAST_HEARTBEAT, _env, _running_trial_with_epochs, _states, _stop_all, _study, _wait, _worker

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_trial_swept_under_its_frozen_worker_is_dropped_in_one_line(local_pg_url, mnist, tmp_path, monkeypatch, lanes):
    from search.fleet.worker import sweep_stale
    from storage import open_storage, resolve_storage_url

    name = f"swept{lanes}"
    data = ["--data", mnist] if mnist else []
    args = ["--study", name, "--trials", str(lanes), "--epochs", "20", "--train-size", "600", "--pruner", "none", "--lanes", str(lanes), *data]
    env = _env(local_pg_url, **FAST_HEARTBEAT)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = _worker(args, env, log)
        try:
            number, pid = _running_trial_with_epochs(local_pg_url, name, 1, 180)
            assert pid == proc.pid
            _freeze_between_transactions(proc, local_pg_url)  # frozen: no heartbeat, no report
            time.sleep(int(FAST_HEARTBEAT["HPSEARCH_GRACE_S"]) + 2)
            for key, value in FAST_HEARTBEAT.items():
                monkeypatch.setenv(key, value)
            sweeper = open_storage(resolve_storage_url(local_pg_url))  # as another worker's heartbeat thread sweeps
            study = optuna_study(sweeper, name)
            swept = {t.number for t in study.trials if t.state.name == "RUNNING"}
            assert sweep_stale(study, sweeper) == len(swept)
            assert number in swept
            os.killpg(proc.pid, signal.SIGCONT)
            code = _wait([proc], 300)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
            _stop_all([proc])
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "UpdateFinishedTrialError" not in text, text[-3000:]
    dropped = [line for line in text.splitlines() if "dropped: a stale-trial sweep failed it while it trained" in line]
    assert len(dropped) == len(swept), text[-3000:]
    assert len([line for line in text.splitlines() if "dropped" in line]) == len(swept), text[-3000:]  # said once each
    study = _study(local_pg_url, name)
    states = _states(study)
    # Exactly the target, each swept trial failed once and its parameters trained again.
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == lanes and states.get("RUNNING", 0) == 0, states
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert {t.number for t in failed} == swept
    assert all("no heartbeat" in t.user_attrs["fail_reason"] for t in failed)
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") in {f.number for f in failed}]
    assert len(retried) == len(failed) and all(t.state.name in ("COMPLETE", "PRUNED") for t in retried)


def _freeze_between_transactions(proc, url: str) -> None:
    """SIGSTOP the worker at a moment it holds no transaction open.

    A process frozen inside a transaction keeps its row locks (an epoch row's foreign key
    share-locks its trial), and the sweep leaves such a trial for a later sweep rather than
    wait for the lock (tests/test_foreign_trials.py); this test needs it swept now. Only the
    worker uses this test's database, so any session of it in a transaction is the worker's:
    resume it briefly and try again.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        for _ in range(200):
            os.killpg(proc.pid, signal.SIGSTOP)
            time.sleep(0.3)
            with engine.connect() as c:
                busy = c.execute(sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND (state LIKE 'idle in transaction%' OR state = 'active')"
                )).scalar()
            if not busy:
                return
            os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        pytest.fail("the worker was inside a transaction at every one of 200 tries")
    finally:
        engine.dispose()


def optuna_study(storage, name):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)
