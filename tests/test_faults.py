"""Faults a fleet survives, with real worker processes against real PostgreSQL.

Heartbeats are shortened through HPSEARCH_HEARTBEAT_S / HPSEARCH_GRACE_S so that a dead
worker is noticed in seconds rather than the production two minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy

from tests.conftest import REPO

FAST_HEARTBEAT = {"HPSEARCH_HEARTBEAT_S": "1", "HPSEARCH_GRACE_S": "4"}


def _env(url: str | None, **extra) -> dict:
    env = dict(os.environ)
    env.pop("OPTUNA_STORAGE", None)
    if url:
        env["OPTUNA_STORAGE"] = url
    env.update(extra)
    return env


def _worker(args: list[str], env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search", "worker", "--quiet", *args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait(timeout=30)


def _wait(procs, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.wait(timeout=max(1, deadline - time.monotonic()))
    return [p.returncode for p in procs]


def _study(url: str, name: str):
    from storage import open_storage, resolve_storage_url

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage_url(url), heartbeat=False))


def _states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _rate(t):
    return t.params.get("learning_rate", t.system_attrs.get("fixed_params", {}).get("learning_rate"))


def blocked_signals(pid: int, tid: int | None = None) -> set[int]:
    """The signals that thread ``tid`` of process ``pid`` (its main thread by default) blocks now."""
    with open(f"/proc/{pid}/task/{tid or pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


#: ``rt_sigtimedwait``'s number, the system call of ``sigwait``: while a thread waits in it, the
#: kernel shows the signals it waits for as unblocked (they are taken there, by no handler).
SIGWAIT_SYSCALL = {"x86_64": 128, "aarch64": 137}.get(os.uname().machine)


def _threads_taking(pid: int, signals: set[int]) -> tuple[list[int], list[int]]:
    """The threads of ``pid`` that do not block every one of ``signals`` (ended ones left out):
    those a handler would run on, and those waiting for them in ``sigwait``."""
    handling, waiting = [], []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if not signals <= blocked_signals(pid, int(tid)):
                with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                    call = f.read().split()[0]
                (waiting if call.isdigit() and int(call) == SIGWAIT_SYSCALL else handling).append(int(tid))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return handling, waiting


def _signal_while_running(url: str, study_name: str, number: int, proc, sig: int) -> None:
    """Send ``sig`` to worker ``proc`` (its process group for SIGKILL) while its trial ``number``
    is still RUNNING: the worker is held with SIGSTOP while the trial is checked, so that the
    trial cannot end between the look and the signal (with epochs of a few tenths of a second it could,
    and the signal then hit the worker's next trial); a pending SIGTERM is handled on SIGCONT.

    Checked first: no thread of the training worker, TensorFlow's included, takes SIGINT or
    SIGTERM itself; its relay thread waits for them (search/cli/signals.py). A SIGTERM that a
    thread of TensorFlow's took while the main thread trained could abort the worker in glibc.
    """
    assert len(os.listdir(f"/proc/{proc.pid}/task")) > 3  # TensorFlow's threads are there by now
    handling, waiting = _threads_taking(proc.pid, {signal.SIGINT, signal.SIGTERM})
    assert handling == [] and len(waiting) == 1, (handling, waiting)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as c:
                state = c.exec_driver_sql("SELECT t.state FROM trials t JOIN studies s USING (study_id) "
                                          "WHERE s.study_name = %(n)s AND t.number = %(k)s", {"n": study_name, "k": number}).scalar()
        finally:
            engine.dispose()
        assert state == "RUNNING", f"trial {number} was {state} before it could be signalled"
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)


def _running_trial_with_epochs(url: str, study_name: str, min_epochs: int, timeout: float):
    """Wait for a RUNNING trial that has reported ``min_epochs``; return (number, pid)."""
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sqlalchemy.inspect(engine).has_table("trial_user_attributes"):
                time.sleep(0.3)  # the worker has not created the schema yet
                continue
            with engine.connect() as c:
                row = c.exec_driver_sql(
                    "SELECT t.number, a.value_json FROM trials t JOIN studies s USING (study_id) "
                    "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'pid' "
                    "WHERE s.study_name = %(n)s AND t.state = 'RUNNING' "
                    "AND (SELECT count(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id) >= %(e)s "
                    "ORDER BY t.number LIMIT 1",
                    {"n": study_name, "e": min_epochs},
                ).first()
            if row:
                return int(row[0]), int(row[1])
            time.sleep(0.3)
    finally:
        engine.dispose()
    pytest.fail(f"no trial of {study_name} reached {min_epochs} epochs within {timeout} s")


def test_eight_workers_at_once_finish_exactly_twenty_trials(local_pg_url, mnist, tmp_path):
    """8 workers started together on a new study: one study, the recipe once, exactly N."""
    data = ["--data", mnist] if mnist else []
    args = ["--study", "eight", "--trials", "20", "--epochs", "1", "--train-size", "300", *data]
    logs = [open(tmp_path / f"w{i}.log", "wb") for i in range(8)]
    procs = [_worker([*args, "--worker-index", str(i)], _env(local_pg_url), logs[i]) for i in range(8)]
    try:
        codes = _wait(procs, 400)
    finally:
        _stop_all(procs)
        for f in logs:
            f.close()
    text = "".join((tmp_path / f"w{i}.log").read_text(errors="replace") for i in range(8))
    assert codes == [0] * 8, text[-2000:]
    assert "deadlock" not in text.lower() and "Traceback" not in text
    study = _study(local_pg_url, "eight")
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 20, states
    assert states.get("RUNNING", 0) == 0
    recipe = sorted(_rate(t) for t in study.trials if t.user_attrs.get("source") == "recipe")
    assert recipe == [0.0001, 0.01, 0.1]


def test_kill_9_mid_trial_is_failed_and_retried_by_another_worker(local_pg_url, mnist, tmp_path):
    data = ["--data", mnist] if mnist else []
    args = ["--study", "kill9", "--trials", "6", "--epochs", "8", "--train-size", "2000", "--pruner", "none", *data]
    env = _env(local_pg_url, **FAST_HEARTBEAT)
    logs = [open(tmp_path / f"w{i}.log", "wb") for i in range(3)]
    procs = [_worker([*args, "--worker-index", str(i)], env, logs[i]) for i in range(3)]
    try:
        number, pid = _running_trial_with_epochs(local_pg_url, "kill9", 2, 180)
        victim = next(p for p in procs if p.pid == pid)
        killed_at = time.time()
        _signal_while_running(local_pg_url, "kill9", number, victim, signal.SIGKILL)
        others = [p for p in procs if p is not victim]
        codes = _wait(others, 300)
    finally:
        _stop_all(procs)
        for f in logs:
            f.close()
    assert codes == [0, 0]
    study = _study(local_pg_url, "kill9")
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 6, states
    assert states.get("RUNNING", 0) == 0
    killed = next(t for t in study.trials if t.number == number)
    assert killed.state == optuna.trial.TrialState.FAIL
    recovery = killed.datetime_complete.timestamp() - killed_at
    print(f"\nkill -9: trial failed {recovery:.1f} s after the kill (heartbeat 1 s, grace 4 s)")
    assert recovery < 30, recovery
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert len(retried) == 1 and retried[0].state.name in ("COMPLETE", "PRUNED")
    assert retried[0].params["learning_rate"] == killed.params["learning_rate"]
    assert retried[0].user_attrs["pid"] != pid


def test_sigterm_stops_the_worker_within_ten_seconds(local_pg_url, mnist, tmp_path):
    data = ["--data", mnist] if mnist else []
    args = ["--study", "term", "--trials", "3", "--epochs", "300", "--train-size", "2000", *data]
    with open(tmp_path / "w.log", "wb") as log:
        proc = _worker(args, _env(local_pg_url), log)
        try:
            number, _ = _running_trial_with_epochs(local_pg_url, "term", 1, 180)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            took = time.monotonic() - sent
        finally:
            _stop_all([proc])
    out = (tmp_path / "w.log").read_text()
    print(f"\nSIGTERM: worker exited {took:.1f} s after the signal")
    assert took < 10, took
    assert proc.returncode == 143, out
    assert "interrupted by SIGTERM" in out and "Traceback" not in out
    study = _study(local_pg_url, "term")
    t = next(t for t in study.trials if t.number == number)
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted by SIGTERM"
    assert _states(study).get("RUNNING", 0) == 0
    waiting = [_rate(w) for w in study.trials if w.state == optuna.trial.TrialState.WAITING]
    assert t.params["learning_rate"] in waiting


def test_launcher_sweeps_stale_trials_at_start(local_pg_url, mnist, tmp_path):
    """A dead worker's RUNNING trial (stale heartbeat) is failed and retried; a RUNNING trial
    with no heartbeat record at all is a plain Optuna objective's, never failed (issue 15)."""
    from search.study.create import open_study
    from storage import open_storage, resolve_storage_url

    os.environ.update(FAST_HEARTBEAT)
    try:
        storage = open_storage(resolve_storage_url(local_pg_url))
    finally:
        for k in FAST_HEARTBEAT:
            os.environ.pop(k)
    from search.train.data import read_mnist

    fp = read_mnist(mnist).fingerprint()
    given = {"epochs": 1, "batch_size": None, "train_size": 300, "validation": None, "lr_min": None, "lr_max": None, "pruner": None, "seed": None}
    study, _, _ = open_study(storage, "stale", given, fp)
    stale = study.ask()  # the recipe's 0.01, enqueued first
    storage.record_heartbeat(stale._trial_id)
    foreign = study.ask()  # a plain Optuna ask: hpsearch records a heartbeat with every claim
    time.sleep(5)  # older than the 4 s grace period
    data = ["--data", mnist] if mnist else []
    out = subprocess.run([sys.executable, "-m", "search", "launch", "--study", "stale", "--trials", "3", "--workers", "1", *data],
                         cwd=REPO, env=_env(local_pg_url, HPSEARCH_HOME=str(tmp_path), **FAST_HEARTBEAT),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "failed 1 stale trial(s)" in out.stderr
    study = _study(local_pg_url, "stale")
    by_number = {t.number: t for t in study.trials}
    assert by_number[stale.number].state.name == "FAIL" and by_number[foreign.number].state.name == "RUNNING"
    assert "its worker sent no heartbeat" in by_number[stale.number].user_attrs["fail_reason"]
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    assert 0.01 in [t.params["learning_rate"] for t in finished], "the stale trial's rate is retried"


def test_database_restart_mid_study_is_survived(tmp_path, mnist):
    """The embedded PostgreSQL stops for ~15 s during a study; workers retry and finish."""
    from storage import embedded_url, stop_embedded

    home = tmp_path / "home"
    data = ["--data", mnist] if mnist else []
    url = embedded_url(home)
    log = open(tmp_path / "w.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "search", "run", "--study", "restart", "--trials", "3", "--epochs", "12",
                             "--train-size", "2000", "--pruner", "none", *data],
                            cwd=REPO, env=_env(None, HPSEARCH_HOME=str(home)), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _running_trial_with_epochs(url, "restart", 1, 180)
        stop_embedded(home)
        time.sleep(15)
        assert embedded_url(home) == url
        restarted = time.monotonic()
        proc.wait(timeout=300)
        print(f"\ndatabase restart: the study finished {time.monotonic() - restarted:.1f} s after the server came back")
    finally:
        _stop_all([proc])
        log.close()
        out = (tmp_path / "w.log").read_text(errors="replace")
        stop_embedded(home) if proc.returncode != 0 else None
    try:
        assert proc.returncode == 0, out[-3000:]
        study = _study(embedded_url(home), "restart")
        states = _states(study)
        assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 3, states
        assert states.get("RUNNING", 0) == 0
        assert "Traceback" not in out
    finally:
        stop_embedded(home)


def test_worker_gives_up_when_the_database_stays_away(tmp_path, mnist):
    from storage import embedded_url, stop_embedded

    home = tmp_path / "home"
    data = ["--data", mnist] if mnist else []
    url = embedded_url(home)
    with open(tmp_path / "w.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "search", "worker", "--study", "gone", "--trials", "3", "--epochs", "300",
                                 "--train-size", "2000", *data],
                                cwd=REPO, env=_env(url, HPSEARCH_HOME=str(home), HPSEARCH_DB_RETRY_S="4"),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _running_trial_with_epochs(url, "gone", 1, 180)
            stop_embedded(home)
            stopped = time.monotonic()
            proc.wait(timeout=120)
            gave_up = time.monotonic() - stopped
            print(f"\ndatabase gone: the worker gave up {gave_up:.1f} s after the server stopped")
            assert gave_up < 20, "queued writes must not each wait out the retry limit in turn"
        finally:
            _stop_all([proc])
            stop_embedded(home)
    out = (tmp_path / "w.log").read_text(errors="replace").strip().splitlines()
    assert proc.returncode == 2
    assert out[-1].startswith("hpsearch worker: error: the database did not answer for 4 s while ")
    assert not any("Traceback" in line for line in out)


def test_unfixable_failures_are_not_retried_and_stop_the_worker(embedded_home, mnist):
    """NaN losses end as pruned (never retried); a broken setup fails 3 trials, then stops."""
    import numpy as np

    from search.train.data import Dataset, load_dataset
    from search.errors import WorkerFatalError
    from search.study.create import open_study
    from search.fleet.worker import run_worker
    from storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(embedded_home[1]))
    given = {"epochs": 2, "batch_size": None, "train_size": 300, "validation": None, "lr_min": None, "lr_max": None, "pruner": "none", "seed": None}
    ds = load_dataset(mnist, train_size=300, validation="holdout")
    # inputs near float32's maximum overflow the first layer: the loss is not finite from epoch 0
    nan = Dataset(np.full_like(ds.x_train, 3e38), ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test, ds.fingerprint, ds.source, ds.validation)
    study, config, _ = open_study(storage, "nan", given, ds.fingerprint)
    run_worker(study, storage, config, nan, 3)
    trials = study.trials
    assert [t.state.name for t in trials] == ["PRUNED"] * 3
    assert all(t.user_attrs["stop_reason"] == "diverged" for t in trials)

    broken = Dataset(ds.x_train[:, :700], ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test, ds.fingerprint, ds.source, ds.validation)
    study, config, _ = open_study(storage, "broken", given, ds.fingerprint)
    with pytest.raises(WorkerFatalError, match="2 trials failed in a row"):
        run_worker(study, storage, config, broken, 5, max_consecutive_failures=2)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 2 and all("cannot train: ValueError" in t.user_attrs["fail_reason"] for t in failed)
    assert not [t for t in study.trials if "retry_of" in t.user_attrs], "configuration failures are not retried"
