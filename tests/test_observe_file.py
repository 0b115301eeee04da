"""`ratchet controller --decision-log FILE`: one exported log file is observed the same way as
the service's folder (per-card block rates, errors from status/error), re-read when it changes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratchet.rollout.guards import judge
from ratchet.rollout.observe import (
    DecisionLogFile,
    DecisionLogTail,
    decision_log_source,
    live_observer,
)
from ratchet.rollout.plan import plan_from_text
from ratchet.rollout.state import DeploymentState
from tests.rollout_helpers import PLAN

T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)
PLAN_PATH = str(Path(__file__).resolve().parents[1] / "contracts" / "rollout.yaml")  # fraud.yaml next to it
FACT = DeploymentState(production=1, canary=2, canary_weight=50.0)


def _log(canary_br_block: float, n_cards: int = 4000, seed: int = 0, with_cards: bool = True) -> pd.DataFrame:
    """Production and canary decisions on the same traffic; canary blocks BR at `canary_br_block`."""
    rng = np.random.default_rng(seed)
    rows = []
    for card in range(n_cards):
        role = "canary" if card % 2 else "production"
        country = ("BR", "FR", "DE")[card % 3]
        p_block = canary_br_block if (role == "canary" and country == "BR") else 0.02
        for k in range(2):
            rows.append({"request_id": f"r{card}-{k}", "ts": T0 + timedelta(seconds=card + k), "role": role,
                         "version": 2 if role == "canary" else 1, "score": 0.1, "threshold": 0.5,
                         "decision": "block" if rng.random() < p_block else "allow", "status": "ok", "error": None,
                         "latency_ms": 2.0, "country": country, "card_id": f"c{card}"})
    df = pd.DataFrame(rows)
    return df if with_cards else df.drop(columns=["card_id"])


def _observe(path: Path):
    plan = plan_from_text(PLAN, PLAN_PATH)
    obs = live_observer(decision_log_source(path), plan)(FACT, {"canary": T0, "shadow": None})
    return judge(obs, "canary", plan.guards)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_breaching_canary_in_a_log_file_is_caught_per_card(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"decisions{suffix}"
    df = _log(canary_br_block=0.30)
    if suffix == ".parquet":
        df.to_parquet(path)
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True, date_format="iso")
    assert isinstance(decision_log_source(path), DecisionLogFile)
    v = _observe(path)
    assert v.breached, v.headline
    assert "BR" in v.headline and "block rate" in v.headline
    # counted per card (the canary's unit), not per decision: 2 decisions per card
    assert v.decisions == 4000
    print(f"\n{suffix}: {v.headline}")


def test_healthy_canary_holds_and_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "decisions.parquet"
    _log(canary_br_block=0.02, seed=1).to_parquet(path)
    source = decision_log_source(path)
    plan = plan_from_text(PLAN, PLAN_PATH)
    observe = live_observer(source, plan)
    first = judge(observe(FACT, {"canary": T0, "shadow": None}), "canary", plan.guards)
    assert not first.breached
    _log(canary_br_block=0.30, seed=2).to_parquet(path)   # the exporter rewrote the file
    second = judge(observe(FACT, {"canary": T0, "shadow": None}), "canary", plan.guards)
    assert second.breached and "BR" in second.headline


def test_log_without_cards_counts_decisions_and_errors_from_status(tmp_path: Path) -> None:
    path = tmp_path / "decisions.parquet"
    df = _log(canary_br_block=0.02, with_cards=False, seed=3)
    canary = df.index[df["role"] == "canary"]
    df.loc[canary[: len(canary) // 10], "status"] = "error"   # 10% of canary decisions failed
    df.to_parquet(path)
    v = _observe(path)
    assert v.breached and "error rate" in v.headline, v.headline


def test_missing_file_is_an_empty_log_and_a_folder_is_tailed(tmp_path: Path) -> None:
    v = _observe(tmp_path / "not-yet.parquet")
    assert not v.breached and v.decisions == 0
    (tmp_path / "decisions").mkdir()
    assert isinstance(decision_log_source(tmp_path / "decisions"), DecisionLogTail)
