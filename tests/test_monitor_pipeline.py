"""The monitoring pipeline under kfp's local runner: drift alert, shadow estimates and a
staleness backtest in one run, results logged to MLflow with the production version."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from components.image import RATCHET_IMAGE
from pipelines.monitor import COMPILED, compile_pipeline

FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "card_count_24h"]
CONFIG = """
version: 1
drift:
  features: [amount, hour_of_day, is_online, cross_border, card_count_24h]
  sample_rows: 5000
  slices: {columns: [country], top: 1, min_rows: 500}
  rule: {max_drifted_share: 0.5, key_features: [card_count_24h]}
staleness:
  n_cutoffs: 2
  horizon_weeks: 3
  train_days: 21
  num_boost_round: 10
  min_positives: 5
estimation:
  replicates: 30
"""


def test_compiling_again_gives_the_committed_file(tmp_path):
    fresh = compile_pipeline(tmp_path / "monitor.yaml")
    assert fresh.read_text() == COMPILED.read_text(), "run `python -m pipelines.monitor` and commit the YAML"
    spec = yaml.safe_load(COMPILED.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 3 and {e["container"]["image"] for e in executors.values()} == {RATCHET_IMAGE}


def _decision_log(table: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    n = len(table)
    score = np.clip(table["label"].to_numpy() * 0.5 + rng.random(n) * 0.5, 0, 1)
    ids = [f"r{i}" for i in range(n)]
    feats = [list(zip(FEATURES, row)) for row in table[FEATURES].to_numpy(dtype=float)]
    shadow = pd.DataFrame({"request_id": ids, "ts": pd.to_datetime(table["ts"]).dt.tz_localize("UTC"), "role": "shadow",
                        "version": 2, "score": score, "threshold": 0.6, "status": "ok",
                        "decision": np.where(score >= 0.6, "block", "allow"), "country": table["country"].to_numpy(),
                        "features": feats})
    log = pd.concat([shadow.assign(role="production", version=1), shadow], ignore_index=True)
    labels = pd.DataFrame({"request_id": ids, "label": table["label"].to_numpy()})
    return log, labels, pd.DataFrame({"score": score, "label": table["label"].to_numpy()})


@pytest.mark.slow
def test_monitoring_pipeline_runs_locally(tmp_path):
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.monitor.features import point_in_time_features
    from ratchet.registry import Registry

    raw = generate(SynthConfig(rows=30_000, seed=2, days=70, new_country=None, fraud_scale=3.0))
    table = point_in_time_features(raw, FEATURES)
    ts = pd.to_datetime(table["ts"])
    ref, cur = table[ts < "2025-02-01"], table[ts >= "2025-02-01"].copy()
    cur["card_count_24h"] = cur["card_count_24h"] * 2 + 3  # the injected shift
    ref.to_parquet(tmp_path / "train.parquet")
    rng = np.random.default_rng(0)
    log, labels, scored = _decision_log(cur.reset_index(drop=True), rng)
    import pyarrow as pa
    import pyarrow.parquet as pq

    feats = pa.array(log.pop("features").tolist(), pa.map_(pa.string(), pa.float64()))  # the decision log's type
    pq.write_table(pa.Table.from_pandas(log, preserve_index=False).append_column("features", feats),
                   tmp_path / "decisions.parquet")
    labels.to_parquet(tmp_path / "labels.parquet")
    scored.iloc[: len(scored) // 2].to_parquet(tmp_path / "scored.parquet")
    table.to_parquet(tmp_path / "features.parquet")
    (tmp_path / "monitor.yaml").write_text(CONFIG)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reg = Registry(uri, "fraud")  # production v1 and shadow v2 to log against (no model files: cheap)
    reg.client.create_registered_model("fraud")
    version, shadow_version = (int(reg.client.create_model_version("fraud", f"file://{tmp_path}/m{i}").version)
                               for i in (1, 2))
    reg.set_stage(version, "production", actor="test", reason="test")
    reg.set_stage(shadow_version, "shadow", actor="test", reason="test")

    from pipelines.monitor import run_monitor

    out = run_monitor(current=str(tmp_path / "decisions.parquet"), reference=str(tmp_path / "train.parquet"),
                      data=str(tmp_path / "features.parquet"), decision_log=str(tmp_path / "decisions.parquet"),
                      labels=str(tmp_path / "labels.parquet"), estimate_reference=str(tmp_path / "scored.parquet"),
                      config=str(tmp_path / "monitor.yaml"), tracking_uri=uri, workdir=str(tmp_path / "runs"),
                      quiet=True)
    assert out["ok"], out["failure"]
    steps = out["steps"]
    assert set(steps) == {"drift", "shadow_review", "staleness"}
    assert out["alert"] and steps["drift"]["alert"] and steps["drift"]["worst"][0] == "card_count_24h"
    assert "recall" in steps["shadow_review"]["event"] and "cadence" in steps["staleness"]["event"]
    tags = reg.tags(version)
    assert {"monitor.drift", "monitor.staleness"} <= set(tags) and "monitor.estimate" in reg.tags(shadow_version)
    assert json.loads(tags["monitor.drift"])["alert"] == "true"
