"""Kubernetes backend: the decision service's Deployment is the fact; each stage change is a revision.

The stages live in the Deployment's *pod template*: the env of the `decision` container
(RATCHET_PRODUCTION_VERSION, RATCHET_CANARY_VERSION, RATCHET_CANARY_WEIGHT,
RATCHET_SHADOW_VERSION, RATCHET_CANARY_COHORT, read by `ratchet serve`) and the
`ratchet.io/stages` template annotation (the same, as JSON, for people). So every
change is a rolling update and a Deployment revision: `kubectl rollout history` reads as
the release history (kubernetes.io/change-cause, e.g. "ratchet: v7 canary 25% (guards
held ...)") and `kubectl rollout undo` is a real rollback.

    >>> backend = KubernetesBackend("fraud")              # kubeconfig, or in-cluster
    >>> backend.read().fingerprint()
    'production=v6 canary=v7@25% shadow=none'
    >>> backend.apply(DeploymentState(production=7), "ratchet: v7 to production (...)").revision
    '9'

apply() is ONE strategic merge PATCH (what the client sends for a dict body; env and
containers merge by `name`, so the other env vars and containers are untouched) that
sets the template env + annotation, the metadata annotations kubernetes.io/change-cause
and ratchet.io/applied (the fingerprint, readable), and the metadata label
ratchet.io/applied (its digest), with `metadata.resourceVersion` = what read() saw, so
the API server refuses it (409) if anything wrote the Deployment in between. On 409 it
re-reads: if what runs and what ratchet applied are unchanged (the autoscaler scaled,
the deployment controller updated the revision or status), it retries with the fresh
resourceVersion (at most `retries` times); if they changed (a person, another
controller), it raises DeploymentConflict and writes nothing: the controller's journal
keeps the action, and the next pass re-plans from the new fact. Never a blind write.
Applying what already runs changes no template (no new revision); at most the
ratchet.io/applied bookkeeping is refreshed, and nothing is sent when it is current.

Why `applied` has a label too. `kubectl rollout undo` does not only put the older
ReplicaSet's template back: it *replaces the Deployment's annotations* with that
ReplicaSet's (the deployment controller copies the Deployment's annotations onto its
current ReplicaSet, so they are the ones of that time — ratchet.io/applied included;
only revision bookkeeping is kept). An annotation alone would come back matching the
restored template and the undo would go unnoticed. Undo leaves metadata *labels* alone,
so the digest of the fingerprint ratchet applied is kept in a label: after an undo the
annotation's digest no longer matches the label, and read() reports as `applied` the
fingerprint whose digest the label holds (found on the ReplicaSet ratchet's apply
created), which differs from what runs: `changed_outside()`.

restored_revision: the current template is an older revision brought back when the
ReplicaSet with that template (compared without its pod-template-hash label) still has
an older revision number than the Deployment (the deployment controller has not caught
up with the undo yet) or carries deployment.kubernetes.io/revision-history (it has, and
renumbered it). Reported only for changes ratchet did not apply itself.

This module is the only one in ratchet that imports `kubernetes`. Reads use raw JSON
(`_preload_content=False`): comparing templates needs every field, and the client's
models reject objects from newer API servers that carry values they do not know.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from ratchet.errors import RatchetError
from ratchet.rollout.state import DeploymentState
from ratchet.stages.wire import STAGE_ENV, Cohort, cohort_text, parse_cohort_text

STAGES_ANNOTATION = "ratchet.io/stages"   # template annotation: the stages as JSON, for people
APPLIED = "ratchet.io/applied"            # metadata annotation (fingerprint) and label (its digest)
CHANGE_CAUSE = "kubernetes.io/change-cause"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"
ENV = STAGE_ENV  # the names `ratchet serve` reads
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MAX_CHANGE_CAUSE = 1024
FIELD_MANAGER = "ratchet-controller"      # managedFields name ratchet as the writer of what it patched


class DeploymentConflict(RatchetError):
    """The Deployment changed between read and patch in a way ratchet must re-plan for."""


class KubernetesError(RatchetError):
    """The API server refused a request or is unreachable; the message says what to check."""


def digest(fingerprint: str) -> str:
    """Label-safe digest of a fingerprint (label values: 63 characters, alphanumeric ends)."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:40]


# ---- the pod template <-> DeploymentState -------------------------------------------------
def _version(value: str | None, name: str) -> int | None:
    text = (value or "").strip()
    if text == "" or text.lower() == "none":
        return None
    if not text.isdigit():
        raise RatchetError(f"{name}={value!r} in the decision Deployment is not a version number; ratchet writes "
                           "numbers there (or '' for none): set one, or let the controller set it")
    return int(text)


def _parse_cohort(text: str | None) -> Cohort | None:
    try:
        return parse_cohort_text(text)
    except ValueError as exc:
        raise RatchetError(f"{ENV['cohort']}={text!r} in the decision Deployment: {exc}; set it to KEY=V1,V2 "
                           "(or '' for none), or let the controller set it") from None


def template_env(state: DeploymentState) -> dict[str, str]:
    """The env values that make the decision service run `state`."""
    c = state.content()
    return {ENV["production"]: "" if c.production is None else str(c.production),
            ENV["canary"]: "" if c.canary is None else str(c.canary),
            ENV["canary_weight"]: f"{c.canary_weight:g}",
            ENV["shadow"]: "" if c.shadow is None else str(c.shadow),
            ENV["cohort"]: cohort_text(c.cohort)}


def stages_annotation(state: DeploymentState) -> str:
    """The ratchet.io/stages template annotation (same form as manifests/base/decision.yaml)."""
    c = state.content()
    w = c.canary_weight
    doc: dict[str, Any] = {"production": "" if c.production is None else str(c.production),
                           "canary": "" if c.canary is None else str(c.canary),
                           "canary_weight": int(w) if float(w).is_integer() else w,
                           "shadow": "" if c.shadow is None else str(c.shadow)}
    if c.cohort:
        doc["cohort"] = {k: list(v) for k, v in c.cohort}
    return json.dumps(doc)


def _container(dep: dict[str, Any], name: str) -> dict[str, Any]:
    containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    for c in containers:
        if c.get("name") == name:
            return c
    meta = dep.get("metadata", {})
    raise RatchetError(f"Deployment {meta.get('namespace')}/{meta.get('name')} has no container {name!r} "
                       f"(it has {', '.join(repr(c.get('name')) for c in containers) or 'none'}); "
                       "pass the decision service's container name (--container)")


def state_from_deployment(dep: dict[str, Any], container: str = "decision") -> DeploymentState:
    """What runs, from the pod template env (what the service reads); content only."""
    env = {e.get("name"): e.get("value", "") for e in _container(dep, container).get("env") or []}
    weight = env.get(ENV["canary_weight"]) or "0"
    try:
        w = float(weight.rstrip("%"))
    except ValueError:
        raise RatchetError(f"{ENV['canary_weight']}={weight!r} in the decision Deployment is not a percentage"
                           ) from None
    return DeploymentState(production=_version(env.get(ENV["production"]), ENV["production"]),
                           canary=_version(env.get(ENV["canary"]), ENV["canary"]), canary_weight=w,
                           shadow=_version(env.get(ENV["shadow"]), ENV["shadow"]),
                           cohort=_parse_cohort(env.get(ENV["cohort"]))).content()


def _meta(obj: dict[str, Any], key: str) -> dict[str, str]:
    return obj.get("metadata", {}).get(key) or {}


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = json.loads(json.dumps(template))
    labels = t.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
        if not labels:
            t["metadata"].pop("labels")
    return t


# ---- the backend ---------------------------------------------------------------------------
class KubernetesBackend:
    """Reads and patches one Deployment (see the module docstring for the protocol it keeps)."""

    def __init__(self, namespace: str | None = None, deployment: str = "ratchet-decision",
                 api: k8s.AppsV1Api | None = None, container: str = "decision", *,
                 kubeconfig: str | None = None, context: str | None = None, retries: int = 5,
                 timeout: float = 30.0) -> None:
        self.namespace = namespace or default_namespace(kubeconfig, context)
        self.deployment = deployment
        self.container = container
        self.retries = retries
        self.timeout = timeout  # seconds per API call: a stalled API server must not stall the controller
        self.api = api if api is not None else default_api(kubeconfig, context)
        self._seen: dict[str, Any] | None = None  # the Deployment as the last read() saw it

    # ---- protocol ----------------------------------------------------------------------
    def read(self) -> DeploymentState:
        dep = self._get()
        self._seen = dep
        return self._state(dep)

    def apply(self, target: DeploymentState, change_cause: str) -> DeploymentState:
        """Make `target` run and record it as applied, in one conditional PATCH (see module docstring)."""
        want = target.content()
        dep = self._seen if self._seen is not None else self._get()
        self._seen = None
        for attempt in range(self.retries + 1):
            body = self.patch_for(dep, want, change_cause)
            if body is None:
                break
            try:
                self._call(lambda: self.api.patch_namespaced_deployment(  # noqa: B023 - called at once
                    self.deployment, self.namespace, body, field_manager=FIELD_MANAGER,
                    _preload_content=False, _request_timeout=self.timeout), "patch")
                break
            except _Conflict:
                fresh = self._get()
                if self._fact(fresh) != self._fact(dep):
                    raise DeploymentConflict(
                        f"Deployment {self.where} changed while ratchet was applying {want.fingerprint()!r}: "
                        f"it now runs {state_from_deployment(fresh, self.container).fingerprint()!r} "
                        f"(ratchet applied {_meta(fresh, 'annotations').get(APPLIED)!r}); nothing was written, "
                        "the next pass plans from what runs now") from None
                if attempt == self.retries:
                    raise DeploymentConflict(f"Deployment {self.where} kept changing under ratchet "
                                             f"({self.retries + 1} conflicts in a row); nothing was written, "
                                             "the next pass tries again") from None
                dep = fresh  # only unrelated fields moved (scale, status): same patch, fresh resourceVersion
        return self.read()

    # ---- what to send ---------------------------------------------------------------------
    def patch_for(self, dep: dict[str, Any], want: DeploymentState, change_cause: str) -> dict[str, Any] | None:
        """The strategic merge patch that makes `dep` run `want` with applied = its fingerprint; None: nothing to do."""
        fp = want.fingerprint()
        container = _container(dep, self.container)
        running = state_from_deployment(dep, self.container)
        stages = stages_annotation(want)
        current_stages = _meta(dep.get("spec", {}).get("template", {}), "annotations").get(STAGES_ANNOTATION)
        template_changes = running != want or _json(current_stages) != json.loads(stages)
        applied_current = (_meta(dep, "annotations").get(APPLIED) == fp
                           and _meta(dep, "labels").get(APPLIED) == digest(fp))
        if not template_changes and applied_current:
            return None
        meta: dict[str, Any] = {"resourceVersion": dep["metadata"]["resourceVersion"],
                                "annotations": {APPLIED: fp}, "labels": {APPLIED: digest(fp)}}
        body: dict[str, Any] = {"metadata": meta}
        if template_changes:
            # the change-cause names the revision this patch creates; a bookkeeping-only
            # patch leaves the current revision's cause alone
            meta["annotations"][CHANGE_CAUSE] = change_cause[:MAX_CHANGE_CAUSE]
            env = [{"name": k, "value": v} for k, v in template_env(want).items()]
            if ENV["cohort"] not in {e.get("name") for e in container.get("env") or []} and not want.cohort:
                env = [e for e in env if e["name"] != ENV["cohort"]]  # absent means none: no needless env var
            body["spec"] = {"template": {"metadata": {"annotations": {STAGES_ANNOTATION: stages}},
                                         "spec": {"containers": [{"name": self.container, "env": env}]}}}
        return body

    # ---- reading ----------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.deployment}"

    def _state(self, dep: dict[str, Any]) -> DeploymentState:
        content = state_from_deployment(dep, self.container)
        annotations, labels = _meta(dep, "annotations"), _meta(dep, "labels")
        applied, label = annotations.get(APPLIED), labels.get(APPLIED)
        rss: list[dict[str, Any]] | None = None  # listed only when something changed outside ratchet
        if label is not None and (applied is None or digest(applied) != label):
            # the annotation was put back by `kubectl rollout undo`; the label was not
            rss = self._replicasets(dep)
            applied = next((a for a in (_meta(rs, "annotations").get(APPLIED) for rs in reversed(rss))
                            if a is not None and digest(a) == label), f"unknown (label {APPLIED}={label})")
        restored = None
        if applied is not None and applied != content.fingerprint():
            restored = self._restored(dep, rss if rss is not None else self._replicasets(dep))
        return replace(content, revision=annotations.get(REVISION), applied=applied, restored_revision=restored)

    @staticmethod
    def _restored(dep: dict[str, Any], rss: list[dict[str, Any]]) -> str | None:
        template = _without_hash(dep.get("spec", {}).get("template", {}))
        current = int(_meta(dep, "annotations").get(REVISION) or 0)
        for rs in rss:
            if _without_hash(rs.get("spec", {}).get("template", {})) != template:
                continue
            ann = _meta(rs, "annotations")
            rev = int(ann.get(REVISION) or 0)
            if rev < current:
                return str(rev)  # put back, not yet renumbered by the deployment controller
            history = [x for x in (ann.get(REVISION_HISTORY) or "").split(",") if x]
            return history[-1] if history else None
        return None

    @staticmethod
    def _fact(dep: dict[str, Any]) -> tuple[Any, ...]:
        """What a conflict may not have changed for a retry to be safe: the stage env and template
        annotation, and ratchet's bookkeeping."""
        env = {e.get("name"): e.get("value") for c in dep["spec"]["template"]["spec"].get("containers", [])
               for e in c.get("env") or [] if e.get("name") in ENV.values()}
        return (env, _meta(dep["spec"]["template"], "annotations").get(STAGES_ANNOTATION),
                _meta(dep, "annotations").get(APPLIED), _meta(dep, "labels").get(APPLIED))

    def _get(self) -> dict[str, Any]:
        resp = self._call(lambda: self.api.read_namespaced_deployment(
            self.deployment, self.namespace, _preload_content=False, _request_timeout=self.timeout), "read")
        return json.loads(resp.data)

    def _replicasets(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        """The Deployment's ReplicaSets (by selector and owner), oldest revision first."""
        match = dep.get("spec", {}).get("selector", {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        apps = self.api
        resp = self._call(lambda: apps.list_namespaced_replica_set(
            self.namespace, label_selector=selector, _preload_content=False, _request_timeout=self.timeout),
            "list ReplicaSets of")
        uid = dep.get("metadata", {}).get("uid")
        items = [rs for rs in json.loads(resp.data).get("items", [])
                 if any(o.get("uid") == uid for o in rs.get("metadata", {}).get("ownerReferences") or [])]
        return sorted(items, key=lambda rs: int(_meta(rs, "annotations").get(REVISION) or 0))

    def _call(self, fn, what: str):  # noqa: ANN001, ANN202 - a client call and its raw response
        try:
            return fn()
        except ApiException as exc:
            if exc.status == 409:
                raise _Conflict() from exc
            raise KubernetesError(self._explain(exc, what)) from None
        except Exception as exc:  # noqa: BLE001 - urllib3 connection errors, TLS, DNS
            if isinstance(exc, RatchetError):
                raise
            cfg = getattr(getattr(self.api, "api_client", None), "configuration", None)
            raise KubernetesError(f"cannot {what} Deployment {self.where}: the Kubernetes API at "
                                  f"{getattr(cfg, 'host', '?')} is unreachable ({type(exc).__name__}: {exc})"
                                  ) from None

    def _explain(self, exc: ApiException, what: str) -> str:
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            message = exc.reason
        hint = {404: "apply the manifests first (kubectl apply -k manifests/overlays/...) or pass "
                     "--namespace/--deployment",
                403: "the controller's ServiceAccount needs get/patch on the Deployment and list on "
                     "ReplicaSets (manifests/base/rbac.yaml)",
                401: "the credentials (kubeconfig or in-cluster token) were refused"}.get(exc.status, "")
        return f"cannot {what} Deployment {self.where}: {exc.status} {message}" + (f"; {hint}" if hint else "")


class _Conflict(Exception):
    """409 from the API server (internal: apply() decides between retry and DeploymentConflict)."""


# ---- connecting ------------------------------------------------------------------------------
def default_api(kubeconfig: str | None = None, context: str | None = None) -> k8s.AppsV1Api:
    """An AppsV1Api from `kubeconfig` if given, else the in-cluster ServiceAccount, else
    $KUBECONFIG / ~/.kube/config."""
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = k8s.Configuration()
            k8s_config.load_incluster_config(client_configuration=cfg)
            return k8s.AppsV1Api(k8s.ApiClient(cfg))
        return k8s.AppsV1Api(k8s_config.new_client_from_config(config_file=kubeconfig, context=context))
    except k8s_config.ConfigException as exc:
        raise KubernetesError(f"no Kubernetes credentials: {exc}; pass --kubeconfig PATH, or run the controller "
                              "in the cluster with its ServiceAccount") from None


def default_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The in-cluster namespace, else the kubeconfig context's, else 'default'."""
    if kubeconfig is None and os.path.exists(SERVICE_ACCOUNT_NAMESPACE):
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as fh:
            return fh.read().strip() or "default"
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except (k8s_config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"
