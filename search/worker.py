"""The loop of one worker process: claim a trial slot, train, tell, repeat.

A worker runs trials until the study holds ``target`` finished (complete or pruned) trials in
total, across all workers. Optuna's ``n_trials`` counts per worker and ``MaxTrialsCallback``
overshoots by up to one trial per worker (optuna#2907, #3518), so a worker claims each trial
under the study's advisory lock: it counts finished plus running trials in one SQL query and
asks for a new trial only while that sum is below the target. The total is therefore exact.

A running trial writes a heartbeat; trials of workers that died are failed once their heartbeat
is older than the grace period, and Optuna's ``RetryFailedTrialCallback`` re-enqueues them.
SIGINT and SIGTERM close the running trial as FAIL with the reason, re-enqueue its parameters
so a rerun resumes it, and exit; no trial is left RUNNING.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from search.config import StudyConfig
from search.errors import (
    ConfigError,
    HpsearchError,
    StorageError,
    TrialConfigError,
    TrialEnvironmentError,
    WorkerFatalError,
    WorkerInterrupted,
)
from search.progress import Progress
from search.space import PARAM
from storage import retrying, state_counts, study_lock

__all__ = ["WorkerResult", "run_worker", "MAX_CONSECUTIVE_FAILURES", "MAX_ATTEMPTS"]

log = logging.getLogger("hpsearch.worker")

MAX_CONSECUTIVE_FAILURES = 3
#: How often one learning rate is tried when its trials fail by the environment.
MAX_ATTEMPTS = 3
POLL_SECONDS = 2.0


@dataclass
class WorkerResult:
    trials_run: int
    finished: int
    target: int


class _Heartbeat:
    """Record the heartbeats of running trials every interval from a daemon thread, and sweep
    stale trials.

    ``trial_ids`` is one trial's id, or a set a lane worker adds its lanes' trials to and
    removes them from as they start and end. Each beat also fails the trials of workers that
    died (see :func:`sweep_stale`), so dead workers' slots are freed even when no worker is
    asking for a new trial.
    """

    def __init__(self, storage, trial_ids: int | set, sweep=None):
        self.storage, self.sweep = storage, sweep
        self.trial_ids = {trial_ids} if isinstance(trial_ids, int) else trial_ids
        self.interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.interval:
            self._beat()
            self._thread = threading.Thread(target=self._run, name="hpsearch-heartbeat", daemon=True)
            self._thread.start()
        return self

    def beat(self, trial_id: int) -> None:
        """Beat ``trial_id`` now (a lane's trial as it starts) and from then on every interval."""
        self.trial_ids.add(trial_id)
        if self.interval:
            self._beat_one(trial_id)

    def _beat_one(self, trial_id: int) -> None:
        try:
            self.storage.record_heartbeat(trial_id)
        except Exception as e:  # a dropped database must not kill training; pre-ping reconnects
            log.warning("heartbeat for trial %s failed: %s", trial_id, type(e).__name__)

    def _beat(self):
        for trial_id in list(self.trial_ids):
            self._beat_one(trial_id)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._beat()
            if self.sweep is not None:
                try:
                    self.sweep()
                except Exception as e:
                    log.warning("sweeping stale trials failed: %s", type(e).__name__)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Signals:
    """Turn SIGINT/SIGTERM into WorkerInterrupted in the main thread.

    The exception is raised only while a trial trains (inside :meth:`interruptible`); at any
    other moment (claiming a trial, telling its result) the signal is remembered and acted on
    at the next safe point, so no trial is ever left RUNNING without a heartbeat.
    """

    def __init__(self):
        self.received: str | None = None
        self._old = {}
        self._armed = False

    def _handler(self, signum, frame):
        first = self.received is None
        self.received = self.received or signal.Signals(signum).name
        if first and self._armed:
            self._armed = False
            raise WorkerInterrupted(f"interrupted by {self.received}")

    def check(self) -> None:
        if self.received is not None:
            raise WorkerInterrupted(f"interrupted by {self.received}")

    @contextmanager
    def interruptible(self):
        self.check()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@contextmanager
def _native_stderr_captured():
    """Hold back what native code writes to fd 2 while the backend starts.

    TensorFlow 2.21 prints absl INFO lines ("oneDNN custom operations are on", "Could not find
    cuda drivers") before its logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence
    them. They are kept and replayed if the start fails, so nothing useful is lost.
    """
    import tempfile

    if os.environ.get("HPSEARCH_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def configure_backend(require_gpu: str | None = None) -> None:
    """Start the Keras backend quietly; let several workers share one GPU.

    Neither TensorFlow nor JAX may grab the GPU's memory up front, or a second worker on the
    same card fails: TensorFlow's memory growth must be set before the first operation, JAX's
    preallocation switched off before it is imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # JAX's counterpart of memory growth: by default each process takes 75% of the card.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    missing = False
    with _native_stderr_captured():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError:  # already initialised in this process
                    pass
            missing = require_gpu is not None and not gpus
    if missing:  # raised outside the capture: TensorFlow's start-up chatter is not the story
        raise ConfigError(
            f"--gpu {require_gpu}: TensorFlow sees no GPU there (no such GPU, or no CUDA libraries): check `nvidia-smi -L`, install hpsearch[cuda], or drop --gpu"
        )


def _finished(counts: dict) -> int:
    return counts["COMPLETE"] + counts["PRUNED"]


def _best(study):
    from optuna.trial import TrialState

    from search.study import best_own

    t = best_own(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return None if t is None else (t.value, t.params.get(PARAM))


def sweep_stale(study, storage) -> int:
    """Fail the RUNNING trials of dead workers; return how many were failed.

    Those are the trials whose heartbeat is older than the grace period (Optuna's
    ``fail_stale_trials``, whose callback re-enqueues their parameters). A trial with no
    heartbeat record at all is never failed: hpsearch records one when it claims a trial
    (:func:`_claim`), so such a trial is a plain Optuna objective's, which hpsearch cannot
    tell alive from dead (issue 15).
    """
    import optuna

    before = state_counts(storage.engine, study._study_id)["FAIL"]
    optuna.storages.fail_stale_trials(study)  # a no-op when heartbeats are off
    return state_counts(storage.engine, study._study_id)["FAIL"] - before


def _claim(study, storage, target: int):
    """Under the study's slot lock: a new trial, or None when all slots are taken/finished.

    Only hpsearch's own trials count (a plain Optuna objective may share the study, see
    :mod:`storage.foreign`). The claimed trial gets its first heartbeat at once, inside the
    lock, so every trial hpsearch runs has a heartbeat record from its start.
    """
    from storage import own_counts

    with study_lock(storage, study.study_name, "slots"):
        sweep_stale(study, storage)
        counts = own_counts(storage.engine, study._study_id, PARAM)
        if _finished(counts) >= target:
            return counts, None
        if _finished(counts) + counts["RUNNING"] >= target:
            return counts, None
        trial = study.ask()
        if storage.get_heartbeat_interval():
            storage.record_heartbeat(trial._trial_id)
        return counts, trial


def _tell(study, trial, call, *, value=None, state=None) -> str:
    """Tell the trial's result, retrying while the database is away.

    If the database stayed away past the grace period, a sweep may already have failed (and
    re-enqueued) the trial; its result is then dropped rather than counted twice.
    """
    import optuna

    try:
        if state is None:
            call(study.tell, trial, value, what=f"telling the result of trial {trial.number}")
            return "complete"
        call(study.tell, trial, state=state, what=f"telling the result of trial {trial.number}")
        return "pruned"
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %s was failed by a stale-trial sweep while its result was on the way; it is retried", trial.number)
        return "lost"


def _retry(study, trial, reason: str) -> None:
    """Enqueue the failed trial's parameters again, up to MAX_ATTEMPTS per learning rate."""
    attempt = int(trial.user_attrs.get("attempt", 1))
    if attempt >= MAX_ATTEMPTS or PARAM not in trial.params:
        return
    attrs = {"attempt": attempt + 1, "retry_of": trial.number, "retry_reason": reason}
    if "source" in trial.user_attrs:
        attrs["source"] = trial.user_attrs["source"]
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)


def _fail(study, trial, reason: str, *, retry: bool) -> None:
    import optuna

    def record():
        trial.set_user_attr("fail_reason", reason[:500])
        try:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # a sweep already failed it (and re-enqueued it)
        if retry:
            _retry(study, trial, reason[:200])

    try:
        retrying(record, what=f"recording the failure of trial {trial.number}", log=log)
    except Exception as e:  # the database stayed away; the stale-trial sweep cleans up
        log.warning("could not record the failure of trial %s: %s", trial.number, type(e).__name__)


def _settle(study, trial, call, body) -> tuple[str, float | None]:
    """Run ``body`` (train ``trial``, return its value or raise) and record the outcome once.

    Returns the state (``"complete"``, ``"pruned"``, ``"lost"`` (see :func:`_tell`) or
    ``"failed"``) and the value returned, if any.
    Interrupts, storage errors and fatal errors are the caller's to handle; the ladder below
    is the one classification of a trial's fate, for solo and lane trials alike.
    """
    import optuna

    try:
        value = body()
    except optuna.TrialPruned:
        return _tell(study, trial, call, state=optuna.trial.TrialState.PRUNED), None
    except (WorkerInterrupted, KeyboardInterrupt):
        raise
    except StorageError:
        # The database stayed away past HPSEARCH_DB_RETRY_S: recording the failure would
        # only wait again. Once it is back, a sweep fails the trial (its heartbeat went
        # stale) and retries its learning rate.
        raise
    except TrialConfigError as e:
        _fail(study, trial, str(e), retry=False)
        return "failed", None
    except HpsearchError as e:
        _fail(study, trial, str(e), retry=True)
        if not isinstance(e, TrialEnvironmentError):
            raise
        return "failed", None
    except Exception as e:  # a bug or backend error in this trial: record it, retry, go on
        _fail(study, trial, f"{type(e).__name__}: {e}", retry=True)
        log.exception("trial %s failed", trial.number)
        return "failed", None
    return _tell(study, trial, call, value=value), value


class _Done:
    """What a worker does after each trial it ran: show it, refresh the landscape, count
    failures in a row and stop the worker after too many."""

    def __init__(self, study, storage, target: int, progress: Progress, call, best_so_far, max_consecutive_failures: int):
        self.study, self.storage, self.target, self.progress = study, storage, target, progress
        self.call, self.best_so_far, self.max_failures = call, best_so_far, max_consecutive_failures
        self.consecutive_failures = 0

    def __call__(self, trial, lr: float | None, state: str, shown) -> None:
        progress = self.progress
        self.consecutive_failures = self.consecutive_failures + 1 if state == "failed" else 0
        frozen = self.call(self.storage.get_trial, trial._trial_id, what="reading the trial back")
        if state == "pruned":
            shown = frozen.value
        progress.set_study(progress.done + (state in ("complete", "pruned")), self.best_so_far())
        progress.trial_done(
            trial.number, lr, state, shown, frozen.user_attrs.get("epochs_run"),
            frozen.user_attrs.get("stop_detail") or frozen.user_attrs.get("fail_reason"),
        )
        if state in ("complete", "pruned"):
            _refresh_landscape(self.study, self.storage, force=progress.done >= self.target)
        if self.consecutive_failures >= self.max_failures:
            raise WorkerFatalError(
                f"{self.consecutive_failures} trials failed in a row (last: {frozen.user_attrs.get('fail_reason', 'unknown')}): fix the cause and rerun; finished trials are kept"
            )


def _refresh_landscape(study, storage, *, force: bool) -> None:
    """Refresh the study's loss-landscape figures, rate-limited across the fleet (issue 3).

    The figures are a view: failing to refresh them must never fail a trial or the worker.
    """
    try:
        from search.landscape import maybe_refresh_landscape

        maybe_refresh_landscape(study, storage, force=force)
    except Exception as e:
        from storage.url import scrub

        detail = scrub(" ".join(str(e).split())[:200], getattr(storage, "url", None))
        log.warning("could not refresh the loss landscape of study %s: %s: %s", study.study_name, type(e).__name__, detail)


def _run_lanes(study, storage, config: StudyConfig, dataset, target: int, lanes: int, *, objective, progress: Progress,
               call, sweep, best_so_far, signals: _Signals, done: _Done, poll: float, rates: dict) -> WorkerResult:
    """The lane worker's loop: up to ``lanes`` trials train together as one model (issue 12).

    Each lane holds one trial, claimed under the study lock like a solo trial's (so the budget
    stays exact) and beaten by the worker's heartbeat. At every epoch boundary each member's
    epoch is reported as a solo trial's is (:func:`search.objective.report_epoch`); a member
    that completed, was pruned or diverged is told and leaves its lane, which takes the next
    trial with fresh weights, zeroed Adam state and its own rate, without recompiling. Idle
    lanes (the budget is all claimed) keep training masked: nothing of them is reported.
    SIGINT/SIGTERM fail every running lane trial and re-enqueue its rate; an error of the
    model itself fails every member as an environment failure, retried, and rebuilds it.
    """
    from search.data import device_data
    from search.lanes import LaneModel, lane_orders
    from search.model import clear_session
    from search.objective import classify_failure, report_epoch

    cfg, opt = config, objective.options
    data = device_data(dataset)  # converted once: every step gathers its batches from these
    validate_batch = opt.validation_batch or cfg.batch_size
    n = len(dataset.x_train)
    test_is_val = opt.skip_test_eval and dataset.validation == "test"
    model = None
    active: dict[int, object] = {}  # lane -> TrialRun
    epoch_of: dict[int, int] = {}  # lane -> the member's next epoch
    trials_run = 0
    claim_after = 0.0
    full = False  # the last claim found the budget taken (finished + running)
    waited = False

    def close(lane: int, test_accuracy) -> None:
        run = active.pop(lane)
        epoch_of.pop(lane, None)
        state, shown = _settle(study, run.trial, call, lambda: objective.finish(run, test_accuracy))
        heartbeat.trial_ids.discard(run.trial._trial_id)
        done(run.trial, run.lr, state, shown)

    def fail_all(reason: str, *, error: BaseException | None) -> None:
        for lane, run in sorted(active.items()):
            objective.abort(run, error)
            _fail(study, run.trial, reason, retry=True)
            heartbeat.trial_ids.discard(run.trial._trial_id)
        active.clear()
        epoch_of.clear()

    with _Heartbeat(storage, set(), sweep=sweep) as heartbeat:
        try:
            while True:
                signals.check()
                if len(active) < lanes and time.monotonic() >= claim_after:
                    while len(active) < lanes:
                        counts, trial = call(_claim, study, storage, target, what="claiming a trial")
                        progress.set_study(_finished(counts), best_so_far())
                        if trial is None:
                            full = True
                            if _finished(counts) >= target and not active:
                                return WorkerResult(trials_run, _finished(counts), target)
                            if not active and not waited:
                                progress.message(f"[{_finished(counts)}/{target} trials] waiting for {counts['RUNNING']} running trial(s) of other workers")
                                waited = True
                            # Try again at the next epoch boundary after a poll interval: a
                            # failed trial elsewhere may free a slot.
                            claim_after = time.monotonic() + poll
                            break
                        full = waited = False
                        heartbeat.beat(trial._trial_id)
                        trials_run += 1
                        lane = min(set(range(lanes)) - set(active))
                        run = objective.begin(trial, {"lanes": lanes, "lane": lane})
                        active[lane], epoch_of[lane] = run, 0
                        rates[trial.number] = run.lr
                        if model is None:
                            model = LaneModel(lanes, hidden_units=cfg.hidden_units, batch_size=cfg.batch_size)
                        model.reset_lane(lane, run.lr, None if cfg.seed is None else cfg.seed + trial.number)
                        run.monitor.start()
                if not active:
                    time.sleep(poll if full else 0)
                    continue
                orders = lane_orders(cfg.seed, [epoch_of.get(k, 0) for k in range(lanes)], n)
                try:
                    with signals.interruptible():
                        train = model.train_epoch(data.x_train, data.y_train, orders)
                        val = model.evaluate(data.x_val, data.y_val, validate_batch)
                except (WorkerInterrupted, KeyboardInterrupt):
                    raise
                except Exception as e:
                    failure = classify_failure(e, active[min(active)].trial.number, cfg.batch_size)
                    log.exception("the lanes model failed")
                    fail_all(f"the lanes model of {lanes} members failed: {type(failure).__name__}: {failure}", error=e)
                    model = None
                    clear_session()  # the failed model's state may be broken: build a new one
                    done.consecutive_failures += 1
                    if done.consecutive_failures >= done.max_failures:
                        raise WorkerFatalError(
                            f"{done.consecutive_failures} lane epochs failed in a row (last: {type(e).__name__}: {' '.join(str(e).split())[:200]}): fix the cause and rerun; finished trials are kept"
                        ) from e
                    continue
                leaving = []
                for lane, run in sorted(active.items()):
                    logs = {"loss": train["loss"][lane], "accuracy": train["accuracy"][lane],
                            "val_loss": val["loss"][lane], "val_accuracy": val["accuracy"][lane]}
                    stop = report_epoch(run.monitor, epoch_of[lane], {k: float(v) for k, v in logs.items()})
                    epoch_of[lane] += 1
                    if stop or epoch_of[lane] >= cfg.epochs:
                        leaving.append(lane)
                if leaving:
                    test = None if test_is_val else model.evaluate(data.x_test, data.y_test, validate_batch)
                    for lane in leaving:
                        close(lane, val["accuracy"][lane] if test is None else test["accuracy"][lane])
                claim_after = 0.0 if leaving else claim_after
        except WorkerInterrupted as e:
            fail_all(str(e), error=None)
            raise
        except KeyboardInterrupt:
            fail_all("interrupted by SIGINT", error=None)
            raise WorkerInterrupted("interrupted by SIGINT") from None
        except StorageError as e:
            # The database stayed away: recording would only wait again. Once it is back, a
            # sweep fails the lane trials (their heartbeats went stale) and retries their rates.
            for run in active.values():
                objective.abort(run, e)
            raise
        except BaseException as e:  # the worker stops (too many failures): its other lanes' trials are retried
            fail_all(f"the worker stopped: {type(e).__name__}: {' '.join(str(e).split())[:200]}", error=e)
            raise


def run_worker(study, storage, config: StudyConfig, dataset, target: int, *, progress: Progress | None = None,
               max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES, poll: float = POLL_SECONDS,
               gpu: str | None = None, fit_options=None, lanes: int = 1) -> WorkerResult:
    """Run trials of ``study`` until it holds ``target`` finished trials in total.

    Args:
        study: the joined ``optuna.Study`` (see :func:`search.study.open_study`).
        storage: the study's ``RDBStorage`` (from :func:`storage.open_storage`).
        config: the study's stored configuration.
        dataset: the preprocessed data, loaded once for this process.
        target: finished (complete + pruned) trials the study must hold.
        progress: where to show progress; None shows none.
        max_consecutive_failures: stop after this many failed trials in a row.
        gpu: the ``--gpu`` index this worker was given; it refuses to train without a GPU.
        fit_options: :class:`search.objective.FitOptions` for its trials (default: all
            speed-ups on; benchmarks turn them off to measure each).
        lanes: trials trained at once as one batched model (:mod:`search.lanes`); 1 trains
            one trial at a time with ``model.fit``.

    Raises:
        WorkerInterrupted: SIGINT/SIGTERM; the running trial(s) were closed as FAIL and re-enqueued.
        WorkerFatalError: ``max_consecutive_failures`` trials failed in a row.
    """
    from search.objective import Objective

    configure_backend(require_gpu=gpu)
    progress = progress or Progress(target, enabled=False)
    current = {"lr": None}

    rates: dict[int, float] = {}  # trial number -> rate, for the progress of lane trials

    def on_epoch(number, epoch, logs):
        progress.epoch(number, rates.get(number, current["lr"]) or 0.0, epoch, config.epochs, logs)

    def call(fn, *args, what: str, **kwargs):
        return retrying(fn, *args, what=what, log=log, **kwargs)

    def sweep():
        sweep_stale(study, storage)

    def best_so_far():
        # Only the progress display shows it: a worker that shows none skips the read.
        return call(_best, study, what="reading the best trial") if progress.enabled else None

    objective = Objective(config, dataset, on_epoch=on_epoch, call=call, options=fit_options)
    from storage.epochs import TARGET_ATTR

    # The budget, for readers that follow the study to its end (hpsearch query follow).
    call(storage.set_study_system_attr, study._study_id, TARGET_ATTR, target, what="recording the study's budget")
    done = _Done(study, storage, target, progress, call, best_so_far, max_consecutive_failures)
    if lanes > 1:
        with _Signals() as signals:
            return _run_lanes(study, storage, config, dataset, target, lanes, objective=objective, progress=progress,
                              call=call, sweep=sweep, best_so_far=best_so_far, signals=signals, done=done, poll=poll, rates=rates)
    trials_run = 0
    waited = False
    with _Signals() as signals:
        while True:
            signals.check()
            counts, trial = call(_claim, study, storage, target, what="claiming a trial")
            progress.set_study(_finished(counts), best_so_far())
            if trial is None:
                if _finished(counts) >= target:
                    return WorkerResult(trials_run, _finished(counts), target)
                if not waited:
                    progress.message(f"[{_finished(counts)}/{target} trials] waiting for {counts['RUNNING']} running trial(s) of other workers")
                    waited = True
                time.sleep(poll)
                continue
            waited = False
            trials_run += 1
            current["lr"] = None

            def train(trial=trial):
                with _Heartbeat(storage, trial._trial_id, sweep=sweep), signals.interruptible():
                    current["lr"] = trial.params.get(PARAM) if PARAM in trial.params else None
                    if current["lr"] is None:
                        # enqueued params become visible on the first suggest; sample now for progress
                        from search.space import suggest

                        current["lr"] = call(suggest, trial, config, what="sampling a learning rate")
                    return objective(trial)

            try:
                state, shown = _settle(study, trial, call, train)
            except WorkerInterrupted as e:
                _fail(study, trial, str(e), retry=True)
                raise
            except KeyboardInterrupt:
                _fail(study, trial, "interrupted by SIGINT", retry=True)
                raise WorkerInterrupted("interrupted by SIGINT") from None
            done(trial, current["lr"], state, shown)
