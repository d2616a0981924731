"""`hpsearch export`: a trial's model trained again and saved as a .keras file.

Each study is made by `hpsearch run --seed S` on a real PostgreSQL (the machine's, else the
embedded server); each export runs the real command in a subprocess. With a seed the retrained
model must be the trial's own: its objective after the last epoch equal to what the trial
recorded at its best epoch, and the saved file, loaded back, must score the same. Bad inputs of
`export` are cases of tests/test_bad_input.py.
"""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from tests.conftest import REPO, mnist_path, run_cli
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


def test_a_pruned_trial_is_trained_to_its_best_epoch(recipe_study, tmp_path):
    url, data = recipe_study
    pruned = [t for t in _study(url, "seeded").trials if t.state.name == "PRUNED"]
    if not pruned:
        pytest.fail("the seeded study pruned no trial: choose another seed for this test")
    trial = pruned[0]
    out = run_cli("export", "--study", "seeded", "--trial", str(trial.number), "--storage", url, "--out", str(tmp_path / "p.keras"), *data, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"saved trial {trial.number} of study 'seeded'" in out.stdout and "its own weights" in out.stdout, out.stdout
    assert f"trained again for {trial.user_attrs['best_epoch'] + 1} epoch" in out.stdout


def test_a_users_model_is_rebuilt_through_its_build_and_fit(local_pg_url, tmp_path):
    """The getting-started HyperModel (its fit tunes shuffle), seeded: the saved model is the
    best trial's, and the study's default name (getting_started.MyHyperModel) is found without --study."""
    pytest.importorskip("keras_tuner")
    source = mnist_path()
    if source is None:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    else:
        with np.load(source) as f:
            x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    eye = np.eye(10, dtype="float32")
    images = tmp_path / "images.npz"
    np.savez(images, x_train=(x_train[:600, ..., None] / 255.0).astype("float32"), y_train=eye[y_train[:600]],
             x_test=(x_test[:100, ..., None] / 255.0).astype("float32"), y_test=eye[y_test[:100]])
    db = f"sqlite:///{tmp_path}/s.db"  # one study there, so export finds it without --study
    spec = str(EXAMPLES / "getting_started.py") + ":MyHyperModel"
    out = run_cli("run", "--model", spec, "--data", str(images), "--seed", "1", "--trials", "2", "--epochs", "2",
                  "--validation", "test", "--storage", db)
    assert out.returncode == 0, out.stderr
    out = run_cli("export", "--storage", db, "--data", str(images), "--out", str(tmp_path / "m.keras"), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    best = _study(db, "getting_started.MyHyperModel").best_trial
    assert done["study"] == "getting_started.MyHyperModel" and done["params"] == best.params
    assert done["retrained"] == pytest.approx(best.value, abs=1e-6)
    assert done["test"]["accuracy"] == pytest.approx(best.value, abs=1e-6)  # validation is the test set here
