"""The ``hpsearch`` command: the parser built from the registry, and the one place errors become exit codes.

Each command is a class of :mod:`search.cli.commands` (its flags declared once, its work in its
``run``). :func:`main` parses, calls the command chosen, and turns what escapes it into one
line on stderr and an exit code: an :class:`~storage.errors.HpsearchError` exits with its
``exit_code``, Ctrl-C with 130, anything else is an internal error (1). A closed stdout pipe
(``hpsearch query trials | head -1``) ends any command quietly.

Imports stay lazy so ``hpsearch --help`` and ``hpsearch db url`` start quickly, and so a worker
can set ``CUDA_VISIBLE_DEVICES`` before TensorFlow is imported.

Exit codes: 0 success; 2 bad input (flags, URLs, data, study conflicts); 1 the environment
failed (a database that stopped answering, workers that died); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

__all__ = ["build_parser", "main"]

_EXAMPLES = """\
examples:
  hpsearch run --data mnist.npz --trials 6 --epochs 3 --train-size 3000
  hpsearch run --model getting_started.py:build_model --data images.npz --trials 20 --epochs 10
  hpsearch worker --study mnist-learning-rate --storage postgresql+psycopg2://user@db/hpsearch
  hpsearch dashboard --study mnist-learning-rate
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``hpsearch`` parser: one subparser per command of :data:`search.cli.commands.COMMANDS`."""
    from search.cli.args import Parser
    from search.cli.commands import COMMANDS

    parser = Parser(
        prog="hpsearch",
        description="Hyperparameter search for Keras models, with Optuna studies in PostgreSQL: your own KerasTuner-style "
                    "build(hp) or HyperModel (--model), or the built-in MNIST learning-rate recipe.",
        epilog=_EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        command().add_to(sub)
    return parser


def _interrupted(what: str) -> int:
    """Print that ``what`` was interrupted and return 130, the exit code the README promises.

    CPython exits by SIGINT instead of with the code given once a KeyboardInterrupt has
    escaped a ``PyRun_String`` call, even one caught later: its ``_Py_UnhandledKeyboardInterrupt``
    flag is never reset (shown with ctypes calling ``PyRun_String`` directly). Native modules
    run such calls while they import (pybind11's ``py::exec``), and a Ctrl-C 0.3 s into
    ``hpsearch run`` died by signal 2 in 1 run of 5 under pytest. The flag is reset here,
    where the interrupt has been handled, so the exit code is 130 as the README says.
    """
    print(f"{what}: interrupted", file=sys.stderr)
    _forget_interrupt()
    return 130


def _forget_interrupt() -> None:
    try:
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ImportError, ValueError, AttributeError):  # not CPython, or a CPython without it
        pass


def _reader_gone() -> bool:
    """Whether stdout is a pipe that nobody reads any more (as after ``| head -1``).

    A pipe whose reading end is closed polls as an error; where poll cannot tell, the broken
    pipe is taken to be stdout's, the one this process writes to most.
    """
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return True


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the ``hpsearch`` command; return its exit code."""
    if argv is not None:
        return _main(argv)
    # Called as the program (the console script, ``python -m search``): no Ctrl-C may print a
    # traceback, at any moment (issue 25).
    sys.unraisablehook = _unraisable
    try:
        code = _main(sys.argv[1:], program=True)
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being reported
        code = 130
    return _ignore_interrupts(code)


def _deliver_interrupts(args) -> None:
    """End the block of SIGINT and SIGTERM that :func:`search.__main__.main` set while the
    command was imported: a study command (one that may train TensorFlow here) has a relay
    thread take them from now on, any other command unblocks them (:mod:`search.cli.signals`).

    A Ctrl-C that came meanwhile is delivered now, as a KeyboardInterrupt raised here (or
    at the command's first line, through the relay), where the caller handles it.
    """
    from search.cli import signals

    if args.handler.relay_signals:
        signals.start()
    else:
        signals.unblock()


def _ignore_interrupts(code: int) -> int:
    """Ignore SIGINT from now on and return ``code``.

    The command is over and its exit code decided, so a Ctrl-C now could only interrupt the
    interpreter's exit, where a finaliser that gets the KeyboardInterrupt prints an "Exception
    ignored ... Traceback" (seen 1 s into a one-trial `run` that had just finished).
    ``signal.signal`` first runs the handler of a SIGINT that arrived just before it, which
    raises here: that Ctrl-C came after the command ended, and is ignored too.
    """
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            break
        except KeyboardInterrupt:
            continue
    if code == 130:
        _forget_interrupt()
    return code


def _unraisable(unraisable) -> None:
    """``sys.unraisablehook``: a Ctrl-C that lands in a finaliser is delivered again, not printed.

    A KeyboardInterrupt raised while a weakref callback or ``__del__`` runs (SQLAlchemy's
    ``_MultipleClassMarker._remove_item``, as the garbage collector frees a mapped class)
    cannot propagate: Python prints "Exception ignored in ... Traceback ... KeyboardInterrupt"
    and carries on as if there had been no Ctrl-C (1 run in 3 of
    ``test_ctrl_c_while_run_starts[1.0]``). Here the SIGINT is raised again once the hook has
    returned, so the command stops as at any other moment; the worker's own interrupt
    (WorkerInterrupted) is already remembered by its handler and acted on at its next safe
    point. Anything else is printed as Python would.
    """
    try:
        exc = unraisable.exc_value
        if isinstance(exc, KeyboardInterrupt):
            _interrupt_soon()
            return
        from search.errors import WorkerInterrupted

        if not isinstance(exc, WorkerInterrupted):
            sys.__unraisablehook__(unraisable)
    except KeyboardInterrupt:  # another Ctrl-C while the hook ran: it must not escape here either
        _interrupt_soon()


def _interrupt_soon() -> None:
    """Send SIGINT to the main thread again in a moment, from a timer thread.

    Not at once: raised in the main thread now, it would land in the unraisable hook itself,
    which prints it the same way. Sent so that it also wakes a main thread blocked in a system
    call (a sleep, a socket read): :func:`search.cli.signals.send_to_main`. Sent only while a
    Python handler is installed (once the command has ended SIGINT is ignored).
    """
    import threading

    from search.cli import signals

    def send():
        if callable(signal.getsignal(signal.SIGINT)):
            signals.send_to_main(signal.SIGINT)

    timer = threading.Timer(0.05, send)
    timer.daemon = True
    try:
        timer.start()
    except RuntimeError:  # the interpreter is shutting down: no new threads, and no need
        pass


def _main(argv: list[str], program: bool = False) -> int:
    """Parse ``argv`` and run its command; ``program``: run as the process's own command, so
    SIGINT and SIGTERM, blocked until now (:func:`search.__main__.main`), are delivered from
    before it runs (:func:`_deliver_interrupts`)."""
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command starts (issue 15): no traceback
        return _interrupted("hpsearch")
    try:
        if program:
            _deliver_interrupts(args)
        code = _run(args)
    except KeyboardInterrupt:  # a Ctrl-C that lands between the handlers below
        return _interrupted(f"hpsearch {args.command}")
    if code == 130:  # interrupted and handled deeper down (a worker's SIGINT): exit 130 too
        _forget_interrupt()
    return code


def _run(args) -> int:
    """Call the command chosen; map what escapes it to a line on stderr and an exit code."""
    what = f"hpsearch {args.command}"
    debug = getattr(args, "debug", False)
    if debug:
        os.environ["HPSEARCH_DEBUG"] = "1"
    from search.errors import exit_code, one_line
    from storage.errors import HpsearchError
    from storage.url import scrub, scrub_traceback

    from storage.settings import env as storage_env

    secret = getattr(args, "storage", None) or storage_env("OPTUNA_STORAGE", keep_empty=True)
    try:
        try:
            return args.handler.run(args)
        finally:
            sys.stdout.flush()  # a closed pipe shows here at the latest, while it is handled below
    except HpsearchError as e:
        if debug:
            print(scrub_traceback(e, secret), file=sys.stderr, end="")
        print(f"{what}: error: {scrub(str(e), secret)}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return _interrupted(what)
    except Exception as e:
        if isinstance(e, BrokenPipeError) and _reader_gone():
            _drop_stdout()  # the reader went away (`| head`): stop quietly, as `yes | head` does
            return 0
        from storage.engine import storage_error_of

        translated = storage_error_of(e, secret)  # Optuna's "invalid data ... max length" over a driver error
        if translated is not None:
            if debug:
                print(scrub_traceback(e, secret), file=sys.stderr, end="")
            print(f"{what}: error: {scrub(str(translated), secret)}", file=sys.stderr)
            return exit_code(translated)
        if debug:
            print(scrub_traceback(e, secret), file=sys.stderr, end="")
        detail = scrub(one_line(e, 300), secret)
        print(f"{what}: internal error: {type(e).__name__}: {detail} (rerun with --debug for the traceback, and report it)", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
