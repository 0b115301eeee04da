"""Exploration in the decision service (issue 17 item 2), against real `ratchet serve` processes.

One MLflow SQLite store: version 1 @production (threshold 0.5; merchant m-low at 0.003, so
all its payments would be blocked) and version 2, canary at 30% and shadow. Two processes serve it with the same stages: `explore`
with an exploration policy (share 0.5, opt-outs; given by env RATCHET_EXPLORATION) and `plain`
without. The same requests go to both, with the same request ids, so every answer and every
log row of one can be set against the other's: only production's would-be blocks may differ,
exactly those the policy's draw lets through, and each row's propensity says how likely its
decision was.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import jsonschema
import pandas as pd
import pytest

from ratchet.exploration import Explorer, load_exploration_policy
from tests.test_serving import REPO, ServiceProcess, _train

POLICY = """\
version: 1
exploration:
  share: 0.5
  opt_out:
    merchant_id: [m-out]
    merchant_category: [gambling]
  seed: 3
"""
STAGES = ["--production", "1", "--canary", "2", "--canary-weight", "30", "--shadow", "2",
          "--shadow-timeout-ms", "5000"]   # a slow shadow scoring on a busy machine is not a difference
N = 700
ANSWER_KEYS = {"decision", "score", "threshold", "model_version", "role", "request_id"}


def _requests(n: int, seed: int = 5) -> list[tuple[str, dict]]:
    """(request id, body): varied scores, merchants (m-low: threshold 0.003; m-out and gambling opted out);
    every 10th without a transaction_id (the draw then keys on the request id)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = {"card_id": f"card-{i}", "amount": round(rng.uniform(1, 1000), 2), "hour_of_day": 13.0,
                "card_count_1h": float(rng.randint(0, 10)), "merchant_count_24h": 40.0,
                "is_online": float(rng.random() < 0.7), "country": "FR", "channel": "web",
                "merchant_id": rng.choice(["m-1", "m-2", "m-low", "m-out"]),
                "merchant_category": rng.choice(["grocery", "travel", "gambling"])}
        if i % 10:
            body["transaction_id"] = f"tx-{i}"
        out.append((f"req-{i}", body))
    return out


def _send(s: ServiceProcess, requests: list[tuple[str, dict]]) -> dict[str, dict]:
    """request id -> the 200 answer, sent from two client threads."""
    answers: dict[str, dict] = {}

    def work(part: list[tuple[str, dict]]) -> None:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            for rid, body in part:
                r = c.post("/v1/decide", json=body, headers={"x-request-id": rid})
                assert r.status_code == 200, r.text
                answers[rid] = r.json()

    threads = [threading.Thread(target=work, args=(requests[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == len(requests)
    return answers


def _metrics(s: ServiceProcess) -> dict[tuple[str, str], float]:
    """(name, its version or against label) -> value, of the exploration and shadow-disagreement samples."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(s.client.get("/metrics").text):
        for sample in family.samples:
            if "explor" in sample.name or sample.name == "ratchet_shadow_disagreements_total":
                out[(sample.name, sample.labels.get("version") or sample.labels.get("against", ""))] = sample.value
    return out


def _exploration(m: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {k: v for k, v in m.items() if "explor" in k[0]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from ratchet.registry import Registry, ReleaseRecord
    from ratchet.train.trainer import save_model

    tmp = tmp_path_factory.mktemp("exploration")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    reg = Registry(uri, "fraud")
    for i in range(2):
        path = save_model(_train(i, 15 + 5 * i), tmp / f"m{i}")
        reg.register(ReleaseRecord(model_path=str(path), spec_yaml="name: t\n", spec_hash="h" * 64,
                                   snapshot={"rows": 3000}, windows={}, metrics={}, verdict={"passed": True},
                                   passed=True, reason="test"))
    reg.set_stage(1, "production", actor="test", reason="bootstrap")
    reg.set_tags(1, {"threshold": "0.5", "merchant_thresholds": json.dumps({"m-low": 0.003})})
    policy_file = tmp / "exploration.yaml"
    policy_file.write_text(POLICY)
    env = {"MLFLOW_TRACKING_URI": uri}
    explore = ServiceProcess(tmp, "explore", STAGES, {**env, "RATCHET_EXPLORATION": str(policy_file)})
    plain = ServiceProcess(tmp, "plain", STAGES, env)
    try:
        explore.wait_ready()
        plain.wait_ready()
        requests = _requests(N)
        w = {"explore": explore, "plain": plain, "policy": load_exploration_policy(policy_file),
             "policy_file": str(policy_file), "requests": dict(requests),
             "answers": {"explore": _send(explore, requests), "plain": _send(plain, requests)},
             "metrics": {"explore": _metrics(explore), "plain": _metrics(plain)},
             "config": {"explore": explore.client.get("/admin/config").json(),
                        "plain": plain.client.get("/admin/config").json()},
             "openapi": explore.client.get("/openapi.json").json()}
    finally:
        codes = [explore.stop(), plain.stop()]
    assert set(codes) <= {0, -signal.SIGTERM}, codes   # stopped by SIGTERM, the log flushed
    w["log"] = {name: pd.read_parquet(s.log_dir) for name, s in (("explore", explore), ("plain", plain))}
    return w


def _production_blocks(w: dict) -> dict[str, dict]:
    """The plain service's production answers that blocked: what exploration may let through."""
    return {rid: a for rid, a in w["answers"]["plain"].items() if a["role"] == "production" and a["decision"] == "block"}


def test_some_would_be_blocks_are_allowed_exactly_as_the_policy_draws(world):
    w, explorer = world, Explorer(world["policy"])
    explore, plain = w["answers"]["explore"], w["answers"]["plain"]
    blocks = _production_blocks(w)
    explored = {rid for rid, a in explore.items() if a.get("explored")}
    eligible = {rid for rid in blocks if not w["policy"].opted_out(w["requests"][rid]["merchant_id"],
                                                                   w["requests"][rid]["merchant_category"])}
    assert len(eligible) >= 60, len(eligible)
    assert explored <= eligible
    assert 0.3 < len(explored) / len(eligible) < 0.7, (len(explored), len(eligible))
    for rid, a in blocks.items():
        body = w["requests"][rid]
        d = explorer.decide(a["score"], a["threshold"], body["amount"], body.get("transaction_id") or rid, 0.0,
                            body["merchant_id"], body["merchant_category"])
        assert d.explored == (rid in explored), (rid, d)
        assert explore[rid]["decision"] == ("allow" if d.explored else "block")
    # the per-merchant threshold decides what is a would-be block: m-low's scores under 0.5 are explored too
    assert any(explore[rid]["threshold"] == 0.003 and explore[rid]["score"] < 0.5 for rid in explored)
    # an explored answer is valid against the OpenAPI document's Decision schema
    schema = {**w["openapi"]["components"]["schemas"]["Decision"], "components": w["openapi"]["components"]}
    for rid in explored:
        a = explore[rid]
        assert a["explored"] is True and a["score"] >= a["threshold"] and a["decision"] == "allow"
        jsonschema.validate(a, schema)


def test_everything_but_explored_blocks_answers_as_without_exploration(world):
    explore, plain = world["answers"]["explore"], world["answers"]["plain"]
    for rid, p in plain.items():
        assert set(p) == ANSWER_KEYS   # exploration off: the answers of before, no new key
        assert p["decision"] == ("block" if p["score"] >= p["threshold"] else "allow")
        e = explore[rid]
        if e.get("explored"):
            assert p["role"] == "production" and p["decision"] == "block"
            e = {**e, "decision": "block"}
            del e["explored"]
        assert e == p, rid
    roles = {a["role"] for a in explore.values()}
    assert roles == {"production", "canary"}
    assert any(a["role"] == "canary" and a["decision"] == "block" for a in explore.values())


def test_opted_out_merchants_are_never_explored(world):
    explore, opted = world["answers"]["explore"], 0
    for rid, body in world["requests"].items():
        if body["merchant_id"] == "m-out" or body["merchant_category"] == "gambling":
            assert not explore[rid].get("explored"), (rid, body)
            opted += explore[rid]["role"] == "production" and explore[rid]["decision"] == "block"
    assert opted >= 30, opted   # enough opted-out would-be blocks for that to mean something


def test_every_log_row_has_its_propensity(world):
    log, policy = world["log"]["explore"], world["policy"]
    assert len(log) == 2 * N   # every served decision and its shadow row, once
    assert log["propensity"].notna().all() and log["explored"].notna().all()
    prod = log[log["role"] == "production"]
    blocked_by_model = prod["score"] >= prod["threshold"]
    explored = prod["explored"].astype(bool)
    assert explored.sum() == sum(bool(a.get("explored")) for a in world["answers"]["explore"].values())
    assert (prod.loc[explored, "decision"] == "allow").all()
    assert (prod.loc[explored, "propensity"] == policy.share).all()
    kept = blocked_by_model & ~explored
    out = kept & (prod["merchant_id"].isin(policy.opt_out_merchants)
                  | prod["merchant_category"].isin(policy.opt_out_categories))
    assert out.sum() > 0 and (prod.loc[out, "propensity"] == 1.0).all()
    assert (kept & ~out).sum() > 0 and (prod.loc[kept & ~out, "propensity"] == 1.0 - policy.share).all()
    assert (prod.loc[~blocked_by_model, "propensity"] == 1.0).all()
    others = log[log["role"] != "production"]
    assert set(others["role"]) == {"canary", "shadow"}
    assert (others["propensity"] == 1.0).all() and not others["explored"].any()
    plain = world["log"]["plain"]
    assert (plain["propensity"] == 1.0).all() and not plain["explored"].any()


def test_canary_and_shadow_rows_are_exactly_those_without_exploration(world):
    cols = ["request_id", "role", "version", "score", "threshold", "decision", "status", "propensity", "explored",
            "card_id", "merchant_id"]

    def rows(name: str, role: str) -> pd.DataFrame:
        log = world["log"][name]
        return log.loc[log["role"] == role, cols].sort_values("request_id").reset_index(drop=True)

    for role in ("canary", "shadow"):
        a, b = rows("explore", role), rows("plain", role)
        assert len(a) > 100 if role == "canary" else len(a) == N
        pd.testing.assert_frame_equal(a, b)
    assert (rows("explore", "shadow")["status"] == "ok").all()
    # the shadow compares itself with production's model, not with exploration's allows
    key = ("ratchet_shadow_disagreements_total", "production")
    assert world["metrics"]["explore"][key] == world["metrics"]["plain"][key] > 0


def test_metrics_count_what_the_log_holds(world):
    m, log, policy = _exploration(world["metrics"]["explore"]), world["log"]["explore"], world["policy"]
    prod = log[log["role"] == "production"]
    eligible = prod[(prod["propensity"] < 1.0)]
    explored = prod[prod["explored"].astype(bool)]
    amount = explored["features"].map(lambda f: dict(f)["amount"])
    assert m[("ratchet_exploration_eligible_total", "1")] == len(eligible)
    assert m[("ratchet_explored_total", "1")] == len(explored) > 0
    assert m[("ratchet_exploration_amount_total", "1")] == pytest.approx(amount.sum())
    assert m[("ratchet_exploration_expected_loss_total", "1")] == pytest.approx((explored["score"] * amount).sum())
    assert not any(v for (_name, version), v in m.items() if version == "2")   # the canary is never explored
    assert _exploration(world["metrics"]["plain"]) == {}   # exploration off: the families, no samples
    assert len(explored) / len(eligible) == pytest.approx(policy.share, abs=0.2)


def test_the_policy_is_shown_in_admin_config(world):
    e, p = world["config"]["explore"]["exploration"], world["config"]["plain"]["exploration"]
    assert p is None
    assert e["file"] == world["policy_file"] and e["share"] == 0.5 and e["seed"] == 3
    assert e["opt_out_merchants"] == ["m-out"] and e["opt_out_categories"] == ["gambling"]


@pytest.mark.parametrize("command", [["-m", "ratchet.app.cli", "serve"], ["-m", "ratchet.serving"]])
def test_a_bad_policy_file_stops_serve_naming_file_and_line(tmp_path: Path, command: list[str]) -> None:
    bad = tmp_path / "exploration.yaml"
    bad.write_text("version: 1\nexploration:\n  share: 0.05\n  min_share: 0.2\n")
    r = subprocess.run([sys.executable, *command, "--exploration", str(bad), "--port", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"{bad}:4: exploration.min_share" in r.stderr and "may not exceed" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, *command, "--port", "1"], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "RATCHET_EXPLORATION": str(tmp_path / "no.yaml")})
    assert r.returncode == 2 and "no.yaml: file not found" in r.stderr, r.stderr


# ---- logs written before the columns, and the guards' reading ---------------------------------
def _old_rows(n: int):  # noqa: ANN202 - (rows, Arrow table without propensity / explored)
    import time
    from types import SimpleNamespace

    import pyarrow as pa

    from ratchet.serving.decision_log import _batch
    from ratchet.serving.log_schema import DecisionRow
    from ratchet.serving.schema import SLICE_KEYS

    rows = [DecisionRow(f"r{i}", time.time(), "production", 1, 0.9, 0.5, "block", "ok", None, 0.2, 1, 0.5, i % 2 == 0,
                        SimpleNamespace(**{**dict.fromkeys(SLICE_KEYS), "card_id": f"c{i}", "country": "FR",
                                           "amount": 10.0}), ("amount",)) for i in range(n)]
    table = pa.Table.from_batches([_batch(rows)]).drop_columns(["propensity", "explored"])
    return rows, table


def test_a_journal_record_from_before_the_columns_is_recovered_deterministic():
    from ratchet.serving.decision_log import _NSCALAR, _row

    rows, _ = _old_rows(1)
    old_scalars = tuple(rows[0][:_NSCALAR - 2])   # what a ratchet before exploration journaled
    row = _row([0, old_scalars, ("t", "c0", None, None, "FR", None, None), -1, None], {})
    assert (row.propensity, row.explored, row.decision, row.config_generation) == (1.0, False, "block", 1)


def test_the_guards_read_old_files_with_defaults_and_explored_allows_as_blocks(tmp_path: Path):
    import pyarrow.parquet as pq

    from ratchet.rollout.observe import DecisionLogTail, model_decisions

    _, old = _old_rows(4)
    folder = tmp_path / "decisions"
    folder.mkdir()
    pq.write_table(old, folder / "decisions-0001.parquet")
    frame = DecisionLogTail(folder).frame()
    assert len(frame) == 4 and (frame["propensity"] == 1.0).all() and not frame["explored"].any()
    assert frame["amount"].tolist() == [10.0] * 4
    served = frame.assign(decision=["allow", "allow", "block", "allow"], explored=[True, False, False, True])
    assert model_decisions(served)["decision"].tolist() == ["block", "allow", "block", "block"]
    assert model_decisions(frame) is frame   # nothing explored: the log as it is
