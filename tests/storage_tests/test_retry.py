"""The one retry policy, shared by the worker and the stale-trial callback (storage.retry)."""

from __future__ import annotations

import time

import optuna
import pytest

from storage import MAX_ATTEMPTS, RETRY, RetryPolicy, open_storage, requeue, resolve_storage_url
from storage.stale import StaleTrialCallback

LR = optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)


def _frozen(params=None, **user_attrs):
    params = {"learning_rate": 0.01} if params is None else params
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params=params, distributions={k: LR for k in params}, user_attrs=user_attrs,
    )


def test_a_first_failure_is_retried_as_attempt_two_with_its_reason_and_source():
    trial = _frozen(source="recipe", history={"loss": [1.0]})
    attrs = RETRY.retry_attrs(trial, "x" * 300)
    assert attrs == {"attempt": 2, "retry_of": trial.number, "retry_reason": "x" * 200, "source": "recipe"}


def test_the_last_attempt_and_a_trial_without_parameters_are_not_retried():
    assert RETRY.retry_attrs(_frozen(attempt=MAX_ATTEMPTS), "oom") is None
    assert RETRY.retry_attrs(_frozen(attempt=MAX_ATTEMPTS - 1), "oom")["attempt"] == MAX_ATTEMPTS
    assert RETRY.retry_attrs(_frozen(params={}), "died before sampling") is None
    assert RetryPolicy(max_attempts=1).retry_attrs(_frozen(), "oom") is None


@pytest.fixture(scope="module")
def storage(local_pg_url):
    s = open_storage(resolve_storage_url(local_pg_url), heartbeat=False)
    yield s
    s.engine.dispose()


def _fail(study, trial):
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return study._storage.get_trial(trial._trial_id)


def test_worker_and_stale_retries_share_one_count_of_attempts(storage):
    """A rate failed by a worker, then twice by the stale-trial sweep, is tried MAX_ATTEMPTS times in all."""
    study = optuna.create_study(storage=storage, study_name=f"retry-{time.time_ns()}", direction="maximize")
    study.enqueue_trial({"learning_rate": 0.01}, user_attrs={"source": "recipe"})
    first = study.ask()
    rate = first.suggest_float("learning_rate", 1e-5, 1.0, log=True)
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    assert requeue(study, first, "out of memory")  # the worker's path: a running optuna.Trial

    seen = [first]
    stale = StaleTrialCallback()
    for _ in range(MAX_ATTEMPTS):  # one more than the retries left: the last one is refused
        waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
        if not waiting:
            break
        assert len(waiting) == 1
        trial = study.ask()
        assert trial.suggest_float("learning_rate", 1e-5, 1.0, log=True) == rate
        seen.append(trial)
        stale(study, _fail(study, trial))  # the sweep's path: a FrozenTrial, its reason recorded first

    trials = {t.number: t for t in study.trials}
    assert len(seen) == MAX_ATTEMPTS and not study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [trials[t.number].user_attrs.get("attempt", 1) for t in seen] == list(range(1, MAX_ATTEMPTS + 1))
    assert all(trials[t.number].user_attrs["source"] == "recipe" for t in seen)
    retries = [trials[t.number] for t in seen[1:]]
    assert [t.user_attrs["retry_of"] for t in retries] == [t.number for t in seen[:-1]]
    assert retries[0].user_attrs["retry_reason"] == "out of memory"
    assert "sent no heartbeat" in retries[1].user_attrs["retry_reason"]
    # Optuna's own retry attributes: the first trial of the series, and the series so far
    assert all(t.system_attrs["failed_trial"] == first.number for t in retries)
    assert retries[-1].system_attrs["retry_history"] == [t.number for t in seen[:-1]]
    assert all("sent no heartbeat" in trials[t.number].user_attrs["fail_reason"] for t in seen[1:])
    assert trials[seen[-1].number].user_attrs["fail_reason"].endswith(f"its learning rate had its {MAX_ATTEMPTS} attempts")
    assert trials[seen[-2].number].user_attrs["fail_reason"].endswith("the learning rate is retried")


def test_a_queued_trial_that_died_before_sampling_keeps_its_rate(storage):
    study = optuna.create_study(storage=storage, study_name=f"retry-queued-{time.time_ns()}", direction="maximize")
    study.enqueue_trial({"learning_rate": 0.1}, user_attrs={"source": "recipe"})
    trial = study.ask()  # claimed; its worker dies before it suggests the rate
    StaleTrialCallback()(study, _fail(study, trial))
    (retry,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert retry.system_attrs["fixed_params"] == {"learning_rate": 0.1}
    assert retry.user_attrs == {"attempt": 2, "retry_of": trial.number, "retry_reason": retry.user_attrs["retry_reason"], "source": "recipe"}
    assert study._storage.get_trial(trial._trial_id).user_attrs["fail_reason"].endswith("the learning rate is retried")
