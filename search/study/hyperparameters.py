"""KerasTuner's ``HyperParameters``, backed by an Optuna trial.

A user's hypermodel (``build_model(hp)`` or ``HyperModel.build(hp)``) runs unchanged on
hpsearch: the ``hp`` it receives is a :class:`HyperParameters` with KerasTuner's methods
(``Int``, ``Float``, ``Choice``, ``Boolean``, ``Fixed``, ``conditional_scope``,
``name_scope``, ``get``, ``values``, ``hp[name]``, ``name in hp``), their signatures, their
defaults and their checks. It imports neither KerasTuner nor TensorFlow nor Keras.

It works in two modes:

* **On a trial** (``HyperParameters(trial)``): each active hyperparameter is one Optuna
  parameter of the same name, drawn by ``trial.suggest_*`` with the closest distribution, so
  the study's sampler chooses it and an enqueued value (``study.enqueue_trial``) is honoured.
  ``hp.trial`` is the trial, for users who prefer ``trial.suggest_*``. Any object with
  Optuna's ``suggest_*`` methods works, ``optuna.trial.FixedTrial(params)`` included (to
  rebuild a finished trial's model from its ``params``).
* **Recording** (``HyperParameters()``): every method returns the hyperparameter's default,
  and the space is recorded in :attr:`HyperParameters.space`. hpsearch calls the user's
  ``build(hp)`` once this way to learn the space and to refuse an impossible one before any
  trial runs; :meth:`HyperParameters.explicit_defaults` is what to enqueue so the study's
  first trial uses the defaults the user wrote.

How each hyperparameter becomes an Optuna parameter (what ``trial.params[name]`` holds):

====================================  ==========================================================
``Int``/``Float``, linear             ``suggest_int``/``suggest_float(low, high, step=step)``;
                                      ``high`` is the last point of the step grid
``Int``/``Float``, log, no step       ``suggest_int``/``suggest_float(low, high, log=True)``
``Int``/``Float``, log, a step        ``suggest_categorical`` of KerasTuner's grid
                                      ``min_value * step**i`` up to ``max_value``:
                                      ``Int("batch", 2, 32, step=2, sampling="log")`` stores
                                      one of 2, 4, 8, 16, 32 (Optuna's ``step`` is additive and
                                      cannot combine with ``log``)
``Int``/``Float``, reverse_log,       ``suggest_*(low, high, log=True)`` of the **mirror**
no step                               ``min_value + max_value - value``: KerasTuner draws
                                      exactly that (a log-uniform value reflected about the
                                      middle of the range, dense near ``max_value``), but
                                      Optuna has no such distribution, so ``trial.params``
                                      holds the mirror, not the value the model used.
                                      :meth:`Hyperparameter.from_stored` turns it back;
                                      ``hp.values`` and ``HyperParameters(FixedTrial(params))``
                                      give the model's value
``Int``/``Float``, reverse_log,       ``suggest_categorical`` of KerasTuner's grid
a step                                ``max_value + min_value - min_value * step**i``
``Choice``                            ``suggest_categorical(values)``
``Boolean``                           ``suggest_categorical([False, True])``
``Fixed``                             ``suggest_categorical([value])``: one choice, so it shows
                                      among the study's parameters
====================================  ==========================================================

Where this diverges from KerasTuner, and why:

* Ordered choices (``Choice`` of numbers, and the log/reverse-log grids) are categorical in
  Optuna, which treats them as unordered; KerasTuner's ``ordered`` is recorded but Optuna's
  samplers cannot use it. Log/reverse-log grids are uniform over their points, as in
  KerasTuner.
* A float grid point is rounded to 12 significant digits (``0.001 * 10**3`` is ``1.0``,
  not ``1.0000000000000002``), so the stored value and an enqueued default match exactly.
  A linear float grid is counted in decimal, as KerasTuner documents it:
  ``Float(x, 0, 1, step=0.2)`` reaches 1.0 (KerasTuner's own ``1.0 // 0.2`` is 4.0 and
  stops at 0.8).
* ``Int``'s ``step`` defaults to ``None`` as in KerasTuner 1.4 (1 when ``sampling`` is
  linear, a continuous log scale otherwise), so ``Int(x, 1, 100, sampling="log")`` works.
* Every impossible hyperparameter raises :class:`search.errors.ConfigError` with one line
  (KerasTuner raises ``ValueError``/``TypeError``), in both modes. Beyond KerasTuner's
  checks, a ``default`` must lie in the range and on the step grid (KerasTuner returns it
  unchecked, and Optuna would ignore such an enqueued value), bounds must be finite, and a
  linear step positive.
* A name defined again under the same conditions keeps its first definition and returns its
  value, as in KerasTuner, even if the second differs. The same name under *other*
  conditions is, as in KerasTuner, another definition active on its own condition that shares
  the name's value; since it is the same Optuna parameter, it must be one Optuna would
  accept in the same study (same kind and log scale; the same choices for a categorical),
  else ConfigError (Optuna would fail the later trial that draws it).
* ``space`` is a mapping of name to the first definition (KerasTuner's is a list of every
  definition), ``values`` a copy (write values through the trial: ``enqueue_trial`` or
  ``FixedTrial``), and numpy integers in a ``Choice`` are accepted as ints.
* ``Boolean``'s ``default`` is ``None`` in the signature, meaning False, so that an explicit
  ``default=False`` can be told apart for :meth:`HyperParameters.explicit_defaults`.
* ``get`` of an unknown name raises ``KeyError`` and of an inactive one ``ValueError``, as in
  KerasTuner (those are lookups, not configuration).

Example::

    def build_model(hp):
        units = hp.Int("units", 32, 512, step=32)
        lr = hp.Float("lr", 1e-4, 1e-2, sampling="log", default=1e-3)
        ...

    hp = HyperParameters()            # recording: learn the space
    build_model(hp)
    study.enqueue_trial(hp.explicit_defaults())   # {"lr": 0.001}
    trial = study.ask()
    build_model(HyperParameters(trial))           # lr = 0.001, units sampled
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import math
import numbers
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from search.errors import ConfigError

__all__ = ["SAMPLINGS", "Condition", "HyperParameters", "Hyperparameter", "mirrored_bounds", "record_mirrored"]

#: KerasTuner's samplings of ``Int`` and ``Float`` (given in any case, as KerasTuner accepts).
SAMPLINGS = ("linear", "log", "reverse_log")
#: Significant digits a float grid point is rounded to.
_GRID_DIGITS = 12


@dataclasses.dataclass(frozen=True)
class Condition:
    """Active when hyperparameter ``parent_name`` has one of ``parent_values`` (KerasTuner's ``Parent``)."""

    parent_name: str
    parent_values: tuple

    def is_active(self, values: Mapping[str, Any]) -> bool:
        return self.parent_name in values and values[self.parent_name] in self.parent_values

    def describe(self) -> str:
        return f"{self.parent_name} in {list(self.parent_values)!r}"


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of the space, as its first definition gave it.

    Attributes:
        name: the full name, name scopes included (``"block/units"``).
        kind: ``"Int"``, ``"Float"``, ``"Choice"``, ``"Boolean"`` or ``"Fixed"``.
        default: the value recording mode returns (KerasTuner's default).
        default_given: whether the user passed ``default=`` (always True for ``Fixed``).
        min_value, max_value, step, sampling: of ``Int`` and ``Float``; ``step`` is None for a
            continuous range (an ``Int`` with linear sampling has step 1).
        values: the choices of ``Choice``, ``Boolean`` and ``Fixed``, and the grid of an
            ``Int``/``Float`` stored as a categorical (log or reverse_log with a step); else None.
        ordered: ``Choice``'s ``ordered`` (True by default for numbers).
        conditions: the enclosing conditional scopes, outermost first.
    """

    name: str
    kind: str
    default: Any
    default_given: bool
    min_value: int | float | None = None
    max_value: int | float | None = None
    step: int | float | None = None
    sampling: str | None = None
    values: tuple | None = None
    ordered: bool | None = None
    conditions: tuple[Condition, ...] = ()

    @property
    def parent_name(self) -> str | None:
        """The innermost condition's parent, or None."""
        return self.conditions[-1].parent_name if self.conditions else None

    @property
    def parent_values(self) -> tuple | None:
        return self.conditions[-1].parent_values if self.conditions else None

    @property
    def categorical(self) -> bool:
        """Whether Optuna stores it as a categorical parameter (``values`` are its choices)."""
        return self.values is not None

    @property
    def mirrored(self) -> bool:
        """Whether the Optuna parameter holds ``min_value + max_value - value`` (reverse_log, no step)."""
        return self.sampling == "reverse_log" and self.step is None

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """Whether every condition holds for the active ``values``."""
        return all(c.is_active(values) for c in self.conditions)

    def _high(self):
        """The last point of a linear step grid (Optuna's own rounding, so it does not warn)."""
        if self.sampling != "linear" or self.step is None:
            return self.max_value
        if self.kind == "Int":
            return self.min_value + (self.max_value - self.min_value) // self.step * self.step
        low, step = _dec(self.min_value), _dec(self.step)
        return float((_dec(self.max_value) - low) // step * step + low)

    def distribution(self):
        """The Optuna distribution of the stored parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.categorical:
            return CategoricalDistribution(list(self.values))
        log = self.sampling != "linear"
        step = None if log else self.step
        if self.kind == "Int":
            return IntDistribution(self.min_value, self._high(), log=log, step=step or 1)
        return FloatDistribution(self.min_value, self._high(), log=log, step=step)

    def suggest(self, trial) -> Any:
        """Draw the value from ``trial`` (an enqueued value is taken as Optuna does)."""
        if self.categorical:
            stored = trial.suggest_categorical(self.name, list(self.values))
        elif self.kind == "Int":
            if self.sampling == "linear":
                stored = trial.suggest_int(self.name, self.min_value, self._high(), step=self.step)
            else:
                stored = trial.suggest_int(self.name, self.min_value, self.max_value, log=True)
        elif self.sampling == "linear":
            stored = trial.suggest_float(self.name, self.min_value, self._high(), step=self.step)
        else:
            stored = trial.suggest_float(self.name, self.min_value, self.max_value, log=True)
        return self.from_stored(stored)

    def to_stored(self, value: Any) -> Any:
        """The Optuna parameter's value for the model's ``value`` (the mirror for reverse_log)."""
        return self._mirror(value) if self.mirrored else value

    def from_stored(self, stored: Any) -> Any:
        """The model's value for the Optuna parameter's value."""
        if self.mirrored:
            return self._mirror(stored)
        if self.kind == "Int" and not self.categorical:
            return int(stored)
        return stored

    def _mirror(self, x):
        y = self.max_value + self.min_value - x
        # float rounding must not step outside the range Optuna checks enqueued values against
        return min(max(y, self.min_value), self.max_value)

    def describe(self) -> str:
        """One line: ``name: kind range/choices, default ...[ if parent in [...]]``."""
        if self.kind in ("Int", "Float"):
            what = f"{self.kind} [{self.min_value}, {self.max_value}]"
            if self.step is not None and not (self.kind == "Int" and self.step == 1):
                what += f" step {self.step}"
            what += f" {self.sampling}"
            if self.categorical:
                what += f" (grid {list(self.values)!r})"
            elif self.mirrored:
                what += " (stored mirrored)"
        elif self.kind == "Fixed":
            what = f"Fixed {self.default!r}"
        else:
            what = f"{self.kind} {list(self.values)!r}"
        line = f"{self.name}: {what}, default {self.default!r}{'' if self.default_given or self.kind == 'Fixed' else ' (implicit)'}"
        if self.conditions:
            line += " if " + " and ".join(c.describe() for c in self.conditions)
        return line


class HyperParameters:
    """KerasTuner's ``HyperParameters`` over an Optuna trial, or recording the space without one.

    Args:
        trial: an Optuna trial (``study.ask()``, the objective's argument, or a
            ``FixedTrial``); None to record the space and return defaults.
    """

    def __init__(self, trial=None):
        self._trial = trial
        self._name_scopes: list[str] = []
        self._conditions: list[Condition] = []
        self._space: dict[str, Hyperparameter] = {}
        # every (name, conditions) defined, as KerasTuner identifies a hyperparameter
        self._defined: dict[tuple[str, tuple[Condition, ...]], Hyperparameter] = {}
        self._values: dict[str, Any] = {}

    # --- what a build reads -------------------------------------------------------------

    @property
    def trial(self):
        """The Optuna trial, or None in recording mode."""
        return self._trial

    @property
    def values(self) -> dict[str, Any]:
        """A copy of the active hyperparameters' values, by full name, in definition order."""
        return dict(self._values)

    @property
    def space(self) -> Mapping[str, Hyperparameter]:
        """Every hyperparameter defined so far, active or not: name -> its first definition."""
        return MappingProxyType(self._space)

    def get(self, name: str) -> Any:
        """The value of hyperparameter ``name`` (name scopes apply).

        Raises:
            KeyError: no hyperparameter has that name.
            ValueError: it is defined but inactive.
        """
        full = self._full_name(name)
        if full in self._values:
            return self._values[full]
        if full in self._space:
            raise ValueError(f"{full} is currently inactive.")
        raise KeyError(f"{full} does not exist.")

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except (KeyError, ValueError):
            return False
        return True

    def is_active(self, hyperparameter: str | Hyperparameter) -> bool:
        """Whether a definition (or any definition of a name) is active for this trial."""
        if isinstance(hyperparameter, Hyperparameter):
            return hyperparameter.is_active(self._values)
        return any(hp.is_active(self._values) for (n, _), hp in self._defined.items() if n == str(hyperparameter))

    def explicit_defaults(self) -> dict[str, Any]:
        """``{name: stored value}`` of every hyperparameter whose default the user gave.

        ``Fixed`` always counts, ``Boolean`` only with ``default=``; the values are in the form
        the Optuna parameter stores (the mirror for reverse_log), so
        ``study.enqueue_trial(hp.explicit_defaults())`` makes the next trial use them and
        sample the rest. Defaults left implicit are sampled, as KerasTuner's tuners do.
        """
        return {n: hp.to_stored(hp.default) for n, hp in self._space.items() if hp.default_given}

    def describe(self) -> str:
        """The space, one line per hyperparameter (for logs)."""
        return "\n".join(hp.describe() for hp in self._space.values())

    def __repr__(self) -> str:
        mode = "recording" if self._trial is None else f"trial {getattr(self._trial, 'number', '?')}"
        return f"HyperParameters({mode}, {len(self._space)} defined, values={self._values!r})"

    # --- scopes ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix the names defined inside with ``name/``, as KerasTuner does."""
        self._name_scopes.append(str(name))
        try:
            yield
        finally:
            self._name_scopes.pop()

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values) -> Iterator[None]:
        """Hyperparameters defined inside are active only when ``parent_name``'s value is in ``parent_values``.

        An inactive one is recorded in the space, returns None and creates no Optuna
        parameter. The code inside runs either way, as in KerasTuner.

        Raises:
            ConfigError: the parent is not defined yet, or ``parent_values`` is empty.
        """
        full = self._full_name(parent_name)
        if full not in self._space:
            raise ConfigError(f"conditional_scope({full!r}, ...): no hyperparameter named {full!r} is defined yet: define the parent before the scope that depends on it")
        values = list(parent_values) if isinstance(parent_values, (list, tuple, set, frozenset)) else [parent_values]
        if not values:
            raise ConfigError(f"conditional_scope({full!r}, []): parent_values is empty, so nothing inside could ever be active: list the values of {full!r} that activate it")
        self._conditions.append(Condition(full, tuple(values)))
        try:
            yield
        finally:
            self._conditions.pop()

    @contextlib.contextmanager
    def _maybe_conditional_scope(self, parent_name, parent_values):
        if parent_name:
            with self.conditional_scope(parent_name, parent_values):
                yield
        else:
            yield

    def _full_name(self, name) -> str:
        return "/".join([*self._name_scopes, str(name)])

    # --- KerasTuner's methods ---------------------------------------------------------------

    def Int(self, name, min_value, max_value, step=None, sampling="linear", default=None, parent_name=None, parent_values=None):
        """An integer in ``[min_value, max_value]``, both included.

        Args:
            step: the distance between values (linear, default 1), or the multiplier between
                them (log, reverse_log; must be above 1): ``Int("batch", 2, 32, step=2,
                sampling="log")`` is one of 2, 4, 8, 16, 32. None with log or reverse_log
                samples every integer on that scale.
            sampling: ``"linear"``, ``"log"`` (dense near ``min_value``) or ``"reverse_log"``
                (dense near ``max_value``), in any case.
            default: returned in recording mode; ``min_value`` if not given.

        Returns:
            The value, or None when inactive.

        Raises:
            ConfigError: the definition is impossible (the message says why and how to fix it).
        """
        with self._maybe_conditional_scope(parent_name, parent_values):
            return self._retrieve(_numerical("Int", self._full_name(name), min_value, max_value, step, sampling, default, tuple(self._conditions)))

    def Float(self, name, min_value, max_value, step=None, sampling="linear", default=None, parent_name=None, parent_values=None):
        """A float in ``[min_value, max_value]``.

        Args:
            step: None for a continuous range; else the distance between values (linear) or
                the multiplier between them (log, reverse_log; above 1):
                ``Float("lr", 0.001, 10, step=10, sampling="log")`` is one of 0.001, 0.01,
                0.1, 1.0, 10.0.
            sampling: ``"linear"``, ``"log"`` or ``"reverse_log"``, in any case.
            default: returned in recording mode; ``min_value`` if not given.

        Returns:
            The value, or None when inactive.

        Raises:
            ConfigError: the definition is impossible.
        """
        with self._maybe_conditional_scope(parent_name, parent_values):
            return self._retrieve(_numerical("Float", self._full_name(name), min_value, max_value, step, sampling, default, tuple(self._conditions)))

    def Choice(self, name, values, ordered=None, default=None, parent_name=None, parent_values=None):
        """One of ``values``, all ints, all floats, all strings or all booleans.

        Args:
            ordered: whether the values are ordered (default: True for numbers, and must be
                False for others). Recorded only: Optuna's categorical is unordered.
            default: returned in recording mode; ``values[0]`` if not given.

        Returns:
            The value, or None when inactive.

        Raises:
            ConfigError: ``values`` is empty or mixes types, or ``default`` is not among them.
        """
        with self._maybe_conditional_scope(parent_name, parent_values):
            return self._retrieve(_choice(self._full_name(name), values, ordered, default, tuple(self._conditions)))

    def Boolean(self, name, default=None, parent_name=None, parent_values=None):
        """True or False.

        Args:
            default: returned in recording mode; False if not given (None here means "not
                given", so an explicit ``default=False`` is enqueued by
                :meth:`explicit_defaults`).

        Returns:
            The value, or None when inactive.
        """
        full = self._full_name(name)
        if default is not None and not isinstance(default, bool):
            raise ConfigError(f"hyperparameter {full!r} (Boolean): default={default!r} is not a bool: pass default=True or default=False")
        with self._maybe_conditional_scope(parent_name, parent_values):
            hp = Hyperparameter(
                name=full, kind="Boolean", default=bool(default), default_given=default is not None, values=(False, True), ordered=False, conditions=tuple(self._conditions)
            )
            return self._retrieve(hp)

    def Fixed(self, name, value, parent_name=None, parent_values=None):
        """A value that is not tuned (an int, float, str or bool), shown among the trial's parameters.

        Returns:
            ``value``, or None when inactive.
        """
        full = self._full_name(name)
        kind = _value_type(value)
        if kind is None:
            raise ConfigError(f"hyperparameter {full!r} (Fixed): value {value!r} is a {type(value).__name__}: use an int, float, str or bool")
        value = _CONVERT[kind](value)
        with self._maybe_conditional_scope(parent_name, parent_values):
            hp = Hyperparameter(name=full, kind="Fixed", default=value, default_given=True, values=(value,), ordered=False, conditions=tuple(self._conditions))
            return self._retrieve(hp)

    # --- registration -----------------------------------------------------------------------

    def _retrieve(self, hp: Hyperparameter) -> Any:
        """Define ``hp`` (unless its name and conditions are defined) and return its value or None."""
        for condition in hp.conditions:
            if condition.parent_name == hp.name:
                raise ConfigError(f"hyperparameter {hp.name!r} ({hp.kind}) is inside conditional_scope({hp.name!r}, ...), so it would depend on itself: rename it or move it out of the scope")
        key = (hp.name, hp.conditions)
        first = self._space.get(hp.name)
        if key not in self._defined:
            if first is not None:
                _check_same_parameter(first, hp)
            self._defined[key] = hp
            self._space.setdefault(hp.name, hp)
        hp = self._defined[key]  # a name defined again keeps its first definition
        if not hp.is_active(self._values):
            return None
        if hp.name not in self._values:
            self._values[hp.name] = hp.default if self._trial is None else self._suggest(hp)
        return self._values[hp.name]

    def _suggest(self, hp: Hyperparameter) -> Any:
        if hp.mirrored:
            study = getattr(self._trial, "study", None)  # a FixedTrial (export) has none
            if study is not None:
                record_mirrored(study._storage, study._study_id, {hp.name: (hp.min_value, hp.max_value)})
        try:
            return hp.suggest(self._trial)
        except ValueError as e:
            # Optuna refuses a distribution that contradicts the study's earlier trials
            raise ConfigError(f"hyperparameter {hp.name!r} ({hp.kind}) does not fit this study's earlier trials ({e}): keep its definition as it was, or start a new study") from e


_RECORDED: set = set()  # (storage, study id, name) recorded by this process


def mirrored_bounds(space: Mapping[str, Hyperparameter]) -> dict[str, tuple]:
    """The ``(min_value, max_value)`` of each parameter of ``space`` that Optuna stores mirrored."""
    return {name: (hp.min_value, hp.max_value) for name, hp in space.items() if hp.mirrored}


def record_mirrored(storage, study_id: int, bounds: Mapping[str, tuple]) -> None:
    """Record in the study that these parameters are stored mirrored, so that hpsearch's
    queries, summaries and view show the values the model used (:mod:`storage.mirrored`).
    Once per process and parameter; every worker writes the same value."""
    from storage.mirrored import MIRRORED_PREFIX

    for name, (low, high) in bounds.items():
        key = (id(storage), study_id, name)
        if key in _RECORDED:
            continue
        storage.set_study_system_attr(study_id, MIRRORED_PREFIX + name, [low, high])
        _RECORDED.add(key)


# --- building and checking a definition -------------------------------------------------------

_CONVERT = {"bool": bool, "int": int, "float": float, "str": str}


def _value_type(v) -> str | None:
    """``"bool"``, ``"int"``, ``"float"`` or ``"str"`` (KerasTuner's four), or None."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, numbers.Integral):
        return "int"
    if isinstance(v, numbers.Real):
        return "float"
    if isinstance(v, str):
        return "str"
    return None


def _dec(x) -> decimal.Decimal:
    return decimal.Decimal(str(x))


def _round(x: float) -> float:
    return float(f"{x:.{_GRID_DIGITS}g}")


def _numerical(kind, name, min_value, max_value, step, sampling, default, conditions) -> Hyperparameter:
    where = f"hyperparameter {name!r} ({kind})"
    if sampling is None:  # KerasTuner still accepts None for linear
        sampling = "linear"
    if not isinstance(sampling, str) or sampling.lower() not in SAMPLINGS:
        raise ConfigError(f"{where}: sampling={sampling!r} is unknown: use one of {', '.join(SAMPLINGS)}")
    sampling = sampling.lower()
    for arg, v in (("min_value", min_value), ("max_value", max_value)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ConfigError(f"{where}: {arg}={v!r} is not a finite number: give a number")
        if kind == "Int" and v != int(v):
            raise ConfigError(f"{where}: {arg}={v!r} is not a whole number: give an int, or use Float")
    convert = int if kind == "Int" else float
    min_value, max_value = convert(min_value), convert(max_value)
    if min_value > max_value:
        raise ConfigError(f"{where}: min_value {min_value} is above max_value {max_value}: swap them")
    if sampling != "linear" and min_value <= 0:
        raise ConfigError(f"{where}: sampling={sampling!r} needs min_value above 0, got {min_value}: raise min_value or use sampling='linear'")
    if step is None and kind == "Int" and sampling == "linear":
        step = 1
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step):
            raise ConfigError(f"{where}: step={step!r} is not a finite number: give a number, or None")
        if kind == "Int" and step != int(step):
            raise ConfigError(f"{where}: step={step!r} is not a whole number: give an int step")
        step = convert(step)
        if sampling == "linear" and step <= 0:
            raise ConfigError(f"{where}: step={step} must be above 0 (the distance between values): give a positive step, or None for a continuous range")
        if sampling != "linear" and step <= 1:
            raise ConfigError(f"{where}: step={step} with sampling={sampling!r} is the multiplier between values and must be above 1: use step=2 (say), or None")
    grid = None
    if step is not None and sampling != "linear":
        grid = _grid(kind, min_value, max_value, step, sampling)
    hp = Hyperparameter(
        name=name,
        kind=kind,
        default=min_value,
        default_given=default is not None,
        min_value=min_value,
        max_value=max_value,
        step=step,
        sampling=sampling,
        values=grid,
        conditions=conditions,
    )
    if default is None:
        return hp
    return _with_default(hp, default, where)


def _grid(kind, min_value, max_value, step, sampling) -> tuple:
    """KerasTuner's values for a log or reverse_log step, ascending."""
    if kind == "Int":
        powers, v = [], min_value
        while v <= max_value:
            powers.append(v)
            v *= step
    else:
        # KerasTuner's count: the 1e-8 keeps max_value when the logarithm lands just below
        n = int(math.log(max_value / min_value, step) + 1e-8) + 1
        powers = [min_value * step**i for i in range(n)]
    if sampling == "reverse_log":
        points = [max_value + min_value - p for p in powers]
    else:
        points = powers
    if kind == "Float":
        points = [min(max(_round(p), min_value), max_value) for p in points]
    return tuple(sorted(points))


def _with_default(hp: Hyperparameter, default, where) -> Hyperparameter:
    if isinstance(default, bool) or not isinstance(default, numbers.Real) or not math.isfinite(default):
        raise ConfigError(f"{where}: default={default!r} is not a finite number: give a number in [{hp.min_value}, {hp.max_value}]")
    if hp.kind == "Int" and default != int(default):
        raise ConfigError(f"{where}: default={default!r} is not a whole number: give an int in [{hp.min_value}, {hp.max_value}]")
    if not hp.min_value <= default <= hp.max_value:
        raise ConfigError(f"{where}: default={default!r} is outside [{hp.min_value}, {hp.max_value}]: give a default in the range, or widen it")
    if hp.categorical:
        near = [v for v in hp.values if math.isclose(v, default, rel_tol=1e-9)]
        if not near:
            raise ConfigError(f"{where}: default={default!r} is not on the grid {list(hp.values)!r}: give one of those values")
        default = near[0]
    elif hp.step is not None and hp.sampling == "linear":
        low = hp.min_value
        k = (default - low) / hp.step
        if abs(k - round(k)) >= 1e-8 or default > hp._high():  # Optuna's own test of an enqueued value
            raise ConfigError(f"{where}: default={default!r} is not on the step grid {low} + k * {hp.step}: give one of its values, such as {hp._high()!r}")
    default = int(default) if hp.kind == "Int" else float(default)
    return dataclasses.replace(hp, default=default)


def _choice(name, values, ordered, default, conditions) -> Hyperparameter:
    where = f"hyperparameter {name!r} (Choice)"
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{where}: values={values!r} is not a list: pass a list such as [{values!r}]")
    values = list(values)
    if not values:
        raise ConfigError(f"{where}: values is empty: give at least one value")
    types = [_value_type(v) for v in values]
    if None in types:
        bad = values[types.index(None)]
        raise ConfigError(f"{where}: value {bad!r} is a {type(bad).__name__}: a Choice holds ints, floats, strings or bools")
    kinds = sorted(set(types))
    if kinds == ["float", "int"]:
        raise ConfigError(f"{where}: values {values!r} mix ints and floats, which KerasTuner refuses: write them all as floats, such as {[float(v) for v in values]!r}")
    if len(kinds) > 1:
        raise ConfigError(f"{where}: values {values!r} mix {' and '.join(kinds)}: give values of one type")
    kind = kinds[0]
    values = tuple(_CONVERT[kind](v) for v in values)
    numeric = kind in ("int", "float")
    if ordered and not numeric:
        raise ConfigError(f"{where}: ordered=True needs numbers, got {kind} values: drop ordered=True")
    if ordered is None:
        ordered = numeric
    given = default is not None
    if given:
        matches = _value_type(default) == kind or (kind == "float" and _value_type(default) == "int")
        if not matches or default not in values:
            raise ConfigError(f"{where}: default={default!r} is not among the values {list(values)!r}: give one of them")
        default = values[values.index(default)]
    else:
        default = values[0]
    return Hyperparameter(name=name, kind="Choice", default=default, default_given=given, values=values, ordered=bool(ordered), conditions=conditions)


def _signature(hp: Hyperparameter):
    """What Optuna requires to agree between two uses of one parameter name."""
    if hp.categorical:
        return ("categorical", hp.values)
    return (hp.kind, hp.sampling != "linear")


def _check_same_parameter(first: Hyperparameter, again: Hyperparameter) -> None:
    """A name defined under other conditions is the same Optuna parameter: it must be compatible."""
    if first.conditions == again.conditions or _signature(first) == _signature(again):
        return
    raise ConfigError(f"hyperparameter {again.name!r} is defined twice under different conditions as different Optuna parameters ({first.describe()}; then {again.describe()}): give the second another name, or the same kind, log scale and choices")
