"""Property-based checks of the query filters against Optuna's own API (hypothesis)."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import open_engine, open_storage, resolve_storage_url, trials
from tests.storage_tests.study_factory import MAIN, build_studies

STATES = ["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]


@pytest.fixture(scope="module")
def built(local_pg_url):
    storage = open_storage(resolve_storage_url(local_pg_url), heartbeat=False)
    build_studies(storage)
    expected = optuna.load_study(study_name=MAIN, storage=storage).get_trials(deepcopy=False)
    engine = open_engine(local_pg_url)
    yield engine, expected
    engine.dispose()


def _keep(t, states, lr_min, lr_max, min_value):
    if states and t.state.name not in states:
        return False
    # A queued trial's rate is in Optuna's fixed_params until a worker takes it (issue 15).
    lr = t.params.get("learning_rate", t.system_attrs.get("fixed_params", {}).get("learning_rate"))
    if lr_min is not None and (lr is None or lr < lr_min):
        return False
    if lr_max is not None and (lr is None or lr > lr_max):
        return False
    if min_value is not None and (t.value is None or math.isnan(t.value) or t.value < min_value):
        return False
    return True


_rate = st.one_of(st.none(), st.floats(min_value=1e-6, max_value=2.0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    states=st.lists(st.sampled_from(STATES), unique=True, max_size=3),
    lr_min=_rate,
    lr_max=_rate,
    min_value=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
)
def test_filters_select_what_optuna_would(built, states, lr_min, lr_max, min_value, limit):
    engine, expected = built
    rows = trials(engine, MAIN, states=states or None, lr_min=lr_min, lr_max=lr_max, min_value=min_value, limit=limit)
    want = [t.number for t in sorted(expected, key=lambda t: t.number) if _keep(t, states, lr_min, lr_max, min_value)]
    if limit is not None:
        want = want[:limit]
    assert [r.number for r in rows] == want
