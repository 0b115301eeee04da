"""A local HTTP fake of the Kubeflow Pipelines v2beta1 REST API, enough for kfp.Client.

It implements what `create_run_from_pipeline_package`, `create_experiment`,
`create_recurring_run`, `list_recurring_runs`, `delete_recurring_run` (and
enable/disable, get) send, keeps the resulting state in memory, and records every
request (method, path, query, JSON body) so tests can check what arrived. The real
kfp.Client talks to it over HTTP on 127.0.0.1; nothing in the client is patched.

    with FakeKfpServer() as kfp_api:
        kfp.Client(host=kfp_api.url).create_experiment("ratchet")
        assert kfp_api.requests[-1].path == "/apis/v2beta1/experiments"
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes import send_json

API = "/apis/v2beta1"


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeKfpState:
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)


class FakeKfpServer:
    """Start with `with FakeKfpServer() as api:` (or start()/stop()); `api.url` is the host."""

    def __init__(self, multi_user: bool = False) -> None:
        self.multi_user = multi_user
        self.state = FakeKfpState()
        self.requests: list[Recorded] = []
        #: (METHOD, path regex) -> (HTTP status, message): make matching requests fail.
        self.failures: dict[tuple[str, str], tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeKfpServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kfp",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKfpServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- helpers for tests -----------------------------------------------------------
    def requests_to(self, method: str, path: str) -> list[Recorded]:
        """Recorded requests with this method whose path matches the regex `path` entirely."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    # -- the API ---------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            headers = {k.lower(): v for k, v in h.headers.items()}
            self.requests.append(Recorded(method, parts.path, query, body, headers))
            for (m, pattern), (status, message) in self.failures.items():
                if m == method and re.fullmatch(pattern, parts.path):
                    return send_json(h, status, {"error": message, "message": message, "code": 13})
            status, payload = self._route(method, parts.path, query, body)
        send_json(h, status, payload)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        s = self.state
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": self.multi_user, "pipeline_store": "fake"}

        if path == f"{API}/experiments":
            if method == "POST":
                exp = {**body, "experiment_id": _id(), "created_at": _now(), "storage_state": "AVAILABLE"}
                s.experiments[exp["experiment_id"]] = exp
                return 200, exp
            if method == "GET":
                found = [e for e in s.experiments.values() if _matches(e, query.get("filter"))]
                return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if m := re.fullmatch(f"{API}/experiments/([^/:]+)", path):
            exp = s.experiments.get(m[1])
            return (200, exp) if method == "GET" and exp else _not_found("experiment", m[1])

        if path == f"{API}/runs" and method == "POST":
            if body.get("experiment_id") not in s.experiments:
                return 400, {"error": f"experiment {body.get('experiment_id')} not found", "code": 3}
            run = {**body, "run_id": _id(), "state": "PENDING", "created_at": _now()}
            s.runs[run["run_id"]] = run
            return 200, run
        if m := re.fullmatch(f"{API}/runs/([^/:]+)", path):
            run = s.runs.get(m[1])
            return (200, run) if method == "GET" and run else _not_found("run", m[1])

        if path == f"{API}/recurringruns":
            if method == "POST":
                if body.get("experiment_id") not in s.experiments:
                    return 400, {"error": f"experiment {body.get('experiment_id')} not found", "code": 3}
                rr = {**body, "recurring_run_id": _id(), "created_at": _now(), "updated_at": _now(),
                      "status": "ENABLED" if body.get("mode", "ENABLE") == "ENABLE" else "DISABLED"}
                s.recurring_runs[rr["recurring_run_id"]] = rr
                return 200, rr
            if method == "GET":
                found = [r for r in s.recurring_runs.values()
                         if query.get("experiment_id") in (None, r.get("experiment_id"))
                         and _matches(r, query.get("filter"))]
                start = int(query.get("page_token") or 0)
                size = int(query.get("page_size") or 10)
                page = found[start:start + size]
                payload: dict[str, Any] = {"total_size": len(found)}
                if page:
                    payload["recurringRuns"] = page  # sic: the generated client reads this key
                if start + size < len(found):
                    payload["next_page_token"] = str(start + size)
                return 200, payload
        if m := re.fullmatch(f"{API}/recurringruns/([^/:]+)(?::(enable|disable))?", path):
            rr = s.recurring_runs.get(m[1])
            if rr is None:
                return _not_found("recurring run", m[1])
            if method == "GET" and not m[2]:
                return 200, rr
            if method == "DELETE" and not m[2]:
                del s.recurring_runs[m[1]]
                return 200, {}
            if method == "POST" and m[2]:
                rr["mode"] = m[2].upper()
                rr["status"] = "ENABLED" if m[2] == "enable" else "DISABLED"
                return 200, {}
        return 404, {"error": f"fake KFP API: no route for {method} {path}", "code": 5}


def _matches(item: dict, filter_json: str | None) -> bool:
    """The EQUALS predicates of a KFP filter (all kfp.Client sends for names)."""
    if not filter_json:
        return True
    for p in json.loads(filter_json).get("predicates", []):
        if p.get("operation") not in (1, "EQUALS"):
            raise ValueError(f"fake KFP API: filter operation {p.get('operation')} not implemented")
        if str(item.get(p["key"])) != str(p.get("stringValue", p.get("string_value"))):
            return False
    return True


def _not_found(kind: str, ident: str) -> tuple[int, dict]:
    return 404, {"error": f"{kind} {ident} not found", "code": 5}




def _id() -> str:
    return str(uuid.uuid4())


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
