"""Storing the landscape's figures in the study, and refreshing them at a bounded cost.

The figures are saved into the study with ``optuna_dashboard.save_plotly_graph_object``
under fixed ids (:data:`search.landscape.figures.FIGURE_IDS`), so a refresh replaces them and
optuna-dashboard shows them on the study page. Workers refresh them with
:func:`maybe_refresh_landscape`, which one process of a fleet does at a time and at most
every :data:`MIN_INTERVAL_S` seconds; ``hpsearch dashboard`` and ``hpsearch landscape``
call :func:`refresh_landscape`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from search.landscape.curves import load_curves
from search.landscape.figures import Axis, build_figures

__all__ = ["COST_FACTOR", "MIN_INTERVAL_S", "STAMP_ATTR", "RefreshResult", "landscape_axis", "maybe_refresh_landscape", "refresh_landscape"]

#: Workers refresh the stored figures at most this often, and never more often than
#: COST_FACTOR times the last refresh took, so refreshing costs a fleet at most 1/COST_FACTOR
#: of one worker's time however large the study grows.
MIN_INTERVAL_S = 60.0
COST_FACTOR = 20.0
#: Study system attribute recording the last refresh (time, duration, trials, bytes).
STAMP_ATTR = "hpsearch:landscape"


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did.

    Attributes:
        refreshed: whether the figures in the study were rewritten.
        reason: why not, when they were not (``"too soon"``, ``"another process is
            refreshing"``, ``"no trial has a history yet"``).
        trials: trials drawn.
        bytes: size of the stored figures (their JSON) in all.
        seconds: time taken (reading, building and storing).
        figures: the figures, when built.
    """

    refreshed: bool
    reason: str = ""
    trials: int = 0
    bytes: int = 0
    seconds: float = 0.0
    figures: dict | None = None


def _save(study, figures: dict) -> int:
    from optuna_dashboard import save_plotly_graph_object

    total = 0
    for fid, fig in figures.items():
        save_plotly_graph_object(study, fig, graph_object_id=fid)
        total += len(fig.to_json())
    return total


def landscape_axis(stored) -> Axis:
    """The :class:`search.landscape.figures.Axis` of a study from its stored configuration
    (the ``hpsearch_config`` attribute): its ``landscape_param``, objective and direction."""
    from search.study.config import landscape_param_of, objective_of

    return Axis(landscape_param_of(stored), *objective_of(stored))


def refresh_landscape(study, storage) -> RefreshResult:
    """Rebuild the landscape of ``study`` and save it into the study, now.

    Args:
        study: the ``optuna.Study`` (saving goes through it).
        storage: its ``RDBStorage`` (from :func:`storage.open_storage`; histories are read
            from its engine).
    """
    started = time.perf_counter()
    study_id = storage.get_study_id_from_name(study.study_name)
    from search.study.create import CONFIG_ATTR

    axis = landscape_axis(study.user_attrs.get(CONFIG_ATTR))
    curves = load_curves(storage, study_id, axis.param, axis.objective, axis.maximize)
    figures = build_figures(curves, axis=axis)
    if not figures:
        return RefreshResult(False, "no trial has a history yet", seconds=time.perf_counter() - started)
    size = _save(study, figures)
    seconds = time.perf_counter() - started
    storage.set_study_system_attr(study_id, STAMP_ATTR, {"at": time.time(), "seconds": round(seconds, 3),
                                                          "trials": len(curves), "bytes": size})
    return RefreshResult(True, "", len(curves), size, seconds, figures)


def maybe_refresh_landscape(study, storage, *, force: bool = False, min_interval: float = MIN_INTERVAL_S,
                            cost_factor: float = COST_FACTOR) -> RefreshResult:
    """Refresh the landscape unless it was refreshed recently or another process is at it.

    Workers call this after each trial. It costs one indexed read when it is too soon; then
    one process of the fleet takes a try-lock (the others go on without waiting), checks the
    time again, and refreshes. The interval is at least ``min_interval`` seconds and
    ``cost_factor`` times the last refresh's duration.

    Args:
        force: refresh even if it is too soon (a worker that finished the study's last trial),
            still skipping if another process holds the lock.
    """
    from storage.fleet import try_study_lock
    from storage.histories import study_system_attr

    study_id = storage.get_study_id_from_name(study.study_name)

    def too_soon() -> bool:
        stamp = study_system_attr(storage.engine, study_id, STAMP_ATTR) or {}
        wait = max(min_interval, cost_factor * float(stamp.get("seconds", 0.0)))
        return time.time() - float(stamp.get("at", 0.0)) < wait

    if not force and too_soon():
        return RefreshResult(False, "too soon")
    with try_study_lock(storage.engine, study.study_name, "landscape") as taken:
        if not taken:
            return RefreshResult(False, "another process is refreshing")
        if not force and too_soon():
            return RefreshResult(False, "too soon")
        return refresh_landscape(study, storage)
