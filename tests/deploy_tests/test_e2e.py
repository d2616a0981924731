"""deploy/e2e/run, offline: its scripts pass shellcheck, it refuses bad input in one line, and it
drives the project's own deploy files. The engines themselves run in `.ci/run` (root needed)."""

from __future__ import annotations

import subprocess

from tests.deploy_tests.manifests import DEPLOY, tool

E2E = DEPLOY / "e2e"


def test_shellcheck_passes():
    scripts = [E2E / "run", *sorted(E2E.glob("*.sh")), E2E / "postgres" / "entrypoint.sh"]
    out = subprocess.run([tool("shellcheck"), "--shell=bash", "-x", *map(str, scripts)],
                         capture_output=True, text=True, timeout=120, cwd=DEPLOY.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_postgres_dockerfile_passes_hadolint():
    out = subprocess.run([tool("hadolint"), str(E2E / "postgres" / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_unknown_engine_is_one_line_and_exit_2():
    for argv in (["kubernetes"], [], ["slurm", "hosts"]):
        out = subprocess.run([str(E2E / "run"), *argv], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, (argv, out)
        assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, (argv, out.stderr)
        assert "slurm|hosts|compose|all" in out.stderr


def test_each_engine_runs_the_projects_own_files():
    """Not copies: the sbatch script, the Compose file, the Dockerfile and the k8s manifests."""
    text = {p.stem: p.read_text() for p in E2E.glob("*.sh")}
    assert "deploy/slurm/hpsearch-worker.sbatch" in text["slurm"]
    assert "deploy/compose/compose.yaml" in text["compose"] and "deploy/image/Dockerfile" in text["compose"]
    assert "deploy/k8s/overlays/cpu-smoke" in text["hosts"]
    for engine in ("slurm", "hosts", "compose"):
        assert "e2e_finish expected=" in text[engine]


def test_prepare_installs_every_engines_packages_and_builds_with_the_compose_steps():
    """`deploy/e2e/run prepare` (run by .ci/run beside the suite) installs what each engine asks
    for, so an engine added to or changed later is not left to install after the suite."""
    import re

    def packages(text: str) -> set[str]:
        return {p for line in re.findall(r"e2e_apt ([^|\n]+)", text) for p in line.split() if not p.startswith("$")}

    prepare = (E2E / "prepare.sh").read_text()
    wanted = set().union(*(packages((E2E / f"{engine}.sh").read_text()) for engine in ("slurm", "hosts", "compose")))
    assert wanted and wanted <= packages(prepare), wanted - packages(prepare)
    for step in ("_compose_setup", "_compose_base", "_compose_wheelhouse", "_compose_build"):
        assert step in prepare
    assert "_compose_up" not in prepare, "prepare runs no study"
    assert "deploy/e2e/run prepare" in (E2E.parent.parent / ".ci" / "run").read_text()
