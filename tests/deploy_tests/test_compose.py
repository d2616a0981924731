"""The Compose file: valid against the Compose specification's schema (as vendored, with its
licence, by check-jsonschema), and holding the invariants of issue 5."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy_tests.manifests import (
    COMPOSE_FILE,
    compose_argv,
    compose_config,
    compose_raw,
    env_example,
    is_hpsearch_image,
    tool,
)

DEFAULTS = {**env_example(), "POSTGRES_PASSWORD": "placeholder", "MNIST_FILE": "/srv/mnist.npz"}


def _check_compose_schema(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=120,
    )


def test_compose_file_validates_against_the_compose_spec_schema():
    out = _check_compose_schema(COMPOSE_FILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path):
    """The check is live: a misspelt key in a device reservation fails it."""
    broken = COMPOSE_FILE.read_text().replace("capabilities: [gpu]", "capability: [gpu]", 1)
    assert broken != COMPOSE_FILE.read_text()
    path = tmp_path / "compose.yaml"
    path.write_text(broken)
    out = _check_compose_schema(path)
    assert out.returncode != 0
    assert "capabilit" in out.stdout + out.stderr


def test_interpolated_file_validates_too(tmp_path):
    """With .env.example's values filled in, the file Compose runs is still valid."""
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(compose_config(DEFAULTS)))
    out = _check_compose_schema(path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_required_variables_stop_compose_when_missing():
    """Without a password or the MNIST path Compose must refuse, not start with an empty one."""
    for name in ("POSTGRES_PASSWORD", "MNIST_FILE"):
        with pytest.raises(KeyError, match=name):
            compose_config({**DEFAULTS, name: ""})


def test_postgres_is_pinned_healthchecked_on_a_named_volume_and_unpublished():
    config = compose_config(DEFAULTS)
    db = config["services"]["db"]
    assert re.fullmatch(r"postgres:\d+\.\d+(-[a-z]+)?", db["image"]), db["image"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in config["volumes"]
    assert "ports" not in db


def test_study_init_runs_once_after_the_database_is_healthy():
    init = compose_config(DEFAULTS)["services"]["study-init"]
    assert compose_argv(init)[0] == "init"
    assert init["depends_on"]["db"]["condition"] == "service_healthy"
    assert init["restart"] == "no"


def test_one_worker_service_per_gpu_each_pinned_to_its_gpu():
    services = compose_config(DEFAULTS)["services"]
    gpu_workers = {n: s for n, s in services.items() if n.startswith("worker-gpu")}
    assert len(gpu_workers) >= 2
    for name, svc in gpu_workers.items():
        index = name.removeprefix("worker-gpu")
        assert svc["profiles"] == [f"gpu{index}"]
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
        assert device["device_ids"] == [index]
        assert str(svc["deploy"]["replicas"]) == DEFAULTS["WORKERS_PER_GPU"]
        assert compose_argv(svc)[0] == "worker"
        assert svc["depends_on"]["study-init"]["condition"] == "service_completed_successfully"
        seconds = int(svc["stop_grace_period"].rstrip("s"))
        assert 30 <= seconds <= 300, "SIGTERM handling needs more than Docker's 10 s default"


def test_packing_is_configurable():
    services = compose_config({**DEFAULTS, "WORKERS_PER_GPU": "3"})["services"]
    assert services["worker-gpu0"]["deploy"]["replicas"] == "3"


def test_only_workers_reserve_gpus():
    for name, svc in compose_config(DEFAULTS)["services"].items():
        has_gpu = bool(svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices"))
        assert has_gpu == name.startswith("worker-gpu"), name


def test_dashboard_is_published_on_loopback_only():
    services = compose_config(DEFAULTS)["services"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    argv = compose_argv(services["dashboard"])
    assert argv[0] == "dashboard"
    assert services["dashboard"]["ports"]


def test_all_hpsearch_services_share_one_image_and_get_the_storage_url_from_the_environment():
    services = compose_config(DEFAULTS)["services"]
    images = {s["image"] for s in services.values() if is_hpsearch_image(s["image"])}
    assert len(images) == 1
    for name, svc in services.items():
        if is_hpsearch_image(svc["image"]):
            assert svc["environment"]["OPTUNA_STORAGE"].startswith("postgresql+psycopg2://")
            assert not any("--storage" in w for w in compose_argv(svc)), name


def test_env_example_is_the_only_env_file_and_holds_no_secret():
    raw = compose_raw()
    assert raw  # the file parses
    values = env_example()
    for key, value in values.items():
        if re.search(r"PASSWORD|SECRET|TOKEN", key):
            assert value == "", f".env.example sets {key}: leave it empty for the user to fill"
    assert values["MNIST_FILE"] == ""
