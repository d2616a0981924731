"""Signal storm: a model training while another process stops it, sends SIGTERM and resumes it, again and again.

A SIGTERM sent to a stopped process is delivered, when it resumes, to whichever of its threads
runs first; Python's C-level handler then runs there. On one of TensorFlow's threads, while the
main thread trains, that aborted the process in glibc ("corrupted size vs. prev_size while
consolidating"), losing the checkpoint the SIGTERM was meant to write
(:mod:`search.cli.signals`, docs/faults.md). Each run here starts a child that trains a
two-lane :class:`search.train.lanes.LaneModel` (random data, 4,000 rows) for ``--seconds``,
with a Python SIGTERM handler that only counts, while this process sends it SIGSTOP, SIGTERM
and SIGCONT every 10 to 150 ms. A run passes when the child ends by itself, exit 0.

The child takes signals as a study command does (:func:`search.cli.signals.block` before
TensorFlow is imported, the relay thread after), or with ``--unprotected`` as hpsearch did
before: the handler set, the signals unblocked in every thread::

    python tests/benchmarks/signal_storm.py --runs 6 --seconds 60
    python tests/benchmarks/signal_storm.py --runs 6 --seconds 60 --unprotected

It prints one JSON object per run (exit code, signals sent and handled, epochs, threads, and
how many of them could take SIGTERM) and a summary line; exit 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child(seconds: float, protected: bool) -> int:
    sys.path.insert(0, str(REPO))
    from search.cli import signals

    if protected:
        signals.block()
    import numpy as np
    from keras import ops

    from search.train.lanes import LaneModel

    rng = np.random.default_rng(0)
    n = 4000
    x = ops.convert_to_tensor(rng.random((n, 784), dtype="float32"))
    y = ops.convert_to_tensor(np.eye(10, dtype="float32")[rng.integers(0, 10, n)])
    model = LaneModel(2, batch_size=1024)
    model.reset_lane(0, 0.01, 1)
    model.reset_lane(1, 0.001, 2)
    handled = [0]
    signal.signal(signal.SIGTERM, lambda signum, frame: handled.__setitem__(0, handled[0] + 1))
    if protected:
        signals.start()
    print("ready", flush=True)
    epochs, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        orders = np.stack([rng.permutation(n) for _ in range(2)])
        model.train_epoch(x, y, orders)
        model.evaluate(x, y)
        epochs += 1
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from tests.test_faults import _threads_taking

    handling, _ = _threads_taking(os.getpid(), {signal.SIGTERM})  # the relay, waiting in sigwait, is not counted
    threads = len(os.listdir(f"/proc/{os.getpid()}/task"))
    print(json.dumps({"epochs": epochs, "handled": handled[0], "threads": threads, "threads_taking_sigterm": len(handling)}), flush=True)
    return 0


def storm(seconds: float, protected: bool, log_dir: Path | None) -> dict:
    """One run: start the child, storm it until it ends, return what happened."""
    cmd = [sys.executable, __file__, "--child", "--seconds", str(seconds)] + ([] if protected else ["--unprotected"])
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out = b""
    sent = 0
    try:
        while True:  # until the child is ready: the signals are meant for its training
            line = proc.stdout.readline()
            out += line
            if not line or line.startswith(b"ready"):
                break
        while proc.poll() is None:
            time.sleep(random.uniform(0.01, 0.15))
            try:
                os.kill(proc.pid, signal.SIGSTOP)
                os.kill(proc.pid, signal.SIGTERM)
                time.sleep(random.uniform(0, 0.01))
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                break
            sent += 1
        out += proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.decode(errors="replace")
    result = {"rc": proc.returncode, "sent": sent, "protected": protected}
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if proc.returncode == 0 and last.startswith("{"):
        result.update(json.loads(last))
    else:
        result["abort"] = next((line for line in text.splitlines() if "corrupted" in line or "Fatal Python error" in line or "double free" in line), last[:200])
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            path = log_dir / f"storm-{os.getpid()}-{time.time_ns()}.log"
            path.write_text(text)
            result["log"] = str(path)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=6, help="children, one after another (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=60.0, help="training time of each child (default: %(default)s)")
    p.add_argument("--unprotected", action="store_true", help="the child takes signals in any thread, as hpsearch did before")
    p.add_argument("--log-dir", type=Path, help="where to keep the output of a failed run")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.seconds, not args.unprotected)
    failed = 0
    for k in range(args.runs):
        result = storm(args.seconds, not args.unprotected, args.log_dir)
        result["run"] = k
        failed += result["rc"] != 0
        print(json.dumps(result), flush=True)
    print(f"{args.runs - failed} of {args.runs} runs ended by themselves ({'protected' if not args.unprotected else 'unprotected'}, {args.seconds:g} s each)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
