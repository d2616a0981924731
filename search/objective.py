"""One trial: build the recipe's model, fit it with the monitor, record what happened.

:class:`Objective` is an ordinary Optuna objective, so it also works in a user's own
``study.optimize(Objective(config, dataset))``. It maximises validation accuracy: the trial's
value is the best ``val_accuracy`` over the epochs it ran. Every trial, pruned ones included,
keeps in its user attributes ``history`` (``loss``, ``val_loss``, ``accuracy``,
``val_accuracy`` per epoch; non-finite values stored as null), ``best_epoch``,
``epochs_run``, ``test_accuracy`` (the final weights on the test set), ``stop_reason``,
``train_seconds`` and ``epoch_seconds`` (wall time per epoch), and where it ran (host, pid,
device, framework versions).
"""

from __future__ import annotations

import functools
import os
import platform
import time
from typing import Callable

from search.config import StudyConfig
from search.data import Dataset
from search.errors import TrialConfigError, TrialEnvironmentError
from search.pruning import EpochMonitor
from search.space import suggest

__all__ = ["Objective", "runtime_info"]


@functools.lru_cache(maxsize=1)
def runtime_info() -> dict:
    """Where trials of this process run: host, pid, backend, device and versions."""
    import keras
    import optuna

    backend = keras.backend.backend()
    info = {
        "host": platform.node(),
        "pid": os.getpid(),
        "backend": backend,
        "keras_version": keras.__version__,
        "optuna_version": optuna.__version__,
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None,
        "device": "cpu",
    }
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            info["tensorflow_version"] = tf.__version__
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                info["device"] = details.get("device_name", gpus[0].name)
        elif backend == "jax":
            import jax

            info["jax_version"] = jax.__version__
            dev = jax.devices()[0]
            info["device"] = "cpu" if dev.platform == "cpu" else getattr(dev, "device_kind", str(dev))
        elif backend == "torch":
            import torch

            info["torch_version"] = torch.__version__
            if torch.cuda.is_available():
                info["device"] = torch.cuda.get_device_name(0)
    except Exception:  # device discovery is informative only; never fail a trial over it
        pass
    return info


def _direct(fn, *args, what: str, **kwargs):
    return fn(*args, **kwargs)


def _keras_callback(monitor: EpochMonitor):
    import keras

    class _MonitorCallback(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            monitor.start()

        def on_epoch_end(self, epoch, logs=None):
            if monitor.end_epoch(epoch, dict(logs or {})):
                self.model.stop_training = True

    return _MonitorCallback()


def _is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "resourceexhausted" in text or "out of memory" in text or "oom" in text.split()


class Objective:
    """Train the recipe's model at the trial's learning rate; return the best val_accuracy.

    Args:
        config: the study's configuration (epochs, batch size, range, seed).
        dataset: the preprocessed arrays (load once per process, reuse across trials).
        on_epoch: optional ``(trial_number, epoch, logs)`` hook for progress display.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial, or its loss diverged (NaN/inf);
            the trial keeps its history and the reason in ``stop_reason``.
        TrialEnvironmentError: the device ran out of memory (retry elsewhere).

    Example:
        >>> study.optimize(Objective(StudyConfig(epochs=3), load_dataset(None, train_size=3000, validation="holdout")), n_trials=3)
    """

    def __init__(self, config: StudyConfig, dataset: Dataset, on_epoch: Callable[[int, int, dict], None] | None = None,
                 call: Callable | None = None):
        self.config = config
        self.dataset = dataset
        self.on_epoch = on_epoch
        # ``call(fn, *args, what=...)`` runs a storage call; workers pass one that retries
        # while the database is unreachable.
        self.call = call or _direct

    def __call__(self, trial) -> float:
        import keras
        import optuna

        from search.model import build_model, clear_session

        cfg, ds = self.config, self.dataset
        call = self.call
        lr = call(suggest, trial, cfg, what="sampling a learning rate")
        for key, value in runtime_info().items():
            call(trial.set_user_attr, key, value, what="recording where the trial runs")

        clear_session()
        if cfg.seed is not None:
            keras.utils.set_random_seed(cfg.seed + trial.number)
        hook = None
        if self.on_epoch is not None:
            hook = functools.partial(self.on_epoch, trial.number)
        monitor = EpochMonitor(trial, on_epoch=hook, call=call)
        started = time.perf_counter()
        try:
            model = build_model(lr, hidden_units=cfg.hidden_units)
            model.fit(
                ds.x_train,
                ds.y_train,
                batch_size=cfg.batch_size,
                epochs=cfg.epochs,
                validation_data=(ds.x_val, ds.y_val),
                shuffle=True,
                verbose=0,
                callbacks=[_keras_callback(monitor)],
            )
            test_loss, test_accuracy = model.evaluate(ds.x_test, ds.y_test, batch_size=max(cfg.batch_size, 1024), verbose=0)
        except Exception as e:
            try:
                self._record(trial, monitor, None, time.perf_counter() - started)
            except Exception:
                pass  # the original error matters more than a history we could not save
            if _is_out_of_memory(e):
                raise TrialEnvironmentError(f"trial {trial.number} ran out of device memory at batch size {cfg.batch_size}") from e
            if isinstance(e, (ValueError, TypeError)):
                # Keras raises these for shapes and settings that no retry will fix.
                detail = " ".join(str(e).split())[:300]
                raise TrialConfigError(f"trial {trial.number} cannot train: {type(e).__name__}: {detail}") from e
            raise
        finally:
            model = None
            clear_session()
        self._record(trial, monitor, test_accuracy, time.perf_counter() - started)
        if monitor.stop_reason is not None:
            raise optuna.TrialPruned(monitor.detail)
        if monitor.best_value is None:
            raise optuna.TrialPruned(f"no finite val_accuracy in {monitor.epochs_run} epochs")
        return monitor.best_value

    def _record(self, trial, monitor: EpochMonitor, test_accuracy, seconds: float) -> None:
        import math

        ta = float(test_accuracy) if test_accuracy is not None and math.isfinite(test_accuracy) else None
        attrs = {
            "history": monitor.history,
            "epochs_run": monitor.epochs_run,
            "best_epoch": monitor.best_epoch,
            "test_accuracy": ta,
            "train_seconds": round(seconds, 3),
            "epoch_seconds": monitor.epoch_seconds,
            "stop_reason": monitor.stop_reason or ("completed" if test_accuracy is not None else "error"),
        }
        if monitor.detail:
            attrs["stop_detail"] = monitor.detail
        for key, value in attrs.items():
            self.call(trial.set_user_attr, key, value, what=f"recording trial {trial.number}")
