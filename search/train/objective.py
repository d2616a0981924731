"""One trial: build the recipe's model, fit it with the monitor, record what happened.

:class:`Objective` is an ordinary Optuna objective, so it also works in a user's own
``study.optimize(Objective(config, dataset))``. It maximises validation accuracy: the trial's
value is the best ``val_accuracy`` over the epochs it ran. Every trial, pruned ones included,
keeps in its user attributes ``history`` (``loss``, ``val_loss``, ``accuracy``,
``val_accuracy`` per epoch; non-finite values stored as null), ``best_epoch``,
``epochs_run``, ``test_accuracy`` (the final weights on the test set), ``stop_reason``,
``train_seconds`` and ``epoch_seconds`` (wall time per epoch), and where it ran (host, pid,
device, framework versions).

A trial trains the recipe's model exactly as the recipe does (same layers, Adam, batch size,
a shuffle each epoch, validation after each epoch) but is cheaper than the recipe's own
``model.fit`` loop (:class:`FitOptions`; each saving measured in docs/benchmarks.md): the
worker's one compiled model is reset instead of rebuilt, the test set is not evaluated again
when it is the validation set, and reports are written while training goes on; on a GPU the
data also stay backend tensors across trials, TensorFlow runs a whole epoch per call, and
validation uses large batches.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

from search.train.backend import on_gpu, runtime_info, set_seed, take
from search.study.config import StudyConfig
from search.train.data import Dataset, device_data
from search.train.deferred import DeferredWrites
from storage.errors import StorageError
from search.errors import one_line, trial_error
from search.study.pruners import pruner_schedule
from search.train.checkpoint import Checkpointer, checkpoint_interval
from search.train.monitor import EpochMonitor
from search.study.space import PARAM, suggest

log = logging.getLogger("hpsearch.worker")

__all__ = ["FitOptions", "ModelObjective", "Objective", "TrialRun", "VALIDATION_BATCH", "report_epoch"]

#: Images per validation (and test) batch: the whole of MNIST's 10,000 in one batch. Only a
#: forward pass, so memory is small (10,000 x 1,000 activations, 40 MB) and the result is the
#: same as with the training batch size.
VALIDATION_BATCH = 10_000


@dataclass(frozen=True)
class FitOptions:
    """How a trial runs ``model.fit``: speed-ups, each measured in docs/benchmarks.md.

    They change the time a trial takes, never what it computes (the benchmark checks each
    against the recipe's own loop). ``"auto"`` turns on, only where Keras sees a GPU, the
    ones that cut per-step overhead on an accelerator: on this project's CPU they measured no
    faster (device tensors, validation batch) or slower (steps per execution), so they are
    off there. Benchmarks flip them one at a time.

    Attributes:
        reuse_model: reset the worker's compiled model instead of building one per trial.
        device_data: train on backend tensors made once per process, not NumPy arrays.
        steps_per_execution: run a whole epoch per call into TensorFlow.
        validation_batch: batch size of validation and test evaluation (None: the training
            batch size; ``"auto"``: :data:`VALIDATION_BATCH` on a GPU, else None).
        skip_test_eval: with ``--validation test``, take test_accuracy from the last epoch's
            validation instead of evaluating the same images again.
        jit_compile: Keras's ``jit_compile`` (``"auto"``: XLA on GPUs and JAX).
        pruner_budget: the share of training time questions to the pruner may take
            (``math.inf``, the default: ask at every epoch where the pruner can act, so no
            decision waits; a finite share spaces questions out, issue 6's former default 0.01).
        deferred_writes: write reports and where the trial runs from a background thread
            while training goes on (:mod:`search.train.deferred`).
    """

    reuse_model: bool = True
    device_data: bool | str = "auto"
    steps_per_execution: bool | str = "auto"
    validation_batch: int | str | None = "auto"
    skip_test_eval: bool = True
    jit_compile: bool | str = "auto"
    pruner_budget: float = math.inf
    deferred_writes: bool = True

    def resolved(self, gpu: bool) -> "FitOptions":
        """These options with every ``"auto"`` decided for a process that has a GPU or not."""
        auto = {}
        for name in ("device_data", "steps_per_execution"):
            if getattr(self, name) == "auto":
                auto[name] = gpu
        if self.validation_batch == "auto":
            auto["validation_batch"] = VALIDATION_BATCH if gpu else None
        return dataclasses.replace(self, **auto)


def _direct(fn, *args, what: str, **kwargs):
    return fn(*args, **kwargs)


def report_epoch(monitor: EpochMonitor, epoch: int, logs: dict) -> bool:
    """The end of one epoch of one trial, solo or a lane's member: record its history, report
    ``val_accuracy`` as the intermediate value, ask the pruner where due. True: stop it.

    Solo trials (through the Keras callback) and lane members (:mod:`search.train.lanes`, from the
    worker's lane loop) both end their epochs here, so per-epoch work has one place to hook.
    """
    return monitor.end_epoch(epoch, logs)


def _fit_callback(monitor: EpochMonitor, after: Callable[[int], None] | None = None):
    """The Keras callback of a trial's ``fit``: report each epoch, then ``after(epoch)`` (its
    checkpoint's snapshot) unless it stops there."""
    from search.train.model import epoch_callback

    started = []

    def begin():
        if not started:  # a seeded trial calls fit once per epoch
            started.append(True)
            monitor.start()

    def end(epoch, logs):
        if monitor.stop_reason is not None:
            return True  # pruned or diverged: a fit's own loop that trains on is not recorded past it
        # Keras numbers a fit's epochs from its initial_epoch; a user's fit that calls
        # model.fit twice (a warm-up, then the rest) starts again at 0: its epochs go on
        # from those already seen, so each is reported once and counted in the budget.
        epoch = max(epoch, monitor.epochs_run)
        stop = report_epoch(monitor, epoch, logs)
        if not stop and after is not None:
            after(epoch)
        return stop

    return epoch_callback(begin, end)


@dataclass
class TrialRun:
    """One trial while it trains: its rate, its monitor and its queued writes."""

    trial: object
    lr: float
    monitor: EpochMonitor
    writes: DeferredWrites
    started: float
    checkpoints: Checkpointer | None = None


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
                 call: Callable | None = None, options: FitOptions | None = None):
        from search.train.model import ModelCache

        self.config = config
        self.dataset = dataset
        self.on_epoch = on_epoch
        # ``call(fn, *args, what=...)`` runs a storage call; workers pass one that retries
        # while the database is unreachable.
        self.call = call or _direct
        self.options = (options or FitOptions()).resolved(gpu=on_gpu())
        self.checkpoint_s = checkpoint_interval()  # read once: a bad value stops the worker before any trial
        self._models = ModelCache()

    def begin(self, trial, attrs: dict | None = None) -> TrialRun:
        """Start ``trial``: sample its rate, queue where it runs (and ``attrs``), make its monitor."""
        cfg, opt, call = self.config, self.options, self.call
        lr = call(suggest, trial, cfg, what="sampling a learning rate") if cfg.is_recipe else None
        writes = DeferredWrites(call, background=opt.deferred_writes)
        for key, value in {**runtime_info(), **(attrs or {})}.items():
            writes.submit(trial.set_user_attr, key, value, what="recording where the trial runs")
        hook = None
        if self.on_epoch is not None:
            hook = functools.partial(self.on_epoch, trial.number)
        monitor = EpochMonitor(trial, on_epoch=hook, call=call, schedule=pruner_schedule(cfg, budget=opt.pruner_budget), writes=writes,
                               objective=cfg.objective, maximize=cfg.direction == "maximize")
        checkpoints = Checkpointer(trial, self.model_key(), call, interval=self.checkpoint_s, extra={"seed": cfg.seed, "batch_size": cfg.batch_size})
        return TrialRun(trial, lr, monitor, writes, time.perf_counter(), checkpoints)

    def model_key(self) -> str:
        """What a checkpoint's arrays belong to: a checkpoint of another model is not resumed."""
        return f"recipe:{self.config.hidden_units}"

    def resume(self, run: TrialRun, model, params: dict, *, restore_into: Callable | None = None) -> int:
        """Restore the checkpoint of ``run``'s earlier attempts into ``model`` (or through
        ``restore_into(snapshot)``: a lane member); return the epoch to train next (0: none, or
        none usable). See :mod:`search.train.checkpoint`."""
        start = run.checkpoints.resume(model, run.monitor, params, self.config.epochs, restore_into=restore_into)
        if start:
            run.writes.submit(run.trial.set_user_attr, "resumed_from", run.checkpoints.resumed_from, what="recording where the trial resumed from")
        return start

    def save_on_failure(self, run: TrialRun, error: BaseException) -> None:
        """A trial that fails by its environment or is interrupted (and so is retried) writes
        its last snapshot now, for the retry to resume from."""
        import optuna

        from search.errors import ConfigError, TrialConfigError

        if isinstance(error, (StorageError, TrialConfigError, ConfigError, optuna.exceptions.UpdateFinishedTrialError)):
            run.checkpoints.close()  # the database is away, no retry will come, or a sweep's retry already took over
        else:
            run.checkpoints.stop()

    def finish(self, run: TrialRun, test_accuracy, *, trained: bool | None = None) -> float:
        """Record the trained trial; return its best val_accuracy or raise ``optuna.TrialPruned``."""
        import optuna

        if run.checkpoints is not None:
            run.checkpoints.finish()
            for key, value in run.checkpoints.attrs().items():
                run.writes.submit(run.trial.set_user_attr, key, value, what="recording the trial's checkpoints")
        run.writes.close()  # every report and attribute is in the database before the results
        monitor = run.monitor
        self._record(run.trial, monitor, test_accuracy, time.perf_counter() - run.started, trained=trained)
        if monitor.stop_reason is not None:
            raise optuna.TrialPruned(monitor.detail)
        if monitor.best_value is None:
            raise optuna.TrialPruned(f"no finite {self.config.objective} in {monitor.epochs_run} epochs")
        return monitor.best_value

    def lanes(self, lanes: int):
        """The lane model of a ``--lanes`` worker (:class:`search.train.lanes.RecipeLanes`)."""
        from search.train.lanes import RecipeLanes

        return RecipeLanes(self, lanes)

    def finish_metrics(self, run: TrialRun, test: dict) -> float:
        """Record a lane member's trial with its test metrics; its value as :meth:`finish`."""
        return self.finish(run, test.get("accuracy"))

    def abort(self, run: TrialRun, error: BaseException | None) -> None:
        """Save what a failing trial trained so far (unless the database is what failed)."""
        import optuna

        run.writes.close(raise_errors=False)
        if error is None or isinstance(error, StorageError):  # with the database gone, recording would only wait again
            return
        if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):  # a sweep failed it: nothing can be written
            return
        try:
            self._record(run.trial, run.monitor, None, time.perf_counter() - run.started)
        except Exception:
            pass  # the original error matters more than a history we could not save

    def __call__(self, trial) -> float:
        cfg, ds = self.config, self.dataset
        opt = self.options
        run = self.begin(trial)
        lr, monitor = run.lr, run.monitor
        model = None
        try:
            model = self._model(trial)
            start = self.resume(run, model, {PARAM: lr})
            if start == 0 and run.checkpoints.earlier:
                model = self._model(trial)  # a checkpoint that did not fit may have been half restored
            data = device_data(ds) if opt.device_data else ds
            last = cfg.epochs - 1

            def snapshot(epoch):
                if epoch < last:  # after the last epoch the trial ends: nothing to resume
                    run.checkpoints.epoch_end(model, epoch, monitor)

            if monitor.stop_reason is None:  # else the pruner stopped it at its resumed epoch
                self._fit_epochs(model, data, start, [_fit_callback(monitor, snapshot)], stopped=lambda: monitor.stop_reason is not None)
            if start and monitor.stop_reason is not None and monitor.epochs_run <= start:
                test_accuracy = None  # pruned on resuming: nothing trained, nothing to test
            elif opt.skip_test_eval and ds.validation == "test":
                # The last epoch validated the final weights on the test set already.
                test_accuracy = monitor.history["val_accuracy"][-1]
                test_accuracy = math.nan if test_accuracy is None else test_accuracy
            else:
                batch = opt.validation_batch or cfg.batch_size
                _, test_accuracy = model.evaluate(data.x_test, data.y_test, batch_size=batch, verbose=0)
        except Exception as e:
            model = None
            self.save_on_failure(run, e)
            self._models.discard()  # a failed fit may leave the model or the backend broken
            self.abort(run, e)
            failure = trial_error(e, trial.number, cfg.batch_size)
            if failure is e:
                raise
            raise failure from e
        except BaseException as e:  # KeyboardInterrupt: let queued writes land before the worker fails the trial
            self.save_on_failure(run, e)
            self.abort(run, None)
            raise
        finally:
            model = None
            if not opt.reuse_model:
                self._models.discard()
        return self.finish(run, test_accuracy, trained=test_accuracy is not None)

    def _fit_epochs(self, model, data, start: int, callbacks: list, stopped: Callable[[], bool] = lambda: False) -> None:
        """Fit ``model`` from epoch ``start`` to the study's last, as every recipe trial trains:
        Keras's shuffle, or with ``--seed`` one call per epoch on :func:`epoch_order`'s batches."""
        from search.train.data import epoch_order

        cfg, opt = self.config, self.options
        fit = functools.partial(model.fit, batch_size=cfg.batch_size, validation_data=(data.x_val, data.y_val),
                                validation_batch_size=opt.validation_batch, verbose=0, callbacks=callbacks)
        if cfg.seed is None:
            fit(data.x_train, data.y_train, epochs=cfg.epochs, initial_epoch=start, shuffle=True)
            return
        n = len(self.dataset.x_train)
        for epoch in range(start, cfg.epochs):
            # Each epoch's order depends on the study's seed and the epoch only, so a lane
            # member, a resumed trial and a retrained one see the batches this trial would have.
            order = epoch_order(cfg.seed, epoch, n)
            fit(take(data.x_train, order), take(data.y_train, order), epochs=epoch + 1, initial_epoch=epoch, shuffle=False)
            if stopped():
                break

    def retrain(self, params: dict, number: int, callbacks: list):
        """Train trial ``number``'s model again from ``params``, as the trial trained it, for the
        configuration's epochs (``hpsearch export``), and return it. With the study's seed the
        weights are the trial's own after as many epochs; without, another draw."""
        import optuna

        model = self._model(optuna.trial.FixedTrial(params, number=number))
        data = device_data(self.dataset) if self.options.device_data else self.dataset
        self._fit_epochs(model, data, 0, callbacks)
        return model

    def _model(self, trial):
        """The trial's model, built through the recipe's ``build(hp)``
        (:class:`search.train.recipe.Recipe`): the worker's cached one, reset to the trial's
        rate with initial weights drawn after seeding."""
        from search.study.hyperparameters import HyperParameters
        from search.train.model import steps_per_execution
        from search.train.recipe import Recipe

        cfg, opt = self.config, self.options
        spe = 1
        if opt.steps_per_execution:
            spe = steps_per_execution(math.ceil(len(self.dataset.x_train) / cfg.batch_size))
        if not opt.reuse_model:
            self._models.discard()  # the recipe's way: a new session and model for each trial
        recipe = Recipe.of_study(cfg, models=self._models, steps_per_execution=spe, jit_compile=opt.jit_compile)
        return recipe.build(HyperParameters(trial))

    def _record(self, trial, monitor: EpochMonitor, test_accuracy, seconds: float, trained: bool | None = None) -> None:
        ta = float(test_accuracy) if test_accuracy is not None and math.isfinite(test_accuracy) else None
        attrs = {
            "history": monitor.history,
            "epochs_run": monitor.epochs_run,
            "best_epoch": monitor.best_epoch,
            "test_accuracy": ta,
            "train_seconds": round(seconds, 3),
            "epoch_seconds": monitor.epoch_seconds,
            "stop_reason": monitor.stop_reason or ("completed" if (test_accuracy is not None if trained is None else trained) else "error"),
        }
        if monitor.detail:
            attrs["stop_detail"] = monitor.detail
        for key, value in attrs.items():
            self.call(trial.set_user_attr, key, value, what=f"recording trial {trial.number}")


class ModelObjective(Objective):
    """A trial of a user's model: ``build(hp)``, then ``fit`` (the user's, if they wrote one).

    ``hp`` is :class:`search.study.hyperparameters.HyperParameters` on the trial, so each
    hyperparameter the build draws is one Optuna parameter. The model is built anew for each
    trial after ``keras.backend.clear_session()`` (as KerasTuner does); with ``--seed`` the
    backend is seeded with the study's seed plus the trial's number first. ``fit`` gets the
    training arrays, the validation data, the study's epochs, the callback that reports each
    epoch, and (unless the user's own ``fit`` sets them) the study's batch size.

    A ``build`` that raises, or returns no compiled model, fails this trial only (not
    retried); an ``--objective`` the logs never hold stops the worker in one line.
    """

    def __init__(self, config: StudyConfig, dataset: Dataset, hypermodel, **kwargs):
        super().__init__(config, dataset, **kwargs)
        self.hypermodel = hypermodel

    def model_key(self) -> str:
        return f"{self.config.model}@{self.config.model_digest or ''}"

    def fit_kwargs(self, callbacks: list, *, initial_epoch: int = 0) -> dict:
        """What ``fit(hp, model, x, y, **kwargs)`` gets besides the arrays: the validation data,
        the study's epochs, ``callbacks``, the epoch a resumed trial goes on from and, unless
        the user's own ``fit`` sets it, the batch size."""
        ds, cfg = self.dataset, self.config
        kwargs = {"validation_data": (ds.x_val, ds.y_val), "epochs": cfg.epochs, "verbose": 0, "callbacks": callbacks}
        if initial_epoch:
            kwargs["initial_epoch"] = initial_epoch  # Keras's own way to go on from an epoch
        if not self.hypermodel.own_fit:
            kwargs["batch_size"] = cfg.batch_size  # a fit of the user's own may tune it (KerasTuner's contract)
        return kwargs

    def retrain(self, params: dict, number: int, callbacks: list):
        """Build and fit trial ``number``'s model again from ``params`` as :meth:`__call__`
        did, for the configuration's epochs (``hpsearch export``); return it."""
        import optuna

        from search.study.hyperparameters import HyperParameters
        from search.train.backend import clear_session
        cfg, ds = self.config, self.dataset
        hp = HyperParameters(optuna.trial.FixedTrial(params, number=number))
        clear_session()
        if cfg.seed is not None:
            set_seed(cfg.seed + number)
        model = self.hypermodel.build(hp)
        self.hypermodel.check(model)
        from search.train.model import epoch_callback

        seen: list[int] = []
        counted = epoch_callback(lambda: None, lambda epoch, logs: seen.append(epoch))
        result = self.hypermodel.fit(hp, model, ds.x_train, ds.y_train, **self.fit_kwargs([*callbacks, counted]))
        history = _returned_history(result)
        if not seen and history:
            # a fit that did not pass the callbacks on (see _value_from_result): its History, after training
            for epoch in range(len(history["loss"])):
                for callback in callbacks:
                    callback.on_epoch_end(epoch, {k: v[epoch] for k, v in history.items() if epoch < len(v)})
        return model

    def lanes(self, lanes: int):
        """The lane model of a ``--lanes`` worker (:class:`search.train.modellanes.ModelLanes`)."""
        from search.train.modellanes import ModelLanes

        return ModelLanes(self)

    def finish_metrics(self, run: TrialRun, test: dict) -> float:
        """Record a lane member's trial with its test metrics; its value as :meth:`finish`."""
        test = {k: float(v) for k, v in (test or {}).items() if isinstance(v, (int, float))}
        run.writes.submit(run.trial.set_user_attr, "test_metrics", test, what="recording the test metrics")
        return self.finish(run, test.get("accuracy"), trained=True)

    def __call__(self, trial) -> float:
        from search.errors import TrialConfigError
        from search.study.hyperparameters import HyperParameters
        from search.train.backend import clear_session
        cfg, ds = self.config, self.dataset
        run = self.begin(trial)
        monitor = run.monitor
        result = None
        try:
            hp = HyperParameters(trial)
            clear_session()
            if cfg.seed is not None:
                set_seed(cfg.seed + trial.number)
            try:
                model = self.hypermodel.build(hp)
                self.hypermodel.check(model)
            except Exception as e:
                raise TrialConfigError(f"trial {trial.number}: build(hp) failed for {hp.values}: {type(e).__name__}: {one_line(e, 300)}") from e

            # A retry goes on from its earlier attempt's checkpoint: Keras's own state (the
            # weights and the optimizer's variables), restored into the model just built.
            start = self.resume(run, model, dict(trial.params))
            if start == 0 and run.checkpoints.earlier:
                clear_session()  # a checkpoint that did not fit may have been half restored
                if cfg.seed is not None:
                    set_seed(cfg.seed + trial.number)
                model = self.hypermodel.build(hp)
            last = cfg.epochs - 1

            # a model left uncompiled, trained by its fit's own loop and optimizer, has no state
            # hpsearch could resume (and such a loop need not honour initial_epoch)
            resumable = getattr(model, "optimizer", None) is not None

            def snapshot(epoch):
                if epoch < last and resumable:
                    run.checkpoints.epoch_end(model, epoch, monitor)

            kwargs = self.fit_kwargs([_fit_callback(monitor, snapshot)], initial_epoch=start)
            if monitor.stop_reason is None:
                result = self.hypermodel.fit(hp, model, ds.x_train, ds.y_train, **kwargs)
                if monitor.epochs_run == 0:  # no epoch reached hpsearch's callback
                    _value_from_result(monitor, result, trial.number)
            test = None
            if start and monitor.stop_reason is not None and monitor.epochs_run <= start:
                pass  # pruned on resuming: nothing trained, nothing to test
            elif ds.validation != "test":
                test = model.evaluate(ds.x_test, ds.y_test, verbose=0, return_dict=True)
            elif monitor.epochs_run:
                test = {k.removeprefix("val_"): v[-1] for k, v in monitor.history.items() if k.startswith("val_")}
        except Exception as e:
            self.save_on_failure(run, e)
            clear_session()
            self.abort(run, e)
            failure = trial_error(e, trial.number, cfg.batch_size)
            if failure is e:
                raise
            raise failure from e
        except BaseException as e:
            self.save_on_failure(run, e)
            self.abort(run, None)
            raise
        test = {k: float(v) for k, v in (test or {}).items() if isinstance(v, (int, float))}
        run.writes.submit(trial.set_user_attr, "test_metrics", test, what="recording the test metrics")
        return self.finish(run, test.get("accuracy"), trained=True)


def _returned_history(result) -> dict | None:
    """The epochs of a Keras ``History`` that a ``fit`` returned (None: it returned no History,
    or one of no epoch)."""
    history = getattr(result, "history", None)
    return history if isinstance(history, dict) and history.get("loss") else None


#: The trial whose fit's History was read after training, once a process (see :func:`_value_from_result`).
_UNTRACKED_FIT_WARNED: list[int] = []


def _value_from_result(monitor: EpochMonitor, result, number: int) -> None:
    """What a ``fit`` returned when hpsearch's callback saw no epoch (KerasTuner's
    ``HyperModel.fit`` contract): a number, or a dict holding the objective, from a training
    loop of its own; or the History of a ``model.fit`` to which it did not pass hpsearch's
    callbacks (``callbacks=[...]`` of its own instead of ``**kwargs``). KerasTuner reads such a
    History, so hpsearch does too: its epochs are recorded and reported after training, with a
    warning, since nothing could prune, checkpoint or show them while they trained."""
    objective = monitor.objective
    history = _returned_history(result)
    if history:
        if not _UNTRACKED_FIT_WARNED:  # once a worker: every trial of the model does the same
            _UNTRACKED_FIT_WARNED.append(number)
            log.warning("trial %s: fit(hp, model, ...) did not pass hpsearch's callbacks on to model.fit (**kwargs): its %d epoch(s) were "
                        "read from the History it returned, after training, so nothing could prune, checkpoint or show them; pass **kwargs on "
                        "(docs/your-model.md)", number, len(history["loss"]))
        monitor.resume(history, [], ask=False)
        return
    value = None
    if isinstance(result, (int, float)):
        value = float(result)
    elif isinstance(result, dict) and isinstance(result.get(objective), (int, float)):
        value = float(result[objective])
    if value is not None and math.isfinite(value):
        monitor.best_value, monitor.best_epoch = value, None
