"""The decision service's OpenAPI document tells the truth (issue 16, item 1).

A real `python -m ratchet.serving` process with an admin token: the document declares
/v1/decide's request body (the loaded model's features with their ranges, the slice keys)
and its answers; the validator refuses what the document forbids and accepts what it allows;
then schemathesis (its CLI, seeded) fuzzes every operation of the live service with and
without the admin token: no server error, negative data refused, positive data accepted,
status codes and response bodies as declared.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import pytest

from tests.test_serving import FEATURES, ServiceProcess, _train, tx

pytestmark = pytest.mark.slow
TOKEN = "s3cret-test-token"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from ratchet.registry import Registry, ReleaseRecord
    from ratchet.train.trainer import save_model

    tmp = tmp_path_factory.mktemp("openapi")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    reg = Registry(uri, "fraud")
    reg.register(ReleaseRecord(model_path=str(save_model(_train(0, 10), tmp / "m0")), spec_yaml="name: t\n",
                               spec_hash="h" * 64, snapshot={"rows": 3000}, windows={}, metrics={},
                               verdict={"passed": True}, passed=True, reason="test"))
    reg.set_stage(1, "production", actor="test", reason="bootstrap")
    # version 2: the same kind of model, released from a spec with a missing-feature policy
    reg.register(ReleaseRecord(model_path=str(save_model(_train(1, 10), tmp / "m1")), spec_yaml=POLICY_SPEC,
                               spec_hash="p" * 64, snapshot={"rows": 3000}, windows={}, metrics={},
                               verdict={"passed": True}, passed=True, reason="test"))
    svc = ServiceProcess(tmp, "openapi", ["--admin-token", TOKEN], {"MLFLOW_TRACKING_URI": uri})
    svc.wait_ready()
    yield svc
    svc.stop()


POLICY_SPEC = f"""name: policy
features: {json.dumps(FEATURES)}
missing_features:
  allowed: [merchant_count_24h]
"""


def test_a_required_feature_is_refused_naming_it_and_an_allowed_one_is_counted(service):
    """Version 2's spec lets merchant_count_24h be missing; every other feature is required."""
    _reload(service, production=2)
    try:
        doc = _doc(service)
        req = doc["components"]["schemas"]["DecisionRequest"]
        assert set(req["required"]) == {"card_id", *FEATURES} - {"merchant_count_24h"}
        without = {k: v for k, v in tx("c-req").items() if k != "hour_of_day"}
        r = service.client.post("/v1/decide", json=without)
        assert r.status_code == 422 and [p["field"] for p in r.json()["detail"]] == ["hour_of_day"], r.text
        r = service.client.post("/v1/decide", json=tx("c-req", amount=None))
        assert r.status_code == 422 and "amount" in r.text, r.text
        before = _missing_count(service)
        for body in (tx("c-opt", merchant_count_24h=None),
                     {k: v for k, v in tx("c-opt2").items() if k != "merchant_count_24h"}):
            assert service.client.post("/v1/decide", json=body).status_code == 200
        assert service.client.post("/v1/decide", json=tx("c-full")).status_code == 200
        assert _missing_count(service) == before + 2
    finally:
        _reload(service, production=1)
    # version 1 has no ratchet spec (registered by hand): every feature may be missing, as before
    assert service.client.post("/v1/decide", json={"card_id": "c-sparse"}).status_code == 200


def _reload(service, **body) -> None:  # noqa: ANN003
    r = service.client.post("/admin/reload", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 200, r.text


def _missing_count(service) -> float:
    text = service.client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith('ratchet_missing_features_total{feature="merchant_count_24h"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _doc(service) -> dict:
    r = service.client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def _request_schema(doc: dict) -> dict:
    op = doc["paths"]["/v1/decide"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/DecisionRequest"}
    return {**doc["components"]["schemas"]["DecisionRequest"], "components": doc["components"]}


def test_decide_declares_its_body_and_answers(service):
    doc = _doc(service)
    op = doc["paths"]["/v1/decide"]["post"]
    assert set(op["responses"]) == {"200", "413", "422", "503"}
    req = doc["components"]["schemas"]["DecisionRequest"]
    assert req["required"] == ["card_id"] and req["additionalProperties"] is False
    assert set(FEATURES) <= set(req["properties"]) and {"merchant_id", "country", "channel"} <= set(req["properties"])
    amount = next(s for s in req["properties"]["amount"]["anyOf"] if s.get("type") == "number")
    assert amount["minimum"] == 0.0
    hour = next(s for s in req["properties"]["hour_of_day"]["anyOf"] if s.get("type") == "number")
    assert (hour["minimum"], hour["maximum"]) == (0.0, 24.0)
    assert doc["paths"]["/admin/reload"]["post"]["security"] == [{"bearer": []}]
    assert "401" in doc["paths"]["/admin/config"]["get"]["responses"]


@pytest.mark.parametrize("body", [
    tx("c1"), {"card_id": "c1"}, {"card_id": "c1", "amount": None}, {"card_id": "c1", "hour_of_day": 24},
    {"amount": 1.0}, {"card_id": "c", "amount": -5.0}, {"card_id": "c", "amount": "12.5"},
    {"card_id": "c", "hour_of_day": 25}, {"card_id": "c", "surprise": 1}, {"card_id": 12345},
    {"card_id": "c" * 500}, {"card_id": ""}, [1, 2],
])
def test_the_document_and_the_validator_agree(service, body):
    """What the declared schema accepts is answered 200, what it refuses gets a 422."""
    schema = _request_schema(_doc(service))
    try:
        jsonschema.validate(body, schema)
        allowed = True
    except jsonschema.ValidationError:
        allowed = False
    r = service.client.post("/v1/decide", json=body)
    assert r.status_code == (200 if allowed else 422), (body, r.text)
    if allowed:
        jsonschema.validate(r.json(), {**_doc(service)["components"]["schemas"]["Decision"]})


@pytest.mark.parametrize("auth", ["with the admin token", "without it"])
def test_schemathesis_fuzzes_every_operation(service, tmp_path: Path, auth: str):
    cli = Path(sys.executable).with_name("schemathesis")
    headers = ["-H", f"Authorization: Bearer {TOKEN}"] if auth == "with the admin token" else []
    checks = "not_a_server_error,negative_data_rejection,positive_data_acceptance,status_code_conformance," \
             "response_schema_conformance,content_type_conformance" + (",ignored_auth" if headers else "")
    # reload bodies name versions and aliases the store may not have (409) and, with the token,
    # really reload the service: a few examples for it, many for the request path
    r = subprocess.run([str(cli), "run", f"{service.url}/openapi.json", "--checks", checks, "--seed", "7",
                        "--max-examples", "60", "--generation-deterministic", "--workers", "1",
                        "--request-timeout", "60", "--report", "junit", "--report-dir", str(tmp_path),
                        "--phases", "examples,coverage,fuzzing", *headers],
                       capture_output=True, text=True, timeout=500, cwd=tmp_path)  # its .schemathesis/ cache
    out = r.stdout + r.stderr
    print(out[-6000:])
    assert r.returncode == 0, out[-6000:]
    [report] = tmp_path.glob("junit-*.xml")
    tested = {c.get("name") for c in ElementTree.parse(report).getroot().iter("testcase")}
    assert tested == {"POST /v1/decide", "GET /healthz", "GET /readyz", "GET /metrics", "GET /admin/config",
                      "POST /admin/reload"}, tested
    generated = re.search(r"(\d+) generated, (\d+) passed", out)
    assert generated and int(generated.group(1)) >= 300 and generated.group(1) == generated.group(2), out[-2000:]
    # the service still serves production after the fuzzing (a reload to nonsense never took)
    assert service.client.post("/v1/decide", json=tx("c-after")).status_code == 200
