"""`hpsearch export`: a trial's model trained again and saved as a .keras file.

Each study is made by `hpsearch run --seed S` on a real PostgreSQL (the machine's, else the
embedded server); each export runs the real command in a subprocess. With a seed the retrained
model must be the trial's own: its objective after the last epoch equal to what the trial
recorded at its best epoch, and the saved file, loaded back, must score the same. Bad inputs of
`export` are cases of tests/test_bad_input.py.
"""

from __future__ import annotations

import json

import optuna
import pytest

from tests.conftest import REPO, guide_images, run_cli
from tests.test_bad_input import _snapshot

pytestmark = pytest.mark.slow

EXAMPLES = REPO / "docs" / "examples"


def _study(url, name):
    from storage import open_storage, resolve_storage_url

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage_url(url), heartbeat=False))


@pytest.fixture(scope="module")
def recipe_study(local_pg_url, mnist):
    data = ["--data", mnist] if mnist else []
    out = run_cli("run", "--study", "seeded", "--seed", "5", "--trials", "3", "--epochs", "3", "--train-size", "1200",
                  "--storage", local_pg_url, *data)
    assert out.returncode == 0, out.stderr
    return local_pg_url, data


def test_the_best_trial_of_a_seeded_recipe_study_is_saved_with_its_own_weights(recipe_study, tmp_path):
    import keras

    from search.train.data import load_dataset

    url, data = recipe_study
    before = _snapshot(url)
    out = run_cli("export", "--study", "seeded", "--storage", url, "--out", str(tmp_path / "best.keras"), "--format", "json", *data, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    study = _study(url, "seeded")
    best = study.best_trial
    assert done["trial"] == best.number and done["params"] == best.params and done["seeded"] is True
    assert done["epochs"] == best.user_attrs["best_epoch"] + 1
    assert done["recorded"] == pytest.approx(best.value, abs=1e-7)
    assert done["retrained"] == pytest.approx(best.value, abs=1e-6)  # the trial's own run, epoch for epoch
    assert f"epoch {done['epochs']}/{done['epochs']}" in out.stderr  # progress, one line per epoch
    assert _snapshot(url) == before, "export wrote to the study"

    model = keras.saving.load_model(tmp_path / "best.keras")
    ds = load_dataset(data[1] if data else None, train_size=1200, validation="holdout")
    loaded = model.evaluate(ds.x_val, ds.y_val, verbose=0, return_dict=True)
    assert loaded["accuracy"] == pytest.approx(best.value, abs=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]  # no temporary file left beside it


def test_a_pruned_trial_of_a_users_model_is_rebuilt_through_its_build_and_fit(tmp_path):
    """The getting-started HyperModel (its fit tunes shuffle), seeded: --trial N of a pruned
    trial is trained to its best epoch and ends on the value the trial recorded there; the
    study's default name (getting_started.MyHyperModel) is found without --study."""
    pytest.importorskip("keras_tuner")
    images = guide_images(tmp_path / "images.npz")
    db = f"sqlite:///{tmp_path}/s.db"  # one study there, so export finds it without --study
    spec = str(EXAMPLES / "getting_started.py") + ":MyHyperModel"
    out = run_cli("run", "--model", spec, "--data", str(images), "--seed", "1", "--trials", "4", "--epochs", "3",
                  "--validation", "test", "--storage", db)
    assert out.returncode == 0, out.stderr
    pruned = [t for t in _study(db, "getting_started.MyHyperModel").trials if t.state.name == "PRUNED"]
    assert pruned, "the seeded study pruned no trial: choose another seed for this test"
    trial = pruned[0]
    out = run_cli("export", "--storage", db, "--data", str(images), "--trial", str(trial.number), "--out", str(tmp_path / "m.keras"),
                  "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    assert done["study"] == "getting_started.MyHyperModel" and done["trial"] == trial.number and done["params"] == trial.params
    best_epoch = trial.user_attrs["best_epoch"]
    assert done["epochs"] == best_epoch + 1
    recorded = trial.user_attrs["history"]["val_accuracy"][best_epoch]
    assert done["recorded"] == pytest.approx(recorded, abs=1e-7)
    assert done["retrained"] == pytest.approx(recorded, abs=1e-6)  # the trial's own run, through the user's fit
    assert done["test"]["accuracy"] == pytest.approx(recorded, abs=1e-6)  # validation is the test set here
