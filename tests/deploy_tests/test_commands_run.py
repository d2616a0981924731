"""The manifests' command lines work: study-init and the workers of each engine, exactly as the
files give them, run as local processes against the machine's PostgreSQL until the study is
complete.

No Docker engine, cluster or SLURM controller runs here, so each container's process is
started as the container would start it: the image's ENTRYPOINT (``hpsearch``) with the
service's or pod's arguments, and the image's ``ENV`` plus the service's environment. Three
things are mapped onto this machine, and only these: the database host becomes the local
PostgreSQL (a fresh database per module), the mounted MNIST path becomes a local copy of the
same mount, and ``HPSEARCH_HOME`` a temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.deploy_tests.manifests import (
    SBATCH,
    compose_argv,
    compose_config,
    compose_env,
    dockerfile_env,
    dockerfile_instructions,
    env_example,
    find,
    local_path_env,
    pod_spec,
    render,
)

pytestmark = pytest.mark.slow

#: Seconds a whole engine's processes may take; a worker here needs about 25 s for 4 trials.
TIMEOUT = 300
TINY = "--epochs 1 --train-size 500 --batch-size 128 --pruner none"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, mnist):
    """A directory holding ``mnist.npz``: what the containers' data mount holds."""
    if mnist is None:
        pytest.skip("no MNIST file here (set HPSEARCH_DATA or provide ../shared/data/mnist.npz)")
    d = tmp_path_factory.mktemp("data")
    (d / "mnist.npz").symlink_to(Path(mnist).resolve())
    return d


@pytest.fixture
def image_env(tmp_path) -> dict:
    """The process environment of a container of the image, mapped onto this machine."""
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE" and not k.startswith("SLURM_")}
    image = dockerfile_env()
    env.update(local_path_env(image, {image["HPSEARCH_HOME"]: str(tmp_path / "home")}))
    return env


def _entrypoint() -> list[str]:
    """The image's ENTRYPOINT as a local command: ``hpsearch`` is ``python -m search`` here."""
    (entrypoint,) = [rest for word, rest in dockerfile_instructions() if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["hpsearch"]
    return [sys.executable, "-m", "search"]


def _run(commands, tmp_path, timeout: float = TIMEOUT) -> list[subprocess.CompletedProcess]:
    """Run ``(argv, env)`` commands at the same time, as an engine starts its containers.

    Each runs in its own process group, killed whatever happens, so a failing test leaves no
    worker behind (the SLURM script's worker is its child).
    """
    procs = []
    try:
        for i, (argv, env) in enumerate(commands):
            out = open(tmp_path / f"proc{i}.out", "w+")
            procs.append((argv, subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True), out))
        results = []
        for argv, p, out in procs:
            p.wait(timeout=timeout)
            out.seek(0)
            results.append(subprocess.CompletedProcess(argv, p.returncode, out.read(), ""))
        return results
    finally:
        for _, p, out in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
            out.close()


def _assert_ok(results):
    for r in results:
        assert r.returncode == 0, f"{' '.join(r.args)} exited {r.returncode}:\n{r.stdout[-3000:]}"


def _study_state(url: str, name: str) -> tuple[Counter, dict]:
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
        return states, study.user_attrs.get("hpsearch_config", {})
    finally:
        storage.engine.dispose()


def _assert_complete(url: str, name: str, trials: int, epochs: int) -> None:
    states, config = _study_state(url, name)
    assert states["COMPLETE"] + states["PRUNED"] == trials, states
    assert states["RUNNING"] == 0 and states["WAITING"] == 0, states
    # The settings came from study-init (a worker would have created the study with defaults).
    assert config["epochs"] == epochs and config["train_size"] == 500


def test_compose_study_init_and_workers_complete_the_study(local_pg_url, data_dir, image_env, tmp_path):
    # What a user's .env holds: .env.example with the required values and a tiny study.
    dotenv = {**env_example(), "POSTGRES_PASSWORD": "not-used-here", "MNIST_FILE": str(data_dir / "mnist.npz"),
              "STUDY": "compose-smoke", "TRIALS": "4", "STUDY_FLAGS": TINY}
    services = compose_config(dotenv)["services"]

    def command(name: str):
        svc = services[name]
        env = compose_env(svc)
        mounts = {v["target"]: v["source"] for v in svc["volumes"]}
        env = local_path_env(env, mounts)
        assert "@db:5432/" in env["OPTUNA_STORAGE"], "the Compose services reach the db service"
        env["OPTUNA_STORAGE"] = local_pg_url
        return [*_entrypoint(), *compose_argv(svc)], {**image_env, **env}

    _assert_ok(_run([command("study-init")], tmp_path))
    # Two workers join the study at once, as worker-gpu0 and worker-gpu1 would on two GPUs.
    _assert_ok(_run([command("worker-gpu0"), command("worker-gpu1")], tmp_path))
    _assert_complete(local_pg_url, "compose-smoke", trials=4, epochs=1)


def test_kubernetes_cpu_smoke_jobs_complete_the_study(local_pg_url, data_dir, image_env, tmp_path):
    docs = render("overlays/cpu-smoke")

    def command(job: dict):
        spec = pod_spec(job)
        (c,) = spec["containers"]
        assert "command" not in c, "the image's ENTRYPOINT runs"
        env = {}
        for e in c["env"]:
            if "value" in e:
                env[e["name"]] = e["value"]
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                assert (e["name"], ref["key"]) == ("OPTUNA_STORAGE", "storage-url")
                env[e["name"]] = local_pg_url
        volumes = {v["name"]: v for v in spec["volumes"]}
        # The hostPath on the kind node is the host directory kind-cluster.yaml mounts there.
        mounts = {m["mountPath"]: str(data_dir) for m in c["volumeMounts"] if "hostPath" in volumes[m["name"]]}
        assert mounts, "cpu-smoke reads MNIST from a hostPath"
        return [*_entrypoint(), *c["args"]], {**image_env, **local_path_env(env, mounts)}

    init = find(docs, "Job", "hpsearch-study-init")
    worker = find(docs, "Job", "hpsearch-worker")
    _assert_ok(_run([command(init)], tmp_path))
    # The indexed Job's pods, as many at once as its parallelism.
    _assert_ok(_run([command(worker)] * worker["spec"]["parallelism"], tmp_path))
    args = pod_spec(worker)["containers"][0]["args"]
    _assert_complete(local_pg_url, args[args.index("--study") + 1], trials=int(args[args.index("--trials") + 1]), epochs=1)


def test_slurm_array_task_completes_the_study(local_pg_url, data_dir, image_env, tmp_path):
    """The README's SLURM steps: hpsearch init once, then the job script (outside SLURM it runs
    one worker without srun), with the storage URL and data in the environment."""
    hpsearch = Path(sys.executable).parent / "hpsearch"
    assert hpsearch.exists(), "the hpsearch console script is missing: pip install -e '.[test]'"
    env = {**image_env, "OPTUNA_STORAGE": local_pg_url, "HPSEARCH_DATA": str(data_dir / "mnist.npz"),
           "PATH": f"{hpsearch.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _assert_ok(_run([([str(hpsearch), "init", "--study", "slurm-smoke", *TINY.split()], env)], tmp_path))
    _assert_ok(_run([(["bash", str(SBATCH), "--study", "slurm-smoke", "--trials", "4"], env)], tmp_path))
    _assert_complete(local_pg_url, "slurm-smoke", trials=4, epochs=1)


def test_slurm_script_refuses_to_start_without_a_storage_url(image_env, tmp_path):
    env = {k: v for k, v in image_env.items() if k != "OPTUNA_STORAGE"}
    (r,) = _run([(["bash", str(SBATCH), "--study", "s", "--trials", "4"], env)], tmp_path, timeout=30)
    assert r.returncode != 0
    assert "OPTUNA_STORAGE" in r.stdout and "never pass the storage URL as an argument" in r.stdout
