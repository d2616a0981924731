"""Storage writes that training need not wait for, done in order on one background thread.

A trial writes to the database at every epoch (its ``val_accuracy`` as an intermediate value)
and when it starts (where it runs: host, device, versions). Each write is a transaction: a
few milliseconds on an idle machine, tens of milliseconds on a busy one (docs/benchmarks.md,
"Storage"), and with a GPU's epochs of 0.1 s that is time the accelerator waits. Submitted
here, the writes overlap the next epoch's training instead. Whatever reads what was written
(the pruner's question, the end of the trial) calls :meth:`DeferredWrites.flush` first, so
nothing reads a value that is not in the database yet.

Each epoch's metrics also go to the epochs table (:mod:`storage.epochs`) for the live
landscape, through :meth:`DeferredWrites.epoch`: rows queued while a write is under way are
inserted together, one transaction for all (a lanes worker's K members of one epoch).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from storage.engine import in_background_slot

__all__ = ["DeferredWrites"]


_SKIPPED = object()
_log = logging.getLogger("hpsearch")


def _direct(fn, *args, what: str, **kwargs):
    return fn(*args, **kwargs)


class DeferredWrites:
    """Run storage writes in submission order on a background thread.

    Args:
        call: ``call(fn, *args, what=...)`` wrapper each write goes through (workers pass one
            that retries while the database is unreachable).
        background: False runs each write at once in the caller's thread (the way before).

    Example:
        >>> writes = DeferredWrites(call)
        >>> writes.submit(trial.report, 0.97, step=3, what="reporting epoch 3")
        >>> writes.flush()          # before anything reads the trial back
        >>> writes.close()
    """

    def __init__(self, call: Callable | None = None, *, background: bool = True):
        self._call = call or _direct
        self.background = background
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        # Set by the writer thread when a write fails: the writes queued behind it are skipped
        # (each would otherwise wait out the retry limit in turn) until flush reports the error.
        self._failed = threading.Event()
        # Epoch rows waiting for the writer, per (engine, study id); see epoch().
        self._epochs: dict[tuple, list] = {}
        self._epochs_lock = threading.Lock()
        self._epochs_off = False

    def submit(self, fn, *args, what: str, **kwargs) -> None:
        """Queue ``fn(*args, **kwargs)``; its error, if any, is raised by the next flush, or
        by the next submit once it has happened (so a worker whose database stayed away past
        the retry limit stops at the next epoch instead of training on for nothing)."""
        if not self.background:
            self._call(fn, *args, what=what, **kwargs)
            return
        if any(f.done() and f.exception() is not None for f in self._pending):
            self.flush()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpsearch-writes")
        self._pending.append(self._pool.submit(self._run, fn, args, kwargs, what))

    def epoch(self, trial, epoch: int, metrics: dict, *, seconds: float | None = None) -> None:
        """Queue one epoch of ``trial`` for the epochs table (:func:`storage.epochs.write_epochs`).

        The one place training reports an epoch for the live landscape: a solo trial's
        monitor calls it after each epoch, a lanes worker once per member. Rows queued before
        the writer gets to them go in one transaction. A database that stays away fails the
        worker as any write does (the ``call`` wrapper's retries); any other error turns the
        live rows off for this process with one warning, never failing the trial.

        Args:
            trial: the ``optuna.Trial`` (its storage must be an RDB storage; others are skipped).
            epoch: 0-based, the step the trial reports at.
            metrics: Keras's logs (``loss``, ``val_loss``, ``accuracy``, ``val_accuracy``).
            seconds: the epoch's wall time.
        """
        from storage.epochs import engine_of

        if self._epochs_off:
            return
        engine = engine_of(trial.storage)
        if engine is None:
            return
        key = (engine, trial.study._study_id)
        with self._epochs_lock:
            queue = self._epochs.setdefault(key, [])
            queue.append((trial._trial_id, int(epoch), {**metrics, "epoch_seconds": seconds}))
            first = len(queue) == 1
        if first:  # a write already queued for this key takes the rows added meanwhile
            self.submit(self._write_epochs, key, what=f"recording epoch {epoch} for the live landscape")

    def _write_epochs(self, key) -> None:
        from storage.epochs import write_epochs
        from storage.errors import is_transient

        while not self._epochs_off:
            with self._epochs_lock:
                rows = list(self._epochs.get(key, ()))
            if rows:
                try:
                    write_epochs(key[0], key[1], rows)
                except Exception as e:
                    if is_transient(e):
                        raise  # the call wrapper retries; the rows stay queued until written
                    self._epochs_off = True
                    _log.warning("cannot write epochs for the live landscape (%s: %s); training goes on without them",
                                 type(e).__name__, " ".join(str(e).split())[:200])
            with self._epochs_lock:
                queue = self._epochs.get(key, [])
                del queue[: len(rows)]
                if not queue or self._epochs_off:
                    self._epochs.pop(key, None)
                    return

    def _run(self, fn, args, kwargs, what):
        if self._failed.is_set():
            return _SKIPPED
        try:
            return self._call(in_background_slot(fn), *args, what=what, **kwargs)
        except BaseException:
            self._failed.set()
            raise

    def flush(self) -> None:
        """Wait until every write submitted so far is done; raise the first error among them."""
        pending, self._pending = self._pending, []
        error = None
        for future in pending:
            try:
                future.result()
            except BaseException as e:
                error = error or e
        self._failed.clear()
        if error is not None:
            raise error

    def close(self, *, raise_errors: bool = True) -> None:
        """Flush, then stop the thread. With ``raise_errors=False`` a failed write is dropped
        (the trial is failing anyway, and its own error matters more)."""
        try:
            self.flush()
        except BaseException:
            if raise_errors:
                raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
