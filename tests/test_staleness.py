"""Staleness backtest: with a fraud pattern that shifts quickly the recommended cadence is
shorter than with a stable one (fixed seeds)."""

from __future__ import annotations

import pandas as pd
import pytest

from ratchet.monitor.staleness import StalenessSettings, backtest, expected_loss, plot_staleness, recommend_cadence

pytestmark = pytest.mark.slow
FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "card_count_1h", "card_count_24h",
            "card_amount_24h", "seconds_since_card_prev", "amount_to_card_mean", "merchant_count_24h"]
# cut-offs a week apart, a new fraud pattern (account takeover) emerging 2-4 weeks after them
SETTINGS = StalenessSettings(cutoffs=("2025-03-24", "2025-03-31", "2025-04-07"), horizon_weeks=6, train_days=42,
                             fpr=0.01, tolerance=0.15, num_boost_round=40)
PARAMS = {"max_depth": 4, "eta": 0.2}


def _run(drift_speed: float, new_pattern_day: int):
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.monitor.features import point_in_time_features

    raw = generate(SynthConfig(rows=180_000, seed=5, days=161, drift_speed=drift_speed, new_pattern_day=new_pattern_day,
                               fraud_scale=3.0, new_country=None, seasonality=0.0))
    return backtest(point_in_time_features(raw, FEATURES), FEATURES, SETTINGS, PARAMS)


def test_fast_drift_gives_a_shorter_cadence_than_a_stable_pattern(tmp_path):
    stable = _run(0.0, -1)
    fast = _run(3.0, 110)
    print("stable:", stable.cadence_text(), "| fast:", fast.cadence_text())
    horizon = SETTINGS.horizon_weeks
    stable_weeks = stable.cadence_weeks or horizon + 1
    assert fast.cadence_weeks is not None and fast.cadence_weeks < stable_weeks
    assert max(fast.mean_loss.values()) > max(stable.mean_loss.values())
    assert set(fast.table.columns) >= {"cutoff", "age_weeks", "recall_at_fpr", "auc", "loss"}
    assert len(fast.table) == 3 * horizon and fast.table["auc"].between(0.5, 1).all()
    png = plot_staleness(fast, tmp_path / "staleness.png")
    assert png.stat().st_size > 10_000
    assert ">= 6" in stable.cadence_text() if stable.cadence_weeks is None else True


def test_cadence_is_the_first_age_over_tolerance():
    table = pd.DataFrame({"cutoff": ["a"] * 4 + ["b"] * 4, "age_weeks": [1, 2, 3, 4] * 2,
                          "loss": [0, 0.05, 0.2, 0.3, 0, 0.15, 0.1, 0.4]})
    mean = expected_loss(table)
    assert mean == pytest.approx({1: 0.0, 2: 0.1, 3: 0.15, 4: 0.35})
    assert recommend_cadence(mean, 0.12) == 3
    assert recommend_cadence(mean, 0.5) is None
