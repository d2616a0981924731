"""Start and supervise worker processes on this machine.

``hpsearch launch`` (and ``hpsearch run --workers K``) prepares the study in the parent, so it
is created, configured and seeded once, then starts ``hpsearch worker`` processes: one per GPU
found by ``nvidia-smi`` (or per ``--gpus`` entry), ``--per-gpu K`` to pack K on each card, or
``--workers K`` on a machine without GPUs. The storage URL reaches them through the
``OPTUNA_STORAGE`` environment variable, never the command line, so a password never shows in
the process list. Each worker's log goes to ``HPSEARCH_HOME/logs/``.

The parent shows the study's combined progress, sweeps stale trials of dead workers (at start
and on every poll, so they are failed and retried even when no worker asks for a trial),
restarts a worker that dies unexpectedly (killed, or an internal error: :func:`restartable`
reads the exit codes of :mod:`search.errors`) up to ``max_restarts`` times, forwards Ctrl-C/SIGTERM to every worker, and fails if the study did
not reach its target.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from search.errors import EXIT_CRASHED, ConfigError, WorkerFatalError, WorkerInterrupted
from search.fleet.limits import MAX_RESTARTS
from search.fleet.progress import Progress
from search.study.space import PARAM
from storage import own_counts, retrying, running_epochs
from storage.epochs import epochs_trained

__all__ = ["Slot", "detect_gpus", "plan_slots", "launch_workers", "restartable"]



def restartable(code: int) -> bool:
    """Whether a worker that exited with ``code`` died unexpectedly and is worth restarting.

    Killed by a signal it did not handle (``Popen`` reports ``-N``), or crashed
    (:data:`search.errors.EXIT_CRASHED`). Not one that finished (0), was refused its flags,
    data or database (2: it would fail again), stopped for good (``WorkerFatalError``, 3) or
    was interrupted (128 + the signal: someone stopped it).
    """
    return code < 0 or code == EXIT_CRASHED


def detect_gpus() -> list[tuple[str, str]] | None:
    """The NVIDIA GPUs of this machine as ``[(index, name), ...]``.

    None when ``nvidia-smi`` cannot be run (some containers lack it), an empty list when it ran
    and found no GPU.
    """
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return [] if "no devices were found" in (out.stdout + out.stderr).lower() else None
    gpus = []
    for line in out.stdout.strip().splitlines():
        index, _, name = line.partition(",")
        if index.strip():
            gpus.append((index.strip(), name.strip()))
    return gpus


def check_gpu(gpu: str) -> None:
    """Refuse a ``--gpu`` index this machine does not have.

    Without ``nvidia-smi`` the check is left to the worker, which refuses to train on the CPU
    when its backend sees no GPU (see ``search.train.backend.configure_backend``).

    Raises:
        ConfigError: naming the GPUs that exist (or that none was found).
    """
    if not gpu.isdigit():
        raise ConfigError(f"--gpu {gpu!r} is not a GPU index: use a whole number such as 0 (nvidia-smi -L lists them)")
    found = detect_gpus()
    if found is None:
        return
    if not found:
        raise ConfigError(f"--gpu {gpu}: nvidia-smi found no GPU on this machine: drop --gpu to train on the CPU")
    if gpu not in {index for index, _ in found}:
        listing = ", ".join(f"{i} ({n})" for i, n in found)
        raise ConfigError(f"--gpu {gpu} does not exist on this machine: use one of {listing}")


@dataclass
class Slot:
    """One worker process the launcher keeps alive."""

    index: int
    gpu: str | None
    restarts: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    exit_codes: list[int] = field(default_factory=list)


def plan_slots(*, workers: int | None, gpus: list[str] | None, per_gpu: int) -> list[Slot]:
    """Where the workers run: ``per_gpu`` on each GPU, or ``workers`` on the CPU / round-robin.

    Args:
        workers: total workers (``--workers``); with GPUs they are spread round-robin.
        gpus: GPU indices to use (``--gpus``, or those found); empty or None for CPU only.
        per_gpu: workers per GPU when ``workers`` is not given.
    """
    if per_gpu < 1:
        raise ConfigError(f"--per-gpu must be a whole number of at least 1, got {per_gpu}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be a whole number of at least 1, got {workers}")
    if gpus:
        if workers is None:
            return [Slot(i, gpu) for i, gpu in enumerate(g for g in gpus for _ in range(per_gpu))]
        return [Slot(i, gpus[i % len(gpus)]) for i in range(workers)]
    return [Slot(i, None) for i in range(workers or 1)]


def _tail(path: Path | None, lines: int = 1) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def launch_workers(study, storage, storage_url: str, target: int | None, slots: list[Slot], *, data: str | None,
                   log_dir: Path, progress: Progress, epochs: int, poll: float = 2.0,
                   max_restarts: int = MAX_RESTARTS, worker_args: list[str] | None = None,
                   param: str | None = PARAM, maximize: bool = True, epoch_budget: int | None = None, shown: str | None = PARAM) -> None:
    """Run the workers of ``slots`` on ``study`` until it holds ``target`` finished trials, or
    until its trials have trained ``epoch_budget`` epochs (either may be None: no limit).

    ``param`` and ``maximize`` tell hpsearch's trials and the best one
    (:func:`search.study.create.own_param`; None for a user's model); ``shown`` is the parameter
    the progress shows beside the best (:func:`search.study.config.shown_param`).

    Raises:
        WorkerInterrupted: Ctrl-C/SIGTERM; workers were told to stop and have exited.
        WorkerFatalError: the workers exited before the study reached its target.
    """
    from search.fleet.worker import sweep_stale

    log_dir.mkdir(parents=True, exist_ok=True)
    from search.train.backend import library_defaults

    env = library_defaults(dict(os.environ, OPTUNA_STORAGE=storage_url))
    stopping: list[int] = []  # the signal that stops the launch
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in study.study_name)

    def start(slot: Slot) -> None:
        cmd = [sys.executable, "-m", "search", "worker", "--study", study.study_name,
               "--worker-index", str(slot.index), "--quiet", *(worker_args or [])]
        if target is not None:
            cmd += ["--trials", str(target)]
        if epoch_budget is not None:
            cmd += ["--epoch-budget", str(epoch_budget)]
        if data is not None:
            cmd += ["--data", str(data)]
        if slot.gpu is not None:
            cmd += ["--gpu", str(slot.gpu)]
        slot.log = log_dir / f"{safe_name}-worker-{slot.index}.log"
        with open(slot.log, "ab") as fh:
            # start_new_session: a terminal's Ctrl-C reaches the parent only, which forwards
            # SIGTERM once, so every worker closes its trial exactly once.
            slot.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True)

    from optuna.trial import TrialState

    from search.study.create import best_own

    def forward(signum, frame):
        if not stopping:
            stopping.append(signum)
            for s in slots:
                if s.proc is not None and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)

    def sweep() -> None:
        failed = retrying(sweep_stale, study, storage, what="sweeping stale trials")
        if failed:
            progress.message(f"failed {failed} stale trial(s) of dead workers; their learning rates are retried")

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        sweep()
        for slot in slots:
            start(slot)
        where = ", ".join(sorted({f"GPU {s.gpu}" if s.gpu is not None else "CPU" for s in slots}))
        progress.message(f"started {len(slots)} workers ({where}); logs in {log_dir}")
        last_line, last_time = "", 0.0
        while True:
            time.sleep(poll)
            if stopping:
                break
            for slot in slots:
                code = slot.proc.poll() if slot.proc is not None else None
                if code is None or slot.proc is None:
                    continue
                slot.exit_codes.append(code)
                if restartable(code) and slot.restarts < max_restarts and not stopping:
                    slot.restarts += 1
                    progress.message(f"worker {slot.index} died (exit {code}: {_tail(slot.log)[:160]}); restart {slot.restarts}/{max_restarts}")
                    start(slot)
                else:
                    slot.proc = None
            if all(s.proc is None for s in slots):
                break
            sweep()
            counts = retrying(own_counts, storage.engine, study._study_id, param, what="reading progress")
            done = counts["COMPLETE"] + counts["PRUNED"]
            bt = best_own(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), param, maximize)
            best = None if bt is None else (bt.value, bt.params.get(shown) if shown else None)
            progress.set_study(done, best, None if epoch_budget is None else retrying(
                epochs_trained, storage.engine, study._study_id, what="reading progress"))
            running = running_epochs(storage.engine, study._study_id)
            epochs_text = ", ".join(f"#{n} epoch {e}/{epochs}" for n, e in sorted(running.items())[:8])
            line = f"{progress.head()} running {len(running)}" + (f" ({epochs_text})" if epochs_text else "") + (f", {counts['FAIL']} failed" if counts["FAIL"] else "")
            key = f"{done}/{counts['FAIL']}/{len(running)}"
            if progress.tty or key != last_line or time.monotonic() - last_time > progress.interval:
                progress.status(line, transient=key == last_line)
                last_line, last_time = key, time.monotonic()
    finally:
        for slot in slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for slot in slots:
            if slot.proc is None:
                continue
            try:
                slot.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                slot.proc.wait()
        for s, h in old.items():
            signal.signal(s, h)
    if stopping:
        raise WorkerInterrupted(stopping[0], "workers stopped, finished trials kept: rerun the same command to resume")
    counts = retrying(own_counts, storage.engine, study._study_id, param, what="reading the final counts")
    done = counts["COMPLETE"] + counts["PRUNED"]
    spent = None if epoch_budget is None else retrying(epochs_trained, storage.engine, study._study_id, what="reading the final counts")
    if (target is None or done < target) and (spent is None or spent < epoch_budget):
        bad = [s for s in slots if s.exit_codes and s.exit_codes[-1] != 0]
        detail = "; ".join(f"worker {s.index} exit {s.exit_codes[-1]}: {_tail(s.log)[:200]}" for s in bad[:2]) or "workers exited early"
        held = f"{done}/{target} finished trials" if target is not None else f"{done} finished trials"
        if spent is not None:
            held += f" and {spent}/{epoch_budget} epochs trained"
        raise WorkerFatalError(f"the study holds {held} ({detail}): see the logs in {log_dir}")
