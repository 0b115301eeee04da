"""A local HTTP fake of the Kubernetes API: apps/v1 Deployments and their ReplicaSets.

Enough for the real `kubernetes` Python client (pointed at it with
`Configuration(host=fake.url)`, no kubeconfig) to read and patch one Deployment and to
list its ReplicaSets, with the Deployment semantics a rollout controller depends on:

* every write bumps `metadata.resourceVersion` (one counter for all objects, like etcd);
  a write whose body carries a stale `metadata.resourceVersion` is refused with
  409 Conflict and a Status body, as the API server does; a write that changes nothing
  is not a write (no new resourceVersion);
* PATCH honours the content type the client sends: strategic merge patch (lists such as
  containers and env merge by their key, `name`), JSON merge patch (lists replace) and
  JSON patch; PUT replaces the object;
* the deployment controller runs after every write (synchronously, or by hand with
  `auto_sync = False` + `sync()`): a change of `spec.template` creates a ReplicaSet with
  the `pod-template-hash` label and `deployment.kubernetes.io/revision` = max + 1; a
  template equal to an older ReplicaSet's re-adopts that ReplicaSet under a new revision
  and appends its old number to `deployment.kubernetes.io/revision-history`; the
  Deployment's own annotations (change-cause included) are copied onto its current
  ReplicaSet; the Deployment's revision annotation follows;
* `rollout_undo()` sends what `kubectl rollout undo` sends: one JSON patch replacing
  `/spec/template` with the target ReplicaSet's (hash label removed) and
  `/metadata/annotations` with the ReplicaSet's annotations (keeping only the
  Deployment's revision bookkeeping). So an undo *restores* metadata annotations
  recorded on that ReplicaSet, and leaves metadata labels alone — as the real kubectl.

Every request is recorded (method, path, query, content type, JSON body).

    with FakeKubeApi() as kube:
        kube.create_deployment(manifest, namespace="fraud")
        api = AppsV1Api(ApiClient(Configuration(host=kube.url)))
        api.read_namespaced_deployment("ratchet-decision", "fraud")
        kube.rollout_undo("ratchet-decision", "fraud")
        kube.history("ratchet-decision", "fraud")   # [(1, "..."), (3, "..."), ...]
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes import send_json

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"
# Annotations the deployment controller never copies onto a ReplicaSet, and that
# `kubectl rollout undo` keeps from the Deployment instead of restoring them.
SKIP_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
    "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})
# Strategic merge patch: list fields that merge by a key (the subset of the OpenAPI
# patch strategies a pod template uses); every other list is replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")
_REPLICASETS = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/replicasets$")


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any = None
    status: int = 0
    template_changed: bool = False  # the request changed a Deployment's pod template

    @property
    def mutating(self) -> bool:
        return self.method in ("PATCH", "PUT", "POST", "DELETE")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


@dataclass
class _Interference:
    """A concurrent write performed just before a client's mutating request is handled."""

    remaining: int
    change: Callable[[dict[str, Any]], None]


def hpa_scale(dep: dict[str, Any]) -> None:
    """The default concurrent write: the HorizontalPodAutoscaler changes spec.replicas."""
    dep["spec"]["replicas"] = int(dep["spec"].get("replicas") or 2) + 1


class FakeKubeApi:
    """Start with `with FakeKubeApi() as kube:` (or start()/stop()); `kube.url` is the host."""

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.auto_sync = True          # run the deployment controller after every write
        self._rv = 100
        self._interference: list[_Interference] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeKubeApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client's urllib3 pool expects

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_PATCH(self) -> None:
                fake._handle(self, "PATCH")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- test helpers ------------------------------------------------------------------
    def create_deployment(self, manifest: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        """`kubectl create` of a Deployment manifest (revision 1 and its ReplicaSet follow)."""
        with self._lock:
            dep = copy.deepcopy(manifest)
            meta = dep.setdefault("metadata", {})
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), generation=1,
                        resourceVersion=self._next_rv())
            meta.setdefault("annotations", {})
            dep.setdefault("status", {})
            self.deployments[(namespace, meta["name"])] = dep
            if self.auto_sync:
                self.sync(meta["name"], namespace)
            return copy.deepcopy(dep)

    def deployment(self, name: str, namespace: str = "default") -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._dep(namespace, name))

    def owned_replicasets(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        """The Deployment's ReplicaSets, oldest revision first."""
        with self._lock:
            uid = self._dep(namespace, name)["metadata"]["uid"]
            rss = [copy.deepcopy(rs) for (ns, _), rs in self.replicasets.items() if ns == namespace and
                   any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences", []))]
            return sorted(rss, key=lambda rs: int(rs["metadata"]["annotations"][REVISION]))

    def history(self, name: str, namespace: str = "default") -> list[tuple[int, str | None]]:
        """`kubectl rollout history`: (revision, change-cause) per ReplicaSet, in revision order."""
        return [(int(rs["metadata"]["annotations"][REVISION]), rs["metadata"]["annotations"].get(CHANGE_CAUSE))
                for rs in self.owned_replicasets(name, namespace)]

    def template_writes(self, name: str | None = None) -> list[Recorded]:
        """Mutating requests that changed some Deployment's pod template (recorded by the fake)."""
        return [r for r in self.requests if r.mutating and r.status < 300 and r.template_changed
                and (name is None or r.path.endswith(f"/deployments/{name}"))]

    def conflict_next(self, n: int = 1, change: Callable[[dict[str, Any]], None] = hpa_scale) -> None:
        """Before each of the next `n` mutating requests to a Deployment, someone else writes it
        first (`change` edits the stored object; by default the autoscaler scales it), so a
        request carrying the resourceVersion its sender read gets 409 Conflict."""
        with self._lock:
            self._interference.append(_Interference(n, change))

    def edit(self, name: str, namespace: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """`kubectl edit`: an outside write of the stored object."""
        with self._lock:
            dep = self._dep(namespace, name)
            new = copy.deepcopy(dep)
            change(new)
            self._commit(namespace, name, dep, new)
            return copy.deepcopy(self.deployments[(namespace, name)])

    def rollout_undo(self, name: str, namespace: str = "default", to_revision: int | None = None) -> int:
        """`kubectl rollout undo deployment/NAME [--to-revision=N]`; returns the revision restored.

        Same patch as kubectl: the target ReplicaSet's template (hash label removed) and its
        annotations (but the Deployment's revision bookkeeping) replace the Deployment's."""
        with self._lock:
            dep = self._dep(namespace, name)
            rss = self.owned_replicasets(name, namespace)
            revs = [(int(rs["metadata"]["annotations"][REVISION]), rs) for rs in rss]
            if to_revision is None:
                if len(revs) < 2:
                    raise ValueError("no rollout history to undo to")
                rev, rs = revs[-2]  # kubectl: the second-highest revision
            else:
                found = [x for x in revs if x[0] == to_revision]
                if not found:
                    raise ValueError(f"unable to find specified revision {to_revision} in history")
                rev, rs = found[0]
            template = _without_hash(rs["spec"]["template"])
            if template == dep["spec"]["template"]:
                return rev  # kubectl: "skipped rollback (current template already matches revision N)"
            annotations = {k: v for k, v in dep["metadata"].get("annotations", {}).items() if k in SKIP_ANNOTATIONS}
            annotations.update({k: v for k, v in rs["metadata"].get("annotations", {}).items()
                                if k not in SKIP_ANNOTATIONS})
            ops = [{"op": "replace", "path": "/spec/template", "value": template},
                   {"op": "replace", "path": "/metadata/annotations", "value": annotations}]
            self.requests.append(Recorded("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}", {},
                                          JSON_PATCH, ops, 200, template_changed=True))
            self._commit(namespace, name, dep, json_patch(dep, ops))
            return rev

    def sync(self, name: str, namespace: str = "default") -> None:
        """The deployment controller's part that matters here (getNewReplicaSet + revision)."""
        with self._lock:
            dep = self._dep(namespace, name)
            template = dep["spec"]["template"]
            h = pod_template_hash(template)
            rss = self.owned_replicasets(name, namespace)
            new = next((rs for rs in rss if rs["metadata"]["labels"].get(HASH_LABEL) == h), None)
            old = [rs for rs in rss if rs is not new]
            new_rev = max((int(rs["metadata"]["annotations"][REVISION]) for rs in old), default=0) + 1
            d_ann = dep["metadata"].setdefault("annotations", {})
            if new is None:
                labels = {**template.get("metadata", {}).get("labels", {}), HASH_LABEL: h}
                rs_template = copy.deepcopy(template)
                rs_template.setdefault("metadata", {})["labels"] = dict(labels)
                ann = {k: v for k, v in d_ann.items() if k not in SKIP_ANNOTATIONS}
                ann[REVISION] = str(new_rev)
                rs_name = f"{name}-{h}"
                self.replicasets[(namespace, rs_name)] = {
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": namespace, "uid": str(uuid.uuid4()),
                                 "labels": labels, "annotations": ann, "resourceVersion": self._next_rv(),
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                      "uid": dep["metadata"]["uid"], "controller": True}]},
                    "spec": {"replicas": dep["spec"].get("replicas", 1),
                             "selector": {"matchLabels": {**dep["spec"]["selector"]["matchLabels"], HASH_LABEL: h}},
                             "template": rs_template},
                    "status": {"replicas": 0},
                }
            else:
                stored = self.replicasets[(namespace, new["metadata"]["name"])]
                ann = stored["metadata"]["annotations"]
                changed = False
                for k, v in d_ann.items():
                    if k not in SKIP_ANNOTATIONS and ann.get(k) != v:
                        ann[k] = v
                        changed = True
                old_rev = int(ann[REVISION])
                if old_rev < new_rev:  # brought back: keep the numbers it had, for history
                    ann[REVISION_HISTORY] = ",".join(x for x in (ann.get(REVISION_HISTORY), str(old_rev)) if x)
                    ann[REVISION] = str(new_rev)
                    changed = True
                else:
                    new_rev = old_rev
                if changed:
                    stored["metadata"]["resourceVersion"] = self._next_rv()
            if d_ann.get(REVISION) != str(new_rev):
                d_ann[REVISION] = str(new_rev)
                dep["metadata"]["resourceVersion"] = self._next_rv()
            self._prune(namespace, name, dep.get("spec", {}).get("revisionHistoryLimit", 10))

    # ---- HTTP ---------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip() or None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Recorded(method, url.path, query, ctype, body)
        with self._lock:
            self.requests.append(rec)
            try:
                code, out = self._route(method, url.path, query, ctype, body, rec)
            except ApiError as e:
                code, out = e.code, e.status()
            rec.status = code
        send_json(h, code, out)

    def _route(self, method: str, path: str, query: dict[str, str], ctype: str | None, body: Any,
               rec: Recorded) -> tuple[int, Any]:
        m = _DEPLOYMENT.match(path)
        if m:
            ns, name = m.groups()
            if method == "GET":
                return 200, copy.deepcopy(self._dep(ns, name))
            if method in ("PATCH", "PUT"):
                self._dep(ns, name)  # 404 first
                self._interfere(ns, name)
                dep = self._dep(ns, name)
                if method == "PUT":
                    new = self._put(dep, body)
                else:
                    new = self._patch(dep, ctype, body)
                rec.template_changed = new["spec"].get("template") != dep["spec"].get("template")
                out = self._commit(ns, name, dep, new, sync=False)
                if self.auto_sync:
                    self.sync(name, ns)  # after the response is built: the controller is asynchronous
                return 200, out
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource")
        m = _REPLICASETS.match(path)
        if m and method == "GET":
            ns = m.group(1)
            sel = _selector(query.get("labelSelector", ""))
            items = [copy.deepcopy(rs) for (n, _), rs in sorted(self.replicasets.items())
                     if n == ns and all(rs["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
            return 200, {"apiVersion": "apps/v1", "kind": "ReplicaSetList",
                         "metadata": {"resourceVersion": str(self._rv)}, "items": items}
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({method} {path})")

    # ---- semantics ------------------------------------------------------------------------
    def _dep(self, ns: str, name: str) -> dict[str, Any]:
        try:
            return self.deployments[(ns, name)]
        except KeyError:
            raise ApiError(404, "NotFound", f'deployments.apps "{name}" not found',
                           {"name": name, "group": "apps", "kind": "deployments"}) from None

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _interfere(self, ns: str, name: str) -> None:
        for it in self._interference:
            if it.remaining > 0:
                it.remaining -= 1
                dep = self._dep(ns, name)
                new = copy.deepcopy(dep)
                it.change(new)
                self._commit(ns, name, dep, new)
                break
        self._interference = [it for it in self._interference if it.remaining > 0]

    def _check_rv(self, dep: dict[str, Any], body: Any) -> None:
        rv = (body or {}).get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
        if rv is not None and rv != dep["metadata"]["resourceVersion"]:
            name = dep["metadata"]["name"]
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "{name}": the object '
                           "has been modified; please apply your changes to the latest version and try again",
                           {"name": name, "group": "apps", "kind": "deployments"})

    def _patch(self, dep: dict[str, Any], ctype: str | None, body: Any) -> dict[str, Any]:
        if ctype == SMP:
            self._check_rv(dep, body)
            return strategic_merge(dep, body)
        if ctype == MERGE:
            self._check_rv(dep, body)
            return merge_patch(dep, body)
        if ctype == JSON_PATCH:
            new = json_patch(dep, body)
            self._check_rv(dep, {"metadata": {"resourceVersion": new["metadata"].get("resourceVersion")}})
            return new
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")

    def _put(self, dep: dict[str, Any], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "a Deployment object is required")
        self._check_rv(dep, body)  # an absent resourceVersion is an unconditional update, allowed for Deployments
        new = copy.deepcopy(body)
        for k in ("uid", "generation", "resourceVersion", "namespace"):
            new.setdefault("metadata", {})[k] = dep["metadata"].get(k)
        new["status"] = dep.get("status", {})
        return new

    def _commit(self, ns: str, name: str, old: dict[str, Any], new: dict[str, Any], *, sync: bool = True) -> dict:
        """Store `new` as a write; nothing changes when it equals `old` (no new resourceVersion)."""
        new = copy.deepcopy(new)
        for k in ("uid", "generation", "resourceVersion", "namespace", "name"):
            new["metadata"][k] = old["metadata"].get(k)
        if new == old:
            return copy.deepcopy(old)
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.deployments[(ns, name)] = new
        out = copy.deepcopy(new)
        if sync and self.auto_sync:
            self.sync(name, ns)
        return out

    def _prune(self, ns: str, name: str, limit: int) -> None:
        rss = self.owned_replicasets(name, ns)
        current = rss[-1]["metadata"]["name"] if rss else None
        old = [rs for rs in rss if rs["metadata"]["name"] != current]
        for rs in old[:max(0, len(old) - limit)]:
            del self.replicasets[(ns, rs["metadata"]["name"])]


# ---- patch formats ---------------------------------------------------------------------------
def strategic_merge(obj: Any, patch: Any, field_name: str | None = None) -> Any:
    """Kubernetes strategic merge patch (the parts a Deployment patch uses): maps merge
    recursively, null deletes a key, lists with a merge key merge item by item."""
    if isinstance(patch, dict) and isinstance(obj, dict):
        out = copy.deepcopy(obj)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = strategic_merge(None, v, k) if isinstance(v, (dict, list)) else copy.deepcopy(v)
        return out
    if isinstance(patch, list) and isinstance(obj, list) and field_name in MERGE_KEYS:
        key = MERGE_KEYS[field_name]
        out = copy.deepcopy(obj)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise ApiError(422, "Invalid", f"{field_name}: every item of a strategic merge patch needs '{key}'")
            i = next((j for j, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if i is not None:
                    out.pop(i)
            elif i is None:
                out.append(copy.deepcopy(item))
            else:
                out[i] = strategic_merge(out[i], item)
        return out
    if isinstance(patch, dict):
        return strategic_merge({}, patch, field_name)
    return copy.deepcopy(patch)


def merge_patch(obj: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: lists are replaced whole."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(obj) if isinstance(obj, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(obj: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch: add, replace, remove and test."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch is a list of operations")
    out = copy.deepcopy(obj)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = out
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            if parent.get(last) != op["value"]:
                raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
        elif kind == "remove":
            parent.pop(int(last) if isinstance(parent, list) else last)
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(idx, copy.deepcopy(op["value"]))
                else:
                    parent[idx] = copy.deepcopy(op["value"])
            else:
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch operation {kind!r}")
    return out


def pod_template_hash(template: dict[str, Any]) -> str:
    """A stable short hash of a pod template, spelled with the alphabet Kubernetes uses."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:10])


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = t.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
    return t


def _selector(text: str) -> dict[str, str]:
    """Equality-based label selectors only ('a=b,c==d')."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "!=" in part or "=" not in part:
            raise ApiError(400, "BadRequest", f"unsupported label selector {part!r} (the fake knows k=v only)")
        k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
        out[k.strip()] = v.strip()
    return out
