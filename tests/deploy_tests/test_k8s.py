"""The Kubernetes manifests: every overlay renders with kubectl kustomize and validates against
the Kubernetes API schemas (kubernetes-validate), and holds the invariants of issue 5."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from tests.deploy_tests.manifests import K8S, OVERLAYS, containers, find, is_hpsearch_image, pod_spec, render

#: The oldest Kubernetes the manifests target (podFailurePolicy and elastic indexed Jobs are GA
#: from 1.31) and the newest whose schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
ALL = ("base", *(f"overlays/{o}" for o in OVERLAYS))
WORKLOADS = ("hpsearch-study-init", "hpsearch-worker", "hpsearch-dashboard")


def _validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kustomization", ALL)
def test_renders_and_validates_against_kubernetes_schemas(kustomization, version):
    docs = render(kustomization)
    assert docs, f"{kustomization} rendered nothing"
    for doc in docs:
        try:
            _validate(doc, version)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{kustomization}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version}: {e.message} at {list(e.path)}")


def test_the_validator_rejects_a_broken_manifest():
    """The schema check is live: a misspelt field in a rendered Job fails strict validation."""
    job = copy.deepcopy(find(render("overlays/gpu"), "Job", "hpsearch-worker"))
    job["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(job, K8S_VERSIONS[0])


def test_secret_example_validates_and_holds_every_key_the_workloads_use():
    example = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    _validate(example, K8S_VERSIONS[0])
    used = set()
    for overlay in ALL:
        for _, c in containers(render(overlay)):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == example["metadata"]["name"]
                    used.add(ref["key"])
    assert used == set(example["stringData"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_rendered(overlay):
    """Secrets are created out of band (kubectl create secret), never applied from the repo."""
    assert [d["metadata"]["name"] for d in render(f"overlays/{overlay}") if d["kind"] == "Secret"] == []


@pytest.mark.parametrize("kustomization", ALL)
def test_every_resource_and_pod_carries_the_name_and_component_labels(kustomization):
    for doc in render(kustomization):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "hpsearch", where
        assert labels.get("app.kubernetes.io/component"), where
        template = doc.get("spec", {}).get("template")
        if template:
            assert template["metadata"]["labels"]["app.kubernetes.io/component"] == labels["app.kubernetes.io/component"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_limits_only_on_workers_and_only_where_gpus_are(overlay):
    docs = render(f"overlays/{overlay}")
    want = 0 if overlay == "cpu-smoke" else 1
    for doc, c in containers(docs):
        limits = c.get("resources", {}).get("limits", {})
        gpus = int(limits.get("nvidia.com/gpu", 0))
        if doc["metadata"]["name"] == "hpsearch-worker":
            assert gpus == want, f"{overlay}: worker has nvidia.com/gpu {gpus}, expected {want}"
        else:
            assert gpus == 0, f"{overlay}: {doc['metadata']['name']} asks for a GPU"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_job_is_indexed_parallel_and_stops_gracefully(overlay):
    job = find(render(f"overlays/{overlay}"), "Job", "hpsearch-worker")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 1
    # Workers must not race study-init to create the study: they start once init is done.
    assert spec["suspend"] is True
    assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in spec["podFailurePolicy"]["rules"])
    pod = pod_spec(job)
    # The worker exits 143 within a few seconds of SIGTERM; the grace period must cover that
    # with room for a slow database, and stay short enough for node drains.
    assert 30 <= pod["terminationGracePeriodSeconds"] <= 300
    assert pod["restartPolicy"] == "Never"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpsearch_pods_run_as_non_root_without_privilege_escalation(overlay):
    for doc, c in containers(render(f"overlays/{overlay}")):
        if is_hpsearch_image(c["image"]):
            assert pod_spec(doc)["securityContext"]["runAsNonRoot"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_study_init_worker_and_dashboard_name_the_same_study(overlay):
    docs = render(f"overlays/{overlay}")
    studies = set()
    for name in WORKLOADS:
        args = pod_spec(find(docs, "Job" if name != "hpsearch-dashboard" else "Deployment", name))["containers"][0]["args"]
        studies.add(args[args.index("--study") + 1])
    assert len(studies) == 1, studies


def test_only_study_init_carries_study_settings():
    """Workers join the study and read its stored settings; a second copy could contradict it."""
    settings = {"--epochs", "--batch-size", "--train-size", "--validation", "--lr-min", "--lr-max", "--pruner", "--seed"}
    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        worker = pod_spec(find(docs, "Job", "hpsearch-worker"))["containers"][0]["args"]
        assert not settings & set(worker), f"{overlay}: the worker repeats study settings"


def test_external_postgres_drops_the_in_cluster_database():
    docs = render("overlays/external-postgres")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "hpsearch-postgres") not in kinds
    assert ("Service", "hpsearch-postgres") not in kinds
    assert ("Job", "hpsearch-worker") in kinds


def test_postgres_keeps_its_data_on_a_volume_claim():
    sts = find(render("overlays/gpu"), "StatefulSet", "hpsearch-postgres")
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert claims and claims <= mounts
    assert find(render("overlays/gpu"), "Service", "hpsearch-postgres")["spec"]["ports"][0]["port"] == 5432


def test_dashboard_service_stays_inside_the_cluster():
    for overlay in OVERLAYS:
        svc = find(render(f"overlays/{overlay}"), "Service", "hpsearch-dashboard")
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not [d for d in render("overlays/gpu") if d["kind"] == "Ingress"]
