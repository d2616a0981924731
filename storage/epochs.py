"""Every epoch of every trial, written as training goes and read back incrementally.

A trial's ``history`` user attribute is written when the trial ends, so nothing of a running
trial's loss is in Optuna's schema. This module keeps one append-only table next to it:

``hpsearch_epochs``: ``id`` (a sequence: the order epochs were written, and the feed's
cursor), ``study_id``, ``trial_id``, ``epoch`` (0-based, Optuna's step), ``loss``,
``val_loss``, ``accuracy``, ``val_accuracy``, ``epoch_seconds`` (NULL where not finite) and
``reported_at``; indexed on ``(study_id, id)`` for "this study's epochs after the cursor".
Rows go when their trial or study is deleted (a foreign key on PostgreSQL, a trigger on
SQLite), so Optuna's ``delete_study`` keeps working.

Writers (:func:`write_epochs`) insert a batch of rows per transaction. Readers never write:
:func:`epochs_after` returns the epochs after a :class:`Cursor`, :func:`epoch_grid` the
whole study binned by epoch for a first page load. Ids come from a sequence, so with several
writers a row with a smaller id can commit after one with a larger id: the cursor remembers
the ids it has not seen yet below the largest it has (for :data:`GAP_SECONDS`) and asks for
them again, so no epoch is skipped. It also remembers which trials were not finished, so a
poll returns only trials that are new or changed state.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy

from storage.schema import TABLE, ensure_table, has_epochs_table

__all__ = [
    "Budget",
    "EPOCH_BUDGET_ATTR",
    "TARGET_ATTR",
    "Cursor",
    "EpochBatch",
    "EpochGrid",
    "EpochRow",
    "LiveTrial",
    "engine_of",
    "budget",
    "epochs_trained",
    "record_target",
    "study_id_of",
    "epoch_grid",
    "epochs_after",
    "write_epochs",
]

#: Study system attribute: the finished trials the study's workers run it to (its budget).
TARGET_ATTR = "hpsearch:target"
#: Study system attribute: the epochs its workers' ``--epoch-budget`` lets the study train.
EPOCH_BUDGET_ATTR = "hpsearch:epoch_budget"
#: The metrics each row holds, in the order of the columns.
METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")
#: A missing id below the largest seen is asked for again for this long (its transaction may
#: not have committed yet); after that it is taken for a rolled-back insert.
GAP_SECONDS = 30
#: Only ids this close below the largest are checked for gaps: a late commit is milliseconds
#: behind, a few writes at most, and older holes are rolled-back inserts.
GAP_WINDOW = 2000
#: Epochs per answer at most; ``EpochBatch.more`` says there are more.
PAGE = 10_000

_STATE_LETTERS = {"RUNNING": "R", "WAITING": "W", "COMPLETE": "C", "PRUNED": "P", "FAIL": "F"}
_LETTER_STATES = {v: k for k, v in _STATE_LETTERS.items()}
_OPEN = ("RUNNING", "WAITING")

def engine_of(storage):
    """The SQLAlchemy engine under an Optuna storage (``RDBStorage``, cached or not), or None."""
    for candidate in (storage, getattr(storage, "_backend", None)):
        engine = getattr(candidate, "engine", None)
        if isinstance(engine, sqlalchemy.engine.Engine):
            return engine
    return None


def _number(value) -> float | None:
    """A metric as stored: a finite float to 7 significant digits (float32 holds about 7), else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return float(f"{v:.7g}") if math.isfinite(v) else None


def write_epochs(engine, study_id: int, rows: Iterable[tuple[int, int, dict]]) -> int:
    """Insert epochs in one transaction; return how many.

    Args:
        engine: the study storage's engine (:func:`engine_of`).
        study_id: Optuna's id of the study.
        rows: ``(trial_id, epoch, metrics)``; ``metrics`` holds any of ``loss``,
            ``val_loss``, ``accuracy``, ``val_accuracy``, ``epoch_seconds`` (missing and
            non-finite ones are stored as NULL).
    """
    values = [
        {"study_id": int(study_id), "trial_id": int(trial_id), "epoch": int(epoch),
         **{k: _number(metrics.get(k)) for k in (*METRICS, "epoch_seconds")}}
        for trial_id, epoch, metrics in rows
    ]
    if not values:
        return 0
    ensure_table(engine)
    insert = sqlalchemy.text(
        f"INSERT INTO {TABLE} (study_id, trial_id, epoch, loss, val_loss, accuracy, val_accuracy, epoch_seconds)"
        " VALUES (:study_id, :trial_id, :epoch, :loss, :val_loss, :accuracy, :val_accuracy, :epoch_seconds)"
    )
    with engine.begin() as conn:
        conn.execute(insert, values)
    return len(values)


# ---------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Cursor:
    """Where a reader of a study's epochs is; pass :meth:`encode`'s text back, never parse it.

    Attributes:
        epoch_id: the largest epoch id read (of any study: ids are one sequence).
        gaps: ``(id, first seen, unix seconds)`` of ids below ``epoch_id`` not read yet.
        trial_id: the largest trial id seen in the study.
        open: ``(trial id, state)`` of the study's trials that were running or waiting.
    """

    epoch_id: int = 0
    gaps: tuple[tuple[int, int], ...] = ()
    trial_id: int = 0
    open: tuple[tuple[int, str], ...] = ()

    def encode(self) -> str:
        gaps = ",".join(f"{i}:{t}" for i, t in self.gaps)
        # Open trials per state, ids as differences ("R1001.1.1"): 64 running trials with
        # neighbouring ids take about 130 characters, so an empty poll stays small.
        opened = ""
        for state in _OPEN:
            ids = sorted(i for i, s in self.open if s == state)
            if ids:
                opened += _STATE_LETTERS[state] + ".".join(str(b - a) for a, b in zip([0, *ids], ids))
        return f"{self.epoch_id}_{self.trial_id}_{gaps}_{opened}"

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        """Raises ValueError for text no :meth:`encode` wrote."""
        try:
            epoch_id, trial_id, gaps, opened = text.split("_")
            cursor = cls(
                int(epoch_id),
                tuple((int(i), int(t)) for i, t in (g.split(":") for g in gaps.split(",") if g)),
                int(trial_id),
                _decode_open(opened),
            )
        except (ValueError, KeyError, IndexError):
            raise ValueError(f"{text[:80]!r} is not a cursor of this feed") from None
        if cursor.epoch_id < 0 or cursor.trial_id < 0:
            raise ValueError(f"{text[:80]!r} is not a cursor of this feed")
        return cursor


def _decode_open(text: str) -> tuple[tuple[int, str], ...]:
    import re

    if re.fullmatch(r"([RW]\d+(\.\d+)*)*", text) is None:
        raise ValueError(text)
    out = []
    for letter, deltas in re.findall(r"([RW])([\d.]+)", text):
        i = 0
        for d in deltas.split("."):
            i += int(d)
            out.append((i, _LETTER_STATES[letter]))
    return tuple(sorted(out))


@dataclass(frozen=True)
class EpochRow:
    """One epoch of one trial as the feed gives it (``epoch`` 0-based, Optuna's step)."""

    trial: int
    epoch: int
    learning_rate: float | None
    loss: float | None
    val_loss: float | None
    accuracy: float | None
    val_accuracy: float | None
    epoch_seconds: float | None
    #: the study's objective as the trial reported it at this epoch (Optuna's intermediate
    #: value), read only when asked (``epochs_after(..., values=True)``): an objective the
    #: table keeps no column of (``val_mae``, say) reaches the live page and ``query follow`` here.
    value: float | None = None


@dataclass(frozen=True)
class LiveTrial:
    """A trial as the feed gives it: ``lane`` is its ``lane`` user attribute, where lanes run."""

    number: int
    state: str
    learning_rate: float | None
    lane: object = None


@dataclass(frozen=True)
class EpochBatch:
    """What :func:`epochs_after` read: the epochs in id order, the new or changed trials."""

    cursor: Cursor
    epochs: list[EpochRow]
    trials: list[LiveTrial]
    more: bool = False


@contextmanager
def _read_conn(engine):
    """A connection whose statements all see one snapshot (PostgreSQL: a REPEATABLE READ,
    READ ONLY transaction), so the epochs read and the gaps counted agree, and nothing writes.
    Driver errors leave it as :class:`StorageError` (storage's one boundary)."""
    from storage.engine import database_errors

    with database_errors(engine), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        yield conn


_TRIALS_SQL = (
    "SELECT t.trial_id, t.number, t.state, p.param_value, a.value_json"
    " FROM trials t"
    " LEFT JOIN trial_params p ON p.trial_id = t.trial_id AND p.param_name = :param"
    " LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'lane'"
    " WHERE t.study_id = :sid"
)
_EPOCHS_SQL = (
    "SELECT e.id, t.number, e.epoch, p.param_value, e.loss, e.val_loss, e.accuracy, e.val_accuracy, e.epoch_seconds{value}"
    f" FROM {TABLE} e JOIN trials t ON t.trial_id = e.trial_id"
    " LEFT JOIN trial_params p ON p.trial_id = e.trial_id AND p.param_name = :param{join}"
    " WHERE e.study_id = :sid"
)
#: The objective each epoch reported (the trial's intermediate value at the epoch's step), for
#: a study whose objective has no column here. A worker reports the epoch before it queues its
#: row, through one writer thread, so a row that is read has its value committed.
_VALUE_JOIN = (", iv.intermediate_value",
               " LEFT JOIN trial_intermediate_values iv ON iv.trial_id = e.trial_id AND iv.step = e.epoch")


def _epochs_sql(values: bool) -> str:
    value, join = _VALUE_JOIN if values else ("", "")
    return _EPOCHS_SQL.format(value=value, join=join)


def _state(value) -> str:
    return str(getattr(value, "name", value))


def _trial(row) -> LiveTrial:
    lane = None if row[4] is None else json.loads(row[4])
    return LiveTrial(int(row[1]), _state(row[2]), None if row[3] is None else float(row[3]), lane)


def _epoch(row) -> EpochRow:
    f = [None if v is None else float(v) for v in row[4:9]]
    value = _number(row[9]) if len(row) > 9 else None  # a reported objective, stored as the metrics are
    return EpochRow(int(row[1]), int(row[2]), None if row[3] is None else float(row[3]), *f, value)


def _trials_since(conn, study_id: int, cursor: Cursor, param: str) -> tuple[list[LiveTrial], int, tuple]:
    """Trials that are new since ``cursor`` or whose state changed; the new largest trial id
    and the new set of open trials."""
    known = dict(cursor.open)
    sql = _TRIALS_SQL + " AND (t.trial_id > :max"
    params = {"sid": study_id, "param": param, "max": cursor.trial_id}
    if known:
        sql += " OR t.trial_id IN :open"
        params["open"] = list(known)
    statement = sqlalchemy.text(sql + ") ORDER BY t.number")
    if known:
        statement = statement.bindparams(sqlalchemy.bindparam("open", expanding=True))
    changed, largest, still_open = [], cursor.trial_id, []
    for row in conn.execute(statement, params):
        trial_id, state = int(row[0]), _state(row[2])
        largest = max(largest, trial_id)
        if known.get(trial_id) != state:
            changed.append(_trial(row))
        if state in _OPEN:
            still_open.append((trial_id, state))
    return changed, largest, tuple(sorted(still_open))


def _new_gaps(conn, after: int, upto: int, now: int) -> list[tuple[int, int]]:
    """Ids in ``(after, upto]`` (near ``upto``) that no row holds yet."""
    lo = max(after, upto - GAP_WINDOW)
    if upto <= lo:
        return []
    count = conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {TABLE} WHERE id > :lo AND id <= :hi"), {"lo": lo, "hi": upto}).scalar()
    if count == upto - lo:
        return []
    present = {int(i) for (i,) in conn.execute(sqlalchemy.text(f"SELECT id FROM {TABLE} WHERE id > :lo AND id <= :hi"), {"lo": lo, "hi": upto})}
    return [(i, now) for i in range(lo + 1, upto + 1) if i not in present]


def _gap_epochs(conn, study_id: int, gaps: Sequence[tuple[int, int]], param: str, now: int, values: bool) -> tuple[list, list]:
    """The study's rows among the gap ids that are there now, and the gaps still open."""
    if not gaps:
        return [], []
    ids = [i for i, _ in gaps]
    statement = sqlalchemy.text(_epochs_sql(values) + " AND e.id IN :ids").bindparams(sqlalchemy.bindparam("ids", expanding=True))
    found = conn.execute(statement, {"sid": study_id, "param": param, "ids": ids}).all()
    present = {int(i) for (i,) in conn.execute(
        sqlalchemy.text(f"SELECT id FROM {TABLE} WHERE id IN :ids").bindparams(sqlalchemy.bindparam("ids", expanding=True)), {"ids": ids})}
    still = [(i, t) for i, t in gaps if i not in present and now - t < GAP_SECONDS]
    return found, still


def epochs_after(engine, study_id: int, cursor: Cursor | None = None, *, param: str = "learning_rate",
                 limit: int = PAGE, epochs: bool = True, values: bool = False) -> EpochBatch:
    """The study's epochs written after ``cursor`` (all of them without one), and its trials
    that are new or changed state since then.

    Args:
        engine: the storage's engine; only read.
        study_id: Optuna's id of the study.
        cursor: from the previous batch; None starts at the study's first epoch.
        param: the parameter reported as ``learning_rate``.
        limit: at most this many epochs (then ``more`` is True: ask again at once).
        epochs: False skips the epochs (a cursor at "now", for following from here on).
        values: True reads each epoch's reported objective too (:attr:`EpochRow.value`).

    Returns:
        An :class:`EpochBatch`; its ``cursor`` is where the next call starts.
    """
    cursor = cursor or Cursor()
    now = int(time.time())
    with _read_conn(engine) as conn:
        trials, largest, still_open = _trials_since(conn, study_id, cursor, param)
        if not has_epochs_table(conn):
            return EpochBatch(Cursor(0, (), largest, still_open), [], trials)
        top = conn.execute(sqlalchemy.text(f"SELECT max(id) FROM {TABLE}")).scalar() or 0
        if not epochs:
            return EpochBatch(Cursor(max(top, cursor.epoch_id), (), largest, still_open), [], trials)
        found, gaps = _gap_epochs(conn, study_id, cursor.gaps, param, now, values)
        rows = conn.execute(
            sqlalchemy.text(_epochs_sql(values) + " AND e.id > :after AND e.id <= :top ORDER BY e.id LIMIT :limit"),
            {"sid": study_id, "param": param, "after": cursor.epoch_id, "top": top, "limit": limit},
        ).all()
        more = len(rows) == limit
        upto = int(rows[-1][0]) if more else max(top, cursor.epoch_id)
        gaps += _new_gaps(conn, cursor.epoch_id, upto, now)
    read = sorted(found + rows, key=lambda r: r[0])
    return EpochBatch(Cursor(upto, tuple(gaps), largest, still_open), [_epoch(r) for r in read], trials, more)


@dataclass(frozen=True)
class EpochGrid:
    """A study's epochs binned for a first page load (:func:`epoch_grid`).

    Attributes:
        cursor: where to poll :func:`epochs_after` from for what came after.
        bin_epochs: epochs per bin (bin ``b`` holds epochs ``b*bin_epochs`` to the next).
        trials: every trial of the study, by number.
        epochs_run: per trial (same order), the number of epochs stored.
        best: per trial, the best value of the objective stored (:func:`epoch_grid`'s
            ``objective``: the largest ``val_accuracy`` by default), or None.
        loss, val_loss: per trial, per bin: the mean of the bin's finite values (NaN where none).
    """

    cursor: Cursor
    bin_epochs: int
    trials: list[LiveTrial]
    epochs_run: list[int]
    best: list[float | None]
    loss: list[list[float]] = field(default_factory=list)
    val_loss: list[list[float]] = field(default_factory=list)


#: The metrics the epochs table keeps: the columns an objective can be read from.
METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")


def epoch_grid(engine, study_id: int, *, bin_epochs: int, param: str = "learning_rate", objective: str = "val_accuracy",
               maximize: bool = True) -> EpochGrid:
    """Every epoch of the study so far, averaged in bins of ``bin_epochs`` epochs per trial.

    One aggregate query, so the answer's size grows with trials × bins, not with epochs
    (1,000 trials × 500 epochs in bins of 5: 100,000 cells instead of 500,000 rows). Each
    trial's best ``objective`` (the largest, or the smallest unless ``maximize``) comes with
    it: from its column, or for an objective the table keeps none of (not in :data:`METRICS`)
    from the values the trial reported (Optuna's intermediate values).
    """
    bin_epochs = max(1, int(bin_epochs))
    pick = "max" if maximize else "min"
    best_sql = f"{pick}({objective})" if objective in METRICS else "NULL"
    now = int(time.time())
    with _read_conn(engine) as conn:
        trials, largest, still_open = _trials_since(conn, study_id, Cursor(), param)
        by_number = {t.number: i for i, t in enumerate(trials)}
        runs, best = [0] * len(trials), [None] * len(trials)
        loss = [[] for _ in trials]
        val_loss = [[] for _ in trials]
        top, gaps = 0, []
        if has_epochs_table(conn):
            top = conn.execute(sqlalchemy.text(f"SELECT max(id) FROM {TABLE}")).scalar() or 0
            gaps = _new_gaps(conn, 0, top, now)
            index = {int(tid): by_number[int(number)] for tid, number in conn.execute(
                sqlalchemy.text("SELECT trial_id, number FROM trials WHERE study_id = :sid"), {"sid": study_id})}
            if conn.dialect.name == "postgresql":
                # 100,000 groups: PostgreSQL's default 4 MB would spill the aggregate to disk.
                conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
            cells = conn.execute(sqlalchemy.text(
                f"SELECT trial_id, epoch / :b, avg(loss), avg(val_loss), max(epoch), {best_sql} FROM {TABLE}"
                " WHERE study_id = :sid AND id <= :top GROUP BY trial_id, epoch / :b"), {"sid": study_id, "top": top, "b": bin_epochs}).all()
            for tid, b, mean_loss, mean_val, last, value in cells:
                i = index[int(tid)]
                runs[i] = max(runs[i], int(last) + 1)
                best[i] = _better(best[i], value, maximize)
            if objective not in METRICS:  # from the trials' reports instead, one value per trial
                for tid, value in conn.execute(sqlalchemy.text(
                        f"SELECT iv.trial_id, {pick}(iv.intermediate_value) FROM trial_intermediate_values iv"
                        " JOIN trials t ON t.trial_id = iv.trial_id WHERE t.study_id = :sid GROUP BY iv.trial_id"), {"sid": study_id}):
                    best[index[int(tid)]] = _better(best[index[int(tid)]], value, maximize)
            for i in range(len(trials)):
                loss[i] = [math.nan] * -(-runs[i] // bin_epochs)
                val_loss[i] = list(loss[i])
            for tid, b, mean_loss, mean_val, _, _ in cells:
                i, b = index[int(tid)], int(b)
                loss[i][b] = math.nan if mean_loss is None else float(mean_loss)
                val_loss[i][b] = math.nan if mean_val is None else float(mean_val)
    return EpochGrid(Cursor(top, tuple(gaps), largest, still_open), bin_epochs, trials, runs, best, loss, val_loss)


def _better(best: float | None, value, maximize: bool) -> float | None:
    """The better of a best so far and a new value (None: none yet, or no value)."""
    if value is None or (best is not None and (value <= best if maximize else value >= best)):
        return best
    return float(value)


@dataclass(frozen=True)
class Budget:
    """How far a study is: ``target`` (None where no hpsearch worker recorded one), finished
    (complete + pruned) and open (running + waiting) trials; and, where its workers were given
    ``--epoch-budget``, that budget, the epochs trained (:func:`epochs_trained`) and the trials running."""

    target: int | None
    finished: int
    open: int
    epoch_budget: int | None = None
    epochs: int = 0
    running: int = 0

    @property
    def done(self) -> bool:
        if self.epoch_budget is not None and self.epochs >= self.epoch_budget and self.running == 0:
            return True  # no trial starts once the epochs are spent (a retry left waiting included)
        return self.target is not None and self.finished >= self.target and self.open == 0


def study_id_of(engine, name: str) -> int:
    """Optuna's id of the study ``name``.

    Raises:
        StudyNotFoundError: no study of that name (the message lists the studies there are).
    """
    from storage.engine import connection
    from storage.tables import study_id

    with connection(engine) as conn:
        return study_id(conn, name)


def record_target(storage, study_id: int, target: int | None, epoch_budget: int | None = None) -> None:
    """Record the study's budget where :func:`budget` reads it: ``--trials`` of ``init`` or of a
    worker (None: no limit on trials, only with an epoch budget) and its ``--epoch-budget``
    (None: none, which clears one an earlier run recorded)."""
    from storage.engine import database_errors

    with database_errors(storage):
        storage.set_study_system_attr(study_id, TARGET_ATTR, target)
        storage.set_study_system_attr(study_id, EPOCH_BUDGET_ATTR, epoch_budget)


#: Epochs trained by a study's trials: every row of the epochs table but those of failed trials.
#: A retry resumed from a checkpoint writes its earlier attempt's epochs again (issue 24), so the
#: failed attempt's rows are left out and the carried epochs count once, in the retry; the epochs a
#: failed trial trained past its last checkpoint, or without a retry, are not counted.
_EPOCHS_TRAINED = (
    f"SELECT count(*) FROM {TABLE} e JOIN trials t ON t.trial_id = e.trial_id WHERE e.study_id = :sid AND t.state <> 'FAIL'"
)


def epochs_trained(engine, study_id: int) -> int:
    """The epochs the study's trials have trained (see :data:`_EPOCHS_TRAINED`), running trials'
    epochs written so far included; 0 where the epochs table does not exist yet."""
    from storage.engine import connection

    with connection(getattr(engine, "engine", engine)) as conn:
        if not has_epochs_table(conn):
            return 0
        return int(conn.execute(sqlalchemy.text(_EPOCHS_TRAINED), {"sid": study_id}).scalar())


def _attr(conn, study_id: int, key: str):
    raw = conn.execute(sqlalchemy.text("SELECT value_json FROM study_system_attributes WHERE study_id = :sid AND key = :key"),
                       {"sid": study_id, "key": key}).scalar()
    return None if raw is None else json.loads(raw)


def budget(engine, study_id: int) -> Budget:
    """The study's budget and its trials by state, in one read."""
    from storage.engine import connection

    with connection(engine) as conn:
        target, epoch_budget = _attr(conn, study_id, TARGET_ATTR), _attr(conn, study_id, EPOCH_BUDGET_ATTR)
        counts = {_state(s): int(n) for s, n in conn.execute(
            sqlalchemy.text("SELECT state, count(*) FROM trials WHERE study_id = :sid GROUP BY state"), {"sid": study_id})}
        epochs = 0
        if epoch_budget is not None and has_epochs_table(conn):
            epochs = int(conn.execute(sqlalchemy.text(_EPOCHS_TRAINED), {"sid": study_id}).scalar())
    return Budget(None if target is None else int(target), counts.get("COMPLETE", 0) + counts.get("PRUNED", 0),
                  counts.get("RUNNING", 0) + counts.get("WAITING", 0), None if epoch_budget is None else int(epoch_budget),
                  epochs, counts.get("RUNNING", 0))
