"""The missing-features guard (issue 16, item 2): a canary whose requests credibly lack a
guarded feature more often than the plan allows is rolled back, judged from the decision
log's features map (the service logs a missing value as NaN, as XGBoost saw it)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ratchet.errors import SpecError
from ratchet.rollout.guards import judge
from ratchet.rollout.observe import DecisionLogTail, live_observer
from ratchet.rollout.plan import plan_from_text
from ratchet.rollout.state import DeploymentState
from ratchet.serving.decision_log import _batch
from ratchet.serving.log_schema import DecisionRow
from ratchet.serving.schema import SLICE_KEYS

PLAN_PATH = str(Path(__file__).resolve().parents[1] / "contracts" / "rollout.yaml")
PLAN = """
mode: auto
canary:
  steps:
    - {weight: 50, min_decisions: 100}
guards:
  block_rate: false
  error_rate: {max: 0.05}
  missing_features: {features: [merchant_count_24h], max_rate: 0.05, min_decisions: 200}
"""
FEATURES = ("amount", "merchant_count_24h")
FACT = DeploymentState(production=1, canary=2, canary_weight=50.0)


def _log(folder: Path, n: int, missing_share: dict[str, float], seed: int = 0) -> None:
    """n decisions per role; merchant_count_24h missing in `missing_share[role]` of them."""
    rng = np.random.default_rng(seed)
    rows = []
    t0 = time.time() - 60
    for i in range(2 * n):
        role = ("production", "canary")[i % 2]
        value = None if rng.random() < missing_share[role] else 40.0
        req = SimpleNamespace(**{**{k: None for k in SLICE_KEYS}, "card_id": f"c{i}", "transaction_id": f"t{i}",
                                 "country": "FR", "amount": 10.0, "merchant_count_24h": value})
        rows.append(DecisionRow(f"r{i}", t0 + i * 0.01, role, 1 if role == "production" else 2, 0.1, 0.5, "allow",
                                "ok", None, 1.0, 1, 1.0, False, req, FEATURES))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_batches([_batch(rows)]), folder / "decisions-0001.parquet")


@pytest.mark.parametrize("share,status", [(0.30, "fail"), (0.01, "pass")])
def test_a_canary_missing_a_guarded_feature_is_caught(tmp_path: Path, share: float, status: str) -> None:
    plan = plan_from_text(PLAN, PLAN_PATH)
    _log(tmp_path / "decisions", 1000, {"production": 0.01, "canary": share})
    obs = live_observer(DecisionLogTail(tmp_path / "decisions"), plan)(FACT, {"canary": None, "shadow": None})
    n, counts = obs.missing["canary"]
    assert n == 1000 and abs(counts["merchant_count_24h"] - share * 1000) < 60
    v = judge(obs, "canary", plan.guards)
    [check] = [c for c in v.checks if c.name == "missing[merchant_count_24h]"]
    assert check.status == status, check.text
    if status == "fail":
        assert v.breached and v.headline.startswith("merchant_count_24h missing in"), v.headline


def test_too_few_decisions_are_not_judged(tmp_path: Path) -> None:
    plan = plan_from_text(PLAN, PLAN_PATH)
    _log(tmp_path / "decisions", 50, {"production": 0.0, "canary": 1.0})
    obs = live_observer(DecisionLogTail(tmp_path / "decisions"), plan)(FACT, {"canary": None, "shadow": None})
    [check] = [c for c in judge(obs, "canary", plan.guards).checks if c.name.startswith("missing")]
    assert check.status == "not_judged"


@pytest.mark.parametrize("guard,message", [
    ("{features: []}", "expected a non-empty list of feature names"),
    ("{features: [a], max_rate: 2}", "max_rate"),
    ("{max_rate: 0.1}", "features"),
])
def test_plan_errors_name_the_key(guard: str, message: str) -> None:
    text = PLAN.replace("{features: [merchant_count_24h], max_rate: 0.05, min_decisions: 200}", guard)
    with pytest.raises(SpecError, match=message):
        plan_from_text(text, PLAN_PATH)
