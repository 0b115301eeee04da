"""The Kubernetes manifests and the image: rendered with kustomize, validated offline.

Every kustomization renders with `kubectl kustomize` and every object passes
kubernetes-validate's strict schemas (unknown fields rejected) for Kubernetes 1.30.
No cluster is involved: this checks structure and policy, not runtime behaviour.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from components.image import RATCHET_IMAGE

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/prod", "mlflow"]
OVERLAYS = {"overlays/dev": "ratchet-dev", "overlays/prod": "ratchet-prod"}
K8S_VERSION = "1.30.0"  # oldest Kubernetes the manifests target; schemas ship in kubernetes-validate
IMAGE_NAME, IMAGE_TAG = RATCHET_IMAGE.rsplit(":", 1)
STAGE_ENV = ("RATCHET_PRODUCTION_VERSION", "RATCHET_CANARY_VERSION", "RATCHET_CANARY_WEIGHT",
             "RATCHET_SHADOW_VERSION")

# What the controller may do, and nothing more: (apiGroup, resource, verb, resourceName or None).
ALLOWED_CONTROLLER_GRANTS = {
    *(("apps", "deployments", verb, "ratchet-decision") for verb in ("get", "list", "watch", "patch")),
    *(("apps", "replicasets", verb, None) for verb in ("get", "list", "watch")),
}


def _kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.skip("neither kubectl nor kustomize is installed: cannot render the manifests")


@functools.cache
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run([*_kustomize_command(), str(MANIFESTS / kustomization)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, f"kustomize failed for {kustomization}:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(kustomization: str) -> list[dict[str, Any]]:
    """The rendered objects (a fresh copy: tests may not alter each other's input)."""
    return copy.deepcopy(list(_render(kustomization)))


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(deployment: dict) -> dict:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


# -- rendering and schema validation ------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_and_passes_strict_validation(kustomization):
    import kubernetes_validate

    docs = render(kustomization)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kustomization}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} "
                        f"at {'.'.join(map(str, exc.path))}")


def test_strict_validation_would_catch_a_misspelt_field():
    import kubernetes_validate

    deployment = one(render("overlays/prod"), "Deployment", "ratchet-decision")
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lives_in_the_overlay_namespace(overlay):
    namespace = OVERLAYS[overlay]
    docs = render(overlay)
    assert one(docs, "Namespace", namespace)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']}/{doc['metadata']['name']}"
    binding = one(docs, "RoleBinding", "ratchet-controller")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ratchet-controller", "namespace": namespace}]


# -- RBAC ---------------------------------------------------------------------------------


def grants(role: dict) -> set[tuple[str, str, str, str | None]]:
    out = set()
    for rule in role.get("rules", []):
        assert not rule.get("nonResourceURLs"), "no non-resource URLs"
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    for name in rule.get("resourceNames") or [None]:
                        out.add((group, resource, verb, name))
    return out


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_controller_role_grants_nothing_beyond_its_list(kustomization):
    docs = render(kustomization)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "no cluster-wide roles"
    roles = [d for d in docs if d["kind"] == "Role"]
    if kustomization == "mlflow":
        assert roles == []
        return
    [role] = roles
    assert role["metadata"]["name"] == "ratchet-controller"
    granted = grants(role)
    assert not any("*" in g for g in granted), "no wildcards"
    assert granted <= ALLOWED_CONTROLLER_GRANTS, f"beyond the list: {granted - ALLOWED_CONTROLLER_GRANTS}"
    assert granted == ALLOWED_CONTROLLER_GRANTS, f"missing: {ALLOWED_CONTROLLER_GRANTS - granted}"

    binding = one(docs, "RoleBinding", "ratchet-controller")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ratchet-controller"}
    assert [b for b in docs if b["kind"] == "RoleBinding"] == [binding]
    controller = one(docs, "Deployment", "ratchet-controller")
    assert controller["spec"]["template"]["spec"]["serviceAccountName"] == "ratchet-controller"
    # The decision service gets no API credentials at all.
    decision = one(docs, "Deployment", "ratchet-decision")
    assert decision["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in decision["spec"]["template"]["spec"]


# -- no secret values ---------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL", re.IGNORECASE)
URI_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
KEY_LIKE = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[A-Za-z0-9]{30,}")


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _env_entries(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "env" and isinstance(v, list):
                yield from (e for e in v if isinstance(e, dict))
            else:
                yield from _env_entries(v)
    elif isinstance(node, list):
        for v in node:
            yield from _env_entries(v)


def secret_values(doc: dict) -> list[str]:
    """Everything in one object that looks like a secret value kept in the repo."""
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    found = []
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        found.append(f"{where}: a Secret with data")
    for env in _env_entries(doc):
        if SECRET_NAME.search(env.get("name", "")) and env.get("value"):
            found.append(f"{where}: env {env['name']} has a literal value")
    for path, text in _strings(doc):
        if URI_WITH_CREDENTIALS.search(text) or KEY_LIKE.search(text):
            found.append(f"{where}{path}: credentials in {text[:60]!r}")
    return found


def test_the_secret_checker_finds_what_it_looks_for():
    assert secret_values({"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}})
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"env": [
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"},
        {"name": "MLFLOW_TRACKING_URI", "value": "postgresql://ratchet:hunter2@db:5432/mlflow"}]}]}}
    assert len(secret_values(pod)) == 2
    assert secret_values({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "AKIAABCDEFGHIJKLMNOP"}})
    fine = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"env": [
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}]}]}}
    assert secret_values(fine) == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_manifest_holds_a_secret_value(kustomization):
    docs = render(kustomization)
    assert [f for d in docs for f in secret_values(d)] == []
    # MLflow and object-store settings come from a Secret the user creates.
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        refs = {e["secretRef"]["name"] for e in container(deployment).get("envFrom", []) if "secretRef" in e}
        refs |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container(deployment).get("env", [])
                 if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs, f"{deployment['metadata']['name']} reads no Secret"


def test_no_file_under_manifests_holds_a_secret_value():
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                assert secret_values(doc) == [], path


# -- the decision service and the controller ----------------------------------------------


@pytest.mark.parametrize("kustomization", ["base", *OVERLAYS])
def test_the_decision_deployment_is_hardened_and_leaves_the_stages_to_the_controller(kustomization):
    docs = render(kustomization)
    d = one(docs, "Deployment", "ratchet-decision")
    spec, pod = d["spec"], d["spec"]["template"]["spec"]
    c = container(d)

    assert spec["revisionHistoryLimit"] >= 10, "rollout history is the release history"
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert "replicas" not in spec, "the HorizontalPodAutoscaler owns the replica count"
    assert c["args"] == ["serve", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for part in ("requests", "limits"):
        assert set(c["resources"][part]) == {"cpu", "memory"}, part

    env = {e["name"]: e.get("value") for e in c["env"]}
    # the controller owns the stages: a value here would be put back by every re-apply
    assert not set(STAGE_ENV) & set(env), "stage env in the manifest: `kubectl apply` would undo releases"
    assert "ratchet.io/stages" not in d["spec"]["template"]["metadata"]["annotations"]
    assert {"secretRef": {"name": "ratchet-mlflow"}} in c["envFrom"]

    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts[env["RATCHET_DECISION_LOG"]]]


@pytest.mark.parametrize("kustomization", ["base", *OVERLAYS])
def test_the_controller_is_hardened_and_mounts_contract_and_plan(kustomization):
    docs = render(kustomization)
    d = one(docs, "Deployment", "ratchet-controller")
    c, pod = container(d), d["spec"]["template"]["spec"]
    assert c["args"] == ["controller"]
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}

    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_maps = {m["metadata"]["name"]: m for m in docs if m["kind"] == "ConfigMap"}
    for var, volume, key in (("RATCHET_CONTRACT", "contract", "fraud.yaml"),
                             ("RATCHET_ROLLOUT_PLAN", "rollout", "rollout.yaml")):
        assert env[var] == f"{mounts[volume]}/{key}"
        cm = config_maps[volumes[volume]["configMap"]["name"]]  # the generated, hash-suffixed name
        assert key in cm["data"]


@pytest.mark.parametrize("overlay, floor, ceiling", [("base", 2, 10), ("overlays/dev", 1, 1),
                                                      ("overlays/prod", 3, 12)])
def test_service_autoscaler_and_disruption_budget_point_at_the_decision_pods(overlay, floor, ceiling):
    docs = render(overlay)
    pod_labels = one(docs, "Deployment", "ratchet-decision")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service", "ratchet-decision")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = one(docs, "HorizontalPodAutoscaler", "ratchet-decision")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ratchet-decision"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (floor, ceiling)
    pdb = one(docs, "PodDisruptionBudget", "ratchet-decision")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_overlay_resources_differ_where_they_should():
    dev = container(one(render("overlays/dev"), "Deployment", "ratchet-decision"))["resources"]
    prod = container(one(render("overlays/prod"), "Deployment", "ratchet-decision"))["resources"]
    assert dev != prod and dev["limits"]["memory"] == "1Gi"


# -- configuration copies -----------------------------------------------------------------


def test_the_contract_config_map_is_a_copy_of_contracts_fraud_yaml():
    source = ROOT / "contracts" / "fraud.yaml"
    if not source.exists():
        pytest.skip("contracts/fraud.yaml is not written yet")
    copy_ = MANIFESTS / "base" / "config" / "fraud.yaml"
    assert copy_.read_text() == source.read_text(), (
        "manifests/base/config/fraud.yaml differs from contracts/fraud.yaml: "
        "cp contracts/fraud.yaml manifests/base/config/fraud.yaml")
    [cm] = [d for d in render("base")
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("ratchet-contract")]
    assert cm["data"]["fraud.yaml"] == source.read_text()


def test_the_rollout_config_map_is_a_copy_of_the_rollout_plan_and_loads():
    from ratchet.rollout.plan import load_plan

    source = ROOT / "contracts" / "rollout.yaml"
    copy_ = MANIFESTS / "base" / "config" / "rollout.yaml"
    assert copy_.read_text() == source.read_text(), (
        "manifests/base/config/rollout.yaml differs from contracts/rollout.yaml: "
        "cp contracts/rollout.yaml manifests/base/config/rollout.yaml")
    plan = load_plan(copy_)
    assert [s.weight for s in plan.canary.steps] == [1, 5, 25, 50, 100]


# -- one image, named in one place ----------------------------------------------------------


def test_the_compiled_pipeline_runs_every_executor_in_the_project_image():
    spec = yaml.safe_load((ROOT / "pipelines" / "release.yaml").read_text())
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    assert images and set(images.values()) == {RATCHET_IMAGE}, images


def _repo_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.stdout.splitlines() if (ROOT / p).is_file()]


def test_the_image_tag_is_set_in_one_place():
    tagged = re.compile(re.escape(IMAGE_NAME) + r":[A-Za-z0-9_][A-Za-z0-9_.-]*")
    holders = set()
    for path in _repo_files():
        if path.suffix == ".md":  # prose may quote it; it sets nothing
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if tagged.search(text):
            holders.add(path.relative_to(ROOT).as_posix())
    # pipelines/*.yaml are compiled from components/image.py (tests check they are current)
    compiled = {h for h in holders if h.startswith("pipelines/") and h.endswith(".yaml")}
    assert compiled >= {"pipelines/release.yaml"}
    assert holders - compiled == {"components/image.py"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_manifests_use_the_project_image_name_and_only_overlays_tag_it(kustomization):
    kustomization_file = yaml.safe_load((MANIFESTS / kustomization / "kustomization.yaml").read_text())
    overrides = {i["name"]: i for i in kustomization_file.get("images", [])}
    for doc in render(kustomization):
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if "mlflow" in c["image"]:
                continue
            name, _, tag = c["image"].partition(":")
            assert name == IMAGE_NAME
            if kustomization in OVERLAYS:
                assert tag == overrides[IMAGE_NAME]["newTag"] and "newName" not in overrides[IMAGE_NAME]
            else:
                assert tag == "", "the base names the image; overlays choose the tag"
    if kustomization == "overlays/prod":
        assert overrides[IMAGE_NAME]["newTag"] == IMAGE_TAG, "prod runs the tag components/image.py names"
    if kustomization == "overlays/dev":
        assert overrides[IMAGE_NAME]["newTag"] == "dev"


def test_the_dockerfile_builds_the_one_image():
    """Static checks only: no Docker engine here, so the image is not built in tests."""
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    instructions = [(i[0].upper(), i[1] if len(i) > 1 else "") for i in instructions if i[0].isupper()]
    [base] = [arg for op, arg in instructions if op == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), "pinned base: exact Python patch release"
    assert ("USER", "10001:10001") in instructions
    assert ("WORKDIR", "/app") in instructions
    assert ("ENTRYPOINT", '["ratchet"]') in instructions
    assert "pip install -c constraints.txt ." in text
    assert "openjdk-17-jre-headless" in text
    copied = {arg.split()[0].rstrip("/") for op, arg in instructions if op == "COPY"}
    assert {"ratchet", "components", "pipelines", "specs", "contracts"} <= copied
    # everything the Dockerfile copies is let through by .dockerignore (allow-list)
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert copied <= allowed
