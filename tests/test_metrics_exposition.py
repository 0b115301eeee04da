"""/metrics through prometheus_client: the page parses with its parser, every family keeps
its name, type and labels, and the values are the service's counts after a few requests."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families
import httpx

from ratchet.serving.app import create_app
from ratchet.serving.metrics import Metrics
from ratchet.serving.models import LoadedModel
from ratchet.serving.service import Service
from ratchet.serving.shadow import ShadowScorer

FEATURES = ("amount", "card_count_1h")
FAMILIES = {  # name (as the parser gives it: counters without _total) -> type
    "ratchet_requests": "counter", "ratchet_request_duration_seconds": "histogram", "ratchet_decisions": "counter",
    "ratchet_missing_features": "counter", "ratchet_block_rate": "gauge", "ratchet_shadow_scored": "counter",
    "ratchet_shadow_disagreements": "counter", "ratchet_shadow_errors": "counter",
    "ratchet_shadow_timeouts": "counter", "ratchet_shadow_dropped": "counter",
    "ratchet_shadow_duration_seconds": "histogram", "ratchet_reloads": "counter",
    "ratchet_config_generation": "gauge", "ratchet_shadow_queue_length": "gauge", "ratchet_uptime_seconds": "gauge",
}


class FakeLoader:
    def __init__(self, models: dict[int, LoadedModel]) -> None:
        self.models = models

    def resolve(self, ref):  # noqa: ANN001, ANN201
        return 1 if ref == "production" else ref

    def load(self, v: int) -> LoadedModel:
        return self.models[v]


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.random((500, 2)).astype(np.float32) * [1000, 10]
    b = xgb.train({"objective": "binary:logistic", "tree_method": "hist"},
                  xgb.DMatrix(x, label=(x[:, 0] > 500).astype(int), feature_names=list(FEATURES)), 5)
    b.set_param({"nthread": 1})
    return b


def _samples(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    types, values = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return types, values


class Client:
    """Requests straight into the ASGI app, one event loop (no server, no lifespan)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")

    def post(self, path: str, **kw) -> httpx.Response:  # noqa: ANN003
        return self.loop.run_until_complete(self.http.post(path, **kw))

    def get(self, path: str) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(path))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


def test_exposition_parses_and_counts_what_the_service_did(booster):
    m = Metrics()
    shadow = ShadowScorer(m, None, timeout_s=5.0).start()
    production = LoadedModel(1, booster, FEATURES, 0.5, missing_allowed=frozenset({"card_count_1h"}))
    svc = Service(FakeLoader({1: production, 2: LoadedModel(2, booster, FEATURES, 0.01)}), m, None, shadow,
                  fault_env={})
    svc.reload(svc.merge({"production": 1, "shadow": 2}))
    client = Client(create_app(svc))
    bodies = [{"card_id": "c1", "amount": 900.0, "card_count_1h": 1.0},   # block
              {"card_id": "c2", "amount": 10.0, "card_count_1h": 1.0},    # allow
              {"card_id": "c3", "amount": 10.0}]                          # allow, card_count_1h missing
    answers = [client.post("/v1/decide", json=b).json()["decision"] for b in bodies]
    assert answers == ["block", "allow", "allow"]
    assert client.post("/v1/decide", json={"card_id": "c4", "amount": -1}).status_code == 422
    assert client.get("/healthz").status_code == 200
    assert client.get("/no-such-page").status_code == 404
    deadline = time.time() + 10
    while m.shadow_scored < 3 and time.time() < deadline:
        time.sleep(0.02)
    shadow.close()

    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    client.close()
    types, v = _samples(r.text)
    assert {k: types.get(k) for k in FAMILIES} == FAMILIES

    def at(name: str, **labels: str) -> float:
        return v[(name, frozenset(labels.items()))]

    assert at("ratchet_requests_total", path="/v1/decide", status="200") == 3
    assert at("ratchet_requests_total", path="/v1/decide", status="422") == 1
    assert at("ratchet_requests_total", path="/healthz", status="200") == 1
    assert at("ratchet_requests_total", path="other", status="404") == 1
    assert at("ratchet_request_duration_seconds_count", path="/v1/decide") == 4
    assert at("ratchet_request_duration_seconds_bucket", path="/v1/decide", le="+Inf") == 4
    assert 0 < at("ratchet_request_duration_seconds_sum", path="/v1/decide") < 60
    le = [dict(labels)["le"] for (name, labels) in v
          if name == "ratchet_request_duration_seconds_bucket" and ("path", "/v1/decide") in labels]
    assert len(le) == 15 and "1" in le and "0.0005" in le   # le written as before (`:g`), not "1.0"
    assert at("ratchet_decisions_total", role="production", version="1", decision="block") == 1
    assert at("ratchet_decisions_total", role="production", version="1", decision="allow") == 2
    assert at("ratchet_block_rate", role="production") == pytest.approx(1 / 3)
    assert at("ratchet_missing_features_total", feature="card_count_1h") == 1
    assert at("ratchet_shadow_scored_total") == 3
    assert at("ratchet_decisions_total", role="shadow", version="2", decision="block") == 3
    assert at("ratchet_shadow_disagreements_total", against="production") == 2  # threshold 0.01 blocks all three
    assert at("ratchet_shadow_disagreements_total", against="canary") == 0
    assert at("ratchet_shadow_errors_total") == 0 and at("ratchet_shadow_timeouts_total") == 0
    assert at("ratchet_shadow_dropped_total", reason="queue_full") == 0
    assert at("ratchet_shadow_duration_seconds_count") >= 1
    assert at("ratchet_reloads_total", outcome="ok") == 1 and at("ratchet_reloads_total", outcome="failed") == 0
    assert at("ratchet_config_generation") == svc.snapshot.generation
    assert at("ratchet_uptime_seconds") >= 0


def test_a_broken_gauge_is_nan_and_the_page_still_parses():
    m = Metrics()
    m.gauges["ratchet_broken_gauge"] = lambda: 1 / 0
    types, v = _samples(m.render())
    assert types["ratchet_broken_gauge"] == "gauge" and np.isnan(v[("ratchet_broken_gauge", frozenset())])
    assert types["ratchet_requests"] == "counter"   # empty families keep their HELP and TYPE
