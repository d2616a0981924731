"""`--epoch-budget`: a study spends a budget of epochs instead of (or besides) a count of trials.

Each test runs the real command in a subprocess on a real PostgreSQL (the machine's, else the
embedded server), with a small user's model on small arrays, and checks what the database holds:
no trial started once the study's trials had trained the budget, and the study ended there.
"""

import json
import textwrap

import numpy as np
import optuna
import pytest
import sqlalchemy

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

MODEL = textwrap.dedent("""
    import keras


    def build(hp):
        model = keras.Sequential([
            keras.Input((8,)),
            keras.layers.Dense(hp.Int("units", 4, 16, step=4), activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-1, sampling="log")),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        return model
""")


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    """A small model file and 300/60 rows of a learnable 3-class problem, in an .npz."""
    folder = tmp_path_factory.mktemp("epoch-budget")
    (folder / "small.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(360, 8)).astype("float32")
    y = np.eye(3, dtype="float32")[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)]
    data = folder / "small.npz"
    np.savez(data, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    return f"{folder / 'small.py'}:build", str(data)


def _run(url, study, model_and_data, *args, home=None):
    model, data = model_and_data
    return run_cli("run", "--model", model, "--data", data, "--study", study, "--validation", "test", "--epochs", "3",
                   "--storage", url, "--format", "json", *args, env=None if home is None else {"HPSEARCH_HOME": str(home)})


def _trials(url, study):
    from storage import open_storage, resolve_storage_url

    return optuna.load_study(study_name=study, storage=open_storage(resolve_storage_url(url), heartbeat=False)).trials


def _epoch_rows(url, study) -> int:
    from storage import resolve_storage_url

    engine = sqlalchemy.create_engine(resolve_storage_url(url).url)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM hpsearch_epochs e JOIN studies s ON s.study_id = e.study_id WHERE s.study_name = :n"
            ), {"n": study}).scalar()
    finally:
        engine.dispose()


def test_one_worker_starts_no_trial_once_the_budget_is_spent(local_pg_url, model_and_data):
    out = _run(local_pg_url, "eb", model_and_data, "--epoch-budget", "8")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["epoch_budget"] == 8 and summary["target_trials"] is None
    trials = sorted(_trials(local_pg_url, "eb"), key=lambda t: t.number)
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    epochs = [t.user_attrs["epochs_run"] for t in trials]
    # one worker runs its trials one after another: each started while fewer than 8 epochs were
    # trained, and the last one took the study to 8 or past it (by at most its own epochs)
    assert all(sum(epochs[:i]) < 8 for i in range(len(epochs))), epochs
    assert 8 <= sum(epochs) < 8 + 3, epochs
    assert summary["epochs_trained"] == sum(epochs) == _epoch_rows(local_pg_url, "eb")
    assert summary["finished_trials"] == len(trials) >= 3  # pruned trials leave room for more than 8 / 3
    assert "/8 epochs, best val_accuracy" in out.stderr  # the progress line counts the budget
    # each trial's line counts its own epochs already: the last one shows the study's total
    last = [line for line in out.stderr.splitlines() if f"trial {trials[-1].number}" in line and "after" in line][-1]
    assert last.startswith(f"[{len(trials)} trials, {sum(epochs)}/8 epochs, "), last

    # The budget is spent: a rerun trains nothing, and a follower sees the study finished.
    again = _run(local_pg_url, "eb", model_and_data, "--epoch-budget", "8")
    assert again.returncode == 0, again.stderr
    assert len(_trials(local_pg_url, "eb")) == len(trials)
    follow = run_cli("query", "follow", "--study", "eb", "--storage", local_pg_url, timeout=60)
    assert follow.returncode == 0, follow.stderr
    assert "budget 8 epochs" in follow.stderr and "finished its budget" in follow.stderr

    # A larger budget goes on from where the study is.
    more = _run(local_pg_url, "eb", model_and_data, "--epoch-budget", "12")
    assert more.returncode == 0, more.stderr
    assert 12 <= json.loads(more.stdout)["epochs_trained"] < 12 + 3


def test_trials_still_cap_a_run_with_an_epoch_budget(local_pg_url, model_and_data):
    out = _run(local_pg_url, "eb-capped", model_and_data, "--epoch-budget", "1000", "--trials", "2")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["finished_trials"] == 2 and summary["target_trials"] == 2
    assert len(_trials(local_pg_url, "eb-capped")) == 2 and summary["epochs_trained"] <= 6


def test_two_workers_share_one_epoch_budget(local_pg_url, model_and_data, tmp_path):
    # the workers' logs go to the home's logs/, not to the repository's .hpsearch
    out = _run(local_pg_url, "eb-two", model_and_data, "--epoch-budget", "10", "--workers", "2", home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    trials = _trials(local_pg_url, "eb-two")
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), [t.state.name for t in trials]
    spent = sum(t.user_attrs["epochs_run"] for t in trials)
    # each worker's last trial started below the budget and trains at most 3 epochs
    assert 10 <= spent == summary["epochs_trained"] <= 10 - 1 + 2 * 3, spent


def test_a_lane_worker_keeps_to_the_epoch_budget(local_pg_url, mnist):
    """The recipe on two lanes: members are claimed under the same budget, and the members still
    training when it is spent finish (at most each lane's last trial past it)."""
    data = ["--data", mnist] if mnist else []
    out = run_cli("run", *data, "--study", "eb-lanes", "--train-size", "300", "--epochs", "3", "--validation", "test",
                  "--lanes", "2", "--epoch-budget", "8", "--storage", local_pg_url, "--format", "json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    trials = _trials(local_pg_url, "eb-lanes")
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), [t.state.name for t in trials]
    spent = sum(t.user_attrs["epochs_run"] for t in trials)
    assert 8 <= spent == summary["epochs_trained"] == _epoch_rows(local_pg_url, "eb-lanes") <= 8 - 1 + 2 * 3, spent
    assert all(t.user_attrs.get("lanes") == 2 for t in trials)
