"""Exit codes come from error types (search.errors), never from parsing a message."""

from __future__ import annotations

import pickle
import signal

import pytest

from search.errors import (
    EXIT_CRASHED,
    EXIT_FATAL,
    ConfigError,
    DataError,
    TrialEnvironmentError,
    WorkerFatalError,
    WorkerInterrupted,
    exit_code,
)
from storage.errors import StorageError


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_an_interrupt_exits_with_128_plus_its_signal(signum, code):
    error = WorkerInterrupted(signum)
    assert error.exit_code == code == exit_code(error)
    assert str(error) == f"interrupted by {signal.Signals(signum).name}"


def test_the_message_does_not_pick_the_code():
    error = WorkerInterrupted(signal.SIGINT, "not SIGTERM: workers stopped")
    assert error.exit_code == 130 and str(error) == "interrupted by SIGINT; not SIGTERM: workers stopped"
    again = pickle.loads(pickle.dumps(WorkerInterrupted(signal.SIGTERM, "x")))
    assert (again.exit_code, str(again)) == (143, "interrupted by SIGTERM; x")


def test_each_error_type_has_its_exit_code():
    assert exit_code(ConfigError("x")) == exit_code(DataError("x")) == exit_code(StorageError("x")) == 2
    assert exit_code(WorkerFatalError("x")) == EXIT_FATAL == 3
    assert exit_code(TrialEnvironmentError("x")) == EXIT_CRASHED == 1
    assert exit_code(RuntimeError("a bug")) == EXIT_CRASHED
    assert exit_code(KeyboardInterrupt()) == 130


def test_one_line_drops_the_terminal_codes_keras_writes_into_its_errors():
    """Keras 3 bolds names in its errors' text ("\\x1b[1mLayer "flatten" expects ...\\x1b[0m"):
    a trial's fail reason and the worker's last line showed the codes as "[1m" in logs."""
    from search.errors import one_line

    text = 'Exception encountered when calling Sequential.call().\n\n\x1b[1mLayer "flatten" expects 1 input(s)\x1b[0m\n\nArguments'
    assert one_line(text, 300) == 'Exception encountered when calling Sequential.call(). Layer "flatten" expects 1 input(s) Arguments'
