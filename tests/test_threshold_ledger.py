"""Review, approval and the ledger on a real MLflow SQLite store, read back from a fresh process."""

import argparse
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import xgboost as xgb

from ratchet.errors import RatchetError, RegistryError
from ratchet.registry import Registry, ReleaseRecord
from ratchet.thresholds import MinSupport, ThresholdError, ThresholdPolicy, suggest_thresholds
from ratchet.app.commands.thresholds import approve_cli, review_cli, status_cli
from ratchet.thresholds.cycle import approve_version, record_release, suggestion_files
from ratchet.train.trainer import save_model
from tests.test_thresholds import world

POLICY = ThresholdPolicy(min_support=MinSupport(rows=2000, negatives=1000))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def registry(store, request):
    # one store for the module (creating an MLflow database takes seconds); one model per
    # test, so versions and ledgers never mix
    return Registry(store, request.node.name.replace("test_", "")[:60])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.random((200, 2))
    booster = xgb.train({"tree_method": "hist", "objective": "binary:logistic"},
                        xgb.DMatrix(x, label=(x[:, 0] > 0.5).astype(int), feature_names=["a", "b"]), 2)
    return str(save_model(booster, tmp_path_factory.mktemp("m") / "m"))


def release(registry, model_path, folder, policy=POLICY, passed=True, suggestions=True, bootstrap=False,
            full=False):
    """Register a version the way register_step does: suggestion files as artifacts, then tags."""
    df, _, _ = world(11, n_large=4, rows_large=5000, n_small=5)
    if bootstrap:
        df = df.drop(columns=["baseline_score", "baseline_threshold"])
    s = suggest_thresholds(df, policy, bootstrap_block_rate=0.01)
    s.write(folder)
    files = suggestion_files(folder) if suggestions else {}
    if full:
        rec = ReleaseRecord(model_path=model_path, spec_yaml="name: t\n", spec_hash="h" * 64, snapshot={}, windows={},
                            metrics={}, verdict={}, passed=passed, reason="gate passed" if passed else "gate failed",
                            extra_artifacts=files)
        v = registry.register(rec)
    else:  # what register() leaves behind, minus logging a model (seconds per version)
        c = registry.client
        exp = c.get_experiment_by_name("ratchet-test") or c.get_experiment(c.create_experiment("ratchet-test"))
        run = c.create_run(exp.experiment_id)
        for dest, local in files.items():
            c.log_artifacts(run.info.run_id, local, dest)
        if not c.search_registered_models(f"name='{registry.model_name}'"):
            c.create_registered_model(registry.model_name)
        v = int(c.create_model_version(registry.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id).version)
        registry.set_tags(v, {"run_id": run.info.run_id, "state": "candidate" if passed else "rejected",
                              "reason": "gate passed" if passed else "gate failed"})
    state = record_release(registry, v, s, passed=passed) if suggestions else None
    return v, s, state


def ns(registry, **kw):
    return argparse.Namespace(tracking_uri=registry.tracking_uri, model_name=registry.model_name, **kw)


def test_approve_with_edits_then_status_from_a_fresh_process(registry, model_path, tmp_path, capsys):
    v, s, state = release(registry, model_path, tmp_path / "ev", full=True)
    assert state == "pending"
    tags = registry.tags(v)
    assert tags["thresholds"] == "pending" and float(tags["threshold"]) == s.global_threshold
    assert registry.thresholds(v) == (s.global_threshold, {})  # until approval: the global one for all
    assert review_cli(ns(registry, version=v)) == 0
    out = capsys.readouterr().out
    assert "m000" in out and "pending" in out and "ratchet thresholds approve" in out

    own = [m["merchant"] for m in s.own()]
    assert own == ["m000", "m001", "m002", "m003"]
    assert approve_cli(ns(registry, version=v, set=["m000=0.61"], reject=["m001"], user="alice")) == 0
    assert "edited   m000" in capsys.readouterr().out
    default, per = registry.thresholds(v)  # what the decision service reads
    assert default == s.global_threshold and per["m000"] == 0.61 and "m001" not in per
    assert per["m002"] == pytest.approx(next(m["suggested_threshold"] for m in s.merchants if m["merchant"] == "m002"))
    assert registry.tags(v)["thresholds"] == "approved" and registry.tags(v)["thresholds_cycle"] == "1"

    code = ("import json, argparse; from ratchet.registry import Registry; "
            f"r = Registry({registry.tracking_uri!r}, {registry.model_name!r}); "
            "print(json.dumps([{k: e[k] for k in ('cycle', 'version', 'actor', 'mode', 'decisions', 'summary')} "
            "for e in r.ledger_entries()]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    (entry,) = json.loads(proc.stdout.strip().splitlines()[-1])
    decisions = {d["merchant"]: d for d in entry["decisions"]}
    assert entry["actor"] == "alice" and entry["mode"] == "suggest" and entry["version"] == v
    assert decisions["m000"]["decision"] == "edited" and decisions["m000"]["approved"] == 0.61
    assert decisions["m000"]["edit"] == pytest.approx(0.61 - decisions["m000"]["suggested"])
    assert decisions["m001"]["decision"] == "rejected" and decisions["m001"]["approved"] is None
    assert decisions["m002"]["decision"] == decisions["*"]["decision"] == "accepted"
    assert (entry["summary"]["accepted"], entry["summary"]["edited"], entry["summary"]["rejected"]) == (3, 1, 1)

    assert status_cli(ns(registry, format="text", config=None)) == 0
    text = capsys.readouterr().out
    assert "alice" in text and "chain intact" in text and "not met" in text and "pending review: none" in text
    # approving again records a new cycle that supersedes the first; nothing is rewritten
    entry2, _ = approve_version(registry, v, {}, [], actor="bob")
    assert entry2["cycle"] == 2 and entry2["supersedes"] == 1
    assert registry.thresholds(v)[1]["m001"] == pytest.approx(decisions["m001"]["suggested"])
    assert [e["actor"] for e in registry.ledger_entries()] == ["alice", "bob"]


def test_bad_input_changes_nothing(registry, model_path, tmp_path):
    v, s, _ = release(registry, model_path, tmp_path / "ev")
    bare, _, _ = release(registry, model_path, tmp_path / "ev2", suggestions=False)
    boot, _, boot_state = release(registry, model_path, tmp_path / "ev3", bootstrap=True)
    assert boot_state == "bootstrap"
    before = {x: registry.tags(x) for x in (v, bare, boot)}
    cases = [
        (dict(version=v, set=["nobody=0.5"], reject=[]), ThresholdError, r"unknown merchant\(s\) 'nobody'"),
        (dict(version=v, set=["m000=1.2"], reject=[]), ThresholdError, r"within \[0, 1\]"),
        (dict(version=v, set=[], reject=["m999"]), ThresholdError, "unknown merchant"),
        (dict(version=bare, set=[], reject=[]), ThresholdError, "has no threshold suggestions"),
        (dict(version=boot, set=[], reject=[]), ThresholdError, "bootstrap release"),
        (dict(version=99, set=[], reject=[]), RegistryError, "no version 99"),
    ]
    for kw, err, msg in cases:
        with pytest.raises(err, match=msg):
            approve_cli(ns(registry, user="mallory", **kw))
    assert registry.ledger_entries() == []
    assert {x: registry.tags(x) for x in (v, bare, boot)} == before
    # through the CLI entry point the message is printed and the exit code is 2
    from ratchet.app.cli import EXIT_BAD_INPUT
    assert issubclass(ThresholdError, RatchetError) and EXIT_BAD_INPUT == 2


def test_auto_mode_applies_at_registration_and_rejected_versions_are_not_reviewed(registry, model_path, tmp_path):
    v, s, state = release(registry, model_path, tmp_path / "ev", policy=replace(POLICY, mode="auto"))
    assert state == "auto" and registry.tags(v)["thresholds"] == "auto"
    assert registry.thresholds(v) == s.thresholds()
    (entry,) = registry.ledger_entries()
    assert entry["actor"] == "auto" and entry["mode"] == "auto"
    assert {d["decision"] for d in entry["decisions"]} == {"auto"}
    r, _, state = release(registry, model_path, tmp_path / "ev2", passed=False)
    assert state == "not_reviewed"
    with pytest.raises(ThresholdError, match="rejected by its gate"):
        approve_version(registry, r, {}, [], actor="x")
    assert len(registry.ledger_entries()) == 1


def test_argparse_wiring():
    from ratchet.app.cli import _registry_arguments
    from ratchet.app.commands.thresholds import add_thresholds_command

    p = argparse.ArgumentParser()
    add_thresholds_command(p.add_subparsers(dest="command"), _registry_arguments)
    a = p.parse_args(["thresholds", "approve", "7", "--set", "m1=0.6", "--set", "*=0.5", "--reject", "m2",
                      "--user", "alice", "--model-name", "x"])
    assert (a.version, a.set, a.reject, a.user, a.model_name, a.func) == (7, ["m1=0.6", "*=0.5"], ["m2"], "alice", "x",
                                                                           approve_cli)
    assert p.parse_args(["thresholds", "status", "--format", "json"]).func is status_cli
    assert p.parse_args(["thresholds", "review", "3"]).func is review_cli
