"""Start and supervise worker processes on this machine.

``hpsearch run --workers K`` prepares the study in the parent (so it is created, configured and
seeded once), then starts K ``hpsearch worker`` processes. The storage URL reaches them through
the ``OPTUNA_STORAGE`` environment variable, never the command line, so a password never shows
in the process list. Each worker's log goes to ``HPSEARCH_HOME/logs/``; the parent shows the
study's combined progress, forwards Ctrl-C/SIGTERM to every worker, and fails if the study
did not reach its target.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from search.errors import WorkerFatalError, WorkerInterrupted
from search.progress import Progress
from search.space import PARAM
from storage import state_counts

__all__ = ["launch_workers"]


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def launch_workers(study, storage, storage_url: str, target: int, workers: int, *, data: str | None, log_dir: Path,
                   progress: Progress, poll: float = 2.0, extra_env: dict | None = None) -> None:
    """Run ``workers`` worker processes on ``study`` until it holds ``target`` finished trials.

    Raises:
        WorkerInterrupted: Ctrl-C/SIGTERM; workers were told to stop and have exited.
        WorkerFatalError: the workers exited before the study reached its target.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OPTUNA_STORAGE=storage_url, **(extra_env or {}))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    procs: list[tuple[subprocess.Popen, Path]] = []
    stopping: list[str] = []

    def forward(signum, frame):
        if not stopping:
            stopping.append(signal.Signals(signum).name)
            for p, _ in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(workers):
            cmd = [sys.executable, "-m", "search", "worker", "--study", study.study_name, "--trials", str(target),
                   "--worker-index", str(i), "--quiet"]
            if data is not None:
                cmd += ["--data", str(data)]
            log_path = log_dir / f"{study.study_name.replace('/', '_')}-worker-{i}.log"
            fh = open(log_path, "ab")
            # start_new_session: a terminal's Ctrl-C reaches the parent only, which forwards
            # SIGTERM once, so every worker closes its trial exactly once.
            procs.append((subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True), log_path))
            fh.close()
        progress.message(f"started {workers} workers; logs in {log_dir}")
        last_done = -1
        while any(p.poll() is None for p, _ in procs):
            time.sleep(poll)
            counts = state_counts(storage.engine, study._study_id)
            done = counts["COMPLETE"] + counts["PRUNED"]
            if done != last_done:
                try:
                    bt = study.best_trial
                    best = (bt.value, bt.params.get(PARAM))
                except ValueError:
                    best = None
                progress.set_study(done, best)
                progress.message(f"{progress._head()} {counts['RUNNING']} running, {counts['FAIL']} failed")
                last_done = done
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for p, _ in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s, h in old.items():
            signal.signal(s, h)
    if stopping:
        raise WorkerInterrupted(f"interrupted by {stopping[0]}; workers stopped, finished trials kept: rerun the same command to resume")
    counts = state_counts(storage.engine, study._study_id)
    if counts["COMPLETE"] + counts["PRUNED"] < target:
        failed = [(p.returncode, log) for p, log in procs if p.returncode != 0]
        detail = "; ".join(f"worker exit {rc}: {_tail(log, 1)}" for rc, log in failed[:2]) or "workers exited early"
        raise WorkerFatalError(f"the study holds {counts['COMPLETE'] + counts['PRUNED']}/{target} finished trials ({detail}): see the logs in {procs[0][1].parent}")
