"""A preemption costs one epoch, not a trial (issue 24): real workers, real signals, real PostgreSQL.

A worker stopped by SIGTERM mid-trial writes its trial's last finished epoch to the study's
database before it exits; the retry, taken by another worker, goes on from the next epoch, and
with ``--seed`` its history equals an uninterrupted run's. A worker killed with SIGKILL leaves
its last periodic checkpoint (``HPSEARCH_CHECKPOINT_S``), which the retry resumes from once
the stale-trial sweep has failed the trial.
"""

from __future__ import annotations

import signal

import optuna
import pytest

from tests.test_faults import FAST_HEARTBEAT, _env, _running_trial_with_epochs, _signal_while_running, _stop_all, _study, _wait, _worker

EPOCHS = 10
TRAIN = ["--epochs", str(EPOCHS), "--train-size", "4000", "--pruner", "none", "--seed", "3"]


def _trained(trials) -> tuple[int, list]:
    """Epochs the study trained in all (each trial's own, not those it resumed with), and the
    finished trials' (number, resumed from, own epochs)."""
    total, rows = 0, []
    for t in trials:
        run = t.user_attrs.get("epochs_run") or 0
        start = (t.user_attrs.get("resumed_from") or {}).get("epoch", 0)
        total += run - start
        if t.state.name in ("COMPLETE", "PRUNED"):
            rows.append((t.number, t.user_attrs.get("resumed_from"), run - start))
    return total, rows


def _interrupt_then_finish(url, mnist, tmp_path, name: str, sig: int, trials: int, env_extra: dict, victim_args=(), rest_args=(),
                           min_epochs: int = 2):
    """Signal the victim worker while its trial ``number`` (seen with ``min_epochs`` reported
    epochs) still runs (:func:`_signal_while_running`), then let another worker finish."""
    data = ["--data", mnist] if mnist else []
    args = ["--study", name, "--trials", str(trials), *TRAIN, *data]
    env = _env(url, **env_extra)
    with open(tmp_path / f"{name}-a.log", "wb") as log:
        victim = _worker([*args, *victim_args], env, log)
        try:
            number, _ = _running_trial_with_epochs(url, name, min_epochs, 240)
            _signal_while_running(url, name, number, victim, sig)
            victim.wait(timeout=60)
        finally:
            _stop_all([victim])
    with open(tmp_path / f"{name}-b.log", "wb") as log:
        rest = _worker([*args, "--worker-index", "1", *rest_args], env, log)
        try:
            codes = _wait([rest], 400)
        finally:
            _stop_all([rest])
    logs = "".join((tmp_path / f"{name}-{k}.log").read_text(errors="replace") for k in "ab")
    return victim.returncode, codes[0], number, logs


@pytest.fixture(scope="module")
def uninterrupted(local_pg_url, mnist, tmp_path_factory):
    data = ["--data", mnist] if mnist else []
    tmp = tmp_path_factory.mktemp("straight")
    with open(tmp / "w.log", "wb") as log:
        proc = _worker(["--study", "straight", "--trials", "1", *TRAIN, *data], _env(local_pg_url), log)
        try:
            assert _wait([proc], 400) == [0], (tmp / "w.log").read_text()
        finally:
            _stop_all([proc])
    return _study(local_pg_url, "straight").trials[0]


def test_sigterm_costs_at_most_one_epoch_and_the_seeded_retry_equals_the_uninterrupted_run(local_pg_url, mnist, tmp_path, uninterrupted):
    # The interval is far off: only the stopping worker's own write can make the checkpoint.
    code, rest, number, logs = _interrupt_then_finish(local_pg_url, mnist, tmp_path, "term", signal.SIGTERM, 2, {"HPSEARCH_CHECKPOINT_S": "3600"})
    assert code == 143 and rest == 0, logs[-3000:]
    assert "Traceback" not in logs and "training from epoch 0" not in logs, logs[-3000:]
    study = _study(local_pg_url, "term")
    failed = next(t for t in study.trials if t.number == number)
    e = failed.user_attrs["epochs_run"]  # epochs it finished; the signal came during epoch e
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == number)
    assert retry.state == optuna.trial.TrialState.COMPLETE
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == number and e - 1 <= resumed["epoch"] <= e
    own = EPOCHS - resumed["epoch"]
    print(f"\nSIGTERM during epoch {e} of {EPOCHS}: the retry (trial {retry.number}) resumed at epoch {resumed['epoch']} and trained {own} epochs (target: at most {EPOCHS - e + 1})")
    assert own <= EPOCHS - e + 1
    assert retry.user_attrs["history"] == uninterrupted.user_attrs["history"]
    assert retry.intermediate_values == uninterrupted.intermediate_values
    total, rows = _trained(study.trials)
    finished = sum(r[2] + (r[1] or {}).get("epoch", 0) for r in rows)  # what an uninterrupted study trains
    print(f"the study trained {total} epochs in all; uninterrupted it would have trained {finished}")
    assert total - finished <= 1


def test_kill_9_loses_at_most_the_checkpoint_interval(local_pg_url, mnist, tmp_path):
    env = {**FAST_HEARTBEAT, "HPSEARCH_CHECKPOINT_S": "0"}  # a checkpoint after every epoch
    code, rest, number, logs = _interrupt_then_finish(local_pg_url, mnist, tmp_path, "kill", signal.SIGKILL, 2, env)
    assert code == -signal.SIGKILL and rest == 0, logs[-3000:]
    study = _study(local_pg_url, "kill")
    failed = next(t for t in study.trials if t.number == number)
    assert failed.state == optuna.trial.TrialState.FAIL
    reported = len(failed.intermediate_values)  # the killed trial's history was never saved
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == number)
    resumed = retry.user_attrs["resumed_from"]
    print(f"\nkill -9 after {reported} reported epochs: the retry resumed at epoch {resumed['epoch']}")
    assert resumed["trial"] == number and reported - 2 <= resumed["epoch"] <= reported + 1
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.user_attrs["epochs_run"] == EPOCHS


def test_lane_members_stopped_by_sigterm_resume_alone(local_pg_url, mnist, tmp_path):
    """A lane member's checkpoint holds the recipe's arrays in a solo model's order: the two
    members a SIGTERM stopped are resumed by a solo worker (the other way, a solo checkpoint
    into a lane, is tested on the model in search_tests/train_tests/test_checkpoint.py)."""
    code, rest, _, logs = _interrupt_then_finish(local_pg_url, mnist, tmp_path, "lanes", signal.SIGTERM, 2, {"HPSEARCH_CHECKPOINT_S": "3600"},
                                                 victim_args=["--lanes", "2"], min_epochs=4)
    assert code == 143 and rest == 0, logs[-3000:]
    assert "Traceback" not in logs and "training from epoch 0" not in logs, logs[-3000:]
    study = _study(local_pg_url, "lanes")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2
    for t in failed:
        retry = next(r for r in study.trials if r.system_attrs.get("failed_trial") == t.number)
        assert retry.state == optuna.trial.TrialState.COMPLETE and retry.user_attrs["resumed_from"]["trial"] == t.number
        assert retry.user_attrs["resumed_from"]["epoch"] >= 3 and retry.user_attrs["epochs_run"] == EPOCHS
        assert "lanes" not in retry.user_attrs  # resumed alone
    print(f"\nlane members resumed alone at epochs {sorted(r.user_attrs['resumed_from']['epoch'] for r in study.trials if 'resumed_from' in r.user_attrs)}")
