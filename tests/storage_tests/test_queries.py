"""storage.queries against Optuna's own API, on the embedded PostgreSQL and on 127.0.0.1:5432.

Every answer is compared with what Optuna returns for the same study, so a query that
misreads Optuna's schema (naive-UTC datetimes, infinities stored as NULL plus a type, enums)
fails here first.
"""

from __future__ import annotations

import math
from datetime import timezone

import pytest
import sqlalchemy

from storage import (
    CurvePoint,
    HpsearchError,
    StorageError,
    StudyNotFoundError,
    TrialNotFoundError,
    TrialRow,
    best_trial,
    create_views,
    curves,
    landscape,
    list_studies,
    open_engine,
    open_storage,
    resolve_storage_url,
    study_names,
    summary,
    to_frame,
    top_trials,
    trials,
)
from storage.tables import STATES
from storage.views import VIEW_NAME
from tests.storage_tests.study_factory import HOSTILE, MAIN, MINIMIZE, STUDIES, build_studies, empty_database


@pytest.fixture(scope="module")
def db(pg_url):
    """(url, read-only engine, optuna storage) with the factory's studies built once."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(resolve_storage_url(pg_url), heartbeat=False)
    build_studies(storage)
    engine = open_engine(pg_url)
    try:
        yield pg_url, engine, storage
    finally:
        engine.dispose()
        storage.engine.dispose()


def _optuna_trials(storage, name):
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _utc(dt):
    # Optuna hands out naive local time; the queries hand out aware UTC.
    return None if dt is None else dt.astimezone(timezone.utc)


def _expected(t) -> TrialRow:
    ua = t.user_attrs
    return TrialRow(
        number=t.number,
        state=t.state.name,
        # a queued trial's rate is in its fixed_params until a worker takes it (issue 15)
        learning_rate=t.params.get("learning_rate", t.system_attrs.get("fixed_params", {}).get("learning_rate")),
        value=t.value,
        best_epoch=ua.get("best_epoch"),
        epochs_run=ua.get("epochs_run"),
        stop_reason=ua.get("stop_reason"),
        test_accuracy=ua.get("test_accuracy"),
        duration_s=None if t.duration is None else t.duration.total_seconds(),
        host=ua.get("host"),
        gpu=ua.get("gpu"),
        datetime_start=_utc(t.datetime_start),
        datetime_complete=_utc(t.datetime_complete),
    )


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("name", STUDIES)
def test_trials_match_optuna_trial_by_trial(db, name):
    _, engine, storage = db
    expected = [_expected(t) for t in sorted(_optuna_trials(storage, name), key=lambda t: t.number)]
    assert trials(engine, name) == expected
    # An RDBStorage works where an engine does.
    assert trials(storage, name) == expected


def test_trial_rows_cover_every_state_and_awkward_value(db):
    _, engine, _ = db
    rows = trials(engine, MAIN)
    assert {r.state for r in rows} == set(STATES)
    assert all(r.datetime_start is None or r.datetime_start.tzinfo is timezone.utc for r in rows)
    waiting = [r for r in rows if r.state == "WAITING"]
    assert len(waiting) == 1 and waiting[0].learning_rate == 0.01 and waiting[0].datetime_start is None  # its queued rate (issue 15)
    assert any(r.state == "FAIL" and r.learning_rate is None for r in rows)
    assert [r.value for r in trials(engine, MINIMIZE, sort="value")] == [-math.inf, 0.25, 0.5, 3.0, math.inf]


FILTERS = [
    dict(states=["complete"]),
    dict(states=["PRUNED", "fail"]),
    dict(lr_min=1e-3),
    dict(lr_max=1e-2, states=["COMPLETE", "PRUNED"]),
    dict(lr_min=1e-4, lr_max=1e-1),
    dict(min_value=0.8),
    dict(min_value=0.5, states=["pruned"]),
    dict(sort="value", descending=True, limit=4),
    dict(sort="learning_rate", limit=6),
    dict(sort="learning_rate", descending=True),
    dict(sort="datetime_start", descending=True, limit=3),
    dict(sort="test_accuracy", descending=True, limit=5),
    dict(sort="duration_s", limit=7),
    dict(sort="epochs_run", descending=True),
    dict(limit=0),
]


@pytest.mark.parametrize("kw", FILTERS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_filters_sort_and_limit_match_optuna(db, kw):
    _, engine, storage = db
    rows = [_expected(t) for t in _optuna_trials(storage, MAIN)]
    states = {s.upper() for s in kw.get("states", STATES)}
    rows = [r for r in rows if r.state in states]
    if "lr_min" in kw:
        rows = [r for r in rows if r.learning_rate is not None and r.learning_rate >= kw["lr_min"]]
    if "lr_max" in kw:
        rows = [r for r in rows if r.learning_rate is not None and r.learning_rate <= kw["lr_max"]]
    if "min_value" in kw:
        rows = [r for r in rows if r.value is not None and r.value >= kw["min_value"]]
    key = kw.get("sort", "number")
    rows.sort(key=lambda r: r.number)
    present = [r for r in rows if getattr(r, key) is not None]
    present.sort(key=lambda r: getattr(r, key), reverse=kw.get("descending", False))
    rows = present + [r for r in rows if getattr(r, key) is None]
    if "limit" in kw:
        rows = rows[: kw["limit"]]
    got = trials(engine, MAIN, **kw)
    assert got == rows
    assert got or kw.get("limit") == 0, "a filter that keeps nothing tests nothing"


def test_bad_filters_are_refused(db):
    _, engine, _ = db
    with pytest.raises(HpsearchError, match="unknown trial state 'DONE'"):
        trials(engine, MAIN, states=["done"])
    with pytest.raises(HpsearchError, match="cannot sort trials by 'host'"):
        trials(engine, MAIN, sort="host")


@pytest.mark.parametrize("name", STUDIES)
def test_best_and_top_match_optuna(db, name):
    import optuna

    _, engine, storage = db
    study = optuna.load_study(study_name=name, storage=storage)
    assert best_trial(engine, name) == _expected(study.best_trial)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    complete.sort(key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")
    assert top_trials(engine, name, k=3) == [_expected(t) for t in complete[:3]]
    assert top_trials(engine, name, k=100) == [_expected(t) for t in complete]


def test_best_of_a_study_without_complete_trials_is_none(db):
    import optuna

    url, engine, storage = db
    name = "queries-nothing-complete"
    optuna.create_study(storage=storage, study_name=name, direction="maximize").ask()
    try:
        assert best_trial(engine, name) is None
        assert top_trials(engine, name) == []
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def test_curves_match_intermediate_values_and_history(db):
    _, engine, storage = db
    by_number = {t.number: t for t in _optuna_trials(storage, MAIN)}
    numbers = [24, 0, 4, 25]  # NaN last value, a complete, a pruned, one that reported nothing
    points = curves(engine, MAIN, numbers)
    assert list(dict.fromkeys(p.number for p in points)) == [24, 0, 4]
    for n in numbers:
        t = by_number[n]
        mine = [p for p in points if p.number == n]
        h = t.user_attrs.get("history", {})
        epochs = sorted(set(t.intermediate_values) | set(range(len(h.get("loss", [])))))
        assert [p.epoch for p in mine] == epochs
        for p in mine:
            assert p.learning_rate == t.params["learning_rate"]
            assert _same(p.val_accuracy, t.intermediate_values.get(p.epoch))
            assert _same(p.value, t.intermediate_values.get(p.epoch))  # the recipe's objective is val_accuracy
            assert p.loss == h["loss"][p.epoch] and p.val_loss == h["val_loss"][p.epoch] and p.accuracy == h["accuracy"][p.epoch]
    assert math.isnan([p for p in points if p.number == 24][-1].val_accuracy)
    with pytest.raises(TrialNotFoundError, match="no trial number 999"):
        curves(engine, MAIN, [0, 999])


@pytest.mark.parametrize("name", [MAIN, MINIMIZE])
def test_summary_by_state_matches_optuna(db, name):
    _, engine, storage = db
    ts = _optuna_trials(storage, name)
    rows = summary(engine, name)
    assert [r.group for r in rows] == list(STATES)
    maximize = name == MAIN
    for r in rows:
        mine = [t for t in ts if t.state.name == r.group]
        assert r.trials == len(mine) == getattr(r, r.group.lower())
        values = [t.value for t in mine if t.state.name == "COMPLETE"]
        assert r.best_value == ((max if maximize else min)(values) if values else None)
        assert r.busy_seconds == pytest.approx(sum(t.duration.total_seconds() for t in mine if t.duration), abs=1e-6)
        starts = [_utc(t.datetime_start) for t in mine if t.datetime_start]
        ends = [_utc(t.datetime_complete) for t in mine if t.datetime_complete]
        assert r.first_start == (min(starts) if starts else None)
        assert r.last_complete == (max(ends) if ends else None)


@pytest.mark.parametrize("by", ["gpu", "host", "device"])
def test_summary_by_runtime_attribute_matches_optuna(db, by):
    _, engine, storage = db
    ts = _optuna_trials(storage, MAIN)
    rows = summary(engine, MAIN, by=by)
    groups = {t.user_attrs.get(by) for t in ts}
    assert [r.group for r in rows] == sorted(g for g in groups if g is not None) + ([None] if None in groups else [])
    for r in rows:
        mine = [t for t in ts if t.user_attrs.get(by) == r.group]
        assert r.trials == len(mine)
        assert {s: getattr(r, s.lower()) for s in STATES} == {s: sum(t.state.name == s for t in mine) for s in STATES}
        values = [t.value for t in mine if t.state.name == "COMPLETE"]
        assert r.best_value == (max(values) if values else None)
        assert r.busy_seconds == pytest.approx(sum(t.duration.total_seconds() for t in mine if t.duration), abs=1e-6)


def test_landscape_grid_matches_histories(db):
    _, engine, storage = db
    finished = [t for t in _optuna_trials(storage, MAIN) if t.state.name in ("COMPLETE", "PRUNED") and "learning_rate" in t.params]
    finished.sort(key=lambda t: (t.params["learning_rate"], t.number))
    grid = landscape(engine, MAIN, metric="val_loss")
    assert grid.numbers == [t.number for t in finished]
    assert grid.learning_rates == [t.params["learning_rate"] for t in finished]
    width = max(len(t.user_attrs.get("history", {}).get("val_loss", [])) for t in finished)
    assert grid.epochs == list(range(width))
    for t, row in zip(finished, grid.values):
        seq = t.user_attrs.get("history", {}).get("val_loss", [])
        assert row == seq + [None] * (width - len(seq))
    assert landscape(engine, MAIN, metric="loss").values != grid.values


def test_list_studies_matches_optuna(db):
    import optuna

    _, engine, storage = db
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=True)}
    rows = list_studies(engine)
    assert [r.name for r in rows] == sorted(summaries) == study_names(engine)
    for r in rows:
        s = summaries[r.name]
        ts = _optuna_trials(storage, r.name)
        assert r.study_id == s._study_id
        assert r.direction == s.direction.name.lower()
        assert r.trials == s.n_trials == len(ts)
        assert {st: getattr(r, st.lower()) for st in STATES} == {st: sum(t.state.name == st for t in ts) for st in STATES}
        assert r.first_activity == _utc(s.datetime_start)
        last = [_utc(t.datetime_complete or t.datetime_start) for t in ts if t.datetime_start]
        assert r.last_activity == (max(last) if last else None)
        if s.best_trial is None:
            assert (r.best_number, r.best_value, r.best_learning_rate) == (None, None, None)
        else:
            assert (r.best_number, r.best_value, r.best_learning_rate) == (
                s.best_trial.number, s.best_trial.value, s.best_trial.params.get("learning_rate"))
    assert {r.name: r.best_value for r in rows}[MINIMIZE] == -math.inf


def test_unknown_study_lists_the_studies_there_are(db):
    _, engine, _ = db
    with pytest.raises(StudyNotFoundError) as e:
        trials(engine, "no-such-study")
    msg = str(e.value)
    assert "no study named 'no-such-study'" in msg and repr(MAIN) in msg and repr(MINIMIZE) in msg
    for call in (best_trial, top_trials, summary, landscape):
        with pytest.raises(StudyNotFoundError):
            call(engine, "no-such-study")


def test_study_name_with_quotes_and_sql_is_only_data(db):
    _, engine, storage = db
    assert HOSTILE in study_names(engine)
    assert len(trials(engine, HOSTILE)) == 4
    # A name that is a prefix-with-wildcard or an injection attempt matches nothing.
    for probe in ("it's%", "' OR '1'='1", HOSTILE.upper()):
        with pytest.raises(StudyNotFoundError):
            trials(engine, probe)
    assert len(_optuna_trials(storage, MAIN)) == len(trials(engine, MAIN))  # the trials table survived


def test_view_has_one_row_per_trial_with_the_row_columns(db):
    url, engine, storage = db
    writer = open_engine(url, read_only=False)
    try:
        assert create_views(writer) == VIEW_NAME
        assert create_views(writer) == VIEW_NAME  # replacing it works
    finally:
        writer.dispose()
    fields = [f.name for f in TrialRow.__dataclass_fields__.values()]
    with engine.connect() as conn:
        for name in STUDIES:
            result = conn.execute(sqlalchemy.text(f"SELECT * FROM {VIEW_NAME} WHERE study = :s ORDER BY number"), {"s": name})
            assert list(result.keys()) == ["study", "study_id", "trial_id", *fields, "params"]  # every parameter last (issue 23)
            got = [TrialRow(**{k: getattr(r, k) for k in fields}) for r in result]
            assert got == trials(engine, name)
        total = conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {VIEW_NAME}")).scalar()
    assert total == sum(len(_optuna_trials(storage, n)) for n in study_names(engine))


def test_query_engine_is_read_only(db):
    url, engine, _ = db
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="read-only transaction"):
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE hpsearch_must_not_exist (a int)")
    with pytest.raises(StorageError, match="read-only connection"):
        create_views(engine)


def test_queries_on_an_empty_database_find_no_study_and_create_nothing(db):
    url, _, _ = db
    with empty_database(url) as empty:
        engine = open_engine(empty)
        try:
            assert study_names(engine) == [] and list_studies(engine) == []
            with pytest.raises(StudyNotFoundError, match="holds no studies yet"):
                trials(engine, MAIN)
            with pytest.raises(StudyNotFoundError):
                best_trial(engine, MAIN)
            with pytest.raises(StudyNotFoundError):
                curves(engine, MAIN, [0])
            assert sqlalchemy.inspect(engine).get_table_names() == []
        finally:
            engine.dispose()


def test_to_frame_keeps_the_row_columns(db):
    pd = pytest.importorskip("pandas")
    _, engine, _ = db
    rows = trials(engine, MAIN)
    df = to_frame(rows)
    assert list(df.columns) == [f for f in TrialRow.__dataclass_fields__]
    assert len(df) == len(rows) and df["number"].tolist() == [r.number for r in rows]
    assert list(to_frame([], CurvePoint).columns) == list(CurvePoint.__dataclass_fields__)
    assert len(to_frame(summary(engine, MAIN))) == len(STATES) and list(to_frame(summary(engine, MAIN)).columns)[0] == "group"
    grid = landscape(engine, MAIN)
    gdf = to_frame(grid)
    assert gdf.index.name == "learning_rate" and gdf["number"].tolist() == grid.numbers
    assert isinstance(gdf, pd.DataFrame) and gdf.shape == (len(grid.numbers), len(grid.epochs) + 1)


def test_queries_read_a_sqlite_storage_too(tmp_path):
    # hpsearch run accepts sqlite:/// for one worker, so its studies must be queryable too.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(resolve_storage_url(url), heartbeat=False)
    build_studies(storage)
    engine = open_engine(url)
    try:
        for name in STUDIES:
            assert trials(engine, name) == [_expected(t) for t in _optuna_trials(storage, name)]
        assert best_trial(engine, MINIMIZE).value == -math.inf
        assert math.isnan([p for p in curves(engine, MAIN, [24]) if p.epoch == max(_optuna_trials(storage, MAIN)[24].intermediate_values)][0].val_accuracy)
        assert [r.trials for r in summary(engine, MAIN)] == [sum(t.state.name == s for t in _optuna_trials(storage, MAIN)) for s in STATES]
        assert [r.name for r in list_studies(engine)] == sorted(STUDIES)
    finally:
        engine.dispose()
        storage.engine.dispose()
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="no SQLite file"):
        open_engine(f"sqlite:///{missing}")
    assert not missing.exists()
