"""The SLURM job-array script: it parses (bash -n), passes shellcheck, and asks SLURM for what
the worker's SIGTERM handling needs. No SLURM runs here; test_commands_run.py runs the script
outside SLURM, where it starts one worker without srun."""

from __future__ import annotations

import re
import subprocess

from tests.deploy_tests.manifests import SBATCH, tool


def _directives() -> list[str]:
    return [line.split(None, 1)[1].strip() for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH")]


def test_bash_parses_it():
    out = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_shellcheck_passes():
    out = subprocess.run([tool("shellcheck"), "--shell=bash", str(SBATCH)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_one_gpu_per_array_task_and_requeue_on_preemption():
    directives = _directives()
    assert "--gres=gpu:1" in directives
    assert "--requeue" in directives
    signal = next(d for d in directives if d.startswith("--signal="))
    m = re.fullmatch(r"--signal=B:(USR1|TERM)@(\d+)", signal)
    assert m, signal
    # The warning must come long enough before the time limit for a worker to stop (seconds).
    assert int(m.group(2)) >= 60


def test_storage_url_comes_from_the_environment_only():
    text = SBATCH.read_text()
    assert '"${OPTUNA_STORAGE:?' in text
    assert "--storage" not in text


def test_signals_reach_the_worker_and_time_limits_requeue():
    text = SBATCH.read_text()
    assert re.search(r"trap '[^']*' USR1", text) and re.search(r"trap '[^']*' TERM", text)
    assert 'kill -TERM "$worker"' in text  # outside SLURM
    # Under SLURM, the time-limit warning signals the job's steps, never srun (which would SIGKILL
    # the worker): deploy/e2e/run slurm checks the worker's 143 on a real cluster.
    assert 'scancel --signal=TERM "${SLURM_JOB_ID}"' in text
    assert 'kill -TERM "$worker"' not in text.split("elif [[ $1 == USR1 ]]", 1)[1].split("\n}", 1)[0]
    assert 'scontrol requeue "${SLURM_JOB_ID}"' in text
