"""Invariants across every deployment file: the CLI flags and environment variables they use
exist, images are pinned, and no secret is committed."""

from __future__ import annotations

import re
import subprocess

import pytest

from search.env import ENV_VARS
from tests.conftest import REPO
from tests.deploy_tests.manifests import (
    DEPLOY,
    DEPLOY_README,
    OVERLAYS,
    SBATCH,
    all_command_lines,
    cli_parsers,
    command_lines_in_text,
    compose_config,
    compose_env,
    containers,
    dockerfile_env_names,
    dockerfile_instructions,
    env_example,
    flags_of,
    is_hpsearch_image,
    project_version,
    render,
)

#: Variables of Python itself that the image sets; everything else must be hpsearch's own.
PYTHON_ENV = {"PYTHONUNBUFFERED"}
COMPOSE_DEFAULTS = {**env_example(), "POSTGRES_PASSWORD": "placeholder", "MNIST_FILE": "/srv/mnist.npz"}


def _deploy_files() -> list:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "deploy"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / p for p in listed.stdout.split()]


# --- the CLI ----------------------------------------------------------------------------------


def test_command_lines_are_found_in_every_kind_of_file():
    """The collector itself works: each engine's files yield their command lines."""
    sources = {where.split(":")[0] for where, _ in all_command_lines()}
    assert {"compose.yaml", "deploy/slurm/hpsearch-worker.sbatch", "deploy/README.md"} <= sources
    assert {f"k8s/{o}" for o in OVERLAYS} <= sources


def _flag_problems(lines) -> list[str]:
    parsers = cli_parsers()
    problems = []
    for where, argv in lines:
        command, args = argv[0], argv[1:]
        if command not in parsers:
            problems.append(f"{where}: `hpsearch {command}` is not a subcommand (have: {', '.join(sorted(parsers))})")
            continue
        known = flags_of(parsers[command])
        for word in args:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and flag != "--" and flag not in known:
                problems.append(f"{where}: `hpsearch {command}` has no flag {flag}")
    return problems


def test_every_subcommand_and_flag_exists_in_the_cli():
    problems = _flag_problems(all_command_lines())
    assert not problems, "\n".join(problems)


def test_the_flag_check_catches_misspellings_and_ignores_prose():
    text = (
        "#   hpsearch worker --study s --trails 4\n"
        "hpsearch wroker --study s\n"
        "sbatch --array=0-3 deploy/slurm/hpsearch-worker.sbatch --study s --gpus 2\n"
        "hpsearch itself reads only its registry; `hpsearch init` flags\n"
        "hpsearch db url && hpsearch dashboard --port 8080 | tee log\n"
    )
    lines = command_lines_in_text(text, "x")
    assert [argv[0] for _, argv in lines] == ["worker", "wroker", "worker", "init", "db url", "dashboard"]
    problems = _flag_problems(lines)
    assert len(problems) == 3
    assert "--trails" in problems[0] and "wroker" in problems[1] and "--gpus" in problems[2]


def test_no_deployment_passes_the_storage_url_as_an_argument():
    offenders = [where for where, argv in all_command_lines() if any(w.startswith("--storage") for w in argv)]
    assert not offenders, f"--storage puts the password in the process list: {offenders}"


# --- environment variables ----------------------------------------------------------------------


def test_hpsearch_containers_get_only_registered_variables():
    found = {}
    for name, svc in compose_config(COMPOSE_DEFAULTS)["services"].items():
        if is_hpsearch_image(svc["image"]):
            for var in compose_env(svc):
                found.setdefault(var, f"compose.yaml:{name}")
    for overlay in OVERLAYS:
        for doc, c in containers(render(f"overlays/{overlay}")):
            if is_hpsearch_image(c["image"]):
                for e in c.get("env", []):
                    found.setdefault(e["name"], f"k8s/{overlay}:{doc['metadata']['name']}")
    for var in dockerfile_env_names():
        found.setdefault(var, "Dockerfile")
    unknown = {v: where for v, where in found.items() if v not in ENV_VARS and v not in PYTHON_ENV}
    assert not unknown, f"hpsearch does not read these (search/env.py ENV_VARS): {unknown}"
    assert {"OPTUNA_STORAGE", "HPSEARCH_DATA"} <= set(found)


def test_every_project_variable_named_anywhere_is_registered():
    """An OPTUNA_*/HPSEARCH_* name in a manifest, a script or the docs is one the CLI reads
    (but for HPSEARCH_E2E_*, the knobs of deploy/e2e/run itself, which hpsearch never sees)."""
    unknown = set()
    for path in _deploy_files():
        for name in re.findall(r"\b((?:OPTUNA|HPSEARCH)_[A-Z0-9_]+)\b", path.read_text(errors="replace")):
            if name not in ENV_VARS and not name.startswith("HPSEARCH_E2E_"):
                unknown.add(f"{path.relative_to(REPO)}: {name}")
    assert not unknown, sorted(unknown)


def test_slurm_script_reads_only_registered_and_slurm_variables():
    names = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", SBATCH.read_text()))
    unknown = {n for n in names if n not in ENV_VARS and not n.startswith("SLURM_")}
    assert not unknown, unknown


def test_readme_documents_exactly_the_registry():
    text = DEPLOY_README.read_text()
    section = text.split("## The environment-variable contract", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.M))
    assert documented == set(ENV_VARS)


# --- images -------------------------------------------------------------------------------------


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.match(r"v?\d", tag))


def test_every_image_is_pinned_by_a_version_tag():
    images = {}
    for name, svc in compose_config(COMPOSE_DEFAULTS)["services"].items():
        images[svc["image"]] = f"compose.yaml:{name}"
    for variant in ("cpu", "gpu"):
        svc = compose_config({**COMPOSE_DEFAULTS, "IMAGE_VARIANT": variant})["services"]["worker-cpu"]
        images[svc["image"]] = f"compose.yaml (IMAGE_VARIANT={variant})"
    for overlay in OVERLAYS:
        for doc, c in containers(render(f"overlays/{overlay}")):
            images[c["image"]] = f"k8s/{overlay}:{doc['metadata']['name']}"
    args = dict(rest.split("=", 1) for word, rest in dockerfile_instructions() if word == "ARG" and "=" in rest)
    for word, rest in dockerfile_instructions():
        if word == "FROM" and " AS " in rest.upper():
            # FROM ${BASE_IMAGE_GPU}: the default of the build argument is what a build pulls.
            images[re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])] = "Dockerfile"
    unpinned = {i: where for i, where in images.items() if not _pinned(i)}
    assert not unpinned, unpinned
    assert len(images) >= 5


def test_hpsearch_image_tags_carry_the_project_version():
    version = project_version()
    tags = {svc["image"] for svc in compose_config(COMPOSE_DEFAULTS)["services"].values() if is_hpsearch_image(svc["image"])}
    for overlay in OVERLAYS:
        tags |= {c["image"] for _, c in containers(render(f"overlays/{overlay}")) if is_hpsearch_image(c["image"])}
    for image in tags:
        assert re.fullmatch(rf"hpsearch:{re.escape(version)}-(gpu|cpu)", image), image
    assert f'org.opencontainers.image.version="{version}"' in (DEPLOY / "image" / "Dockerfile").read_text()


# --- secrets --------------------------------------------------------------------------------------

#: What may stand where a password goes in a URL: a variable, a placeholder, a mask.
_PLACEHOLDER = re.compile(r"\$\{[^}]+\}|\$\([^)]+\)|\$[A-Za-z_]\w*|<[A-Z_]+>|[A-Z_]*PASSWORD[A-Z_]*|\*\*\*")


def test_no_password_is_committed_in_any_url():
    found = []
    for path in _deploy_files():
        for m in re.finditer(r"[a-z+]+://[^:/@\s'\"]+:([^@\s'\"]+)@", path.read_text(errors="replace")):
            if not _PLACEHOLDER.fullmatch(m.group(1)):
                found.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    assert not found, found


def test_no_env_file_is_committed_and_env_is_ignored():
    files = {p.relative_to(REPO).as_posix() for p in _deploy_files()}
    assert "deploy/compose/.env.example" in files
    assert not [f for f in files if f.endswith("/.env") or f.endswith(".env.local")]
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/compose/.env"], cwd=REPO)
    assert ignored.returncode == 0, "deploy/compose/.env must be git-ignored"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_reach_containers_only_from_secrets(overlay):
    for doc, c in containers(render(f"overlays/{overlay}")):
        for e in c.get("env", []):
            if re.search(r"PASSWORD|STORAGE|SECRET|TOKEN", e["name"]):
                assert "value" not in e, f"{doc['metadata']['name']}: {e['name']} is a literal"
                assert e["valueFrom"]["secretKeyRef"]


def test_compose_credentials_come_from_env_only():
    raw = (DEPLOY / "compose" / "compose.yaml").read_text()
    for m in re.finditer(r"^\s*POSTGRES_PASSWORD:\s*(\S+)", raw, flags=re.M):
        assert m.group(1).startswith("${POSTGRES_PASSWORD:?"), m.group(0)
