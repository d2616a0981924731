"""The landscape's curves: each finished trial's history as a :class:`TrialCurve`.

Three sources, one conversion: Optuna ``FrozenTrial`` objects (any storage),
:class:`storage.histories.TrialRecord` rows, and a study in an RDB storage, read through
:func:`storage.histories.trial_records`, the one reader of trial histories (it reads only
the parameter, the value and the ``history`` and ``source`` attributes, not every
intermediate value as ``study.get_trials()`` would). The figures are :mod:`search.landscape.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from search.landscape.figures import TrialCurve
from search.study.space import PARAM

__all__ = ["curves_from_records", "curves_from_trials", "load_curves"]


def _curve(number: int, lr, state: str, value, attrs: dict, objective: str = "val_accuracy", maximize: bool = True) -> TrialCurve | None:
    history = attrs.get("history")
    if lr is None or not isinstance(history, dict) or not math.isfinite(lr):
        return None
    arrays = {k: np.array(history.get(k) or [], dtype=np.float64) for k in {"loss", "val_loss", objective}}
    if not any(len(a) for a in arrays.values()):
        return None
    best = value if state == "COMPLETE" and value is not None and math.isfinite(value) else None
    if best is None:
        seen = arrays[objective]
        best = float((np.nanmax if maximize else np.nanmin)(seen)) if np.isfinite(seen).any() else None
    return TrialCurve(number, float(lr), state, best, attrs.get("source") == "recipe",
                      {k: arrays[k] for k in ("loss", "val_loss")})


def curves_from_trials(trials: Iterable, param: str = PARAM, objective: str = "val_accuracy", maximize: bool = True) -> list[TrialCurve]:
    """The curves of the complete and pruned trials among ``trials`` (``FrozenTrial`` objects),
    drawn over ``param`` and judged by ``objective`` (the recipe's by default).

    For studies in any Optuna storage; :func:`load_curves` reads an RDB storage faster.
    """
    out = []
    for t in trials:
        state = t.state.name
        if state not in ("COMPLETE", "PRUNED"):
            continue
        value = t.params.get(param)
        c = _curve(t.number, value if isinstance(value, (int, float)) else None, state, t.value, t.user_attrs, objective, maximize)
        if c is not None:
            out.append(c)
    return out


def curves_from_records(records: Iterable, objective: str = "val_accuracy", maximize: bool = True) -> list[TrialCurve]:
    """The curves of :class:`storage.histories.TrialRecord` rows."""
    out = []
    for r in records:
        c = _curve(r.number, r.param, r.state, r.value, r.attrs, objective, maximize)
        if c is not None:
            out.append(c)
    return out


def load_curves(storage, study_id: int, param: str = PARAM, objective: str = "val_accuracy", maximize: bool = True) -> list[TrialCurve]:
    """Read the curves of a study's complete and pruned trials from an RDB ``storage``, drawn
    over ``param`` (the recipe's learning rate; a user's model's ``landscape_param``) and
    judged by ``objective`` (a pruned trial's best is its best epoch of it)."""
    from storage.histories import trial_records

    return curves_from_records(trial_records(storage.engine, study_id, param=param, attrs=("history", "source")), objective, maximize)

