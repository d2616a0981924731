"""``hpsearch worker`` with every storage call timed: the storage benchmark's worker process.

Runs the real CLI (``search.cli.main.main(["worker", ...])``) after wrapping the worker's storage
calls. Every call the worker makes through ``call(fn, ..., what=...)`` (ask, suggest, the
user attributes, report, should_prune, tell, reading back) is timed with its label, and so
are the trial claims and the loss-landscape refreshes. At exit the events go to the JSON file
named by ``HPSEARCH_BENCH_EVENTS``. Writes deferred to the background thread
(``search.train.deferred``) are recorded as ``bg_*``, and the main thread's waits for them as
``wait_for_writes``. The heartbeat thread's writes run beside training and are not timed.

``HPSEARCH_BENCH_EVERY_EPOCH=1`` makes the monitor ask the pruner at every epoch, as
optuna-integration's ``KerasPruningCallback`` does (the "before" of the pruner schedule);
``HPSEARCH_BENCH_SYNC_WRITES=1`` writes reports on the trial's path (the "before" of
``search.train.deferred``).

Usage (by ``tests/benchmarks/run.py``)::

    HPSEARCH_BENCH_EVENTS=out.json python tests/benchmarks/timed_worker.py --study S --trials 8 ...
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

EVENTS: list[tuple[str, float, float]] = []  # (label, start, end), perf_counter seconds


def _category(what: str) -> str:
    """The storage call's kind, from the label the worker gives it."""
    for prefix, kind in (
        ("claiming a trial", "ask"),
        ("reporting epoch", "report"),
        ("asking the pruner", "should_prune"),
        ("recording", "user_attrs"),
        ("sampling", "suggest"),
        ("telling", "tell"),
        ("reading the best", "read_best"),
        ("reading the trial back", "read_back"),
    ):
        if what.startswith(prefix):
            return kind
    return "other"


def _install() -> None:
    import search.fleet.worker as worker

    main = threading.main_thread()
    retrying = worker.retrying

    def timed_retrying(fn, *args, what: str, **kwargs):
        start = time.perf_counter()
        kind = _category(what)
        try:
            result = retrying(fn, *args, what=what, **kwargs)
            if kind == "ask" and result[1] is None:
                kind = "ask_nothing"  # no slot left: not the start of a trial
            return result
        finally:
            # writes deferred to the background thread overlap training: kept apart as bg_*
            EVENTS.append((kind if threading.current_thread() is main else f"bg_{kind}", start, time.perf_counter()))

    worker.retrying = timed_retrying

    refresh = worker._refresh_landscape

    def timed_refresh(*args, **kwargs):
        start = time.perf_counter()
        try:
            return refresh(*args, **kwargs)
        finally:
            EVENTS.append(("landscape", start, time.perf_counter()))

    worker._refresh_landscape = timed_refresh

    from search.train.deferred import DeferredWrites

    flush = DeferredWrites.flush

    def timed_flush(self):
        start = time.perf_counter()
        try:
            return flush(self)
        finally:
            if self.background:
                EVENTS.append(("wait_for_writes", start, time.perf_counter()))

    DeferredWrites.flush = timed_flush

    if os.environ.get("HPSEARCH_BENCH_SYNC_WRITES"):
        import dataclasses

        import search.train.objective as objective

        options = objective.FitOptions
        objective.FitOptions = lambda **kw: dataclasses.replace(options(**kw), deferred_writes=False)

    if os.environ.get("HPSEARCH_BENCH_EVERY_EPOCH"):
        import search.train.objective as objective
        from search.study.pruners import EVERY_EPOCH

        objective.pruner_schedule = lambda config, budget=None: EVERY_EPOCH


def _dump() -> None:
    path = os.environ.get("HPSEARCH_BENCH_EVENTS")
    if path:
        Path(path).write_text(json.dumps({"pid": os.getpid(), "events": EVENTS}))


if __name__ == "__main__":
    _install()
    atexit.register(_dump)
    from search.cli.main import main

    sys.exit(main(["worker", *sys.argv[1:]]))
