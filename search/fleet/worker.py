"""The loop of one worker process: claim a trial slot, train, tell, repeat.

A worker runs trials until the study holds ``target`` finished (complete or pruned) trials in
total, across all workers. Optuna's ``n_trials`` counts per worker and ``MaxTrialsCallback``
overshoots by up to one trial per worker (optuna#2907, #3518), so a worker claims each trial
under the study's advisory lock: it counts finished plus running trials in one SQL query and
asks for a new trial only while that sum is below the target. The total is therefore exact.
With an epoch budget (``--epoch-budget``) the same claim also counts the epochs the study's
trials have trained and hands out no trial once they reach it (trials running then finish).

A running trial writes a heartbeat; trials of workers that died are failed once their heartbeat
is older than the grace period, and the stale-trial callback re-enqueues them (the retry policy
of :mod:`storage.retry`, which the worker's own retries share). SIGINT and SIGTERM close the
running trial as FAIL with the reason, re-enqueue its parameters so a rerun resumes it, and exit
with 128 + the signal; no trial is left RUNNING. How each trial ended is decided and recorded by
:mod:`search.fleet.outcome`; the backend is started by :mod:`search.train.backend`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from search.train.backend import configure_backend, freeze_heap
from search.study.config import StudyConfig, shown_param
from search.errors import WorkerFatalError, WorkerInterrupted, one_line
from search.fleet.limits import MAX_CONSECUTIVE_FAILURES
from search.fleet.outcome import SWEPT, Outcome, classify, lanes_failure, record, settle, stopped
from search.fleet.progress import Progress, budget_reached, budget_text, trial_detail
from search.study.space import PARAM
from storage import bounded_waits, error_line, retrying, study_lock, trial_row_locked

__all__ = ["WorkerResult", "run_worker"]

log = logging.getLogger("hpsearch.worker")

POLL_SECONDS = 2.0


@dataclass
class WorkerResult:
    trials_run: int
    finished: int
    target: int | None


class _Heartbeat:
    """Record the heartbeats of running trials every interval from a daemon thread, and sweep
    stale trials.

    ``trial_ids`` is one trial's id, or a set a lane worker adds its lanes' trials to and
    removes them from as they start and end. Each beat also fails the trials of workers that
    died (see :func:`sweep_stale`), so dead workers' slots are freed even when no worker is
    asking for a new trial.

    A beat that fails (the database is unreachable) is tried again :data:`RETRY_S` after it
    began rather than a whole interval later, with no sweep in between, and each of its waits on the
    server is given up after :data:`WAIT_S` (:func:`storage.bounded_waits`): the trial's
    heartbeat comes back within seconds of the network, not after TCP's timeouts, a sweep and
    an interval. A 15 s link cut with a 25 s grace period (deploy/e2e hosts) failed the trial
    now and then, the heartbeat silent for more than the 10 s left (docs/faults.md).
    """

    #: Seconds from the start of a failed beat to its next try.
    RETRY_S = 1.0
    #: Seconds a beat waits on the server for any one step (connect, pre-ping, statement).
    WAIT_S = 5.0

    def __init__(self, storage, trial_ids: int | set, sweep=None):
        self.storage, self.sweep = storage, sweep
        self.trial_ids = {trial_ids} if isinstance(trial_ids, int) else trial_ids
        self.interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread = None
        self._failing = False  # beats have failed since the last one recorded
        self._last_ok = time.monotonic()  # the last beat recorded

    def __enter__(self):
        if self.interval:
            ok = self._beat()
            self._thread = threading.Thread(target=self._run, args=(ok,), name="hpsearch-heartbeat", daemon=True)
            self._thread.start()
        return self

    def beat(self, trial_id: int) -> None:
        """Beat ``trial_id`` now (a lane's trial as it starts) and from then on every interval."""
        self.trial_ids.add(trial_id)
        if self.interval:
            self._beat_one(trial_id)

    def _beat_one(self, trial_id: int) -> bool:
        try:
            with bounded_waits(self.WAIT_S):
                self.storage.record_heartbeat(trial_id)
        except Exception as e:  # a dropped database must not kill training; the next beat reconnects
            if not self._failing:
                self._failing = True
                log.warning("heartbeat for trial %s failed (%s); trying again until it is recorded", trial_id, error_line(e))
            return False
        return True

    def _beat(self) -> bool:
        ok = all([self._beat_one(trial_id) for trial_id in list(self.trial_ids)])
        if ok:
            if self._failing:
                log.warning("heartbeats recorded again, %.1f s after the last one", time.monotonic() - self._last_ok)
                self._failing = False
            self._last_ok = time.monotonic()
        return ok

    def _run(self, ok: bool = True):
        wait = self.interval if ok else 0.0
        while not self._stop.wait(wait):
            began = time.monotonic()
            ok = self._beat()
            if ok and self.sweep is not None:
                try:
                    self.sweep()
                except Exception as e:
                    log.warning("sweeping stale trials failed (%s)", error_line(e))
            # A failed beat is tried again RETRY_S after it began: at once if it waited that
            # long already (a connection given up), so no other thread's connect takes its turn.
            wait = self.interval if ok else max(0.0, min(self.interval, self.RETRY_S) - (time.monotonic() - began))

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
        self.received: int | None = None  # the first signal's number
        self._old = {}
        self._armed = False

    def _handler(self, signum, frame):
        first = self.received is None
        self.received = self.received or signum
        if first and self._armed:
            self._armed = False
            raise WorkerInterrupted(self.received)

    def check(self) -> None:
        if self.received is not None:
            raise WorkerInterrupted(self.received)

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


def _finished(counts: dict) -> int:
    return counts["COMPLETE"] + counts["PRUNED"]


def _reached(counts: dict, target: int | None, epoch_budget: int | None) -> bool:
    """:func:`budget_reached` on ``counts`` (whose ``"EPOCHS"`` :func:`_claim` adds where there is an epoch budget)."""
    return budget_reached(_finished(counts), counts.get("EPOCHS", 0), target, epoch_budget)


def _so_far(counts: dict, target: int | None, epoch_budget: int | None) -> str:
    return budget_text(_finished(counts), counts.get("EPOCHS"), target, epoch_budget)


def _best(study, config: StudyConfig):
    from optuna.trial import TrialState

    from search.study.create import best_own, own_param

    t = best_own(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), own_param(config), config.direction == "maximize")
    return None if t is None else (t.value, t.params.get(shown_param(config)))


def sweep_stale(study, storage) -> int:
    """Fail the RUNNING trials of dead workers; return how many this call failed.

    Those are the trials whose heartbeat is older than the grace period, failed and handed to
    the study's stale-trial callback (which re-enqueues their parameters), as Optuna's
    ``fail_stale_trials`` does. A trial with no heartbeat record at all is never failed:
    hpsearch records one when it claims a trial (:func:`_claim`), so such a trial is a plain
    Optuna objective's, which hpsearch cannot tell alive from dead (issue 15).

    Unlike ``fail_stale_trials``, a trial whose row is locked is left for a later sweep rather
    than waited for: a worker frozen inside a write (Ctrl-Z, a paused VM) holds its epoch
    row's foreign-key share lock on the trial, and failing the trial waits for the lock until
    that process runs again. Every worker sweeps from its heartbeat thread and inside the
    claim's lock, so one frozen worker stopped every other worker's heartbeats and claims
    (found by tests/test_swept_trial.py; tested in tests/test_foreign_trials.py).
    """
    import copy

    import optuna
    from optuna.trial import TrialState

    if not storage.get_heartbeat_interval():  # heartbeats off (SQLite, a plain study)
        return 0
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        if trial_row_locked(storage.engine, trial_id):
            log.info("trial id %s is stale but its row is locked (its worker is frozen inside a write): left for a later sweep", trial_id)
            continue
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker's sweep failed it first
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        for trial_id in failed:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return len(failed)


def _claim(study, storage, target: int | None, param: str | None = PARAM, asked: dict | None = None, epoch_budget: int | None = None):
    """Under the study's slot lock: a new trial, or None when all slots are taken/finished.

    ``target`` finished trials (None: no limit) and ``epoch_budget`` epochs trained (None: no
    limit) bound the run: no trial is claimed once either is reached, nor while the running
    trials would take the finished ones to ``target``. A trial running when the epoch budget is
    reached trains on to its end, so the study may train past it by what those trials still had
    to train; the returned counts carry the epochs trained as ``"EPOCHS"`` where there is a budget.

    Only hpsearch's own trials count (a plain Optuna objective may share the study, see
    :mod:`storage.foreign`). The claimed trial gets its first heartbeat at once, inside the
    lock, so every trial hpsearch runs has a heartbeat record from its start. A trial of a
    user's model (``param`` None) is marked as hpsearch's there too (:data:`storage.foreign.OWN_ATTR`).

    ``asked`` (one dict per claim, kept across its retries) makes a claim that the database
    cut off safe to retry: ``study.ask()`` commits the trial RUNNING before it samples and
    returns, so a drop after that point left a RUNNING trial with no heartbeat, which no sweep
    fails and no count sees, and the retry asked for another (issue 25: a killed embedded
    server left one so). The retry claims that trial instead.
    """
    import optuna
    from optuna.trial import TrialState

    from storage import own_counts
    from storage.epochs import epochs_trained
    from storage.foreign import OWN_ATTR

    asked = {} if asked is None else asked
    with study_lock(storage, study.study_name, "slots"):
        sweep_stale(study, storage)
        counts = own_counts(storage.engine, study._study_id, param)
        if epoch_budget is not None:
            counts["EPOCHS"] = epochs_trained(storage.engine, study._study_id)
        trial = asked.get("trial")
        if trial is not None and storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            trial = None  # a sweep failed it meanwhile
        if trial is None and "running" in asked:
            # ask() was cut off: the trial it made RUNNING is one no other hpsearch claim made
            # (they hold this lock and beat at once)
            cut_off = _unbeaten(study, storage) - asked["running"]
            if cut_off:
                trial = asked["trial"] = optuna.Trial(study, min(cut_off))  # what ask() would have returned
        if trial is None:
            if _reached(counts, target, epoch_budget):
                return counts, None
            if target is not None and _finished(counts) + counts["RUNNING"] >= target:
                return counts, None
            asked["running"] = _unbeaten(study, storage)
            trial = asked["trial"] = study.ask()
        if param is None:  # a claim cut off before marking it is marked on its retry
            storage.set_trial_system_attr(trial._trial_id, OWN_ATTR, True)
        if storage.get_heartbeat_interval():
            storage.record_heartbeat(trial._trial_id)
        return counts, trial


def _unbeaten(study, storage) -> set[int]:
    """Ids of the study's RUNNING trials with no heartbeat record (whenever they started)."""
    import datetime

    from storage import running_without_heartbeat

    return set(running_without_heartbeat(storage.engine, study._study_id, datetime.datetime.now() + datetime.timedelta(days=1)))


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
        progress.trial_done(trial.number, lr, state, shown, frozen.user_attrs.get("epochs_run"), trial_detail(state, frozen.user_attrs))
        if state in ("complete", "pruned"):
            _refresh_landscape(self.study, self.storage, force=progress.reached)
        self.stop_if_too_many("trials", frozen.user_attrs.get("fail_reason", "unknown"))

    def stop_if_too_many(self, what: str, last: str) -> None:
        """Stop the worker once ``max_failures`` trials (or lane epochs) failed in a row."""
        if self.consecutive_failures >= self.max_failures:
            raise WorkerFatalError(
                f"{self.consecutive_failures} {what} failed in a row (last: {last}): fix the cause and rerun; finished trials are kept"
            )


def _refresh_landscape(study, storage, *, force: bool) -> None:
    """Refresh the study's loss-landscape figures, rate-limited across the fleet (issue 3).

    The figures are a view: failing to refresh them must never fail a trial or the worker.
    """
    try:
        from search.landscape.refresh import maybe_refresh_landscape

        maybe_refresh_landscape(study, storage, force=force)
    except Exception as e:
        from storage.url import scrub

        detail = scrub(" ".join(str(e).split())[:200], getattr(storage, "url", None))
        log.warning("could not refresh the loss landscape of study %s: %s: %s", study.study_name, type(e).__name__, detail)


def _run_lanes(study, storage, config: StudyConfig, dataset, target: int | None, lanes: int, *, objective, progress: Progress,
               call, sweep, best_so_far, signals: _Signals, done: _Done, poll: float, rates: dict, param: str | None,
               epoch_budget: int | None = None) -> WorkerResult:
    """The lane worker's loop: up to ``lanes`` trials train together (issues 12 and 26).

    The lane model is the objective's (``objective.lanes(K)``): the recipe's
    :class:`search.train.lanes.RecipeLanes` or, for a user's model,
    :class:`search.train.modellanes.ModelLanes`. Each lane holds one trial, claimed under the
    study lock like a solo trial's (so the budget stays exact) and beaten by the worker's
    heartbeat. At every epoch boundary each member's epoch is reported as a solo trial's is
    (:func:`search.train.objective.report_epoch`); a member that completed, was pruned or
    diverged is told and leaves its lane, which takes the next trial. A trial the lane model
    cannot take (a user's ``fit`` that does more than set ``batch_size`` or ``shuffle``, a build
    that fails) runs solo, through the objective, between two epochs. SIGINT/SIGTERM fail every
    running lane trial and re-enqueue its parameters; an error of the lane model itself fails
    every member as an environment failure, retried, and the lane model is made anew.
    """
    import optuna

    from search.train.backend import clear_session
    from search.train.objective import report_epoch

    model = None
    active: dict[int, object] = {}  # lane -> TrialRun
    epoch_of: dict[int, int] = {}  # lane -> the member's next epoch
    trials_run = 0
    claim_after = 0.0
    full = False  # the last claim found the budget taken (finished + running)
    waited = False

    def close(lane: int, test: dict) -> None:
        run = active.pop(lane)
        epoch_of.pop(lane, None)
        model.drop(lane)
        state, shown = settle(study, run.trial, call, lambda: objective.finish_metrics(run, test))
        heartbeat.trial_ids.discard(run.trial._trial_id)
        done(run.trial, run.lr, state, shown)

    def swept(lane: int) -> None:
        """Drop a member whose trial a stale-trial sweep failed under it (this worker's
        heartbeat was silent past the grace period): its retry runs elsewhere."""
        run = active.pop(lane)
        epoch_of.pop(lane, None)
        model.drop(lane)
        run.checkpoints.close()
        objective.abort(run, None)
        heartbeat.trial_ids.discard(run.trial._trial_id)
        log.warning("trial %s dropped: %s", run.trial.number, SWEPT)
        done(run.trial, run.lr, "lost", None)

    def fail_all(outcome: Outcome, *, error: BaseException | None, cause: BaseException) -> None:
        for lane, run in sorted(active.items()):
            if outcome.retry:
                objective.save_on_failure(run, cause)  # its retry resumes from its last epoch
            else:
                run.checkpoints.close()
            objective.abort(run, error)
            record(study, run.trial, outcome, call)
            heartbeat.trial_ids.discard(run.trial._trial_id)
        active.clear()
        epoch_of.clear()

    def solo(trial) -> None:
        def train():
            with signals.interruptible():
                return objective(trial)

        state, shown = settle(study, trial, call, train)  # raises on what stops the worker, once recorded
        heartbeat.trial_ids.discard(trial._trial_id)
        done(trial, None, state, shown)

    with _Heartbeat(storage, set(), sweep=sweep) as heartbeat:
        try:
            while True:
                signals.check()
                if len(active) < lanes and time.monotonic() >= claim_after:
                    while len(active) < lanes:
                        counts, trial = call(_claim, study, storage, target, param, asked={}, epoch_budget=epoch_budget, what="claiming a trial")
                        progress.set_study(_finished(counts), best_so_far(), counts.get("EPOCHS"))
                        if trial is None:
                            full = True
                            if _reached(counts, target, epoch_budget) and not active:
                                return WorkerResult(trials_run, _finished(counts), target)
                            if not active and not waited and not _reached(counts, target, epoch_budget):
                                progress.message(f"[{_so_far(counts, target, epoch_budget)}] waiting for {counts['RUNNING']} running trial(s) of other workers")
                                waited = True
                            # Try again at the next epoch boundary after a poll interval: a
                            # failed trial elsewhere may free a slot.
                            claim_after = time.monotonic() + poll
                            break
                        full = waited = False
                        heartbeat.beat(trial._trial_id)
                        trials_run += 1
                        if model is None:
                            model = objective.lanes(lanes)
                        try:
                            member = model.member(trial)
                        except Exception:
                            log.exception("trial %s could not join a lane: it trains solo", trial.number)
                            member = None
                        if member is None:
                            solo(trial)
                            continue
                        lane = min(set(range(lanes)) - set(active))
                        run = objective.begin(trial, {"lanes": lanes, "lane": lane})
                        active[lane], epoch_of[lane] = run, 0
                        rates[trial.number] = run.lr
                        # A retry goes on from its earlier attempt's checkpoint, solo or lane
                        # member alike: put() restores it and says which epoch comes next.
                        epoch_of[lane] = model.put(lane, member, run)
                        run.monitor.start()
                        if run.monitor.stop_reason is not None:
                            close(lane, None)  # the pruner stops it where it resumed
                if not active:
                    time.sleep(poll if full else 0)
                    continue
                try:
                    with signals.interruptible():
                        logs = model.epoch()
                except (WorkerInterrupted, KeyboardInterrupt):
                    raise
                except Exception as e:
                    log.exception("the lanes model failed")
                    fail_all(lanes_failure(e, lanes, active[min(active)].trial.number, config.batch_size), error=e, cause=e)
                    model = None
                    clear_session()  # the failed model's state may be broken: build a new one
                    done.consecutive_failures += 1
                    done.stop_if_too_many("lane epochs", f"{type(e).__name__}: {one_line(e, 200)}")
                    continue
                leaving = []
                for lane, run in sorted(active.items()):
                    try:
                        stop = report_epoch(run.monitor, epoch_of[lane], logs[lane])
                    except optuna.exceptions.UpdateFinishedTrialError:
                        swept(lane)  # the others go on
                        continue
                    epoch_of[lane] += 1
                    if stop or epoch_of[lane] >= config.epochs:
                        leaving.append(lane)
                    else:  # the member's snapshot: its tensors of this epoch, copied only when written
                        run.checkpoints.epoch_end(None, epoch_of[lane] - 1, run.monitor, state=model.member_state(lane))
                if leaving:
                    test = model.test(leaving, logs)
                    for lane in leaving:
                        close(lane, test[lane])
                claim_after = 0.0 if leaving else claim_after
        except BaseException as e:
            # Every lane trial still running ends as the worker does: interrupted (its history
            # is not saved), left to the sweep when the database stayed away (recording would
            # only wait again; once it is back, a sweep fails and retries them), else failed
            # as stopped with the worker (too many failures) and retried.
            outcome = classify(e)
            if outcome.kind not in ("interrupted", "database"):
                outcome = stopped(e)
            fail_all(outcome, error=None if outcome.kind == "interrupted" else e, cause=e)
            if isinstance(e, KeyboardInterrupt):
                raise WorkerInterrupted(signal.SIGINT) from None
            raise


def run_worker(study, storage, config: StudyConfig, dataset, target: int | None, *, progress: Progress | None = None,
               max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES, poll: float = POLL_SECONDS,
               gpu: str | None = None, fit_options=None, lanes: int = 1, hypermodel=None,
               epoch_budget: int | None = None, freeze: bool = False) -> WorkerResult:
    """Run trials of ``study`` until it holds ``target`` finished trials in total, or until its
    trials have trained ``epoch_budget`` epochs (no trial starts after that; see :func:`_claim`).

    Args:
        study: the joined ``optuna.Study`` (see :func:`search.study.create.open_study`).
        storage: the study's ``RDBStorage`` (from :func:`storage.open_storage`).
        config: the study's stored configuration.
        dataset: the preprocessed data, loaded once for this process.
        target: finished (complete + pruned) trials the study must hold; None: no limit (only
            with ``epoch_budget``).
        progress: where to show progress; None shows none.
        max_consecutive_failures: stop after this many failed trials in a row.
        gpu: the ``--gpu`` index this worker was given; it refuses to train without a GPU.
        fit_options: :class:`search.train.objective.FitOptions` for its trials (default: all
            speed-ups on; benchmarks turn them off to measure each).
        lanes: trials trained at once as one batched model (:mod:`search.train.lanes`); 1 trains
            one trial at a time with ``model.fit``.
        hypermodel: a user's model (:func:`search.train.usermodel.load_hypermodel`), for a
            study whose ``config.model`` is not the recipe.
        epoch_budget: epochs the study's trials may train in total (``--epoch-budget``); None:
            no limit.
        freeze: freeze the heap before the first trial (:func:`search.train.backend.freeze_heap`):
            for a process that only runs this worker (the CLI's), not for one that goes on.

    Raises:
        WorkerInterrupted: SIGINT/SIGTERM; the running trial(s) were closed as FAIL and re-enqueued.
        WorkerFatalError: ``max_consecutive_failures`` trials failed in a row.
    """
    from search.study.create import own_param
    from search.train.objective import ModelObjective, Objective
    from storage import own_counts
    from storage.epochs import epochs_trained, record_target

    if target is None and epoch_budget is None:
        raise ValueError("run_worker needs a target, an epoch budget or both")
    progress = progress or Progress(target, enabled=False, epoch_budget=epoch_budget)
    current = {"lr": None, "trial": None}
    param_shown = shown_param(config)  # beside each trial in the progress lines

    rates: dict[int, float] = {}  # trial number -> rate, for the progress of lane trials

    def on_epoch(number, epoch, logs):
        trial = current["trial"]
        if current["lr"] is None and param_shown and trial is not None and trial.number == number:
            current["lr"] = trial.params.get(param_shown)  # a user's model draws it in build(hp), after the trial began
        progress.epoch(number, rates.get(number, current["lr"]), epoch, config.epochs, logs)

    def call(fn, *args, what: str, **kwargs):
        return retrying(fn, *args, what=what, log=log, **kwargs)

    def sweep():
        sweep_stale(study, storage)

    def best_so_far():
        # Only the progress display shows it: a worker that shows none skips the read.
        return call(_best, study, config, what="reading the best trial") if progress.enabled else None

    param = own_param(config)
    # The budget, for readers that follow the study to its end (hpsearch query follow).
    call(record_target, storage, study._study_id, target, epoch_budget, what="recording the study's budget")
    # A study that already holds its target has nothing to train: done without importing the
    # backend (TensorFlow's import alone is about 5 s of CPU; a rerun of a finished `hpsearch
    # run` took 8 s for nothing), and without --gpu's check, which guards training.
    counts = call(own_counts, storage.engine, study._study_id, param, what="counting the study's trials")
    if epoch_budget is not None:
        counts["EPOCHS"] = call(epochs_trained, storage.engine, study._study_id, what="counting the study's epochs")
    if _reached(counts, target, epoch_budget):
        progress.set_study(_finished(counts), best_so_far(), counts.get("EPOCHS"))
        return WorkerResult(0, _finished(counts), target)
    configure_backend(require_gpu=gpu)
    if config.is_recipe:
        objective = Objective(config, dataset, on_epoch=on_epoch, call=call, options=fit_options)
    else:
        objective = ModelObjective(config, dataset, hypermodel, on_epoch=on_epoch, call=call, options=fit_options)
    if freeze:
        freeze_heap()  # the backend, the model's code and the data are in: trials start now
    done = _Done(study, storage, target, progress, call, best_so_far, max_consecutive_failures)
    if lanes > 1:
        with _Signals() as signals:
            return _run_lanes(study, storage, config, dataset, target, lanes, objective=objective, progress=progress,
                              call=call, sweep=sweep, best_so_far=best_so_far, signals=signals, done=done, poll=poll, rates=rates, param=param,
                              epoch_budget=epoch_budget)
    trials_run = 0
    waited = False
    with _Signals() as signals:
        while True:
            signals.check()
            counts, trial = call(_claim, study, storage, target, param, asked={}, epoch_budget=epoch_budget, what="claiming a trial")
            progress.set_study(_finished(counts), best_so_far(), counts.get("EPOCHS"))
            if trial is None:
                if _reached(counts, target, epoch_budget):
                    return WorkerResult(trials_run, _finished(counts), target)
                if not waited:
                    progress.message(f"[{_so_far(counts, target, epoch_budget)}] waiting for {counts['RUNNING']} running trial(s) of other workers")
                    waited = True
                time.sleep(poll)
                continue
            waited = False
            trials_run += 1
            current["lr"], current["trial"] = None, trial

            def train(trial=trial):
                with _Heartbeat(storage, trial._trial_id, sweep=sweep), signals.interruptible():
                    current["lr"] = trial.params.get(param_shown) if param_shown else None
                    if current["lr"] is None and config.is_recipe:
                        # enqueued params become visible on the first suggest; sample now for progress
                        from search.study.space import suggest

                        current["lr"] = call(suggest, trial, config, what="sampling a learning rate")
                    return objective(trial)

            state, shown = settle(study, trial, call, train)  # raises on what stops the worker, once recorded
            if current["lr"] is None and param_shown:  # drawn where no epoch showed it (a fit's History read after training)
                current["lr"] = trial.params.get(param_shown)
            done(trial, current["lr"], state, shown)
