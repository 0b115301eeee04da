"""Drift on synthetic data with known shifts: flagged and named first; none, no alert."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ratchet.errors import SpecError
from ratchet.monitor.config import monitor_config_from_text
from ratchet.monitor.drift import (ColumnDrift, DriftResult, DriftRule, DriftSettings, features_from_decision_log,
                                   judge_drift, measure_drift, severity)

FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "card_count_24h", "amount_to_card_mean"]
SETTINGS = DriftSettings(slice_columns=("country",), slice_top=2, min_slice_rows=1000, sample_rows=20_000,
                         rule=DriftRule(max_drifted_share=0.3, key_features=("amount",)))


@pytest.fixture(scope="module")
def halves():
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.monitor.features import point_in_time_features

    raw = generate(SynthConfig(rows=40_000, seed=5, days=60, new_country=None))
    table = point_in_time_features(raw, FEATURES)
    rng = np.random.default_rng(0)
    mask = rng.random(len(table)) < 0.5  # same period, random halves: no drift by construction
    return table[mask].reset_index(drop=True), table[~mask].reset_index(drop=True)


def test_injected_shift_is_flagged_and_named_first(halves, tmp_path):
    ref, cur = halves
    cur = cur.assign(card_count_24h=cur["card_count_24h"] * 1.6 + 2)
    result = measure_drift(ref, cur, FEATURES, SETTINGS, html_path=tmp_path / "drift.html")
    assert result.columns[0].feature == "card_count_24h" and result.columns[0].drifted
    assert [c.feature for c in result.feature_drift() if c.drifted] == ["card_count_24h"]
    assert any(c.slice.startswith("country=") and c.feature == "card_count_24h" and c.drifted for c in result.slices)
    assert (tmp_path / "drift.html").stat().st_size > 10_000
    rule = DriftRule(max_drifted_share=0.5, key_features=("card_count_24h",))
    alert = judge_drift(result, rule)
    assert alert.alert and alert.worst[0] == "card_count_24h"
    assert "card_count_24h" in alert.event and alert.event.startswith("DRIFT ALERT")
    json.dumps(result.to_dict())  # the summary is plain JSON


def test_no_shift_no_alert(halves):
    ref, cur = halves
    result = measure_drift(ref, cur, FEATURES, SETTINGS)
    assert not any(c.drifted for c in result.feature_drift())
    alert = judge_drift(result, SETTINGS.rule)
    assert not alert.alert and alert.event.startswith("drift ok")


def test_rule_share_and_severity_are_pure():
    def col(name, sev):
        return ColumnDrift(name, "all", sev * 0.1, "Wasserstein distance (normed)", 0.1, sev >= 1, sev)

    result = DriftResult([col("a", 3.0), col("b", 1.2), col("c", 0.2), col("d", 0.1)], [], ["a", "b", "c", "d"], 10, 10)
    assert judge_drift(result, DriftRule(max_drifted_share=0.5)).alert
    assert not judge_drift(result, DriftRule(max_drifted_share=0.75)).alert
    assert judge_drift(result, DriftRule(max_drifted_share=0.9, key_features=("b",))).alert
    assert severity(0.001, 0.05, "K-S p_value") > 1 > severity(0.5, 0.05, "K-S p_value")
    assert severity(0.2, 0.1, "Jensen-Shannon distance") == pytest.approx(2.0)


def test_decision_log_features_are_spread_into_columns():
    log = pd.DataFrame({"request_id": ["a", "b", "c"], "role": ["production", "shadow", "production"],
                        "status": ["ok", "ok", "error"], "country": ["GB", "GB", "DE"],
                        "features": [[("amount", 3.0), ("hour_of_day", 4.0)], [("amount", 1.0)], None]})
    out = features_from_decision_log(log)
    assert list(out["request_id"]) == ["a"] and out.loc[0, "amount"] == 3.0 and out.loc[0, "hour_of_day"] == 4.0


def test_config_errors_name_file_line_and_key():
    with pytest.raises(SpecError, match=r"m.yaml:4: drift.rule.max_drifted_share"):
        monitor_config_from_text("version: 1\ndrift:\n  rule:\n    max_drifted_share: 3\n", "m.yaml")
    with pytest.raises(SpecError, match=r"m.yaml:2: staleness.losss: unknown key"):
        monitor_config_from_text("staleness:\n  losss: relative\n", "m.yaml")
    cfg = monitor_config_from_text("drift:\n  rule:\n    key_features: [amount]\n")
    assert cfg.drift.rule.key_features == ("amount",)


def test_p_value_tests_are_judged_holm_adjusted_over_the_family():
    """Twenty features, one K-S p-value of 0.01 (past 0.05 on its own, not after Holm over
    twenty) and one of 1e-6 (drifted either way); distance tests are left as they are."""
    from ratchet.evaluate.stats import holm
    from ratchet.monitor.drift import holm_adjusted, with_multiplicity

    test = "K-S p_value"
    p = [1e-6, 0.01] + [0.2 + 0.04 * i for i in range(18)]
    items = [ColumnDrift(f"f{i}", "all", v, test, 0.05, severity(v, 0.05, test) >= 1, severity(v, 0.05, test))
             for i, v in enumerate(p)]
    items.append(ColumnDrift("amount", "all", 0.3, "Wasserstein distance (normed)", 0.1, True, 3.0))
    assert items[1].drifted  # without the rule, a false alarm
    judged = {c.feature: c for c in with_multiplicity(items, 1.0)}
    assert judged["f0"].drifted and judged["f0"].p_adjusted == pytest.approx(20 * 1e-6)
    assert not judged["f1"].drifted and judged["f1"].p_adjusted == pytest.approx(19 * 0.01)
    assert judged["f1"].score == 0.01 and judged["amount"] == items[-1]
    result = DriftResult(list(judged.values()), [], [c.feature for c in items], 100, 100)
    assert judge_drift(result, DriftRule(max_drifted_share=0.5, key_features=("f1",))).alert is False
    # the adjusted p-values reject exactly what stats.holm rejects, at any level
    rng = np.random.default_rng(1)
    q = rng.random(30) ** 3
    for alpha in (0.01, 0.05, 0.2):
        assert np.array_equal(holm_adjusted(q) <= alpha, holm(q, alpha))
