"""The Kubernetes backend against a fake Kubernetes API (tests/fakes/kube_api.py), driven
through the real `kubernetes` client and, for the rollout scenarios, the real Controller
on a real MLflow SQLite store: promotion steps are Deployment revisions with change-causes,
`kubectl rollout undo` is adopted (registry follows, nothing re-applied), 409 conflicts are
retried with the fresh resourceVersion and never overwritten blindly."""

from __future__ import annotations

import ast
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from fakes.kube_api import SMP, FakeKubeApi
from kubernetes.client import ApiClient, AppsV1Api, Configuration

from ratchet.errors import RatchetError
from ratchet.registry import Registry
from ratchet.rollout import Controller, plan_from_text
from ratchet.rollout.actions import AdoptOutsideChange
from ratchet.rollout.backends.kubernetes import (
    APPLIED, CHANGE_CAUSE, ENV, STAGES_ANNOTATION, DeploymentConflict, KubernetesBackend, KubernetesError, digest,
    state_from_deployment, template_env,
)
from ratchet.rollout.state import DeploymentState, Observations, RoleStats, ShadowReview, SliceCounts
from rollout_helpers import PLAN, Clock, drive, make_template_db

ROOT = Path(__file__).resolve().parents[1]
NS = "fraud"
NAME = "ratchet-decision"
STAGE_ENV = tuple(ENV.values())


def decision_manifest() -> dict:
    """The decision service's Deployment exactly as manifests/base/decision.yaml ships it."""
    docs = yaml.safe_load_all((ROOT / "manifests/base/decision.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Deployment")


@pytest.fixture()
def kube():
    with FakeKubeApi() as fake:
        fake.create_deployment(decision_manifest(), NS)
        yield fake


def backend_for(kube: FakeKubeApi, **kw) -> KubernetesBackend:
    api = AppsV1Api(ApiClient(Configuration(host=kube.url)))
    return KubernetesBackend(NS, NAME, api=api, **kw)


def healthy(fact: DeploymentState, windows) -> Observations:
    rows = (SliceCounts("FR", 20000, 400, 20000, 408), SliceCounts("DE", 20000, 300, 20000, 297))
    return Observations(roles={r: RoleStats(45100, 3, 12.0) for r in ("production", "canary", "shadow")},
                        block_counts={"canary": rows, "shadow": rows},
                        shadow_review=ShadowReview("passed", "contract held on 40,000 labelled shadow decisions"))


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    return make_template_db(tmp_path_factory.mktemp("tpl"))


@pytest.fixture()
def store(template_db, tmp_path):
    shutil.copy(template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reg = Registry(uri, "fraud")
    reg.set_stage(1, "production", actor="test", reason="bootstrap")
    reg.set_stage(2, "staging", actor="release pipeline", reason="gate passed")
    return uri


def controller(uri: str, backend: KubernetesBackend, clock: Clock) -> Controller:
    return Controller(Registry(uri, "fraud"), backend, plan_from_text(PLAN), healthy, clock, out=io.StringIO())


def stage_env(template: dict) -> tuple[str, ...]:
    env = {e["name"]: e.get("value", "") for e in template["spec"]["containers"][0].get("env", [])}
    return tuple(env.get(k, "") for k in STAGE_ENV[:4])


def revisions(kube: FakeKubeApi) -> list[tuple[int, str | None, tuple[str, ...]]]:
    """`kubectl rollout history`, plus each revision's stage env (production, canary, weight, shadow)."""
    return [(int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
             rs["metadata"]["annotations"].get(CHANGE_CAUSE), stage_env(rs["spec"]["template"]))
            for rs in kube.owned_replicasets(NAME, NS)]


def client_writes(kube: FakeKubeApi) -> list:
    """Mutating requests that came over HTTP (the fake's own kubectl helpers excluded)."""
    return [r for r in kube.requests if r.mutating and r.content_type == SMP]


# ---- 1. promotion steps are revisions ----------------------------------------------------------
def test_promotion_steps_are_deployment_revisions_with_change_causes(kube, store):
    backend, clock = backend_for(kube), Clock()
    ctrl = controller(store, backend, clock)
    actions = drive(ctrl, clock)
    acted = [a for a in actions if a.acts]
    assert [a.kind for a in acted] == ["Deploy", "StartShadow", "StartCanary", "Advance", "Advance", "Advance",
                                       "Advance", "Promote"]
    # kubectl rollout history: revision 1 is the manifest as applied, then one revision per step
    causes = [a.change_cause for a in acted]
    assert causes[0] == "ratchet: v1 to production (first deployment)"
    assert [c.split(" (")[0] for c in causes[2:7]] == [f"ratchet: v2 canary {w}%" for w in (1, 5, 25, 50, 100)]
    assert revisions(kube) == [
        (1, None, ("", "", "", "")),  # the manifest as shipped: no stage env (the controller owns it)
        (2, causes[0], ("1", "", "0", "")),
        (3, causes[1], ("1", "", "0", "2")),
        *[(4 + i, causes[2 + i], ("1", "2", str(w), "")) for i, w in enumerate((1, 5, 25, 50, 100))],
        (9, causes[7], ("2", "", "0", "")),
    ]
    # each step was ONE strategic merge patch: template env + stages annotation + change-cause
    # + applied (annotation and label), conditional on the resourceVersion read
    writes = client_writes(kube)
    assert len(writes) == 8 and all(w.status == 200 and w.template_changed for w in writes)
    for w, a in zip(writes, acted):
        meta, tpl = w.body["metadata"], w.body["spec"]["template"]
        fp = a.target.fingerprint()
        assert meta["annotations"] == {CHANGE_CAUSE: a.change_cause, APPLIED: fp}
        assert meta["labels"] == {APPLIED: digest(fp)} and meta["resourceVersion"]
        assert w.query == {"fieldManager": "ratchet-controller"}
        assert {e["name"]: e["value"] for e in tpl["spec"]["containers"][0]["env"]} == {
            k: v for k, v in template_env(a.target).items() if k != ENV["cohort"]}
        assert json.loads(tpl["metadata"]["annotations"][STAGES_ANNOTATION])["production"] == str(a.target.production)
    # the rest of the pod template is untouched (strategic merge by name)
    dep = kube.deployment(NAME, NS)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in c["env"]} >= {"RATCHET_MODEL_NAME", "RATCHET_DECISION_LOG", "HOME", "TMPDIR"}
    assert c["image"] == "ghcr.io/ratchet-ml/ratchet" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    fact = backend.read()
    assert fact.content() == DeploymentState(production=2)
    assert fact.revision == "9" and fact.applied == fact.fingerprint() and not fact.changed_outside()
    # settled: another pass sends nothing
    n = len(kube.requests)
    assert ctrl.run_once().settled
    assert not [r for r in kube.requests[n:] if r.mutating]
    assert Registry(store, "fraud").aliases() == {"production": 2}


# ---- 2. kubectl rollout undo ----------------------------------------------------------------------
def test_undo_restores_the_annotations_but_not_the_label_and_is_detected(kube):
    backend = backend_for(kube)
    backend.apply(DeploymentState(production=1), "ratchet: v1 to production")
    backend.apply(DeploymentState(production=1, canary=2, canary_weight=5), "ratchet: v2 canary 5%")
    restored = kube.rollout_undo(NAME, NS)
    assert restored == 2
    dep = kube.deployment(NAME, NS)
    # like kubectl: the old ReplicaSet's annotations came back, change-cause and applied included
    assert dep["metadata"]["annotations"][APPLIED] == "production=v1 canary=none shadow=none"
    assert dep["metadata"]["annotations"][CHANGE_CAUSE] == "ratchet: v1 to production"
    fact = backend.read()
    assert fact.content() == DeploymentState(production=1)
    assert fact.applied == "production=v1 canary=v2@5% shadow=none"  # from the label, which undo left alone
    assert fact.changed_outside() and fact.restored_revision == "2" and fact.revision == "4"
    # adopting it (applying what runs) refreshes the bookkeeping only: no new revision
    after = backend.apply(fact.content(), "ratchet: adopt kubectl rollout undo")
    assert after.revision == "4" and not after.changed_outside() and after.restored_revision is None
    assert [r for r, *_ in revisions(kube)] == [1, 3, 4]


def test_undo_is_seen_before_the_deployment_controller_renumbers(kube):
    backend = backend_for(kube)
    backend.apply(DeploymentState(production=1), "ratchet: v1 to production")
    backend.apply(DeploymentState(production=1, shadow=2), "ratchet: v2 shadow")
    kube.auto_sync = False  # the deployment controller has not caught up with the undo yet
    kube.rollout_undo(NAME, NS)
    fact = backend.read()
    assert fact.changed_outside() and fact.restored_revision == "2" and fact.revision == "3"
    kube.sync(NAME, NS)
    fact = backend.read()
    assert fact.changed_outside() and fact.restored_revision == "2" and fact.revision == "4"


def test_kubectl_rollout_undo_of_the_promotion_is_adopted_not_fought(kube, store):
    backend, clock = backend_for(kube), Clock()
    ctrl = controller(store, backend, clock)
    drive(ctrl, clock)
    assert backend.read().production == 2
    kube.rollout_undo(NAME, NS)  # the on-call engineer: back to v1 with v2 as the 100% canary
    fact = backend.read()
    assert fact.changed_outside() and fact.restored_revision == "8"
    a = ctrl.run_once()
    assert isinstance(a, AdoptOutsideChange)
    assert a.event.startswith("adopt kubectl rollout undo: production v1 (was v2), v2 rolled back")
    reg = Registry(store, "fraud")
    assert reg.aliases() == {"production": 1}
    assert reg.tags(2)["state"] == "rolled_back" and reg.tags(2)["rollback.reason"] == "kubectl rollout undo"
    assert reg.history(2)[-1]["reason"] == "kubectl rollout undo" and reg.history(2)[-1]["to"] == "rolled_back"
    assert reg.tags(1)["state"] == "production"
    # v2 may not keep serving as the canary the restored template had: one revision withdraws it
    assert backend.read().content() == DeploymentState(production=1)
    # kubectl rollout history: the undo brought revision 8 back as 10 (its old change-cause with
    # it); the withdrawal re-used revision 2's template, renumbered 11 with the adopt's cause
    hist = revisions(kube)
    canary = [(4 + i, ("1", "2", w, "")) for i, w in enumerate(("1", "5", "25", "50"))]
    assert [(r, env) for r, _, env in hist] == [(1, ("", "", "", "")), (3, ("1", "", "0", "2")), *canary,
                                                (9, ("2", "", "0", "")), (10, ("1", "2", "100", "")),
                                                (11, ("1", "", "0", ""))]
    assert hist[-2][1].startswith("ratchet: v2 canary 100%") and hist[-1][1] == "ratchet: adopt kubectl rollout undo"
    # not fought: several more passes, not one more write
    n = len(kube.requests)
    for _ in range(5):
        a = ctrl.run_once()
        clock.tick()
        assert not a.acts
    assert not [r for r in kube.requests[n:] if r.mutating]
    assert revisions(kube) == hist and reg.aliases() == {"production": 1}


def test_undo_of_one_canary_step_is_adopted_without_a_new_revision(kube, store):
    backend, clock = backend_for(kube), Clock()
    ctrl = controller(store, backend, clock)
    for _ in range(5):  # deploy, shadow, canary 1%, 5%, 25%
        ctrl.run_once()
        clock.tick()
    assert backend.read().canary_weight == 25
    kube.rollout_undo(NAME, NS)  # back to 5%
    template_writes = len(kube.template_writes(NAME))
    a = ctrl.run_once()
    assert a.kind == "AdoptOutsideChange" and "canary v2 at 5%, paused" in a.event
    reg = Registry(store, "fraud")
    assert reg.aliases() == {"production": 1, "canary": 2}
    assert json.loads(reg.tags(2)["rollout"])["paused"] == "kubectl rollout undo"
    # the controller re-applied nothing: the restored template is what it adopted
    assert len(kube.template_writes(NAME)) == template_writes
    for _ in range(4):
        clock.tick()
        a = ctrl.run_once()
        assert a.kind == "AwaitApproval" and "kubectl rollout undo" in a.event
    assert len(kube.template_writes(NAME)) == template_writes and backend.read().canary_weight == 5


# ---- 3. conflicts ----------------------------------------------------------------------------------
def test_a_409_is_retried_with_the_fresh_resource_version(kube, store):
    backend, clock = backend_for(kube), Clock()
    ctrl = controller(store, backend, clock)
    ctrl.run_once()  # v1 to production
    kube.conflict_next(1)  # the autoscaler scales the Deployment between the read and the patch
    a = ctrl.run_once()
    assert a.kind == "StartShadow"
    first, second = [r for r in client_writes(kube)][-2:]
    assert (first.status, second.status) == (409, 200)
    assert int(second.body["metadata"]["resourceVersion"]) > int(first.body["metadata"]["resourceVersion"])
    assert second.body["spec"] == first.body["spec"]  # the same change, on the fresh object
    dep = kube.deployment(NAME, NS)
    assert dep["spec"]["replicas"] == 3  # the autoscaler's write survived
    assert backend.read().content() == DeploymentState(production=1, shadow=2)
    assert [r for r, *_ in revisions(kube)] == [1, 2, 3]
    # never a blind overwrite: every write ratchet sent was conditional
    assert all(r.body["metadata"].get("resourceVersion") for r in client_writes(kube))


def test_a_conflict_with_an_outside_change_is_not_overwritten(kube):
    backend = backend_for(kube)
    backend.apply(DeploymentState(production=1), "ratchet: v1 to production")
    backend.read()

    def kubectl_edit(dep):  # a person sets the production version by hand meanwhile
        for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
            if e["name"] == "RATCHET_PRODUCTION_VERSION":
                e["value"] = "3"

    kube.conflict_next(1, change=kubectl_edit)
    with pytest.raises(DeploymentConflict, match="nothing was written"):
        backend.apply(DeploymentState(production=1, shadow=2), "ratchet: v2 shadow")
    assert [r.status for r in client_writes(kube)][-1] == 409
    fact = backend.read()
    assert fact.content() == DeploymentState(production=3)  # the person's change stands
    assert fact.changed_outside() and fact.applied == "production=v1 canary=none shadow=none"


def test_conflicts_are_retried_a_bounded_number_of_times(kube):
    backend = backend_for(kube, retries=2)
    kube.conflict_next(10)
    with pytest.raises(DeploymentConflict, match="3 conflicts in a row"):
        backend.apply(DeploymentState(production=1), "ratchet: v1 to production")
    assert [r.status for r in client_writes(kube)] == [409, 409, 409]


def test_the_fake_refuses_stale_writes_like_the_api_server(kube):
    from kubernetes.client.rest import ApiException

    api = backend_for(kube).api
    dep = json.loads(api.read_namespaced_deployment(NAME, NS, _preload_content=False).data)
    kube.conflict_next(1)
    with pytest.raises(ApiException) as err:
        api.replace_namespaced_deployment(NAME, NS, dep)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    assert kube.requests[-1].method == "PUT" and kube.requests[-1].content_type == "application/json"


# ---- 4. idempotence --------------------------------------------------------------------------------
def test_re_applying_the_shipped_manifest_keeps_the_release(kube):
    """`kubectl apply -k manifests/...` after releases: the manifest sets no stage value, so
    the patch kubectl sends (the manifest's fields, env merged by name) changes no stage."""
    backend = backend_for(kube)
    backend.apply(DeploymentState(production=4, canary=5, canary_weight=25.0), "ratchet: v5 canary 25%")
    before = backend.read()
    manifest = decision_manifest()
    api = AppsV1Api(ApiClient(Configuration(host=kube.url)))
    api.patch_namespaced_deployment(NAME, NS, {"metadata": {"labels": manifest["metadata"]["labels"]},
                                               "spec": manifest["spec"]})
    after = backend.read()
    assert after.content() == before.content() == DeploymentState(production=4, canary=5, canary_weight=25.0)
    assert not after.changed_outside()


def test_applying_what_runs_creates_no_revision(kube):
    backend = backend_for(kube)
    target = DeploymentState(production=1, canary=2, canary_weight=0.5, cohort=(("country", ("FR", "BE")),))
    first = backend.apply(target, "ratchet: v2 canary 0.5%")
    assert first.content() == target.content() and first.revision == "2"
    n = len(kube.requests)
    again = backend.apply(target, "ratchet: v2 canary 0.5% (again)")
    assert again.revision == "2" and not [r for r in kube.requests[n:] if r.mutating]  # nothing sent at all
    assert revisions(kube)[-1][1] == "ratchet: v2 canary 0.5%"
    # what runs matches but ratchet's bookkeeping is missing (e.g. set by hand): metadata only
    kube.edit(NAME, NS, lambda d: (d["metadata"]["annotations"].pop(APPLIED), d["metadata"]["labels"].pop(APPLIED)))
    assert backend.read().applied is None
    third = backend.apply(target, "ratchet: adopt")
    assert third.revision == "2" and third.applied == target.fingerprint()
    last = client_writes(kube)[-1]
    assert "spec" not in last.body and CHANGE_CAUSE not in last.body["metadata"]["annotations"]
    assert len(kube.owned_replicasets(NAME, NS)) == 2


def test_the_pod_template_round_trips_every_state(kube):
    backend = backend_for(kube)
    for st in (DeploymentState(production=6), DeploymentState(production=6, canary=7, canary_weight=0.5),
               DeploymentState(production=6, canary=7, canary_weight=25, shadow=8,
                               cohort=(("country", ("FR", "BE")), ("channel", ("web",)))),
               DeploymentState(shadow=8)):
        assert backend.apply(st, "ratchet: test").content() == st.content()
        dep = kube.deployment(NAME, NS)
        assert state_from_deployment(dep) == st.content()
        stages = json.loads(dep["spec"]["template"]["metadata"]["annotations"][STAGES_ANNOTATION])
        assert stages["production"] == ("" if st.production is None else str(st.production))


# ---- errors ---------------------------------------------------------------------------------------
def test_errors_say_what_to_fix(kube):
    with pytest.raises(KubernetesError, match=r"404 .*not found; apply the manifests first"):
        KubernetesBackend(NS, "nope", api=backend_for(kube).api).read()
    with pytest.raises(RatchetError, match="no container 'model'"):
        backend_for(kube, container="model").read()
    kube.edit(NAME, NS, lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "RATCHET_PRODUCTION_VERSION", "value": "@prod"}))
    with pytest.raises(RatchetError, match="RATCHET_PRODUCTION_VERSION='@prod' .* not a version number"):
        backend_for(kube).read()
    dead = AppsV1Api(ApiClient(Configuration(host="http://127.0.0.1:9")))
    dead.api_client.rest_client.pool_manager.connection_pool_kw["retries"] = False
    with pytest.raises(KubernetesError, match="unreachable"):
        KubernetesBackend(NS, NAME, api=dead).read()


# ---- 5. one module talks to Kubernetes ------------------------------------------------------------
def test_only_the_kubernetes_backend_imports_kubernetes():
    importers = []
    for path in sorted((ROOT / "ratchet").rglob("*.py")):
        text = path.read_text()
        if "kubernetes" not in text:
            continue
        for node in ast.walk(ast.parse(text, str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n == "kubernetes" or n.startswith("kubernetes.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["ratchet/rollout/backends/kubernetes.py"]
