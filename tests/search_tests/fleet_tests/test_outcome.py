"""How a trial ended, decided by search.fleet.outcome.classify and recorded once by settle/record.

The table needs no training: each way a trial can end is an exception (or a value). The
records are checked on a real PostgreSQL study.
"""

from __future__ import annotations

import signal
import time

import optuna
import pytest

from search.errors import (
    ConfigError,
    DataError,
    TrialConfigError,
    TrialEnvironmentError,
    WorkerFatalError,
    WorkerInterrupted,
)
from search.errors import trial_error
from storage.errors import StorageError
from search.fleet.outcome import classify, lanes_failure, settle, stopped

# (what ended the trial, state, retried, worker stops, kind)
TABLE = [
    (optuna.TrialPruned("diverged"), "pruned", False, False, "pruned"),
    (TrialConfigError("trial 3 cannot train: ValueError: bad shape"), "failed", False, False, "config"),
    (TrialEnvironmentError("trial 3 ran out of device memory at batch size 1024"), "failed", True, False, "environment"),
    (RuntimeError("a bug"), "failed", True, False, "error"),
    (ZeroDivisionError("division by zero"), "failed", True, False, "error"),
    (WorkerInterrupted(signal.SIGTERM), "failed", True, True, "interrupted"),
    (WorkerInterrupted(signal.SIGINT), "failed", True, True, "interrupted"),
    (KeyboardInterrupt(), "failed", True, True, "interrupted"),
    (StorageError("the database did not answer for 60 s"), "unrecorded", False, True, "database"),
    (WorkerFatalError("3 trials failed in a row"), "failed", True, True, "fatal"),
    (DataError("mnist.npz is truncated"), "failed", True, True, "fatal"),
    (ConfigError("--gpu 0: no GPU"), "failed", True, True, "fatal"),
    (SystemExit(1), "failed", True, True, "fatal"),
]


@pytest.mark.parametrize("error,state,retry,fatal,kind", TABLE, ids=[type(row[0]).__name__ for row in TABLE])
def test_every_way_a_trial_ends_has_one_outcome(error, state, retry, fatal, kind):
    outcome = classify(error)
    assert (outcome.state, outcome.retry, outcome.fatal, outcome.kind) == (state, retry, fatal, kind)
    if state == "failed":
        assert outcome.reason  # what fail_reason will say


def test_reasons_say_what_happened():
    assert classify(KeyboardInterrupt()).reason == "interrupted by SIGINT"
    assert classify(WorkerInterrupted(signal.SIGTERM)).reason == "interrupted by SIGTERM"
    assert classify(RuntimeError("a bug")).reason == "RuntimeError: a bug"
    assert classify(TrialConfigError("trial 3 cannot train")).reason == "trial 3 cannot train"


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: out of memory"), type("ResourceExhaustedError", (Exception,), {})("OOM when allocating"),
                                   MemoryError("OOM")])
def test_out_of_memory_is_the_environments_failure(error):
    translated = trial_error(error, 7, 4096)
    assert isinstance(translated, TrialEnvironmentError) and str(translated) == "trial 7 ran out of device memory at batch size 4096"
    assert classify(translated).retry


@pytest.mark.parametrize("error", [ValueError("Input 0 of layer is incompatible:\n  expected 784"), TypeError("bad dtype")])
def test_shapes_and_settings_keras_rejects_are_the_configurations_failure(error):
    translated = trial_error(error, 7, 1024)
    assert isinstance(translated, TrialConfigError) and "\n" not in str(translated)
    assert str(translated).startswith(f"trial 7 cannot train: {type(error).__name__}: ")
    assert not classify(translated).retry


def test_other_errors_stay_what_they_were():
    error = RuntimeError("a bug")
    assert trial_error(error, 7, 1024) is error


def test_a_failed_lanes_model_retries_every_member_whatever_the_error():
    for error in (ValueError("bad shape"), RuntimeError("XLA failed"), RuntimeError("out of memory")):
        outcome = lanes_failure(error, 8, 3, 1024)
        assert (outcome.state, outcome.retry, outcome.fatal) == ("failed", True, False)
        assert outcome.reason.startswith("the lanes model of 8 members failed: ")
    assert "TrialEnvironmentError" in lanes_failure(RuntimeError("out of memory"), 8, 3, 1024).reason


def test_a_trial_running_when_its_worker_stops_is_retried():
    outcome = stopped(WorkerFatalError("3 lane epochs failed in a row\n(last: x)" + "y" * 300))
    assert (outcome.state, outcome.retry, outcome.fatal) == ("failed", True, True)
    assert outcome.reason.startswith("the worker stopped: WorkerFatalError: 3 lane epochs failed in a row (last: x)")
    assert len(outcome.reason) <= len("the worker stopped: WorkerFatalError: ") + 200


# --- recorded once, on a real PostgreSQL ---------------------------------------------------


@pytest.fixture(scope="module")
def storage(local_pg_url):
    from storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(local_pg_url), heartbeat=False)
    yield storage
    storage.engine.dispose()


@pytest.fixture
def study(storage):
    """A study of its own for each test, so no test takes another's queued retry."""
    return optuna.create_study(storage=storage, study_name=f"outcome-{time.time_ns()}", direction="maximize")


def _direct(fn, *args, what: str, **kwargs):
    return fn(*args, **kwargs)


def _end(study, raises=None, value=0.9):
    """Run one trial that samples its rate, then returns ``value`` or raises ``raises``."""
    trial = study.ask()

    def body():
        trial.suggest_float("learning_rate", 1e-5, 1.0, log=True)
        if raises is not None:
            raise raises
        return value

    return trial, body


def _retries_of(study, trial):
    return [t for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,)) if t.user_attrs.get("retry_of") == trial.number]


def test_settle_tells_complete_and_pruned_once(study):
    trial, body = _end(study, value=0.93)
    assert settle(study, trial, _direct, body) == ("complete", 0.93)
    assert study._storage.get_trial(trial._trial_id).value == 0.93
    trial, body = _end(study, raises=optuna.TrialPruned("diverged"))
    assert settle(study, trial, _direct, body) == ("pruned", None)
    assert study._storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.PRUNED


def test_settle_fails_a_configuration_error_without_retrying_it(study):
    trial, body = _end(study, raises=TrialConfigError("trial 1 cannot train: ValueError: bad shape"))
    assert settle(study, trial, _direct, body) == ("failed", None)
    frozen = study._storage.get_trial(trial._trial_id)
    assert frozen.state == optuna.trial.TrialState.FAIL and frozen.user_attrs["fail_reason"] == "trial 1 cannot train: ValueError: bad shape"
    assert _retries_of(study, trial) == []


def test_settle_fails_an_environment_error_and_queues_its_rate_again(study):
    trial, body = _end(study, raises=RuntimeError("a bug"))
    assert settle(study, trial, _direct, body) == ("failed", None)
    (retry,) = _retries_of(study, trial)
    assert retry.system_attrs["fixed_params"] == trial.params and retry.user_attrs["attempt"] == 2
    assert study._storage.get_trial(trial._trial_id).user_attrs["fail_reason"] == "RuntimeError: a bug"


@pytest.mark.parametrize("error,code", [(WorkerInterrupted(signal.SIGTERM), 143), (KeyboardInterrupt(), 130)])
def test_an_interrupt_is_recorded_retried_then_raised_with_its_exit_code(study, error, code):
    trial, body = _end(study, raises=error)
    with pytest.raises(WorkerInterrupted) as raised:
        settle(study, trial, _direct, body)
    assert raised.value.exit_code == code
    frozen = study._storage.get_trial(trial._trial_id)
    assert frozen.state == optuna.trial.TrialState.FAIL and frozen.user_attrs["fail_reason"] == str(raised.value)
    assert len(_retries_of(study, trial)) == 1


def test_a_lost_database_leaves_the_trial_to_the_sweep(study):
    trial, body = _end(study, raises=StorageError("the database did not answer"))
    with pytest.raises(StorageError):
        settle(study, trial, _direct, body)
    frozen = study._storage.get_trial(trial._trial_id)
    assert frozen.state == optuna.trial.TrialState.RUNNING and "fail_reason" not in frozen.user_attrs
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # leave nothing running
