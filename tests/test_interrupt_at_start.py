"""Ctrl-C at any moment of a command's start prints one line and exits 130, no traceback
(issue 15: a Ctrl-C 0.4 s into `run` showed a KeyboardInterrupt traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("delay", [0.3, 0.4, 0.6, 1.0, 1.5])
def test_ctrl_c_while_run_starts(tmp_path, mnist, delay):
    env = {**os.environ, "HPSEARCH_HOME": str(tmp_path / "home")}
    env.pop("OPTUNA_STORAGE", None)
    data = ["--data", mnist] if mnist else []
    # A shell's background job ignores SIGINT; the child gets the default handler back, as a
    # command started at a terminal has it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "search", "run", "--storage", f"sqlite:///{tmp_path}/s.db", "--trials", "1", "--epochs", "1", "--train-size", "300", *data],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode in (130, 0), err[-2000:]  # 0: the one trial finished first
    if proc.returncode == 130:
        assert err.strip().splitlines()[-1].endswith("interrupted") or "interrupted by SIGINT" in err, err[-2000:]


#: Seconds after the last trial's line at which the sweep below sends its Ctrl-C: the run then
#: refreshes the landscape, prints its summary and exits (about 2.3 s on an idle 2-core machine).
END_OFFSETS = (0.0, 0.1, 0.4, 0.9, 1.6, 2.5)


def _ctrl_c_after_the_last_trial(tmp_path, mnist, offset: float) -> tuple[int, str, bool]:
    """Run a one-trial study and send SIGINT ``offset`` s after its trial's line; return the
    exit code, stderr, and whether the signal was sent (the run may have ended already)."""
    import threading

    env = {**os.environ, "HPSEARCH_HOME": str(tmp_path / "home")}
    env.pop("OPTUNA_STORAGE", None)
    data = ["--data", mnist] if mnist else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "search", "run", "--storage", f"sqlite:///{tmp_path}/end-{offset}.db", "--trials", "1", "--epochs", "1", "--train-size", "300", *data],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    done = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "trial 0 " in line and ("complete" in line or "pruned" in line):
                done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = False
    try:
        assert done.wait(300), "".join(lines)[-2000:]
        time.sleep(offset)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            sent = True
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines), sent


def test_ctrl_c_as_a_run_ends_prints_no_traceback(tmp_path, mnist):
    """A Ctrl-C at any moment of a run's end (the landscape refresh, the summary, the
    interpreter's exit) prints no traceback and no "Exception ignored" (issue 25: a finaliser
    of SQLAlchemy printed one), and exits 0 or 130."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two at a time: each imports TensorFlow
        results = list(pool.map(lambda o: (o, *_ctrl_c_after_the_last_trial(tmp_path, mnist, o)), END_OFFSETS))
    for offset, code, err, sent in results:
        assert "Traceback" not in err and "Exception ignored" not in err, (offset, err[-3000:])
        assert code in (0, 130), (offset, code, err[-2000:])
        if code == 130:
            assert err.strip().splitlines()[-1].endswith("interrupted") or "interrupted by SIGINT" in err, (offset, err[-2000:])
    assert sum(sent for *_, sent in results) >= 3, [(o, c, s) for o, c, _, s in results]


def test_a_ctrl_c_inside_a_finaliser_is_delivered_again_not_printed():
    """A KeyboardInterrupt raised while a weakref callback runs cannot propagate: Python prints
    "Exception ignored in ... KeyboardInterrupt" and goes on as if there were no Ctrl-C (issue
    25: SQLAlchemy's ``_MultipleClassMarker._remove_item`` got one). hpsearch's unraisable hook
    raises the SIGINT again, so it stops the command where it runs next, silently."""
    code = (
        "import signal, sys, weakref\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from search.cli.main import _unraisable\n"
        "sys.unraisablehook = _unraisable\n"
        "class Mapped: pass\n"
        "def remove_item(ref): raise KeyboardInterrupt\n"
        "obj = Mapped(); ref = weakref.ref(obj, remove_item)\n"
        "try:\n"
        "    del obj\n"
        "    import time; time.sleep(10)\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "interrupted", out
    assert out.stderr == "", out.stderr
