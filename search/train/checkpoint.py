"""Checkpoints of running trials: what is saved, how it is written, and how a retry resumes (issue 24).

A preempted worker must cost at most one epoch, not a trial. At the end of every epoch a
trial's state is copied to host memory (a :class:`Snapshot`: the model's weights, every
optimizer variable, Adam's moments and step count included, the epoch reached, the history so
far); what makes the rest of a seeded run reproducible needs no saving, since the batch order of
every later epoch is :func:`search.train.data.epoch_order` of the study's seed and the epoch.
The snapshot is written to the study's database (:mod:`storage.checkpoints`, one row per trial):

* from a background thread, at the end of the first epoch after ``HPSEARCH_CHECKPOINT_S``
  seconds (:data:`CHECKPOINT_S` by default) since the last write, so ``kill -9`` or a lost
  machine loses at most that much training;
* at once, in the worker's thread, when the trial is stopped by SIGTERM/SIGINT (the SLURM
  time-limit signal becomes a SIGTERM in the sbatch script) or fails by its environment, before
  the failure is recorded and retried: only the epoch under way is lost.

A retry (:func:`storage.retry.requeue`) carries its earlier attempts' numbers; the worker that
claims it loads the newest checkpoint among them (:meth:`Checkpointer.resume`), checks it is
whole and of the same model and parameters, restores it, and goes on at the next epoch. A
checkpoint that is missing, truncated or another model's or parameters' is ignored with one
line and the trial trains from epoch 0. Checkpoints of a series of attempts go when it ends.

Bytes: ``HPSCKPT1``, the payload's length (8 bytes, little-endian) and SHA-256 (32 bytes), then
the payload, an ``np.savez`` of the arrays (``w0``.. the weights, ``o0``.. the optimizer's
variables) and ``meta``, the JSON of everything else.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import struct
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from search.env import env
from search.errors import ConfigError
from storage.engine import in_background_slot

__all__ = ["CHECKPOINT_S", "Checkpointer", "Snapshot", "capture", "checkpoint_interval", "decode", "encode", "restore", "state_variables"]

log = logging.getLogger("hpsearch.worker")

#: Seconds of training between checkpoints of a running trial (``HPSEARCH_CHECKPOINT_S``): a
#: write of the recipe's 9.5 MB took 1.4 s off the training thread on a loaded 2-core machine
#: with the database beside it, about 0.3 s of it the worker's own CPU (docs/faults.md); a
#: lost machine costs at most this much training.
CHECKPOINT_S = 60.0

MAGIC = b"HPSCKPT1"
_HEADER = struct.Struct("<8sQ32s")
FORMAT = 1
_MISSING = object()


def checkpoint_interval() -> float:
    """``HPSEARCH_CHECKPOINT_S`` as seconds (0: after every epoch), else :data:`CHECKPOINT_S`.

    Raises:
        ConfigError: the value is not a number of seconds, 0 or more.
    """
    text = env("HPSEARCH_CHECKPOINT_S")
    if text is None:
        return CHECKPOINT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"HPSEARCH_CHECKPOINT_S={text!r} is not a number of seconds: set it to 0 or more (0: after every epoch), or unset it for {CHECKPOINT_S:g}")
    return value


@dataclass
class Snapshot:
    """A trial's state at the end of ``epoch`` (0-based): enough to train on from ``epoch + 1``.

    Attributes:
        epoch: the last epoch the state finished.
        weights: the model's state, :func:`state_variables` order (its weights and the seed
            state of its random layers).
        optimizer: every optimizer variable (``model.optimizer.variables`` order): Adam's step
            count, learning rate, moments.
        meta: JSON-able: ``model`` (what the arrays belong to), ``params`` (the trial's
            parameters), ``history``, ``epoch_seconds``, ``trial`` (its number), ``seed``.
    """

    epoch: int
    weights: list
    optimizer: list
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (*self.weights, *self.optimizer))


def _numpy(value) -> np.ndarray:
    import keras

    return np.array(keras.ops.convert_to_numpy(value), copy=True)


def state_variables(model) -> list:
    """The model variables a checkpoint holds: the trainable ones, then the non-trainable ones
    (BatchNorm statistics and the seed state of dropout and other random layers, which
    ``model.weights`` leaves out: without it a resumed dropout draws other masks)."""
    return [*model.trainable_variables, *model.non_trainable_variables]


def capture(model) -> tuple[list, list]:
    """Host copies of ``model``'s state (:func:`state_variables`) and of its optimizer's variables."""
    weights = [_numpy(v) for v in state_variables(model)]
    optimizer = [_numpy(v) for v in model.optimizer.variables] if model.optimizer is not None else []
    return weights, optimizer


def restore(model, snapshot: Snapshot) -> None:
    """Assign ``snapshot``'s arrays to ``model``'s weights and optimizer.

    Raises:
        ValueError: they do not fit (another model or optimizer).
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    opt = list(model.optimizer.variables) if model.optimizer is not None else []
    own = state_variables(model)
    targets = [*own, *opt]
    arrays = [*snapshot.weights, *snapshot.optimizer]
    if len(own) != len(snapshot.weights) or len(opt) != len(snapshot.optimizer):
        raise ValueError(f"{len(snapshot.weights)} weights and {len(snapshot.optimizer)} optimizer variables, the model has {len(own)} and {len(opt)}")
    for variable, array in zip(targets, arrays):
        if tuple(variable.shape) != tuple(array.shape):
            raise ValueError(f"an array of shape {tuple(array.shape)} for {variable.path} of shape {tuple(variable.shape)}")
    for variable, array in zip(targets, arrays):
        variable.assign(array.astype(variable.dtype, copy=False))


def encode(snapshot: Snapshot) -> bytes:
    """The bytes stored for ``snapshot``: header with length and digest, then the payload."""
    arrays = {f"w{i}": a for i, a in enumerate(snapshot.weights)}
    arrays.update({f"o{i}": a for i, a in enumerate(snapshot.optimizer)})
    meta = {**snapshot.meta, "format": FORMAT, "epoch": snapshot.epoch, "weights": len(snapshot.weights), "optimizer": len(snapshot.optimizer)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    return _HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


def decode(data: bytes) -> Snapshot:
    """The snapshot ``data`` holds.

    Raises:
        ValueError: not a checkpoint, truncated, or damaged (its digest differs).
    """
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise ValueError(f"{len(data)} bytes, shorter than a checkpoint's header")
    magic, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not an hpsearch checkpoint")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise ValueError(f"truncated: {len(payload)} of {length} bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("damaged: its digest differs")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, this hpsearch reads {FORMAT}")
        weights = [z[f"w{i}"] for i in range(meta["weights"])]
        optimizer = [z[f"o{i}"] for i in range(meta["optimizer"])]
    return Snapshot(int(meta["epoch"]), weights, optimizer, meta)


@dataclass(frozen=True)
class _Pending:
    """A snapshot not yet written: its arrays are taken by ``state()`` when it is."""

    epoch: int
    state: Callable[[], tuple[list, list]]
    meta: dict


def _direct(fn, *args, what: str, **kwargs):
    return fn(*args, **kwargs)


class Checkpointer:
    """The checkpoints of one running trial: its snapshots, their writes, its resumption.

    Args:
        trial: the running ``optuna.Trial``.
        model: what the arrays belong to (``"recipe:1000"``, a user model's spec and digest):
            a checkpoint of another model is not resumed.
        call: ``call(fn, *args, what=...)`` each storage call goes through.
        interval: seconds between periodic writes (default :func:`checkpoint_interval`).
        extra: more of ``meta`` that must match to resume (the study's seed and batch size).

    Example:
        >>> ckpt = Checkpointer(trial, "recipe:1000", call)
        >>> start = ckpt.resume(model, monitor, {"learning_rate": 0.01}, epochs=500)   # 0, or the next epoch
        >>> ckpt.epoch_end(model, epoch, monitor)   # after each epoch that is not the last
        >>> ckpt.stop()                             # interrupted: write the last snapshot now
        >>> ckpt.finish()                           # ended: remove the series' checkpoints
    """

    def __init__(self, trial, model: str, call: Callable | None = None, *, interval: float | None = None, extra: dict | None = None):
        from storage.epochs import engine_of

        self.trial, self.model, self.call = trial, model, call or _direct
        self.interval = checkpoint_interval() if interval is None else interval
        self.extra = dict(extra or {})
        self.engine = engine_of(trial.storage)
        self.latest: _Pending | None = None
        self.saved_epoch = -1
        self.earlier: list[int] | None = None  # the series' earlier attempts (trial ids)
        self.resumed_from: dict | None = None
        #: per write: (epoch, bytes, seconds); and seconds spent taking snapshots in training
        self.writes: list[tuple[int, int, float]] = []
        self.snapshot_seconds = 0.0
        self._params: dict | None = None
        self._last_write = time.monotonic()
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._lock = threading.Lock()  # one write at a time, in epoch order

    # --- resuming -------------------------------------------------------------------------

    def _earlier(self) -> list[int]:
        if self.earlier is None:
            from storage.retry import earlier_attempts

            self.earlier = self.call(in_background_slot(earlier_attempts), self.trial.study, self.trial, what="reading the trial's earlier attempts")
        return self.earlier

    def resume(self, model, monitor, params: dict, epochs: int, *, restore_into: Callable | None = None) -> int:
        """Restore the newest checkpoint of this trial's earlier attempts into ``model`` and
        ``monitor``; return the epoch to train next (0: none usable, train from the start).

        ``params`` are the trial's parameters, which the checkpoint's must equal; ``epochs``
        the study's. ``restore_into(snapshot)``, where given, restores instead of
        :func:`restore` into ``model`` (a lane member). A checkpoint that does not fit is
        ignored with one line: the model may then be left partly assigned, and the caller
        resets it.
        """
        if self.engine is None or not self._earlier():
            return 0
        from storage.checkpoints import latest_checkpoint

        number = self.trial.number
        try:
            stored = self.call(in_background_slot(latest_checkpoint), self.engine, self.earlier, what="reading the checkpoint of an earlier attempt")
        except Exception as e:
            log.warning("trial %s: could not read its earlier attempts' checkpoint (%s): training from epoch 0", number, _line(e))
            return 0
        if stored is None:
            log.warning("trial %s: its earlier attempts left no checkpoint: training from epoch 0", number)
            return 0
        source = f"the checkpoint of trial {self._number_of(stored.trial_id)} at epoch {stored.epoch}"
        try:
            snapshot = decode(stored.data)
            meta = snapshot.meta
            if meta.get("model") != self.model or any(meta.get(k) != v for k, v in self.extra.items()):
                raise ValueError(f"another model's ({meta.get('model')}), this trial trains {self.model}")
            saved = meta.get("params")
            # A user's fit may draw more (a batch size) after the model is built: those drawn
            # so far must agree, and the recipe's one rate is drawn by now.
            if not isinstance(saved, dict) or any(saved.get(k, _MISSING) != v for k, v in params.items()) or not params and saved:
                raise ValueError(f"of other parameters ({saved}), this trial has {params}")
            if not 0 <= snapshot.epoch < epochs - 1:
                raise ValueError(f"epoch {snapshot.epoch} does not precede the study's last ({epochs - 1})")
            if restore_into is not None:
                restore_into(snapshot)
            else:
                restore(model, snapshot)
        except Exception as e:
            log.warning("trial %s: ignoring %s: %s: training from epoch 0", number, source, _line(e))
            return 0
        self._params = params
        self.resumed_from = {"trial": int(meta.get("trial", -1)), "epoch": snapshot.epoch + 1}
        monitor.resume(meta.get("history") or {}, meta.get("epoch_seconds") or [])
        log.info("trial %s resumes %s", number, source)
        return snapshot.epoch + 1

    def _number_of(self, trial_id: int):
        try:
            return self.trial.storage.get_trial_number_from_id(trial_id)
        except Exception:
            return f"id {trial_id}"

    # --- saving ---------------------------------------------------------------------------

    def epoch_end(self, model, epoch: int, monitor, *, state: Callable[[], tuple[list, list]] | None = None) -> None:
        """Take a snapshot of ``model`` after ``epoch``; write it from the background thread if
        the interval has passed since the last write (and no write is under way).

        ``state``, where given, returns the arrays when a write needs them, instead of copying
        ``model``'s now (a lane member's tensors, which no later step changes).
        """
        if self.engine is None:
            return
        began = time.perf_counter()
        if self._params is None:
            self._params = dict(self.trial.params)  # read once: every hp is drawn by the end of the first epoch
        if state is None:
            copied = capture(model)  # Keras's variables change in place: copy them now
            state = lambda: copied  # noqa: E731
        meta = {"model": self.model, **self.extra, "params": self._params, "trial": self.trial.number,
                "history": {k: list(v) for k, v in monitor.history.items()}, "epoch_seconds": list(monitor.epoch_seconds)}
        self.latest = _Pending(epoch, state, meta)
        self.snapshot_seconds += time.perf_counter() - began
        if time.monotonic() - self._last_write < self.interval:
            return
        if self._future is not None and not self._future.done():
            return  # the next epoch end tries again
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpsearch-checkpoint")
        self._last_write = time.monotonic()
        self._future = self._pool.submit(self._write, self.latest)

    def _write(self, pending: "_Pending") -> None:
        from storage import background_slot
        from storage.checkpoints import delete_checkpoints, save_checkpoint

        with self._lock:
            if pending.epoch <= self.saved_epoch:
                return
            began = time.perf_counter()
            snapshot = Snapshot(pending.epoch, *pending.state(), pending.meta)
            data = encode(snapshot)
            trial = self.trial
            what = f"writing the checkpoint of trial {trial.number} at epoch {snapshot.epoch}"
            try:
                # One try, not the worker's retries while the database is away: their waits
                # would outlast a preemption's grace, and a periodic write that fails is tried
                # again at the next interval.
                with background_slot():  # the deferred writes' slot: a connection stays free for the heartbeat
                    save_checkpoint(self.engine, trial.study._study_id, trial._trial_id, snapshot.epoch, data)
            except Exception as e:
                log.warning("trial %s: %s failed: %s", trial.number, what.split(" of trial")[0], _line(e))
                return
            first = self.saved_epoch < 0
            self.saved_epoch = snapshot.epoch
            self.writes.append((snapshot.epoch, len(data), round(time.perf_counter() - began, 4)))
            if first and self.resumed_from is not None and self.earlier:
                try:  # this trial's own checkpoint is newer: the earlier attempts' are not needed
                    with background_slot():
                        delete_checkpoints(self.engine, self.earlier)
                except Exception:
                    pass

    def stop(self) -> None:
        """Write the last snapshot now, if it is newer than the last written (the trial is
        interrupted or failing and will be retried). Never raises."""
        try:
            if self._future is not None:
                self._future.result()
            if self.latest is not None and self.latest.epoch > self.saved_epoch:
                self._write(self.latest)
        except BaseException as e:  # a second signal, a dead database: the trial's own failure matters more
            log.warning("trial %s: no checkpoint written on stopping: %s", self.trial.number, _line(e))
        finally:
            self.close()

    def close(self) -> None:
        """Wait for a write under way, then stop the background thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.latest = None

    def finish(self) -> None:
        """The trial ended (complete or pruned): remove its checkpoints and its earlier attempts'."""
        from storage.checkpoints import delete_checkpoints

        self.close()
        if self.engine is None:
            return
        try:
            ids = [*self._earlier(), *([self.trial._trial_id] if self.saved_epoch >= 0 else [])]
            if not ids:
                return
            self.call(in_background_slot(delete_checkpoints), self.engine, ids, what=f"removing the checkpoints of trial {self.trial.number}")
        except Exception as e:
            log.warning("trial %s: could not remove its checkpoints: %s", self.trial.number, _line(e))

    def attrs(self) -> dict:
        """User attributes that record the trial's checkpoints: where it resumed from, and
        what its writes cost (``checkpoint_writes``: epoch, bytes, seconds of each)."""
        out = {}
        if self.resumed_from is not None:
            out["resumed_from"] = self.resumed_from
        if self.writes:
            out["checkpoint_writes"] = [list(w) for w in self.writes]
        if self.snapshot_seconds:
            out["checkpoint_snapshot_seconds"] = round(self.snapshot_seconds, 4)
        return out


def _line(error: BaseException) -> str:
    from storage.engine import error_line

    return error_line(error)
