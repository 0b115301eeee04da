"""ratchet against a real `mlflow server` backed by PostgreSQL, as people run it: registration,
signature, aliases and history through ratchet's Registry over HTTP; the MLflow UI's own
endpoints (ajax-api, model-versions/get-artifact); the rows MLflow wrote, read from PostgreSQL
itself; and the controller (`ratchet controller --once`, the real CLI, local backend) following
alias edits made through the REST call the UI makes, with a real decision service loading the
versions from the server. The harness is tests/mlflow_server.py (initdb, pg_ctl, mlflow server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlflow_server import MlflowServer, PostgresServer, find_pg_bin, free_port

REPO = Path(__file__).resolve().parents[1]
PG_BIN = find_pg_bin()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL is not installed: no initdb/pg_ctl/postgres/createdb in "
                       "$RATCHET_PG_BIN, /usr/lib/postgresql/*/bin or on PATH (Debian: apt-get install postgresql)"),
]
FEATURES = ["amount", "hour_of_day", "card_count_1h", "is_online"]


@dataclass
class Stack:
    pg: PostgresServer
    mlflow: MlflowServer
    tmp: Path
    model: str          # a trained booster (ubj)
    rows: str           # a Parquet table with its features (the input example's source)

    def sql(self, query: str, *params: object) -> list[tuple]:
        with self.pg.connect("mlflow") as con:
            return con.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-server")
    from ratchet.train.trainer import save_model

    rng = np.random.default_rng(0)
    x = rng.random((2000, len(FEATURES))).astype(np.float32)
    x[:, 0] *= 1000
    x[:, 1] *= 23
    y = ((x[:, 0] > 800) & (x[:, 3] > 0.5)).astype(int)
    booster = xgb.train({"tree_method": "hist", "objective": "binary:logistic", "max_depth": 3, "seed": 0},
                        xgb.DMatrix(x, label=y, feature_names=FEATURES), 10)
    model = str(save_model(booster, tmp / "model"))
    rows = pd.DataFrame(x[:50], columns=FEATURES).assign(card_id=[f"c{i}" for i in range(50)], label=y[:50])
    rows.to_parquet(tmp / "test.parquet")
    with PostgresServer.start(PG_BIN) as pg:
        uri = pg.create_database("mlflow")
        with MlflowServer.start(uri, tmp / "artifacts", tmp / "mlflow-server.log") as server:
            yield Stack(pg, server, tmp, model, str(tmp / "test.parquet"))


def release(stack: Stack, *, passed: bool = True, reason: str = "gate passed"):
    from ratchet.registry import ReleaseRecord

    return ReleaseRecord(model_path=stack.model, spec_yaml="name: t\n", spec_hash="h" * 64,
                         snapshot={"path": "/data/x.parquet", "rows": 2000, "content_hash": "c" * 64},
                         windows={"train_start": "2025-01-01"}, metrics={"auc": 0.91},
                         verdict={"passed": passed, "clauses": []},
                         verdict_renderings={"verdict.md": f"## verdict\n{reason}", "verdict.html": "<p>ok</p>"},
                         passed=passed, reason=reason, code_revision="abc123", seed=7, params={"eta": 0.1},
                         threshold=0.5, example_rows=stack.rows)


def test_the_harness_runs_mlflow_on_postgresql(stack):
    assert stack.mlflow.url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{stack.mlflow.url}/health", timeout=10).text.strip() == "OK"
    (version,) = stack.sql("SHOW server_version")[0]
    assert int(version.split(".")[0]) >= 12
    # MLflow's schema is in this database (its migrations ran here, not in some SQLite file)
    tables = {t for (t,) in stack.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"registered_models", "model_versions", "registered_model_aliases", "model_version_tags"} <= tables
    assert not list(stack.tmp.rglob("*.db"))


def test_registration_aliases_and_history_through_the_server(stack):
    from ratchet.registry import Registry

    reg = Registry(stack.mlflow.url, "fraud-registry")
    v1 = reg.register(release(stack))
    reg.set_stage(v1, "production", actor="bootstrap", reason="first release")
    v2 = reg.register(release(stack, passed=False, reason="gate failed: recall[FR] -4.1%"))
    v3 = reg.register(release(stack))
    reg.set_stage(v3, "staging", actor="release pipeline", reason="gate passed")
    assert (v1, v2, v3) == (1, 2, 3)

    # read back by a fresh client (another process would see the same)
    fresh = Registry(stack.mlflow.url, "fraud-registry")
    assert fresh.aliases() == {"production": 1, "staging": 3}
    assert fresh.alias_version("canary") is None
    assert fresh.tags(2)["state"] == "rejected" and fresh.tags(2)["reason"] == "gate failed: recall[FR] -4.1%"
    assert [(e["from"], e["to"], e["actor"]) for e in fresh.history(3)] == [
        (None, "candidate", "release pipeline"), ("candidate", "staging", "release pipeline")]
    assert [e["to"] for e in fresh.history(1)] == ["candidate", "production"]
    assert fresh.versions_in_state("production") == [1] and fresh.baseline_version() == 1
    assert fresh.release_artifact(1, "release/spec.yaml", str(stack.tmp / "dl")).endswith("spec.yaml")
    assert fresh.load_booster(3).feature_names == FEATURES

    # what the server stored, read from PostgreSQL itself
    assert sorted(stack.sql("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                            "fraud-registry")) == [("production", 1), ("staging", 3)]
    states = dict(stack.sql("SELECT version, value FROM model_version_tags WHERE name = %s AND key = 'state'",
                            "fraud-registry"))
    assert states == {1: "production", 2: "rejected", 3: "staging"}
    ((event,),) = stack.sql("SELECT value FROM model_version_tags WHERE name = %s AND version = 3 AND key = "
                            "'history.0002'", "fraud-registry")
    assert json.loads(event)["reason"] == "gate passed"

    # moving production retires the version it replaces, as on SQLite
    reg.set_stage(v3, "production", actor="person", reason="ramp done")
    assert fresh.alias_version("production") == 3 and fresh.tags(1)["state"] == "retired"
    assert fresh.history(1)[-1]["reason"] == "replaced by version 3"


def test_the_ui_reads_each_versions_signature_and_input_example(stack):
    """The model-version page renders "Inputs (4)" from the MLmodel it fetches through
    GET /model-versions/get-artifact; the same file names the input example."""
    import mlflow
    import yaml

    from ratchet.registry import Registry

    reg = Registry(stack.mlflow.url, "fraud-ui")
    v = reg.register(release(stack))
    r = httpx.get(f"{stack.mlflow.url}/model-versions/get-artifact",
                  params={"path": "MLmodel", "name": "fraud-ui", "version": str(v)}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    mlmodel = yaml.safe_load(r.text)
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [(f, "float") for f in FEATURES]
    assert json.loads(mlmodel["signature"]["outputs"]) == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1]}, "name": "score"}]
    assert mlmodel["saved_input_example_info"]["artifact_path"] == "input_example.json"
    example = mlflow.pyfunc.load_model(f"models:/fraud-ui/{v}").input_example
    expected = pd.read_parquet(stack.rows).loc[:4, FEATURES].astype(np.float32).reset_index(drop=True)
    pd.testing.assert_frame_equal(example.astype(np.float32), expected)
    # the version page's own call: tags and description as the UI shows them
    mv = httpx.get(f"{stack.mlflow.url}/ajax-api/2.0/mlflow/model-versions/get",
                   params={"name": "fraud-ui", "version": str(v)}, timeout=30).json()["model_version"]
    assert {t["key"]: t["value"] for t in mv["tags"]}["verdict"] == "passed"
    assert mv["description"].startswith("## verdict")


# ---- the controller follows alias edits made where the UI makes them ---------------------------
def set_alias_as_the_ui_does(url: str, model: str, alias: str, version: int | None) -> None:
    """The MLflow UI's alias editor: POST (or DELETE) ajax-api/2.0/mlflow/registered-models/alias."""
    endpoint = f"{url}/ajax-api/2.0/mlflow/registered-models/alias"
    if version is None:
        r = httpx.request("DELETE", endpoint, json={"name": model, "alias": alias}, timeout=30)
    else:
        r = httpx.post(endpoint, json={"name": model, "alias": alias, "version": str(version)}, timeout=30)
    assert r.status_code == 200, r.text


def controller_once(stack: Stack, model: str, service_url: str) -> str:
    """`ratchet controller --once` in its own process, as cron or a person would run it; its output."""
    cmd = [sys.executable, "-m", "ratchet.app.cli", "controller", "--once", "--tracking-uri", stack.mlflow.url,
           "--model-name", model, "--backend", "local", "--service-url", service_url,
           "--state-dir", str(stack.tmp / "controller-state"), "--plan", str(REPO / "contracts" / "rollout.yaml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RATCHET_"))}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=stack.tmp, env=env)
    assert r.returncode == 0, f"controller failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.fixture()
def service(stack):
    """`ratchet serve` on the server's @production (a real decision service, loading from MLflow)."""
    from ratchet.registry import Registry

    reg = Registry(stack.mlflow.url, "fraud-rollout")
    v1 = reg.register(release(stack))
    reg.set_stage(v1, "production", actor="bootstrap", reason="first release")
    v2 = reg.register(release(stack))
    reg.set_stage(v2, "staging", actor="release pipeline", reason="gate passed")
    port = free_port()
    log = open(stack.tmp / "serve.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RATCHET_"))}
    proc = subprocess.Popen([sys.executable, "-m", "ratchet.app.cli", "serve", "--tracking-uri", stack.mlflow.url,
                             "--model-name", "fraud-rollout", "--port", str(port),
                             "--decision-log", str(stack.tmp / "decisions")],
                            stdout=log, stderr=subprocess.STDOUT, cwd=stack.tmp, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (stack.tmp / "serve.log").read_text()[-4000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (stack.tmp / "serve.log").read_text()[-4000:]
            time.sleep(0.5)
        yield reg, url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def running(url: str) -> dict:
    cfg = httpx.get(f"{url}/admin/config", timeout=10).json()
    return {"production": cfg.get("production"), "shadow": cfg.get("shadow"), "canary": cfg.get("canary")}


def events(out: str) -> list[str]:
    """The controller's logbook lines without their timestamp."""
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.strip()]


def test_the_controller_follows_aliases_set_through_the_uis_rest_call(stack, service):
    reg, url = service
    model = "fraud-rollout"
    assert running(url) == {"production": 1, "shadow": None, "canary": None}
    # mode: suggest (contracts/rollout.yaml): v2 at @staging waits for a person
    assert events(controller_once(stack, model, url)) == [
        "v2 at @staging ready for shadow: waiting for `ratchet approve 2` (or `ratchet promote 2 --to shadow`)"]
    assert running(url)["shadow"] is None and reg.tags(2)["state"] == "staging"

    # a person puts v2 in shadow in the MLflow UI: the alias only, no tag, no history
    set_alias_as_the_ui_does(stack.mlflow.url, model, "shadow", 2)
    assert reg.tags(2)["state"] == "staging" and len(reg.history(2)) == 2
    assert events(controller_once(stack, model, url)) == ["start shadow v2: @shadow set to v2"]
    assert running(url) == {"production": 1, "shadow": 2, "canary": None}
    assert reg.tags(2)["state"] == "shadow"
    last = reg.history(2)[-1]
    assert (last["from"], last["to"], last["reason"]) == ("staging", "shadow", "@shadow set to v2")
    assert last["actor"].startswith("ratchet controller") and last["evidence"]["action"] == "StartShadow"
    # at rest the registered model carries no tags at all: the controller's journal (the one
    # registered-model tag ratchet writes) lives only while an action executes (PostgreSQL's rows)
    assert stack.sql("SELECT key FROM registered_model_tags WHERE name = %s", model) == []
    # the next pass only waits: the deployment already follows the aliases
    (said,) = events(controller_once(stack, model, url))
    assert said.startswith("v2 shadow: ") and "of 50,000 decisions" in said
    assert running(url) == {"production": 1, "shadow": 2, "canary": None} and len(reg.history(2)) == 3

    # the person removes @shadow in the UI: the service stops scoring v2, which is rolled back
    set_alias_as_the_ui_does(stack.mlflow.url, model, "shadow", None)
    assert events(controller_once(stack, model, url)) == ["withdraw shadow v2: @shadow no longer names v2"]
    assert running(url) == {"production": 1, "shadow": None, "canary": None}
    assert reg.tags(2)["state"] == "rolled_back" and reg.aliases() == {"production": 1, "staging": 2}
    last = reg.history(2)[-1]
    assert (last["from"], last["to"], last["reason"]) == ("shadow", "rolled_back", "@shadow no longer names v2")
    assert [e["to"] for e in reg.history(1)] == ["candidate", "production"]  # production was never touched
