"""A claim the database cuts off is retried without leaving a trial RUNNING for ever (issue 25).

``study.ask()`` commits the trial RUNNING before it samples and returns; a drop after that point
(a killed server) used to make the retry ask for another trial and leave the first one RUNNING
with no heartbeat, which no sweep fails and no count sees.
"""

from __future__ import annotations

import datetime
import time

import optuna
import pytest
import sqlalchemy

from search.fleet.worker import _claim
from storage import open_storage, resolve_storage_url, retrying, running_without_heartbeat


@pytest.fixture(scope="module")
def storage(local_pg_url):
    storage = open_storage(resolve_storage_url(local_pg_url))
    yield storage
    storage.engine.dispose()


def _dropped() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def _running(study) -> list[int]:
    return [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))]


def _study(storage):
    return optuna.create_study(storage=storage, study_name=f"claim-{time.time_ns()}", direction="maximize")


def test_a_claim_cut_off_inside_ask_claims_the_trial_ask_made(storage):
    study = _study(storage)
    real_ask, asked = study.ask, []

    def ask_then_drop():
        trial = real_ask()  # committed RUNNING, then the connection goes
        asked.append(trial.number)
        if len(asked) == 1:
            raise _dropped()
        return trial

    study.ask = ask_then_drop
    _, trial = retrying(_claim, study, storage, 5, asked={}, what="claiming a trial", limit_s=10)
    assert asked == [0] and trial.number == 0
    assert _running(study) == [0]
    assert running_without_heartbeat(storage.engine, study._study_id, datetime.datetime.now() + datetime.timedelta(days=1)) == []


def test_a_claim_cut_off_after_ask_claims_the_same_trial(storage, monkeypatch):
    study = _study(storage)
    real_beat, beats = storage.record_heartbeat, []

    def beat_once_dropped(trial_id):
        beats.append(trial_id)
        if len(beats) == 1:
            raise _dropped()
        real_beat(trial_id)

    monkeypatch.setattr(storage, "record_heartbeat", beat_once_dropped)
    _, trial = retrying(_claim, study, storage, 5, asked={}, what="claiming a trial", limit_s=10)
    assert trial.number == 0 and len(set(beats)) == 1
    assert _running(study) == [0]
