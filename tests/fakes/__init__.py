"""Local stand-ins for services tests cannot reach (a Kubeflow Pipelines server, a
Kubernetes API server), and the one JSON response writer their handlers share."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    """Answer `handler`'s request with `payload` as JSON (content type and length set)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
