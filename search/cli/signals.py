"""SIGINT and SIGTERM of a study command are taken by one thread of hpsearch's, never by TensorFlow's.

Why. A process-directed signal goes to any thread that does not block it. Python's C-level
handler only notes the signal (the Python handler runs later, in the main thread), but when it
ran on one of TensorFlow's own threads while the main thread trained, the process could abort
in glibc ("corrupted size vs. prev_size while consolidating", exit -6) before the SIGTERM's
checkpoint was written. A running process mostly takes a signal in its main thread, so this was
rare; a stopped one takes it, when it resumes, in whichever thread runs first, which is how
SLURM's ``scontrol suspend`` and a SIGTERM to a suspended job meet a worker. Measured, and the
causes screened: docs/faults.md, "A signal in TensorFlow's threads"
(``tests/benchmarks/signal_storm.py``).

How. The first line of :func:`search.__main__.main` blocks both signals (as :func:`block`
does) before anything is imported, so every thread the process starts later, TensorFlow's included,
inherits the block. :func:`start` keeps them blocked and starts a relay thread that waits for
them (``sigwait``) and hands each to the main thread as if it had arrived there:
``_thread.interrupt_main`` runs the Python handler set for it in the main thread, and
:data:`WAKE`, sent to the main thread only, ends a system call it is blocked in (a sleep, a
``waitpid``), as the signal itself would have. A signal whose handler is ``SIG_DFL`` ends the
process by that signal, as it would have; ``SIG_IGN`` drops it.

A child made by ``fork`` (``os.fork``, multiprocessing's default start method on Linux, as a
Keras data loader with ``use_multiprocessing`` uses it) unblocks both at once, so it can be
stopped as before (``terminate`` sends SIGTERM). A program a study command executes
inherits the blocked mask: ``launch``'s workers are hpsearch and relay their own, and
PostgreSQL sets its own mask when it starts (checked by tests/test_cli_run.py); a program of a
user's model started with ``subprocess`` or multiprocessing's ``spawn`` should unblock them
itself (``signal.pthread_sigmask(signal.SIG_UNBLOCK, ...)``) if it is to be stopped by them. Commands that
start no TensorFlow (``db``, ``query``, ``dashboard``) unblock both signals instead
(:func:`unblock`), as before, and so does every command on a system without real-time signals
(macOS), where the relay cannot wake the main thread.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["RELAYED", "WAKE", "block", "deliver", "relaying", "send_to_main", "start", "unblock"]

#: The signals taken by the relay thread.
RELAYED = frozenset({signal.SIGINT, signal.SIGTERM})

#: Sent by :func:`deliver` to the main thread alone (``pthread_kill``), to end a system call it
#: is blocked in; its handler does nothing. A real-time signal that nothing else sends (None
#: where there are none: no relay there).
WAKE = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") and hasattr(signal, "sigwait") else None

_relay: threading.Thread | None = None


def block() -> None:
    """Block :data:`RELAYED` in the calling thread (the main thread, before other threads start)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED)


def unblock() -> None:
    """Unblock :data:`RELAYED`: a signal that came meanwhile is delivered now, in this thread.

    Unblocked even if whoever started hpsearch had blocked them (Python keeps an inherited
    mask): a command that Ctrl-C cannot stop would be worse.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, RELAYED)


def relaying() -> bool:
    """Whether the relay thread takes :data:`RELAYED` in this process."""
    return _relay is not None


def start() -> None:
    """From the main thread: take :data:`RELAYED` in the relay thread from now on.

    A signal that came while they were blocked is handed on at once (it is pending, and
    ``sigwait`` returns it).
    """
    global _relay
    if _relay is not None:
        return
    if WAKE is None:
        unblock()
        return
    block()
    signal.signal(WAKE, _woken)
    _relay = threading.Thread(target=_relay_loop, name="hpsearch-signals", daemon=True)
    _relay.start()
    os.register_at_fork(after_in_child=_forked)


def _forked() -> None:
    """In a child made by ``fork``: no relay thread came with it, so it takes both signals itself."""
    global _relay
    _relay = None
    unblock()


def _woken(signum, frame) -> None:
    """:data:`WAKE`'s handler: nothing; its arrival has already ended the main thread's system call."""


def _relay_loop() -> None:
    while True:
        deliver(signal.sigwait(RELAYED))


def deliver(signum: int) -> None:
    """Hand ``signum`` to the main thread as if it had arrived there (from any thread)."""
    import _thread

    handler = signal.getsignal(signum)
    if handler is signal.SIG_IGN:
        return
    if handler in (signal.SIG_DFL, None):
        # its default action: end the process by it, from this thread, where it is unblocked now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        signal.pthread_kill(threading.get_ident(), signum)
        return
    _thread.interrupt_main(signum)
    try:
        signal.pthread_kill(threading.main_thread().ident, WAKE)
    except ProcessLookupError:  # the main thread has ended: the interpreter is exiting
        pass


def send_to_main(signum: int) -> None:
    """Send ``signum`` to the main thread from another thread, so that it also ends a system
    call the main thread is blocked in: through the relay where it takes the signal (the main
    thread blocks it there), else as a real signal to the main thread."""
    if relaying():
        deliver(signum)
    else:
        signal.pthread_kill(threading.main_thread().ident, signum)
