"""The image's Dockerfile: no Docker engine runs here, so hadolint parses and lints it, and the
tests check what a build would bake in: pinned bases, a non-root user, the entrypoint."""

from __future__ import annotations

import json
import re
import subprocess

from tests.deploy_tests.manifests import DOCKERFILE, dockerfile_instructions, tool


def _instructions(word: str) -> list[str]:
    return [rest for w, rest in dockerfile_instructions() if w == word]


def test_hadolint_passes():
    out = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_is_live():
    """hadolint fails an unpinned base, so its pass above means something."""
    out = subprocess.run([tool("hadolint"), "-"], input="FROM tensorflow/tensorflow\n", capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "DL3006" in out.stdout


def _arg_defaults() -> dict[str, str]:
    return dict(a.split("=", 1) for a in _instructions("ARG") if "=" in a)


def test_bases_are_tensorflow_images_pinned_by_version_tag_with_a_cpu_variant():
    """By default; BASE_IMAGE_* build arguments replace them where no registry is reachable."""
    args = _arg_defaults()
    bases = {}
    for rest in _instructions("FROM"):
        parts = rest.split()
        if len(parts) == 3 and parts[1].upper() == "AS":
            m = re.fullmatch(r"\$\{(BASE_IMAGE_(GPU|CPU))\}", parts[0])
            assert m, f"base images come from BASE_IMAGE_* build arguments: FROM {rest}"
            bases[parts[2]] = args[m.group(1)]
    assert set(bases) == {"base-gpu", "base-cpu"}
    assert re.fullmatch(r"tensorflow/tensorflow:\d+\.\d+\.\d+-gpu", bases["base-gpu"])
    assert re.fullmatch(r"tensorflow/tensorflow:\d+\.\d+\.\d+", bases["base-cpu"])
    # One TensorFlow version for both variants, and the one pyproject.toml asks for at least.
    assert bases["base-gpu"].removesuffix("-gpu") == bases["base-cpu"]
    assert _instructions("FROM")[-1] == "base-${VARIANT}"
    assert "VARIANT=gpu" in _instructions("ARG")


def test_runs_as_a_fixed_non_root_uid():
    (user,) = _instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "Kubernetes' runAsNonRoot needs a numeric non-root UID"
    assert any(f"--uid {uid}" in run for run in _instructions("RUN"))


def test_entrypoint_is_hpsearch_in_exec_form():
    """Exec form: hpsearch is PID 1 and gets SIGTERM itself (a shell form would swallow it)."""
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["hpsearch"]


def test_installs_the_project_and_no_storage_url_is_baked_in():
    runs = " ".join(_instructions("RUN"))
    assert "pip install" in runs and "hpsearch --help" in runs
    assert "OPTUNA_STORAGE" not in " ".join(_instructions("ENV") + _instructions("ARG"))


def test_build_context_keeps_out_venvs_data_and_env_files():
    text = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()
    patterns = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    # Everything is excluded first, then only the sources the install needs come back in.
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    # ... and the wheelhouse of air-gapped builds, which is mounted for the install, never copied.
    assert allowed == {"pyproject.toml", "README.md", "search", "storage", "deploy/image/wheelhouse"}
    copied = {w.rstrip("/") for rest in _instructions("COPY") for w in rest.split()[:-1]}
    assert copied <= allowed


def test_builds_without_a_registry_beyond_the_base():
    """No `# syntax=` line (BuildKit would pull a frontend image), and an air-gapped mode: wheels
    in deploy/image/wheelhouse are installed with --no-index, mounted, not copied into a layer."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?im)^#\s*syntax\s*=", text)
    runs = " ".join(_instructions("RUN"))
    assert "--mount=type=bind,source=deploy/image/wheelhouse" in runs
    assert "--no-index --find-links /tmp/wheelhouse" in runs
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert "!deploy/image/wheelhouse/" in ignore
    assert (DOCKERFILE.parent / "wheelhouse" / "README.md").is_file()


def test_has_a_healthcheck_in_exec_form():
    (check,) = _instructions("HEALTHCHECK")
    assert json.loads(check.split("CMD", 1)[1])[0] == "hpsearch"
