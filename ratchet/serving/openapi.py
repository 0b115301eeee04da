"""The decision service's OpenAPI document: what each endpoint takes and answers, truthfully.

POST /v1/decide is answered by the ASGI fast path (app.DecideFastPath) before FastAPI's routing,
so FastAPI cannot describe it from a signature. This module writes its operation by hand from
the same pydantic model the validator uses (schema.request_model over the loaded models'
features, with their ranges, and the slice keys): the document changes with each reload, as
the accepted requests do. The other operations get their bodies and status codes here too.

    >>> doc = openapi_document(app.routes, Snapshot.request_model, admin_token=None)
    >>> doc["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]
    {'schema': {'$ref': '#/components/schemas/DecisionRequest'}}
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from ratchet.serving.schema import MAX_KEY_LENGTH, ReloadRequest

JSON = "application/json"
#: x-request-id: 1..128 printable ASCII characters, no space at either end (HTTP strips them)
REQUEST_ID_PATTERN = r"^[!-~]([ -~]{0,126}[!-~])?$"


class Decision(BaseModel):
    """200 of POST /v1/decide."""

    decision: Literal["allow", "block"]
    score: float = Field(ge=0.0, le=1.0)
    threshold: float
    model_version: int
    role: Literal["production", "canary"]
    request_id: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    explored: Literal[True] = Field(  # type: ignore[assignment]
        None, description="present (true) only when production would have blocked and exploration let the "
                          "payment through: decision is allow, score >= threshold",
        json_schema_extra=lambda s: s.pop("default", None))


class Problem(BaseModel):
    """One refused field: which, where, why."""

    field: str
    loc: list[str]
    type: str | None = None
    msg: str | None = None


class Problems(BaseModel):
    """413 and 422: the request was refused; `detail` names each field and what is wrong."""

    detail: list[Problem]


class Message(BaseModel):
    """401, 409, 503: one sentence saying why."""

    model_config = ConfigDict(extra="allow")
    detail: str


class Ready(BaseModel):
    """GET /readyz."""

    ready: bool
    serving: str | None = None
    generation: int | None = None
    reason: str | None = None


class Alive(BaseModel):
    status: Literal["alive"]


class Config(BaseModel):
    """GET /admin/config and 200 of POST /admin/reload: what is loaded (see Snapshot.describe)."""

    model_config = ConfigDict(extra="allow")
    model_name: str
    ready: bool | None = None
    production: int | None = None
    canary: int | None = None
    canary_weight: float | None = None
    shadow: int | None = None
    generation: int | None = None
    fingerprint: str | None = None
    exploration: dict[str, Any] | None = Field(None, description="the exploration policy (--exploration), "
                                                                 "null when off")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, model: str | None = None, media: str = JSON) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if model is not None:
        out["content"] = {media: {"schema": _ref(model)}}
    return out


def _operations(admin: bool) -> dict[tuple[str, str], dict[str, Any]]:
    """Path, method -> the parts of the operation this module owns."""
    unauthorised = {"401": _answer("missing or wrong bearer token (--admin-token)", "Message")} if admin else {}
    security = {"security": [{"bearer": []}]} if admin else {}
    return {
        ("/v1/decide", "post"): {
            "summary": "Decide one payment: allow or block",
            "description": "Scores the transaction with production (or the canary, for a card in the canary's "
                           "share and cohort) and answers with the decision. Every feature is optional (absent or "
                           "null: missing, as XGBoost treats it) and must be a finite number in its range; unknown "
                           "fields are refused. The decision is logged before the answer is sent. With "
                           "--exploration, a random share of production's would-be blocks is allowed and "
                           "answered with explored: true (logged with its propensity).",
            "parameters": [{"name": "x-request-id", "in": "header", "required": False,
                            "description": "your id for this request (logged with the decision); default: a new one",
                            "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN}}],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("DecisionRequest")}}},
            "responses": {"200": _answer("the decision", "Decision"),
                          "413": _answer("the body is larger than --max-body-bytes", "Problems"),
                          "422": _answer("refused: each problem names its field", "Problems"),
                          "503": _answer("no model loaded yet (starting up)", "Message")},
        },
        ("/healthz", "get"): {"summary": "The process is alive", "responses": {"200": _answer("alive", "Alive")}},
        ("/readyz", "get"): {"summary": "Ready once a production model is loaded",
                             "responses": {"200": _answer("ready", "Ready"),
                                           "503": _answer("not ready, with the reason", "Ready")}},
        ("/metrics", "get"): {"summary": "Prometheus metrics",
                              "responses": {"200": {"description": "Prometheus text exposition format",
                                                    "content": {"text/plain": {"schema": {"type": "string"}}}}}},
        ("/admin/config", "get"): {"summary": "What is loaded: versions, canary weight, cohort, generation",
                                   **security, "responses": {"200": _answer("the loaded configuration", "Config"),
                                                             **unauthorised}},
        ("/admin/reload", "post"): {
            "summary": "Load a new stage configuration, then swap atomically",
            **security,
            "requestBody": {"required": False, "content": {JSON: {"schema": _ref("ReloadRequest")}}},
            "responses": {"200": _answer("reloaded: the new configuration", "Config"), **unauthorised,
                          "409": _answer("a version or alias the registry does not have", "Message"),
                          "413": _answer("the body is too large", "Problems"),
                          "422": _answer("refused: each problem names its field", "Problems"),
                          "503": _answer("the registry could not be reached: still serving the previous "
                                         "configuration", "Message")},
        },
    }


def openapi_document(routes: list[Any], request_model: type[BaseModel], *, admin_token: str | None,
                     title: str = "ratchet decision service", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document for the app's `routes`, with /v1/decide taking `request_model`."""
    doc = get_openapi(title=title, version=version, routes=routes,
                      description="Allow or block each card payment with the loaded production, canary and "
                                  "shadow models (ratchet). The request schema follows the loaded models.")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (request_model, Decision, Problems, Problem, Message, Ready, Alive, Config, ReloadRequest):
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(s.pop("$defs", {}))
        schemas[model.__name__ if model is not request_model else "DecisionRequest"] = s
    if admin_token is not None:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for (path, method), op in _operations(admin_token is not None).items():
        doc["paths"].setdefault(path, {})[method] = {"operationId": f"{method}_{path.strip('/').replace('/', '_')}",
                                                     **op}
    return doc
