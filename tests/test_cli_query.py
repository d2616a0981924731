"""`hpsearch query` and `hpsearch db views` through a subprocess, on the embedded PostgreSQL.

The Python API is checked against Optuna trial by trial in storage_tests/test_queries.py; here
the command line's side: a study made by `hpsearch run`, the three formats parsed back,
filters, exit codes and messages, the view, and an empty database left empty.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
from datetime import datetime

import optuna
import pytest
import sqlalchemy

from storage import CurvePoint, ParamsTrialRow, StudyRow, SummaryRow, TrialRow, list_studies, open_engine, open_storage, resolve_storage_url
from storage import best_trial, curves, param_names, summary, top_trials, trials
from tests.conftest import REPO, run_cli
from tests.storage_tests.study_factory import HOSTILE, MAIN, MINIMIZE, USER, build_studies, build_user_study, empty_database


@pytest.fixture(scope="module")
def url(embedded_home):
    """The embedded server's URL, holding the factory's studies."""
    url = embedded_home[1]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(resolve_storage_url(url), heartbeat=False)
    build_studies(storage)
    storage.engine.dispose()
    return url


@pytest.fixture(scope="module")
def engine(url):
    eng = open_engine(url)
    yield eng
    eng.dispose()


def query(url, *args):
    return run_cli("query", *args, "--storage", url, timeout=120)


def _plain(v):
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _json_rows(rows):
    return [{k: _plain(v) for k, v in dataclasses.asdict(r).items()} for r in rows]


@pytest.mark.slow
def test_after_hpsearch_run_best_and_trials_agree_with_optuna(url, mnist):
    data = ["--data", mnist] if mnist else []
    run = run_cli("run", *data, "--trials", "4", "--epochs", "1", "--train-size", "500", "--storage", url, timeout=300)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="mnist-learning-rate", storage=url)

    best = query(url, "best", "--format", "json")
    assert best.returncode == 0, best.stderr
    got = json.loads(best.stdout)
    assert got["number"] == study.best_trial.number
    assert got["learning_rate"] == study.best_trial.params["learning_rate"]
    assert got["value"] == study.best_trial.value

    table = query(url, "trials", "--format", "csv")
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert len(rows) == len(study.trials)
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    assert {float(r["learning_rate"]) for r in rows} == {t.params["learning_rate"] for t in study.trials}
    assert {r["host"] for r in rows} == {t.user_attrs["host"] for t in study.trials}


CASES = [
    (["studies"], StudyRow, lambda e: list_studies(e)),
    (["trials", "--study", MAIN], TrialRow, lambda e: trials(e, MAIN)),
    (["trials", "--study", HOSTILE], TrialRow, lambda e: trials(e, HOSTILE)),
    (["top", "--study", MINIMIZE, "-k", "3"], TrialRow, lambda e: top_trials(e, MINIMIZE, 3)),
    (["curves", "--study", MAIN, "--numbers", "24,0"], CurvePoint, lambda e: curves(e, MAIN, [24, 0])),
    (["curves", "--study", MAIN], CurvePoint, lambda e: curves(e, MAIN, [t.number for t in top_trials(e, MAIN, 5)])),
    (["summary", "--study", MAIN, "--by", "gpu"], SummaryRow, lambda e: summary(e, MAIN, by="gpu")),
]


@pytest.mark.parametrize("args,row_type,api", CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_json_and_csv_parse_back_to_the_api_rows(url, engine, args, row_type, api):
    expected = api(engine)
    assert expected
    columns = [f.name for f in dataclasses.fields(row_type)]

    out = query(url, *args, "--format", "json")
    assert out.returncode == 0, out.stderr
    parsed = json.loads(out.stdout)
    assert parsed == _json_rows(expected)
    assert all(list(obj) == columns for obj in parsed), "JSON keys keep the rows' field order"

    out = query(url, *args, "--format", "csv")
    assert out.returncode == 0, out.stderr
    reader = csv.reader(io.StringIO(out.stdout))
    assert next(reader) == columns
    body = list(reader)
    assert len(body) == len(expected)
    for line, row in zip(body, expected):
        for cell, name in zip(line, columns):
            v = getattr(row, name)
            if v is None:
                assert cell == ""
            elif isinstance(v, float):
                assert _same(float(cell), v), (name, cell, v)
            elif isinstance(v, datetime):
                assert datetime.fromisoformat(cell) == v
            elif isinstance(v, dict):  # a study's best parameters: a JSON object in one cell
                assert json.loads(cell) == v
            else:
                assert cell == str(v)


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_table_format_has_the_columns_in_order_and_one_line_per_row(url, engine):
    out = query(url, "trials", "--study", MAIN, "--state", "complete")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == [f.name for f in dataclasses.fields(TrialRow)]
    assert len(lines) == 1 + len(trials(engine, MAIN, states=["COMPLETE"]))


def test_filters_on_the_command_line_match_the_api(url, engine):
    out = query(url, "trials", "--study", MAIN, "--state", "complete,pruned", "--state", "fail", "--lr-min", "1e-4",
                "--lr-max", "0.5", "--min-value", "0.3", "--sort", "value", "--desc", "--limit", "5", "--format", "json")
    assert out.returncode == 0, out.stderr
    expected = trials(engine, MAIN, states=["COMPLETE", "PRUNED", "FAIL"], lr_min=1e-4, lr_max=0.5, min_value=0.3,
                      sort="value", descending=True, limit=5)
    assert len(expected) == 5
    assert json.loads(out.stdout) == _json_rows(expected)


def test_a_user_models_trials_show_every_parameter_in_each_format(url, engine):
    storage = open_storage(resolve_storage_url(url), heartbeat=False)
    try:
        build_user_study(storage)
    finally:
        storage.engine.dispose()
    rows = trials(engine, USER)
    names = param_names(engine, USER)
    fields = [f.name for f in dataclasses.fields(ParamsTrialRow)]
    header = [*fields[:2], *(f"param_{n}" for n in names), *fields[3:]]

    out = query(url, "trials", "--study", USER, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _json_rows(rows)  # a params object, categoricals as their choices
    assert any(r["params"].get("activation") == "relu" and r["params"]["dropout"] in (True, False) for r in json.loads(out.stdout))

    out = query(url, "trials", "--study", USER, "--format", "csv")
    assert out.returncode == 0, out.stderr
    body = list(csv.reader(io.StringIO(out.stdout)))
    assert body[0] == header and len(body) == 1 + len(rows)
    for line, row in zip(body[1:], rows):
        cells = dict(zip(header, line))
        for n in names:
            v = row.params.get(n)
            assert cells[f"param_{n}"] == ("" if v is None else repr(v) if isinstance(v, float) else str(v)), (row.number, n)
        assert cells["param_value"] != cells["value"] or row.value is None  # the parameter called value is not the objective

    out = query(url, "top", "--study", USER, "-k", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == header and [int(x.split()[0]) for x in lines[1:]] == [r.number for r in top_trials(engine, USER, 3)]

    out = query(url, "best", "--study", USER, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _json_rows([best_trial(engine, USER)])[0]

    # query studies names the best trial's parameters, whatever they are called
    best = best_trial(engine, USER)
    out = query(url, "studies", "--format", "json")
    assert out.returncode == 0, out.stderr
    study = next(r for r in json.loads(out.stdout) if r["name"] == USER)
    assert study["best_number"] == best.number and study["best_params"] == best.params
    assert study["best_learning_rate"] is None  # no parameter of this space is called learning_rate
    out = query(url, "studies")
    line = next(x for x in out.stdout.splitlines() if x.startswith(USER + " "))
    assert all(f"{k}={v:.6g}" in line if isinstance(v, float) else f"{k}={v}" in line for k, v in best.params.items()), line

    # the same columns when a filter keeps no trial
    out = query(url, "trials", "--study", USER, "--state", "complete", "--min-value", "1e9", "--format", "csv")
    assert out.returncode == 0 and out.stdout.splitlines() == [",".join(header)], out.stderr

    # filters and a sort on its own parameters, and a bound for its minimised objective
    out = query(url, "trials", "--study", USER, "--param", "activation=relu", "--param", "units_0=64:", "--max-value", "2",
                "--sort", "param_lr", "--desc", "--format", "json")
    assert out.returncode == 0, out.stderr
    expected = trials(engine, USER, params={"activation": "relu", "units_0": (64, None)}, max_value=2, sort="param_lr", descending=True)
    assert json.loads(out.stdout) == _json_rows(expected) and expected
    assert all(r.params["activation"] == "relu" and r.params["units_0"] >= 64 and r.value <= 2 for r in expected)


def test_best_prints_one_object(url, engine):
    out = query(url, "best", "--study", MAIN, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _json_rows(top_trials(engine, MAIN, 1))[0]


def test_unknown_study_exits_2_and_lists_the_studies(url):
    out = query(url, "trials", "--study", "no-such-study")
    assert out.returncode == 2
    assert out.stdout == ""
    err = out.stderr.strip()
    assert "\n" not in err and err.startswith("hpsearch query: error: no study named 'no-such-study'")
    # the fixture's studies only: which others exist depends on which tests ran before
    assert repr(MAIN) in err and repr(MINIMIZE) in err and "DROP TABLE trials" in err


def test_bad_flags_exit_2_with_one_line(url):
    for args in (["trials", "--state", "done"], ["trials", "--limit", "-1"], ["summary", "--by", "colour"], ["curves", "--numbers", "a,b"]):
        out = query(url, *args)
        assert out.returncode == 2, args
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_best_without_a_complete_trial_exits_1(url):
    storage = open_storage(resolve_storage_url(url), heartbeat=False)
    optuna.create_study(storage=storage, study_name="cli-nothing-complete").ask()
    try:
        out = query(url, "best", "--study", "cli-nothing-complete", "--format", "json")
        assert out.returncode == 1 and out.stdout == ""
        assert "has no complete trial yet (running 1)" in out.stderr
    finally:
        optuna.delete_study(study_name="cli-nothing-complete", storage=storage)
        storage.engine.dispose()


def test_db_views_creates_a_view_sql_users_can_query(url, engine):
    out = run_cli("db", "views", "--storage", url)
    assert out.returncode == 0, out.stderr
    assert "hpsearch_trials" in out.stdout
    with engine.connect() as conn:
        got = conn.execute(
            sqlalchemy.text("SELECT number, learning_rate, value FROM hpsearch_trials WHERE study = :s ORDER BY value DESC NULLS LAST LIMIT 1"),
            {"s": MAIN},
        ).one()
        total = conn.execute(sqlalchemy.text("SELECT count(*) FROM hpsearch_trials")).scalar()
    best = top_trials(engine, MAIN, 1)[0]
    assert (got.number, got.learning_rate, got.value) == (best.number, best.learning_rate, best.value)
    assert total == sum(r.trials for r in list_studies(engine))


def test_password_is_never_printed():
    for args in (["query", "studies"], ["db", "views"]):
        out = run_cli(*args, "--storage", "postgresql://alice:s3cr3t-pw@127.0.0.1:1/hpsearch", timeout=60)
        assert out.returncode != 0
        assert "s3cr3t-pw" not in out.stdout + out.stderr
        assert "alice:***@127.0.0.1" in out.stderr


def test_an_empty_database_holds_no_study_and_stays_empty(url):
    with empty_database(url) as empty:
        out = run_cli("query", "studies", "--format", "json", "--storage", empty)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [] and "no studies" in out.stderr
        out = run_cli("query", "best", "--storage", empty)
        assert out.returncode == 2 and "holds no studies yet" in out.stderr
        out = run_cli("db", "views", "--storage", empty)
        assert out.returncode == 2 and "holds no studies yet" in out.stderr
        eng = sqlalchemy.create_engine(empty)
        try:
            assert sqlalchemy.inspect(eng).get_table_names() == []
            assert sqlalchemy.inspect(eng).get_view_names() == []
        finally:
            eng.dispose()


def _to_a_closed_pipe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``hpsearch ARGS`` with stdout a pipe whose reader has already gone, as after ``| head -1``."""
    read, write = os.pipe()
    os.close(read)
    try:
        full_env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE"} | (env or {})
        return subprocess.run([sys.executable, "-m", "search", *args], stdout=write, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env=full_env, timeout=120)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [["studies"], ["trials", "--study", MAIN], ["best", "--study", MAIN, "--format", "json"],
                                  ["top", "--study", MAIN, "--format", "csv"], ["curves", "--study", MAIN], ["summary", "--study", MAIN]],
                         ids=lambda a: a[0])
def test_a_reader_that_went_away_ends_every_query_quietly(url, args):
    out = _to_a_closed_pipe("query", *args, "--storage", url)
    assert (out.returncode, out.stderr) == (0, "")


def test_a_reader_that_went_away_ends_other_commands_quietly_too(tmp_path):
    out = _to_a_closed_pipe("db", "status", env={"HPSEARCH_HOME": str(tmp_path / "home")})
    assert (out.returncode, out.stderr) == (0, "")


def test_without_study_a_storage_of_one_models_study_is_read(tmp_path):
    """After `hpsearch run --model FILE.py:NAME` (a study named after the model) `hpsearch query`
    and `hpsearch landscape` without --study read that study, the storage's only one; with a
    second study there, the refusal lists both."""
    db = f"sqlite:///{tmp_path}/one.db"
    storage = open_storage(resolve_storage_url(db), heartbeat=False)
    try:
        build_user_study(storage, "getting_started.build_model")
        engine = storage.engine
        out = run_cli("query", "best", "--storage", db, "--format", "json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == _json_rows([best_trial(engine, "getting_started.build_model")])[0]
        # the factory's trials carry no history, so the page is refused, naming the study it picked
        out = run_cli("landscape", "--storage", db, "--out", str(tmp_path / "l.html"), cwd=tmp_path)
        assert "study 'getting_started.build_model' has no complete or pruned trial with a history" in out.stderr, out.stderr
        optuna.create_study(storage=storage, study_name="other")
        out = run_cli("query", "trials", "--storage", db, cwd=tmp_path)
        assert out.returncode == 2 and "'getting_started.build_model', 'other'" in out.stderr, out.stderr
    finally:
        storage.engine.dispose()
