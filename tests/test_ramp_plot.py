"""The ramp history picture: traffic share per version from recorded transitions."""

from pathlib import Path

from ratchet.app.cli import main
from ratchet.rollout.ramp_plot import plot_ramp, ramp_points

HISTORY = [
    {"at": "2026-01-01T10:00:00+00:00", "from": "candidate", "to": "staging", "evidence": {}},
    {"at": "2026-01-01T10:05:00+00:00", "from": "staging", "to": "shadow", "evidence": {}},
    {"at": "2026-01-01T11:00:00+00:00", "from": "shadow", "to": "canary", "evidence": {"weight": 1}},
    {"at": "2026-01-01T11:30:00+00:00", "from": "canary", "to": "canary", "evidence": {"weight": 5}},
    {"at": "2026-01-01T12:00:00+00:00", "from": "canary", "to": "rolled_back", "evidence": {"guard": "BR"}},
]


def test_points_follow_the_recorded_weights():
    assert [share for _, share, _ in ramp_points(HISTORY)] == [0.0, 0.0, 1.0, 5.0, 0.0]
    assert ramp_points(HISTORY)[-1][2] == "canary -> rolled_back"


def test_plot_written_only_when_something_ramped(tmp_path: Path):
    assert plot_ramp({1: HISTORY[:2]}, tmp_path / "none.png") is None
    out = plot_ramp({1: HISTORY, 2: HISTORY[:2]}, tmp_path / "ramp.png")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"


def test_status_plot_from_a_real_registry(tmp_path: Path, capsys):
    from tests.test_registry import record

    import numpy as np
    import xgboost as xgb

    from ratchet.registry import Registry
    from ratchet.train.trainer import save_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    x = np.random.default_rng(0).random((200, 2))
    model = str(save_model(xgb.train({"tree_method": "hist"}, xgb.DMatrix(x, label=x[:, 0] > 0.5,
                                                                            feature_names=["a", "b"]), 3), tmp_path / "m"))
    reg = Registry(uri, "fraud")
    v = reg.register(record(model))
    reg.record_transition(v, "shadow", "canary", actor="t", reason="start", evidence={"weight": 25})
    reg.record_transition(v, "canary", "production", actor="t", reason="done")
    assert main(["status", "--tracking-uri", uri, "--plot", str(tmp_path / "r.png")]) == 0
    assert "ramp history:" in capsys.readouterr().out
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    reg.client.set_registered_model_alias("fraud", "production", str(v))
    assert main(["status", "--tracking-uri", uri, "--plot", str(tmp_path / "r2.png"), "--format", "json"]) == 0
    import json

    run_id = json.loads(capsys.readouterr().out)["plot_run_id"]
    assert [a.path for a in reg.client.list_artifacts(run_id, "ramp")] == ["ramp/r2.png"]
    assert "monitor.ramp" in reg.tags(v)
