"""Label-free recall/FPR estimates: within their interval of the realised value in >= 90% of weeks;
re-checking a promotion whose realised figures fail the contract says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ratchet.monitor.estimation import estimate, fit_calibration, plot_estimates, realised, weekly_estimates
from ratchet.monitor.recheck import recheck_promotion, review_window

pytestmark = pytest.mark.slow
FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "card_count_1h", "card_count_24h",
            "card_amount_24h", "seconds_since_card_prev", "amount_to_card_mean", "merchant_count_24h"]


@pytest.fixture(scope="module")
def weekly(tmp_path_factory):
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.monitor.features import point_in_time_features
    from ratchet.train.spec import DEFAULT_PARAMS, TrainingSpec, XGBoostSpec
    from ratchet.train.trainer import predict, train_model

    raw = generate(SynthConfig(rows=200_000, seed=3, days=182, drift_speed=0.0, new_pattern_day=-1, fraud_scale=2.0,
                               new_country=None))
    table = point_in_time_features(raw, FEATURES)
    ts = pd.to_datetime(table["ts"])
    spec = TrainingSpec(name="t", label="label", features=tuple(FEATURES),
                        xgboost=XGBoostSpec(params={**DEFAULT_PARAMS, "max_depth": 4, "eta": 0.2}, num_boost_round=40))
    model = train_model(table[ts < "2025-02-15"].reset_index(drop=True), spec).booster
    ref = table[(ts >= "2025-02-15") & (ts < "2025-04-01")]
    ref_score = predict(model, ref)
    threshold = float(np.quantile(ref_score, 0.985))
    cal = fit_calibration(ref_score, ref["label"].to_numpy(), "isotonic", replicates=200, seed=1,
                          groups=pd.to_datetime(ref["ts"]).dt.floor("D").to_numpy())
    live = table[ts >= "2025-04-01"]
    score = predict(model, live)
    frame = pd.DataFrame({"ts": live["ts"].to_numpy(), "score": score, "blocked": score >= threshold,
                          "label": live["label"].to_numpy()})
    out = weekly_estimates(cal, frame, confidence=0.95)
    plot_estimates(out, str(tmp_path_factory.mktemp("est") / "estimates.png"))
    return cal, out


def test_estimates_cover_the_realised_values_in_90_percent_of_weeks(weekly):
    cal, table = weekly
    assert len(table) >= 12 and cal.dispersion >= 1.0
    recall_cov, fpr_cov = table["recall_covered"].mean(), table["fpr_covered"].mean()
    print(f"coverage over {len(table)} weeks: recall {recall_cov:.2f}, FPR {fpr_cov:.2f}, dispersion {cal.dispersion:.2f}")
    assert recall_cov >= 0.9 and fpr_cov >= 0.9
    # the intervals say something: narrower than the whole range the metric moves in
    assert (table["recall_high"] - table["recall_low"]).median() < 0.25


def test_perfect_calibration_recovers_the_truth():
    rng = np.random.default_rng(0)
    score = rng.beta(0.3, 8, 20_000)
    label = rng.random(20_000) < score
    cal = fit_calibration(score, label, "platt", replicates=20, seed=2)
    blocked = score >= 0.3
    est = estimate(cal, score, blocked)
    rr, rf = realised(label, blocked)
    assert est.recall_interval[0] <= rr <= est.recall_interval[1]
    assert est.fpr_interval[0] <= rf <= est.fpr_interval[1]
    assert abs(est.recall - rr) < 0.03


def _log(n: int, seed: int, shadow_blocks_good: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.05).astype(int)
    prod_score = np.clip(label * 0.6 + rng.random(n) * 0.5, 0, 1)
    shadow_score = prod_score.copy()
    if shadow_blocks_good:  # the shadow blocks many good customers
        shadow_score = np.where(label == 0, np.clip(prod_score + 0.3 * (rng.random(n) < 0.2), 0, 1), prod_score)
    ts = pd.date_range("2025-05-01", periods=n, freq="min", tz="UTC")
    ids = [f"r{i}" for i in range(n)]
    common = {"request_id": ids, "ts": ts, "country": "GB", "status": "ok", "threshold": 0.5}
    prod = pd.DataFrame({**common, "role": "production", "version": 1, "score": prod_score})
    sh = pd.DataFrame({**common, "role": "shadow", "version": 2, "score": shadow_score})
    log = pd.concat([prod, sh], ignore_index=True)
    log["decision"] = np.where(log["score"] >= log["threshold"], "block", "allow")
    return log, pd.DataFrame({"request_id": ids, "label": label})


CONTRACT = """
version: 1
name: recheck
significance: {confidence: 0.95, min_support: 50}
thresholds: {candidate: column, default: 0.5}
slices:
  country: {column: country}
clauses:
  - name: fpr_no_worse
    kind: no_regression
    metric: fpr
    tolerance: {absolute: 0.005}
"""


def test_recheck_flags_a_promotion_whose_labels_fail_the_contract(tmp_path):
    contract = tmp_path / "c.yaml"
    contract.write_text(CONTRACT)
    bad_log, labels = _log(5000, 1, shadow_blocks_good=True)
    bad = recheck_promotion(bad_log, labels, str(contract), 2)
    assert bad.status == "failed" and "fpr" in bad.summary and bad.event().startswith("RECHECK FAILED: v2")
    good_log, labels = _log(5000, 1, shadow_blocks_good=False)
    assert recheck_promotion(good_log, labels, str(contract), 2).status == "passed"
    assert recheck_promotion(good_log, labels.iloc[:10], str(contract), 2).status == "pending"
    history = [{"to": "staging", "at": "2025-04-30T00:00:00"}, {"to": "shadow", "at": "2025-05-01T00:00:00"},
               {"to": "production", "at": "2025-05-09T00:00:00"}]
    assert review_window(history) == ("2025-05-01T00:00:00", "2025-05-09T00:00:00")
