"""LocalProcessBackend on a real decision service process (started by the backend itself),
driven over HTTP: read/apply and the state file, outside changes, interrupted applies,
refused reloads; then the controller walks a version shadow -> canary -> production and
rolls a bad one back while traffic is replayed, and the decision log is checked after the
service stopped (every answered request logged exactly once per role)."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from ratchet.errors import RatchetError
from ratchet.rollout.backends import Backend
from ratchet.rollout.backends.local import (
    BackendUnavailable, LocalProcessBackend, ReloadFailed, ServeCommand, default_state_dir, restored_revision,
)
from ratchet.rollout.state import DeploymentState

FEATURES = ["amount", "hour_of_day", "card_count_1h", "is_online"]
COUNTRIES = ("FR", "DE", "GB")


def _model(tmp: Path) -> Path:
    from ratchet.train.trainer import save_model

    rng = np.random.default_rng(0)
    x = rng.random((2000, len(FEATURES))).astype(np.float32)
    x[:, 0] *= 1000
    x[:, 1] *= 23
    x[:, 2] *= 10
    x[:, 3] = (x[:, 3] > 0.5).astype(np.float32)
    y = ((x[:, 0] > 800) & (x[:, 3] > 0.5) | (x[:, 2] > 9.5)).astype(int)
    booster = xgb.train({"tree_method": "hist", "objective": "binary:logistic", "max_depth": 3, "seed": 0},
                        xgb.DMatrix(x, label=y, feature_names=FEATURES), 10)
    return save_model(booster, tmp / "model")


def transactions(n: int = 8000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    country = rng.choice(COUNTRIES, n)
    df = pd.DataFrame({
        "transaction_id": [f"t{i:05d}" for i in range(n)],
        "card_id": [f"c{k}" for k in rng.integers(0, 4000, n)],
        "merchant_id": [f"{c}-m{k}" for c, k in zip(country, rng.integers(0, 5, n))],
        "country": country, "channel": rng.choice(["web", "pos"], n), "merchant_category": "shop",
        "amount": rng.random(n) * 1000, "hour_of_day": rng.integers(0, 24, n).astype(float),
        "card_count_1h": rng.random(n) * 10, "is_online": rng.integers(0, 2, n).astype(float),
        "not_a_feature": 1.0,
    })
    df["label"] = ((df["amount"] > 800) & (df["is_online"] > 0.5)).astype(int)
    return df


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Store: v1 @production, v2 (same model, honest re-release) @staging, v3 (same model, a
    mis-set threshold: blocks far more). The backend starts the service itself."""
    from ratchet.registry import Registry, ReleaseRecord

    tmp = tmp_path_factory.mktemp("local")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    reg = Registry(uri, "fraud")
    path = _model(tmp)
    from rollout_helpers import free_port

    backend = LocalProcessBackend(
        f"http://127.0.0.1:{free_port()}", tmp,
        serve=ServeCommand(uri, "fraud", decision_log=str(tmp / "decisions"),
                           extra_args=("--log-rotate-seconds", "0.5")))
    started: list[bool] = []
    starter = None
    for i, reason in enumerate(("bootstrap", "re-release of the same model", "same model, threshold mis-set to 0.005")):
        reg.register(ReleaseRecord(model_path=str(path), spec_yaml="name: t\n", spec_hash="h" * 64,
                                   snapshot={"rows": 2000}, windows={}, metrics={}, verdict={"passed": True},
                                   passed=True, reason=reason, threshold=0.5))
        if i == 0:
            reg.set_stage(1, "production", actor="test", reason="bootstrap")
            # the service's start-up (mostly importing mlflow) overlaps with registering the others
            starter = threading.Thread(target=lambda: started.append(backend.start()))
            starter.start()
    reg.set_tags(3, {"threshold": "0.005"})  # below every score: blocks every payment
    starter.join()
    assert started == [True]
    data = tmp / "tx.parquet"
    transactions().to_parquet(data)
    yield {"backend": backend, "reg": reg, "tmp": tmp, "uri": uri, "data": data}
    backend.stop()


def _hand_reload(backend: LocalProcessBackend, **body) -> dict:  # noqa: ANN003
    r = httpx.post(f"{backend.url}/admin/reload", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_default_state_dir_is_next_to_the_store(tmp_path):
    assert default_state_dir(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path.resolve()
    assert default_state_dir(None).name == ".ratchet"


def test_read_apply_and_state_file(env):
    b = env["backend"]
    assert isinstance(b, Backend)
    first = b.read()
    assert first.fingerprint() == "production=v1 canary=none shadow=none"
    assert first.applied is None and not first.changed_outside() and "+" in first.revision
    after = b.apply(DeploymentState(production=1, canary=2, canary_weight=5.0), "ratchet: v2 canary 5%")
    assert after.fingerprint() == "production=v1 canary=v2@5% shadow=none" == after.applied
    assert after.revision == "1" and not after.changed_outside()
    st = json.loads(b.state_path.read_text())
    assert st["revision"] == 1 and st["pending"] is None and st["history"][-1]["cause"] == "ratchet: v2 canary 5%"
    assert not list(b.state_dir.glob(".ratchet-local-*.tmp"))  # written by rename, no leftovers
    gen = httpx.get(f"{b.url}/admin/config").json()["generation"]
    again = b.apply(DeploymentState(production=1, canary=2, canary_weight=5.0), "same again")
    assert again.revision == "1" and httpx.get(f"{b.url}/admin/config").json()["generation"] == gen  # no reload
    back = b.apply(DeploymentState(production=1), "ratchet: withdraw canary")
    assert back.revision == "2" and back.fingerprint() == back.applied == "production=v1 canary=none shadow=none"
    assert [h.split("\t")[0] for h in b.history()] == ["1", "2"]


def test_a_hand_reload_is_an_outside_change(env):
    b = env["backend"]
    b.apply(DeploymentState(production=1), "baseline")
    _hand_reload(b, canary=2, canary_weight=50, reason="someone with curl")
    fact = b.read()
    assert fact.changed_outside() and fact.fingerprint() == "production=v1 canary=v2@50% shadow=none"
    assert "+g" in fact.revision  # not a revision ratchet recorded
    # ratchet agreeing with it (the controller adopting it) records it without reloading
    adopted = b.apply(fact, "ratchet: adopt deployment changed outside ratchet")
    assert not adopted.changed_outside() and "+" not in adopted.revision
    assert "outside change, adopted" in b.history()[-1]
    b.apply(DeploymentState(production=1), "clean up")


def test_a_service_restarted_on_other_flags_is_restored_not_adopted(env):
    b = env["backend"]
    applied = b.apply(DeploymentState(production=1, canary=2, canary_weight=25.0), "ratchet: v2 canary 25%")
    # what a crashed service restarted with its original command reports: @production only, "start-up"
    _hand_reload(b, canary=None, reason="start-up")
    fact = b.read()
    assert not fact.changed_outside() and fact.restored_revision is None
    assert fact.fingerprint() == applied.fingerprint() == "production=v1 canary=v2@25% shadow=none"
    assert fact.revision == applied.revision  # no new revision: the same step goes on
    cfg = httpx.get(f"{b.url}/admin/config").json()
    assert cfg["reason"].startswith("ratchet: restored after a restart to revision")
    # a person's reload with a reason of their own is still theirs
    _hand_reload(b, canary=None, reason="withdrawn by hand")
    assert b.read().changed_outside()
    b.apply(DeploymentState(production=1), "clean up")


def test_a_hand_reload_back_to_an_older_revision_is_an_undo(env):
    b = env["backend"]
    b.apply(DeploymentState(production=1), "baseline")
    older = b.history()[-1].split("\t")[0]
    b.apply(DeploymentState(production=1, canary=2, canary_weight=25.0), "ratchet: v2 canary 25%")
    assert b.read().restored_revision is None
    _hand_reload(b, canary=None, reason="undo by hand")       # back to what `older` ran
    fact = b.read()
    assert fact.changed_outside() and fact.restored_revision == older
    _hand_reload(b, canary=2, canary_weight=10, reason="something new by hand")
    assert b.read().changed_outside() and b.read().restored_revision is None   # new, not an undo
    b.apply(DeploymentState(production=1), "clean up")


def test_restored_revision_picks_the_newest_older_match():
    hist = [{"revision": 1, "fingerprint": "a"}, {"revision": 2, "fingerprint": "b"},
            {"revision": 3, "fingerprint": "a"}, {"revision": 4, "fingerprint": "c"}]
    assert restored_revision(hist, "a") == "3"
    assert restored_revision(hist, "c") is None      # the latest is not a restore
    assert restored_revision(hist, "z") is None
    assert restored_revision([], "a") is None


def test_an_interrupted_apply_is_settled_by_the_next_read(env):
    b = env["backend"]
    b.apply(DeploymentState(production=1), "baseline")
    st = json.loads(b.state_path.read_text())
    rev = st["revision"]
    # killed after writing its intent and reloading, before committing: the reload stands as ratchet's
    st["pending"] = {"revision": rev + 1, "fingerprint": "production=v1 canary=none shadow=v2", "cause": "x"}
    b.state_path.write_text(json.dumps(st))
    _hand_reload(b, shadow=2)
    fact = b.read()
    assert not fact.changed_outside() and fact.revision == str(rev + 1) and fact.applied == fact.fingerprint()
    # killed before the reload: the intent is dropped, nothing changed
    st = json.loads(b.state_path.read_text())
    st["pending"] = {"revision": rev + 2, "fingerprint": "production=v2 canary=none shadow=none", "cause": "y"}
    b.state_path.write_text(json.dumps(st))
    fact = b.read()
    assert fact.revision == str(rev + 1) and json.loads(b.state_path.read_text())["pending"] is None
    b.apply(DeploymentState(production=1), "clean up")


def test_a_refused_reload_changes_nothing(env):
    b = env["backend"]
    before = b.apply(DeploymentState(production=1), "baseline")
    with pytest.raises(ReloadFailed, match="no version 99"):
        b.apply(DeploymentState(production=1, canary=99, canary_weight=5), "bad version")
    after = b.read()
    assert after.fingerprint() == before.fingerprint() == after.applied and after.revision == before.revision
    with pytest.raises(RatchetError, match="needs a production version"):
        b.apply(DeploymentState(production=None), "no production")


def test_without_serve_a_missing_service_is_unavailable(tmp_path):
    from rollout_helpers import free_port

    b = LocalProcessBackend(f"http://127.0.0.1:{free_port()}", tmp_path)
    with pytest.raises(BackendUnavailable, match="no decision service answers"):
        b.read()


PLAN = """
mode: auto
interval: 1s
shadow: {min_duration: 1s, min_decisions: 200, guards: [block_rate, error_rate]}
canary:
  steps:
    - {weight: 10, hold: 1s, min_decisions: 200}
    - {weight: 50, hold: 1s, min_decisions: 300}
    - {weight: 100, hold: 1s, min_decisions: 300}
guards:
  # loose: the canary's cards are a fixed sample of few distinct rows replayed in a loop, so
  # small real differences are expected; the mis-set threshold blocks several times more
  block_rate: {per: country, tolerance: {relative: 0.5, absolute: 0.02}, min_support: 40}
  error_rate: {max: 0.01}
"""


@pytest.mark.slow
def test_controller_rolls_out_and_back_under_replayed_load_losing_nothing(env):
    from ratchet.rollout import Controller, plan_from_text
    from rollout_helpers import drive_live as drive

    from ratchet.app.demo.rollout import check_decision_log
    from ratchet.rollout.observe import DecisionLogTail, live_observer
    from ratchet.serving.replay import load_transactions, replay, service_fields

    b, reg, tmp = env["backend"], env["reg"], env["tmp"]
    b.apply(DeploymentState(production=1), "baseline")
    reg.set_stage(2, "staging", actor="test", reason="candidate")
    plan = plan_from_text(PLAN)
    data = load_transactions(env["data"], service_fields(b.url), shuffle_seed=3)
    assert "not_a_feature" not in data.fields and "country" in data.fields
    stop = threading.Event()
    reports = []
    load = threading.Thread(target=lambda: reports.append(
        replay(b.url, data, rate=300, loop=True, concurrency=3, stop=stop, keep_ids=True)))
    load.start()
    events: list[str] = []

    def say(line: str) -> None:
        events.append(line)
        print(line)

    try:
        ctrl = Controller(reg, b, plan, live_observer(DecisionLogTail(tmp / "decisions"), plan), out=io.StringIO())
        assert drive(ctrl, lambda: reg.alias_version("production") == 2 and reg.alias_version("canary") is None,
                     timeout=60, every=0.5, say=say), events
        reg.set_stage(3, "canary", actor="test", reason="bad threshold")
        assert drive(ctrl, lambda: reg.tags(3).get("state") == "rolled_back", timeout=40, every=0.5, say=say), events
        time.sleep(0.5)
    finally:
        stop.set()
        load.join(30)
    text = "\n".join(events)
    for kind in ("start shadow v2", "start canary v2 at 10%", "advance v2 canary to 50%", "promote v2 to production",
                 "start canary v3 at 10%", "rollback v3: block rate"):
        assert kind in text, kind
    fact = b.read()
    assert fact.fingerprint() == "production=v2 canary=none shadow=none" == fact.applied
    assert reg.alias_version("canary") is None and "block rate" in reg.tags(3)["rollback.reason"]
    history = [e for e in reg.history(3) if e.get("to") == "rolled_back"]
    checks = history[-1]["evidence"]["checks"]  # the numbers that decided it
    assert any(c["status"] == "fail" and c["name"].startswith("block_rate[") for c in checks), checks
    rep = reports[0]
    print(rep.summary())
    assert rep.failed == 0 and rep.ok == rep.sent > 500, rep.summary()
    assert {"production", "canary"} <= set(rep.roles)

    assert b.stop() is not None  # SIGTERM: in-flight requests finish, the log is flushed
    check = check_decision_log(tmp / "decisions", rep.ok_ids)
    print(check.text())
    assert check.exactly_once, check
    assert check.rows["shadow"] > 0 and check.duplicated["shadow"] == 0
    log = pd.read_parquet(tmp / "decisions", columns=["request_id", "role", "version"])
    assert {(r, v) for r, v in log[["role", "version"]].drop_duplicates().itertuples(index=False)} >= {
        ("production", 1), ("shadow", 2), ("canary", 2), ("production", 2), ("canary", 3)}

    # what a restart would run: the last recorded revision, not @production
    argv = b.serve_argv()
    assert argv[argv.index("--production") + 1] == "2" and "--canary" not in argv and "--shadow" not in argv
    assert argv[argv.index("--decision-log") + 1] == str(tmp / "decisions")


def test_controller_flags_build_the_local_backend(tmp_path):
    import argparse

    from ratchet.app.commands.rollout import _backend

    ns = argparse.Namespace(backend="local", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", model_name="fraud",
                            service_url="http://127.0.0.1:9999", state_dir=None, serve=True,
                            decision_log=str(tmp_path / "d"), admin_token=None)
    b = _backend(ns)
    assert isinstance(b, LocalProcessBackend) and b.url == "http://127.0.0.1:9999"
    assert b.state_dir == tmp_path.resolve() and b.serve.decision_log == str(tmp_path / "d")
    argv = b.serve_argv()
    assert argv[argv.index("--port") + 1] == "9999" and "--production" not in argv  # no history: @production


def test_read_waits_for_a_service_still_loading_its_models(env, tmp_path):
    """A (re)started service answers /healthz before its models are loaded (and /v1/decide with
    503 meanwhile): read() waits for /readyz instead of failing the controller's pass."""
    from tests.test_serving import ServiceProcess

    svc = ServiceProcess(tmp_path, "starting", ["--tracking-uri", env["uri"], "--model-name", "fraud",
                                                "--production", "1"], {})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if svc.client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        loading = svc.client.get("/readyz").status_code == 503
        fact = LocalProcessBackend(svc.url, tmp_path).read()
        assert fact.production == 1 and fact.generation == 1
        assert svc.client.get("/readyz").status_code == 200
        if not loading:
            pytest.skip("the service was ready before read() was called: the wait was not exercised")
    finally:
        svc.stop()
