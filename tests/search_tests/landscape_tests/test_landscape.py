"""The loss-landscape figures: their content at 3 and 1,000 trials, storing, rate limiting.

Figures (search.landscape.figures) are built from synthetic histories shaped like the recipe's (no
training); reading curves (search.landscape.curves), storing and refreshing (search.landscape.refresh) run
against a real PostgreSQL (the machine's, else the embedded one).
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import optuna
import pytest

from search.landscape.curves import curves_from_trials, load_curves
from search.landscape.figures import COLOUR_BANDS, FIGURE_IDS, HEATMAP_COLUMNS, HEATMAP_ROWS, build_figures
from search.landscape.refresh import STAMP_ATTR, maybe_refresh_landscape, refresh_landscape
from tests.search_tests._synthetic import synthetic_history, synthetic_trials

RECIPE = (0.1, 0.01, 0.0001)


def _trace(fig, name):
    return [t for t in fig.data if t.name == name]


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[np.isfinite(a)]


@pytest.fixture(scope="module")
def three():
    """The recipe's own experiment: three trials of 20 epochs, all complete."""
    return synthetic_trials(3, 20, seed=3)


@pytest.fixture(scope="module")
def thousand():
    return synthetic_trials(1000, 500, seed=4)


def test_three_trials_give_five_figures_with_one_column_and_line_per_trial(three):
    figs = build_figures(curves_from_trials(three))
    assert list(figs) == list(FIGURE_IDS)

    heat = figs["hpsearch-landscape-val-loss"]
    assert [t.type for t in heat.data] == ["heatmap"]  # nothing diverged
    h = heat.data[0]
    assert np.allclose(h.x, sorted(math.log10(r) for r in RECIPE), atol=1e-6)
    assert list(h.y) == list(range(1, 21))  # epochs 1..20, unbinned
    assert np.asarray(h.z).shape == (20, 3)
    # the cell of lr 0.01 at epoch 20 is that trial's validation loss there
    lr01 = next(t for t in three if t.params["learning_rate"] == 0.01)
    assert np.asarray(h.z)[19, 1] == pytest.approx(math.log10(lr01.user_attrs["history"]["val_loss"][19]), abs=1e-5)
    assert "log10" in heat.layout.xaxis.title.text and heat.layout.yaxis.title.text == "epoch"
    assert "0.01 recipe" in heat.layout.xaxis.ticktext

    curves = figs["hpsearch-curves-val-loss"]
    lines = [t for t in curves.data if t.mode == "lines"]
    assert sorted(t.name for t in lines) == sorted(f"recipe {r:g} (trial {t.number})" for r, t in zip(RECIPE, three))
    assert all(len(t.y) == 20 for t in lines)
    assert curves.layout.yaxis.type == "log"
    assert {a.text for a in curves.layout.annotations} == {"0.1", "0.01", "0.0001"}
    colourbar = [t for t in curves.data if t.marker and t.marker.showscale]
    assert len(colourbar) == 1 and "0.1 recipe" in colourbar[0].marker.colorbar.ticktext
    assert colourbar[0].marker.cmin == pytest.approx(-4) and colourbar[0].marker.cmax == pytest.approx(-1)

    acc = figs["hpsearch-accuracy-vs-lr"]
    assert acc.layout.xaxis.type == "log"
    assert "learning rate" in acc.layout.xaxis.title.text and "accuracy" in acc.layout.yaxis.title.text
    (complete,) = _trace(acc, "complete (3)")
    assert sorted(complete.x) == sorted(RECIPE)
    best = max(three, key=lambda t: t.value)
    (star,) = [t for t in acc.data if t.name.startswith("best")]
    assert star.name == f"best: trial {best.number}" and star.y[0] == pytest.approx(best.value)


def test_pruned_trials_are_drawn_to_the_epoch_they_stopped(three):
    dist = optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)
    history = synthetic_history(0.003, 20, np.random.default_rng(5), stop=7)
    pruned = optuna.trial.create_trial(
        params={"learning_rate": 0.003}, distributions={"learning_rate": dist}, state=optuna.trial.TrialState.PRUNED,
        user_attrs={"history": history, "source": "sampler"},
    )
    pruned.number = 3
    figs = build_figures(curves_from_trials([*three, pruned]))

    h = figs["hpsearch-landscape-train-loss"].data[0]
    col = int(np.argmin(np.abs(np.asarray(h.x) - math.log10(0.003))))
    z = np.asarray(h.z, dtype=float)
    assert np.isfinite(z[:7, col]).all() and np.isnan(z[7:, col]).all()
    assert "1 pruned" in figs["hpsearch-landscape-train-loss"].layout.title.text

    (line,) = [t for t in figs["hpsearch-curves-train-loss"].data if t.name == "trial 3"]
    y = np.asarray(line.y, dtype=float)
    assert np.isfinite(y[:7]).all() and np.isnan(y[7:]).all()

    (p,) = _trace(figs["hpsearch-accuracy-vs-lr"], "pruned (1)")
    assert p.y[0] == pytest.approx(max(history["val_accuracy"]))
    assert p.marker.symbol != _trace(figs["hpsearch-accuracy-vs-lr"], "complete (3)")[0].marker.symbol


def test_a_thousand_trials_are_binned_into_a_readable_and_small_figure_set(thousand):
    curves = curves_from_trials(thousand)
    figs = build_figures(curves)
    lrs = np.array([t.params["learning_rate"] for t in thousand])

    for fid in ("hpsearch-landscape-val-loss", "hpsearch-landscape-train-loss"):
        h = figs[fid].data[0]
        assert len(h.x) == HEATMAP_COLUMNS and len(h.y) <= HEATMAP_ROWS
        assert h.x[0] >= math.log10(lrs.min()) and h.x[-1] <= math.log10(lrs.max())
        assert h.y[0] >= 1 and h.y[-1] <= 500

    for fid in ("hpsearch-curves-val-loss", "hpsearch-curves-train-loss"):
        fig = figs[fid]
        bands = [t for t in fig.data if t.mode == "lines" and not t.name.startswith("recipe")]
        recipe = [t for t in fig.data if t.mode == "lines" and t.name.startswith("recipe")]
        assert len(bands) <= COLOUR_BANDS and len(recipe) == 3
        # every non-recipe trial is in one band (bands say how many trials they hold)
        assert sum(int(t.name.split("(")[1].split()[0]) for t in bands) == 997
        assert all(t.opacity < 0.5 for t in bands)
        assert fig.layout.xaxis.range[1] >= 500

    acc = figs["hpsearch-accuracy-vs-lr"]
    n_complete = sum(t.state.name == "COMPLETE" for t in thousand)
    # a pruned trial is drawn at the best val_accuracy it reached, if it reached a finite one
    n_pruned = sum(t.state.name == "PRUNED" and any(a is not None for a in t.user_attrs["history"]["val_accuracy"]) for t in thousand)
    assert n_complete > 500 and n_pruned > 300
    assert len(_trace(acc, f"complete ({n_complete})")[0].x) == n_complete
    assert len(_trace(acc, f"pruned ({n_pruned})")[0].x) == n_pruned
    lo, hi = acc.layout.xaxis.range  # log10 units
    assert lo < math.log10(lrs.min()) and hi > math.log10(lrs.max())

    sizes = {fid: len(fig.to_json()) for fid, fig in figs.items()}
    assert sum(sizes.values()) < 2_000_000, sizes


def test_diverged_epochs_are_marked_not_hidden():
    trials = synthetic_trials(3, 10, seed=6)
    bad = synthetic_trials(1, 10, seed=6, recipe=(0.9,))[0]
    bad.number = 3
    bad.user_attrs["history"]["val_loss"] = bad.user_attrs["history"]["val_loss"][:4] + [None]
    figs = build_figures(curves_from_trials([*trials, bad]))
    heat = figs["hpsearch-landscape-val-loss"]
    (red,) = _trace(heat, "diverged")
    z = np.asarray(red.z, dtype=float)
    col = int(np.argmin(np.abs(np.asarray(red.x) - math.log10(0.9))))
    assert z[4, col] == 1 and np.isnan(np.delete(z, col, axis=1)).all()
    assert "red: diverged" in heat.layout.title.text


def test_a_huge_loss_does_not_take_the_whole_colour_scale():
    trials = synthetic_trials(8, 20, seed=7, pruned_share=0)
    trials[-1].user_attrs["history"]["val_loss"] = [500.0] * 20
    h = build_figures(curves_from_trials(trials))["hpsearch-landscape-val-loss"].data[0]
    assert h.zmax < math.log10(500) and h.colorbar.ticktext[-1].startswith("≥")


def test_only_finished_trials_with_a_history_are_drawn(three):
    running = optuna.trial.create_trial(
        params={"learning_rate": 0.5}, distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1, log=True)},
        state=optuna.trial.TrialState.FAIL, user_attrs={"history": three[0].user_attrs["history"]},
    )
    assert len(curves_from_trials([*three, running])) == 3
    assert build_figures([]) == {}


# --- storing and refreshing, on the machine's PostgreSQL ---------------------------------


@pytest.fixture(scope="module")
def pg_study(local_pg_url):
    from storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(local_pg_url), heartbeat=False)
    study = optuna.create_study(study_name="landscape", storage=storage, direction="maximize")
    study.add_trials(synthetic_trials(40, 30, seed=8))
    try:
        yield study, storage
    finally:
        storage.engine.dispose()


def test_load_curves_reads_what_get_trials_does(pg_study):
    study, storage = pg_study
    from_sql = load_curves(storage, storage.get_study_id_from_name(study.study_name))
    from_api = curves_from_trials(study.get_trials())
    assert [(c.number, c.learning_rate, c.state, c.best_val_accuracy, c.recipe) for c in from_sql] == [
        (c.number, c.learning_rate, c.state, c.best_val_accuracy, c.recipe) for c in from_api
    ]
    for a, b in zip(from_sql, from_api):
        for key in ("loss", "val_loss"):
            np.testing.assert_array_equal(a.history[key], b.history[key])


def _plot_chunks(storage, study_id):
    return {k: v for k, v in storage.get_study_system_attrs(study_id).items() if k.startswith("dashboard:plot_data:")}


def test_refresh_saves_the_figures_into_the_study_and_overwrites_them(pg_study):
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects  # what the dashboard reads

    study, storage = pg_study
    study_id = storage.get_study_id_from_name(study.study_name)
    first = refresh_landscape(study, storage)
    assert first.refreshed and first.trials == 40
    attrs = storage.get_study_system_attrs(study_id)
    saved = get_plotly_graph_objects(attrs)
    assert set(saved) == set(FIGURE_IDS)
    assert json.loads(saved["hpsearch-accuracy-vs-lr"])["layout"]["xaxis"]["type"] == "log"
    assert attrs[STAMP_ATTR]["trials"] == 40 and attrs[STAMP_ATTR]["bytes"] == first.bytes
    chunks = len(_plot_chunks(storage, study_id))
    refresh_landscape(study, storage)
    assert len(_plot_chunks(storage, study_id)) == chunks  # the same ids, overwritten


def test_workers_refresh_at_most_once_per_interval_and_one_at_a_time(pg_study):
    from storage.fleet import try_study_lock

    study, storage = pg_study
    assert maybe_refresh_landscape(study, storage, min_interval=0, cost_factor=0).refreshed
    assert maybe_refresh_landscape(study, storage, min_interval=3600).reason == "too soon"
    # the interval also grows with the cost of a refresh: 1e6 times its duration is long
    assert maybe_refresh_landscape(study, storage, min_interval=0, cost_factor=1e6).reason == "too soon"
    with try_study_lock(storage.engine, study.study_name, "landscape") as taken:
        assert taken
        busy = maybe_refresh_landscape(study, storage, force=True)
        assert not busy.refreshed and busy.reason == "another process is refreshing"
    assert maybe_refresh_landscape(study, storage, force=True).refreshed


def test_a_failed_refresh_is_a_warning_in_the_worker(local_pg_url, caplog):
    """A real storage whose database disappears: the refresh fails, the worker only warns,
    and the warning does not carry the password (here also the database's name, which the
    driver's error names)."""
    import uuid

    import sqlalchemy

    from search.fleet.worker import _refresh_landscape
    from storage import open_storage, resolve_storage_url
    from tests.conftest import with_database, with_password

    marker = f"pw{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(local_pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{marker}"')
        storage = open_storage(resolve_storage_url(with_password(with_database(local_pg_url, marker), marker)), heartbeat=False)
        study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
        study.tell(study.ask(), 0.5)
        storage.engine.dispose()
        with admin.connect() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{marker}'")
            c.exec_driver_sql(f'DROP DATABASE "{marker}"')
        with caplog.at_level(logging.WARNING, logger="hpsearch.worker"):
            _refresh_landscape(study, storage, force=True)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{marker}'")
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{marker}"')
        admin.dispose()
    (record,) = [r for r in caplog.records if r.name == "hpsearch.worker"]
    assert "could not refresh the loss landscape" in record.getMessage()
    assert "StorageInternalError" in record.getMessage()
    assert marker not in record.getMessage()


def _user_trials(name: str, values, objective: str, seed: int = 5) -> list:
    """Finished trials of a user's model drawn over ``name`` (no learning rate), each with a
    history that holds ``objective``."""
    rng = np.random.default_rng(seed)
    dist = optuna.distributions.FloatDistribution(min(values), max(values))
    out = []
    for i, v in enumerate(values):
        loss = list(1.0 / np.arange(1, 6) + rng.random(5) * 0.1)
        history = {"loss": loss, "val_loss": [x + 0.05 for x in loss], objective: [x * 2 for x in loss]}
        out.append(optuna.trial.create_trial(
            params={name: float(v)}, distributions={name: dist}, value=min(history[objective]),
            state=optuna.trial.TrialState.COMPLETE, user_attrs={"history": history}))
    return out


def test_a_users_parameter_gets_its_own_name_a_linear_axis_from_zero_and_its_objective():
    from search.landscape.figures import Axis

    # a dropout rate from 0: no learning rate, a value of 0 (a log axis cannot hold it)
    trials = _user_trials("dropout", [0.0, 0.1, 0.25, 0.4, 0.5], "val_mae")
    axis = Axis("dropout", "val_mae", maximize=False)
    curves = curves_from_trials(trials, "dropout", "val_mae", maximize=False)
    assert len(curves) == 5  # the trial at 0 is drawn too
    figs = build_figures(curves, axis=axis)
    heat = figs["hpsearch-landscape-val-loss"]
    assert heat.layout.xaxis.title.text == "dropout"
    assert np.allclose(heat.data[0].x, [0.0, 0.1, 0.25, 0.4, 0.5], atol=1e-6)  # values, not log10
    assert not any("recipe" in t for t in heat.layout.xaxis.ticktext)
    assert "dropout" in heat.data[0].hovertemplate and "learning rate" not in heat.data[0].hovertemplate
    assert heat.layout.title.text.startswith("Validation loss over dropout and epoch")
    best = figs["hpsearch-accuracy-vs-lr"]
    assert best.layout.title.text.startswith("Best val_mae against dropout")
    assert best.layout.xaxis.type != "log" and "tickformat" not in best.layout.yaxis.to_plotly_json()
    star = next(t for t in best.data if t.name.startswith("best"))
    assert star.y[0] == pytest.approx(min(c.best_val_accuracy for c in curves))  # minimised: the lowest
    curves_fig = figs["hpsearch-curves-val-loss"]
    assert "coloured by dropout" in curves_fig.layout.title.text

    # a width spanning more than a decade: log10, named
    wide = _user_trials("units", [16, 64, 256, 512], "val_accuracy")
    figs = build_figures(curves_from_trials(wide, "units"), axis=Axis("units"))
    assert figs["hpsearch-landscape-val-loss"].layout.xaxis.title.text == "units (log10 scale)"
    assert np.allclose(figs["hpsearch-landscape-val-loss"].data[0].x, np.log10([16, 64, 256, 512]), atol=1e-6)
