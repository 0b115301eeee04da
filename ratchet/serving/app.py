"""HTTP layer of the decision service (FastAPI on uvicorn) and `serve(options)`.

Endpoints:
    POST /v1/decide      one transaction -> allow/block (see Service.decide)
    GET  /healthz        the process is alive
    GET  /readyz         200 once a production model is loaded, else 503 with the reason
    GET  /metrics        Prometheus text format
    GET  /admin/config   what is loaded (versions, weight, cohort, thresholds, generation, exploration)
    POST /admin/reload   load a new stage config, then swap atomically (no request dropped)

    >>> serve(ServeOptions(tracking_uri="sqlite:///mlflow.db", stages=StageConfig(production=6)))
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ratchet.errors import RatchetError, RegistryError, SpecError
from ratchet.serving.config import ServeOptions, StageConfig, parse_cohort, parse_version_ref
from ratchet.serving.metrics import CONTENT_TYPE, Metrics
from ratchet.serving.openapi import openapi_document
from ratchet.serving.schema import ReloadRequest, request_model, validation_problems
from ratchet.serving.service import Service

log = logging.getLogger("ratchet.serving")
JSON = "application/json"


class _TooLarge(Exception):
    pass


class MetricsMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): counts every response by path and status."""

    def __init__(self, app, metrics: Metrics) -> None:  # noqa: ANN001
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope["path"], status[0], time.perf_counter() - t0)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload, allow_nan=False).encode(), status_code=status, media_type=JSON)


def create_app(service: Service, *, initial: StageConfig | None = None, admin_token: str | None = None,
               max_body_bytes: int = 64 * 1024) -> FastAPI:
    """The FastAPI app around a Service; `initial` is loaded in the background at start-up."""
    stop = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        if service.log is not None:
            service.log.start()   # its writer thread first recovers journals a killed process left
        if service.shadow is not None:
            service.shadow.start()
        if initial is not None and service.snapshot is None:
            threading.Thread(target=service.load_initial, args=(initial, stop), name="initial-load",
                             daemon=True).start()
        try:
            yield
        finally:
            stop.set()
            # uvicorn has finished the in-flight requests by now: every answered decision is logged
            await run_in_threadpool(service.close)
            log.info("decision service stopped; decision log flushed")

    app = FastAPI(title="ratchet decision service", lifespan=lifespan, docs_url=None, redoc_url=None)
    documents: dict[int, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        """GET /openapi.json: /v1/decide's request schema is the loaded configuration's (see openapi.py)."""
        snap = service.snapshot
        generation = snap.generation if snap is not None else 0
        if generation not in documents:
            documents.clear()
            documents[generation] = openapi_document(app.routes, snap.request_model if snap else request_model(()),
                                                     admin_token=admin_token)
        return documents[generation]

    app.openapi = openapi  # type: ignore[method-assign]
    too_large = {"detail": [{"field": "(body)", "loc": [], "type": "too_large",
                             "msg": f"request body exceeds {max_body_bytes} bytes"}]}

    @app.post("/v1/decide")
    async def decide(request: Request) -> Response:
        """One transaction -> allow/block. Declared for the OpenAPI schema only: DecideFastPath
        answers every POST /v1/decide before FastAPI's routing is reached."""
        raise RuntimeError("POST /v1/decide is served by DecideFastPath")

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> Response:
        snap = service.snapshot
        if snap is None:
            return _json(503, {"ready": False, "reason": service.not_ready_reason})
        return _json(200, {"ready": True, "serving": snap.stages.fingerprint(), "generation": snap.generation})

    @app.get("/metrics")
    async def metrics() -> Response:
        # prometheus_client writes the page in ~1-2 ms: in a thread, so the event loop keeps
        # answering decisions meanwhile (the GIL switches every 0.2 ms) instead of stalling
        return Response(await run_in_threadpool(service.metrics.render), media_type=CONTENT_TYPE)

    def authorised(request: Request) -> bool:
        return admin_token is None or request.headers.get("authorization") == f"Bearer {admin_token}"

    @app.get("/admin/config")
    async def admin_config(request: Request) -> Response:
        if not authorised(request):
            return _json(401, {"detail": "missing or wrong bearer token"})
        snap = service.snapshot
        base = {"model_name": service.model_name, "ready": snap is not None,
                "exploration": service.describe_exploration()}
        if snap is None:
            return _json(200, {**base, "reason": service.not_ready_reason})
        return _json(200, {**base, **snap.describe()})

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        if not authorised(request):
            return _json(401, {"detail": "missing or wrong bearer token"})
        try:
            body = await _read_body(request, max_body_bytes)
            req = ReloadRequest.model_validate_json(body or b"{}")
        except _TooLarge:
            return _json(413, too_large)
        except ValidationError as exc:
            return _json(422, {"detail": validation_problems(exc)})
        changes: dict[str, Any] = {}
        try:
            for key in ("production", "canary", "shadow"):
                if key in req.model_fields_set:
                    changes[key] = parse_version_ref(getattr(req, key), key)
            if "canary_weight" in req.model_fields_set:
                changes["canary_weight"] = float(req.canary_weight)
            if "cohort" in req.model_fields_set:
                changes["cohort"] = parse_cohort(req.cohort)
        except SpecError as exc:
            return _json(422, {"detail": str(exc)})
        if "production" in changes and changes["production"] is None:
            return _json(422, {"detail": [{"field": "production", "loc": ["production"], "type": "missing",
                                           "msg": "production cannot be removed"}]})
        target = service.merge(changes)
        try:
            # loading from MLflow takes a while: off the event loop, so decisions keep flowing
            snap = await run_in_threadpool(service.reload, target, req.reason)
        except (RegistryError, RatchetError) as exc:
            return _json(409, {"detail": str(exc), "serving": _serving(service)})
        except Exception as exc:  # noqa: BLE001 - registry unreachable etc.: old config keeps serving
            log.error("reload to %s failed: %s", target.fingerprint(), exc)
            return _json(503, {"detail": f"reload failed, still serving the previous config: "
                                         f"{type(exc).__name__}: {exc}"[:2000], "serving": _serving(service)})
        return _json(200, {"model_name": service.model_name, "exploration": service.describe_exploration(),
                           **snap.describe()})

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> Response:
        log.exception("internal error: %s", exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    return DecideFastPath(MetricsMiddleware(app, service.metrics), service, max_body_bytes, too_large)


class DecideFastPath:
    """Pure ASGI front: POST /v1/decide is answered here, without FastAPI's routing, request
    and response objects (~150 us a request on this machine, more than the scoring); every
    other request goes to the FastAPI app (which still declares /v1/decide for its OpenAPI).
    Same answers, status codes, headers, errors and metrics as the FastAPI route. The answer
    is sent only after Service.decide has returned, i.e. after its decision-log row is in the
    log's journal (written to the OS): a kill -9 never loses a decision that was answered."""

    def __init__(self, app, service: Service, max_body_bytes: int, too_large: dict) -> None:  # noqa: ANN001
        self.app, self.service, self.limit = app, service, max_body_bytes
        self._too_large = _encode(413, too_large)
        self._bad_rid = _encode(422, {"detail": [{"field": "x-request-id", "loc": ["header", "x-request-id"],
                                                  "type": "invalid", "msg": "1..128 printable characters"}]})

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["path"] != "/v1/decide" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        try:
            status, body = await self._decide(scope, receive, t0)
            if body is not None:
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
        except Exception as exc:  # noqa: BLE001 - as FastAPI's exception handler: a 500 naming the type
            log.exception("internal error: %s", exc)
            status = 500
            body = json.dumps({"detail": f"internal error: {type(exc).__name__}"}).encode()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
        finally:
            self.service.metrics.observe_request("/v1/decide", status, time.perf_counter() - t0)

    async def _decide(self, scope, receive, t0: float) -> tuple[int, bytes | None]:  # noqa: ANN001
        rid = length = None
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value
            elif name == b"x-request-id" and rid is None:
                rid = value.decode("latin-1")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return self._too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 499, None  # the client left: nothing to answer (as starlette's ClientDisconnect)
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.limit:
                    return self._too_large
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if rid is not None and not (0 < len(rid) <= 128 and rid.isprintable()):
            return self._bad_rid
        status, payload = self.service.decide(chunks[0] if len(chunks) == 1 else b"".join(chunks), rid, t0)
        return _encode(status, payload)


def _encode(status: int, payload: Any) -> tuple[int, bytes]:
    return status, json.dumps(payload, allow_nan=False).encode()


def _serving(service: Service) -> str | None:
    return service.snapshot.stages.fingerprint() if service.snapshot else None


def build_service(options: ServeOptions) -> Service:
    """A Service wired to the registry, a decision log (if configured) and a shadow worker."""
    from ratchet.exploration import Explorer
    from ratchet.serving.decision_log import DecisionLog
    from ratchet.serving.shadow import ShadowScorer

    metrics = Metrics()
    decision_log = None
    if options.decision_log:
        decision_log = DecisionLog(options.decision_log, metrics, rotate_rows=options.log_rotate_rows,
                                   rotate_seconds=options.log_rotate_seconds)
    timeout_s = options.shadow_timeout_ms / 1000.0
    # a request waits in the queue at most twice the scoring timeout (at least 2 s) before it is stale
    shadow = ShadowScorer(metrics, decision_log, queue_size=options.shadow_queue, timeout_s=timeout_s,
                          stale_after_s=max(2.0, 2.0 * timeout_s))
    explorer = Explorer(options.exploration) if options.exploration is not None else None
    return Service(_LazyLoader(options), metrics, decision_log, shadow, model_name=options.model_name,
                   explorer=explorer, exploration_file=options.exploration_file)


class _LazyLoader:
    """Imports mlflow (seconds) on first use, in the loading thread, so /healthz answers at once."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self._loader = None
        self._lock = threading.Lock()

    def _get(self):  # noqa: ANN202
        with self._lock:
            if self._loader is None:
                from ratchet.registry import Registry
                from ratchet.serving.models import ModelLoader

                self._loader = ModelLoader(Registry(self.options.tracking_uri, self.options.model_name))
            return self._loader

    def resolve(self, ref):  # noqa: ANN001, ANN201
        return self._get().resolve(ref)

    def load(self, version: int):  # noqa: ANN201
        return self._get().load(version)

    def forget_except(self, keep: set[int]) -> None:
        if self._loader is not None:
            self._loader.forget_except(keep)


def serve(options: ServeOptions) -> int:
    """Run the service until SIGTERM/SIGINT; the decision log is flushed on the way out."""
    import importlib.util

    import uvicorn

    # background threads (log writer, shadow) hold the GIL for at most 1 ms at a time, not 5 ms
    sys.setswitchinterval(0.0002)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    service = build_service(options)
    app = create_app(service, initial=options.stages, admin_token=options.admin_token,
                     max_body_bytes=options.max_body_bytes)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    log.info("decision service on http://%s:%d (model %s, asked %s, %s/%s)", options.host, options.port,
             options.model_name, options.stages.fingerprint(), loop, http)
    if options.exploration is not None:
        log.info("exploration on (%s): %s", options.exploration_file, options.exploration.to_dict())
    uvicorn.run(app, host=options.host, port=options.port, loop=loop, http=http, access_log=False,
                log_level="warning", timeout_graceful_shutdown=10, lifespan="on")
    return 0

