"""The launcher's pure parts: where workers go, and what nvidia-smi's answer means."""

from __future__ import annotations

import os
import signal
import stat

import pytest

from search.errors import ConfigError
from search.fleet.launch import check_gpu, detect_gpus, plan_slots


def _placement(slots):
    return [(s.index, s.gpu) for s in slots]


def test_per_gpu_workers_fill_each_gpu_in_turn():
    assert _placement(plan_slots(workers=None, gpus=["0", "1"], per_gpu=2)) == [(0, "0"), (1, "0"), (2, "1"), (3, "1")]


def test_a_worker_count_is_spread_round_robin_over_the_gpus():
    assert _placement(plan_slots(workers=5, gpus=["2", "3"], per_gpu=1)) == [(0, "2"), (1, "3"), (2, "2"), (3, "3"), (4, "2")]


def test_without_gpus_the_workers_run_on_the_cpu():
    assert _placement(plan_slots(workers=3, gpus=None, per_gpu=1)) == [(0, None), (1, None), (2, None)]
    assert _placement(plan_slots(workers=None, gpus=[], per_gpu=4)) == [(0, None)]


@pytest.mark.parametrize("kwargs, flag", [(dict(workers=None, gpus=["0"], per_gpu=0), "--per-gpu"), (dict(workers=0, gpus=None, per_gpu=1), "--workers")])
def test_bad_counts_name_their_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        plan_slots(**kwargs)


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """Put an ``nvidia-smi`` that prints ``stdout`` and exits ``code`` first on PATH.

    This machine has no GPU; the program stands in for the driver's tool, not for any part
    of hpsearch, so that its output formats can be parsed here.
    """

    def install(stdout: str, code: int = 0):
        script = tmp_path / "nvidia-smi"
        script.write_text(f"#!/bin/sh\ncat <<'OUT'\n{stdout}\nOUT\nexit {code}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    return install


def test_detect_gpus_reads_index_and_name(nvidia_smi):
    nvidia_smi("0, NVIDIA H200\n1, NVIDIA H200\n")
    assert detect_gpus() == [("0", "NVIDIA H200"), ("1", "NVIDIA H200")]


def test_no_devices_is_an_empty_list_and_a_broken_tool_is_unknown(nvidia_smi):
    nvidia_smi("No devices were found", code=6)
    assert detect_gpus() == []
    nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", code=9)
    assert detect_gpus() is None


def test_without_nvidia_smi_the_gpus_are_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() is None
    check_gpu("7")  # left to the worker, which refuses the CPU when its backend sees no GPU


def test_check_gpu_names_the_gpus_that_exist(nvidia_smi):
    nvidia_smi("0, NVIDIA H200\n")
    check_gpu("0")
    with pytest.raises(ConfigError, match=r"--gpu 3 does not exist on this machine: use one of 0 \(NVIDIA H200\)"):
        check_gpu("3")
    with pytest.raises(ConfigError, match="is not a GPU index"):
        check_gpu("cuda:0")


def test_a_worker_that_crashed_or_was_killed_is_restarted_one_that_stopped_is_not():
    from search.errors import EXIT_CRASHED, WorkerFatalError, WorkerInterrupted, exit_code
    from search.fleet.launch import restartable

    assert restartable(-signal.SIGKILL) and restartable(EXIT_CRASHED) and restartable(exit_code(RuntimeError("a bug")))
    for code in (0, ConfigError("x").exit_code, WorkerFatalError("x").exit_code, WorkerInterrupted(signal.SIGTERM).exit_code, 130):
        assert not restartable(code), code
