"""Ctrl-C at any moment of a command's start prints one line and exits 130, no traceback
(issue 15: a Ctrl-C 0.4 s into `run` showed a KeyboardInterrupt traceback).

A command's start begins at hpsearch's first line, :func:`search.__main__.main`, which blocks
SIGINT until the command runs. Before it, Python itself starts (about 20 ms here; 20-90 ms on
a loaded 2-core machine): a Ctrl-C then kills it by SIGINT silently, or, once Python's own
handler is in place, makes Python print a traceback from its ``site`` module or ``runpy``
(docs/how-a-study-works.md, "Commands and their errors"). No code of hpsearch runs there, so
these tests send their Ctrl-C from hpsearch's first line on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.test_faults import blocked_signals


def _as_at_a_terminal() -> None:
    """``preexec_fn``: SIGINT as a command started at a terminal has it, default and unblocked
    (a shell's background job, as pytest may be, ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _sigint_blocked(pid: int) -> bool:
    """Whether ``pid`` blocks SIGINT now (its main thread's ``SigBlk`` in /proc), False once it has exited."""
    try:
        return signal.SIGINT in blocked_signals(pid)
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return False


def _wait_for_hpsearch_code(proc: subprocess.Popen, limit: float = 120.0) -> bool:
    """Poll until hpsearch's first line has run in ``proc``: it blocks SIGINT, and keeps it
    blocked while the command is imported (0.2 s at least). False if ``proc`` ended first."""
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if _sigint_blocked(proc.pid):
            return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("delay", [0.3, 0.4, 0.6, 1.0, 1.5])
def test_ctrl_c_while_run_starts(tmp_path, mnist, delay):
    """A Ctrl-C ``delay`` s after ``hpsearch run`` started, or at its first line if Python took
    longer to start (a loaded machine), prints one line, "interrupted", and exits 130; or the
    one trial finished first (0). Never a traceback, "Fatal Python error" or "Exception ignored"."""
    env = {**os.environ, "HPSEARCH_HOME": str(tmp_path / "home")}
    env.pop("OPTUNA_STORAGE", None)
    data = ["--data", mnist] if mnist else []
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "search", "run", "--storage", f"sqlite:///{tmp_path}/s.db", "--trials", "1", "--epochs", "1", "--train-size", "300", *data],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_at_a_terminal,
    )
    try:
        seen = _wait_for_hpsearch_code(proc)
        time.sleep(max(0.0, delay - (time.monotonic() - started)))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen, f"SIGINT never seen blocked: search/__main__.py did not run? rc={proc.returncode} {err[-2000:]}"
    assert "Traceback" not in err and "Fatal Python error" not in err and "Exception ignored" not in err, err[-3000:]
    assert proc.returncode in (130, 0), err[-2000:]  # 0: the one trial finished first
    if proc.returncode == 130:
        assert err.strip().splitlines()[-1].endswith("interrupted") or "interrupted by SIGINT" in err, err[-2000:]


#: Seconds after the last trial's line at which the sweep below sends its Ctrl-C: the run then
#: refreshes the landscape, prints its summary and exits, in 0.56-0.58 s on an idle 2-core machine
#: (2026-12-07, three runs), longer under the suite's load; on another machine of the same label
#: the run had exited 0.45 s after the line in both of two idle runs (no signal sent), which left
#: the test one offset from failing (it needs three sent); the first three now fall inside
#: that end, the last reaches its exit where the end is slower. Six offsets up to 2.5 s took 121 s
#: of the suite's time (each run imports TensorFlow) and the later ones mostly found the run gone.
END_OFFSETS = (0.0, 0.1, 0.2, 0.35)


def _ctrl_c_after_the_last_trial(tmp_path, mnist, offset: float) -> tuple[int, str, bool]:
    """Run a one-trial study and send SIGINT ``offset`` s after its trial's line; return the
    exit code, stderr, and whether the signal was sent (the run may have ended already)."""
    import threading

    env = {**os.environ, "HPSEARCH_HOME": str(tmp_path / "home")}
    env.pop("OPTUNA_STORAGE", None)
    data = ["--data", mnist] if mnist else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "search", "run", "--storage", f"sqlite:///{tmp_path}/end-{offset}.db", "--trials", "1", "--epochs", "1", "--train-size", "300", *data],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_as_at_a_terminal,
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


def _run_hpsearch_with(patch: str) -> subprocess.CompletedProcess:
    """Run ``hpsearch db url`` through :func:`search.__main__.main` after ``patch`` (code that
    replaces functions of ``cli``, :mod:`search.cli.main`), from a terminal-like start."""
    code = (
        "import os, signal, sys\n"
        "import search.cli.main as cli\n"
        f"{patch}\n"
        "sys.argv = ['hpsearch', 'db', 'url']\n"
        "from search.__main__ import main\n"
        "sys.exit(main())\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=_as_at_a_terminal)


def test_a_ctrl_c_while_the_command_is_imported_waits_until_it_can_be_handled():
    """SIGINT is blocked while the command is imported: a Ctrl-C then (sent here from inside
    the parser's construction) is delivered when the command is about to run, which it ends
    with one line and 130, instead of interrupting an import."""
    out = _run_hpsearch_with(
        "parse = cli.build_parser\n"
        "def build_parser():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return parse()\n"
        "cli.build_parser = build_parser\n"
        "cli._run = lambda args: print('ran', file=sys.stderr) or 0\n"
    )
    assert (out.returncode, out.stderr) == (130, "hpsearch db: interrupted\n"), out


def test_a_command_runs_with_sigint_unblocked():
    """The block ends before the command runs, so Ctrl-C reaches it and the processes it
    starts (``launch``'s workers, PostgreSQL) inherit SIGINT unblocked."""
    out = _run_hpsearch_with(
        "def run(args):\n"
        "    print(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))\n"
        "    return 0\n"
        "cli._run = run\n"
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "False\n", ""), out
