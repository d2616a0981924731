"""``hpsearch export``: a trial's model, trained again and saved as a ``.keras`` file.

KerasTuner hands back its best models (``tuner.get_best_models()``) from a checkpoint it keeps
of every trial. hpsearch keeps no weights of finished trials (a running trial's checkpoint goes
when it ends: :mod:`search.train.checkpoint`), so the model is trained again instead: the
trial's parameters, through the same ``build(hp)`` and ``fit`` the worker ran
(:meth:`search.train.objective.Objective.retrain`), on the study's data and settings, for the
epochs up to the trial's best one. With the study's ``--seed`` that is the trial's own run (the
same initial weights and batches), so the saved weights are those of the trial's best epoch;
the objective the retrained model ends on is printed next to the one the trial recorded. Without
a seed it is a new training of the same configuration.

Nothing is written to the study. Everything that can be refused is refused before training: the
study, the trial, the ``--out`` path, the data (its fingerprint against the study's) and the
model's code (its digest against the study's).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from search.errors import ConfigError, DataError

__all__ = ["Exported", "check_out", "export_model"]


@dataclass
class Exported:
    """What :func:`export_model` saved."""

    study: str
    trial: int
    params: dict
    epochs: int
    out: str
    objective: str
    recorded: float | None  # the trial's objective at its best epoch
    retrained: float | None  # the retrained model's, after its last epoch
    seeded: bool
    seconds: float
    test: dict = field(default_factory=dict)  # the saved model on the test set: Keras's metrics by name

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def text(self) -> str:
        params = ", ".join(f"{k} {_short(v)}" for k, v in self.params.items())
        test = ", ".join(f"test {k} {_short(v)}" for k, v in self.test.items())
        line = (f"saved trial {self.trial} of study {self.study!r} to {self.out}: {params}; trained again for {self.epochs} "
                f"epoch{'s' if self.epochs != 1 else ''} in {self.seconds:.1f} s, {self.objective} {_short(self.retrained)}"
                + (f", {test}" if test else ""))
        if self.recorded is None:
            return line
        if not self.seeded:
            return line + (f" (the trial recorded {_short(self.recorded)}; the study has no --seed, so these weights are a new draw: "
                           "a study run with --seed exports each trial's own)")
        same = self.retrained is not None and math.isclose(self.retrained, self.recorded, rel_tol=1e-4, abs_tol=1e-6)
        return line + (f" (the trial recorded {_short(self.recorded)}: its own weights)" if same else
                       f" (the trial recorded {_short(self.recorded)}; the run again differs slightly: nondeterministic kernels, "
                       "or a lane's batched arithmetic)")


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def check_out(out: str) -> Path:
    """Refuse an ``--out`` Keras cannot write, before anything trains.

    Raises:
        ConfigError: not a ``.keras`` file, a directory, or in a folder that does not exist.
    """
    path = Path(out).expanduser()
    if path.suffix != ".keras":
        raise ConfigError(f"--out {out}: Keras saves a whole model to a .keras file: give a name ending in .keras, such as best.keras")
    if path.is_dir():
        raise ConfigError(f"--out {out} is a directory: give a file name ending in .keras")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {path.parent} does not exist: create it first, or choose another path")
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"--out {out}: the folder {path.parent} is not writable: choose another path")
    return path


def export_model(storage_flag: str | None, study_name: str | None, out: str, *, trial_number: int | None = None,
                 data_path: str | None = None, model_flag: str | None = None, err=None) -> Exported:
    """Train trial ``trial_number`` of the study again (its best complete trial by default) and
    save the model to ``out``.

    Args:
        storage_flag: ``--storage`` (None: ``OPTUNA_STORAGE``, else the embedded PostgreSQL).
        study_name: ``--study`` (None: :func:`search.study.config.pick_study`).
        out: the ``.keras`` file to write (written whole or not at all).
        trial_number: ``--trial``; None: the best complete trial.
        data_path: ``--data`` (None: ``HPSEARCH_DATA``, else Keras's download, as workers read it).
        model_flag: ``--model``: where the study's model file lies on this machine (None: the
            path the study stored); its NAME and its code must be the study's.
        err: where progress goes (stderr).

    Raises:
        HpsearchError: the study, trial, path, data or code was refused (one line, exit 2).
    """
    err = err or sys.stderr
    path = check_out(out)
    name, config, frozen, mirrored = _read_trial(storage_flag, study_name, trial_number)
    recorded = _recorded(frozen, config.objective)
    epochs = _epochs(frozen, config)
    spec, raw, data_path = _check_model_and_data(config, name, model_flag, data_path)

    import dataclasses

    from search.train.backend import configure_backend

    configure_backend()  # quietly, before the user's file imports Keras
    cfg = dataclasses.replace(config, epochs=epochs)
    if spec.is_recipe:
        from search.train.data import load_dataset
        from search.train.objective import Objective

        objective = Objective(cfg, load_dataset(data_path, train_size=cfg.train_size, validation=cfg.validation))
    else:
        from search.train.data import split_arrays
        from search.train.objective import ModelObjective
        from search.train.usermodel import load_hypermodel

        objective = ModelObjective(cfg, split_arrays(raw, train_size=cfg.train_size, validation=cfg.validation), load_hypermodel(spec))

    last: dict = {}
    started = time.perf_counter()

    def on_epoch(epoch, logs):
        last.clear()
        last.update(logs or {})
        shown = ", ".join(f"{k} {_short(float(v))}" for k, v in last.items() if k in ("loss", cfg.objective))
        print(f"trial {frozen.number}: epoch {epoch + 1}/{epochs} {shown}", file=err, flush=True)

    from search.train.model import epoch_callback

    model = objective.retrain(dict(frozen.params), frozen.number, [epoch_callback(lambda: None, on_epoch)])
    seconds = time.perf_counter() - started
    ds = objective.dataset
    # a model its fit trained with a loop of its own may be uncompiled: Keras cannot evaluate it
    test = model.evaluate(ds.x_test, ds.y_test, batch_size=cfg.batch_size, verbose=0, return_dict=True) if model.compiled else {}
    _save(model, path)
    retrained = last.get(cfg.objective)
    from storage.mirrored import unmirror

    # retrain() takes the stored parameters (hp turns a mirror back); the line shows the model's
    return Exported(name, frozen.number, unmirror(dict(frozen.params), mirrored), epochs, str(path), cfg.objective, recorded,
                    None if retrained is None else float(retrained), cfg.seed is not None, round(seconds, 1),
                    {k: float(v) for k, v in test.items() if isinstance(v, (int, float))})


def _read_trial(storage_flag, study_name, trial_number):
    """``(study name, StudyConfig, FrozenTrial, mirrored parameters)`` read from the storage,
    which is closed after."""
    import optuna

    from search.study.config import StudyConfig
    from search.study.create import CONFIG_ATTR, find_study
    from storage import best_trial, open_storage, resolve_storage_url

    resolved = resolve_storage_url(storage_flag)
    storage = open_storage(resolved, heartbeat=False)
    try:
        name = find_study(storage.engine, study_name, resolved.masked)
        study_id = storage.get_study_id_from_name(name)
        attrs = storage.get_study_user_attrs(study_id)
        if CONFIG_ATTR not in attrs:
            raise ConfigError(f"study {name!r} was not created by hpsearch: export trains models of hpsearch's studies only")
        config = StudyConfig.from_dict(attrs[CONFIG_ATTR])
        if trial_number is None:
            best = best_trial(storage.engine, name)
            if best is None:
                raise ConfigError(f"study {name!r} has no complete trial yet: run more trials, or name a pruned one with --trial N (hpsearch query trials lists them)")
            trial_number = best.number
        try:
            frozen = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, trial_number))
        except KeyError:
            raise ConfigError(f"study {name!r} has no trial {trial_number}: hpsearch query trials --study {name} lists its trials") from None
        from storage.mirrored import study_mirrored

        mirrored = study_mirrored(storage, study_id)
    finally:
        storage.engine.dispose()
    if frozen.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        raise ConfigError(f"trial {trial_number} of study {name!r} is {frozen.state.name.lower()}: export a complete or pruned trial")
    if "history" not in frozen.user_attrs:
        raise ConfigError(f"trial {trial_number} of study {name!r} was not trained by hpsearch (it has no history): export one of hpsearch's trials")
    return name, config, frozen, mirrored


def _recorded(frozen, objective: str) -> float | None:
    values = frozen.user_attrs.get("history", {}).get(objective) or []
    best = frozen.user_attrs.get("best_epoch")
    if isinstance(best, int) and 0 <= best < len(values) and values[best] is not None:
        return float(values[best])
    return None


def _epochs(frozen, config) -> int:
    """The epochs to train again: up to the trial's best epoch (KerasTuner keeps that epoch's
    weights too), else as many as it ran."""
    best = frozen.user_attrs.get("best_epoch")
    if isinstance(best, int) and best >= 0:
        return best + 1
    return int(frozen.user_attrs.get("epochs_run") or config.epochs)


def _check_model_and_data(config, study: str, model_flag: str | None, data_path: str | None):
    """``(spec, raw data, data path)``, checked against the study's digest and fingerprint."""
    from search.env import env
    from search.train.usermodel import check_digest, check_source, parse_spec

    stored = parse_spec(config.model)
    spec = stored if model_flag is None else parse_spec(model_flag)
    if spec.is_recipe != stored.is_recipe or (not spec.is_recipe and spec.name != stored.name):
        raise ConfigError(f"--model {spec.text} is not study {study!r}'s model ({stored.text}): give the path of that file on this machine, or drop --model")
    if not spec.is_recipe:
        check_digest(spec, config.model_digest, study)
        check_source(spec)
    data_path = data_path if data_path is not None else env("HPSEARCH_DATA")
    if spec.is_recipe:
        from search.train.data import check_split, read_mnist_cached

        raw = read_mnist_cached(data_path)
        check_split(raw, config.train_size, config.validation)
    else:
        from search.train.data import check_user_split, read_arrays

        raw = read_arrays(data_path)
        check_user_split(raw, config.train_size, config.validation)
    fingerprint = raw.fingerprint()  # a hash of every array: once
    if config.data_fingerprint and fingerprint != config.data_fingerprint:
        raise DataError(
            f"this data (fingerprint {fingerprint}) differs from the data study {study!r} was trained on ({config.data_fingerprint}): pass that data with --data"
        )
    return spec, raw, data_path


def _save(model, path: Path) -> None:
    """Save whole or not at all: to a temporary file beside ``path``, then renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
