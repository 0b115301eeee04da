"""Staleness backtest with its uncertainty.

- the bootstrap's weighted metrics are the contract engine's metrics (unit weights), its
  truncated recall draw has the full draw's distribution, and its recall interval covers
  the true recall at FPR in simulated windows;
- the three answers of the cadence, from hand-made bands (wording, boundaries, pooled bins)
  and from backtests of worlds where each must come out;
- the CLI's JSON (old keys kept, new keys and flags), the config's new keys;
- on the synthetic world (slow): a stable world claims no cadence, bands drawn in the plot.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ratchet.errors import RatchetError, SpecError
from ratchet.evaluate.stats import wilson, z_two_sided
from ratchet.monitor.config import monitor_config_from_text
from ratchet.monitor.staleness import (BEYOND, CANNOT_TELL, NO_DECAY, RETRAIN, STRADDLES, WITHIN, StalenessSettings,
                                       _bootstrap_recall, backtest, bootstrap_metric, expected_loss, judge,
                                       mean_loss_bootstrap, plot_staleness, recommend, recommend_cadence,
                                       weighted_metric, window_metrics)

FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "card_count_1h", "card_count_24h",
            "card_amount_24h", "seconds_since_card_prev", "amount_to_card_mean", "merchant_count_24h"]


# ---- the row bootstrap --------------------------------------------------------------------------
def _window(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.04
    s = rng.normal(1.6 * y, 1.0)
    return y, (np.round(s, 1) if ties else s)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_at_unit_weights_are_the_contract_engines(ties):
    y, s = _window(4000, 1, ties)
    ref = window_metrics(y.astype(int), s, 0.01)
    for metric in ("recall_at_fpr", "auc", "average_precision"):
        one = weighted_metric(metric, y, s, np.ones((1, len(y))), 0.01)[0]
        two = weighted_metric(metric, y, s, np.full((1, len(y)), 2.0), 0.01)[0]  # every row twice: same window
        assert one == pytest.approx(ref[metric], abs=1e-12), metric
        assert two == pytest.approx(ref[metric], abs=1e-12), metric
    # dropping rows by weight 0 is the metric of the remaining rows
    keep = np.arange(len(y)) % 3 != 0
    w = keep[None, :].astype(float)
    sub = window_metrics(y[keep].astype(int), s[keep], 0.01)
    assert weighted_metric("recall_at_fpr", y, s, w, 0.01)[0] == pytest.approx(sub["recall_at_fpr"], abs=1e-12)
    assert weighted_metric("auc", y, s, w, 0.01)[0] == pytest.approx(sub["auc"], abs=1e-12)


def test_truncated_recall_bootstrap_has_the_full_bootstraps_distribution():
    y, s = _window(3000, 2, ties=False)
    fast = _bootstrap_recall(y, s, 0.01, 2000, (3,))
    rng = np.random.default_rng(4)
    full = np.concatenate([weighted_metric("recall_at_fpr", y, s, rng.poisson(1.0, (500, len(y))), 0.01)
                           for _ in range(4)])
    q = [0.025, 0.25, 0.5, 0.75, 0.975]
    assert np.quantile(fast, q) == pytest.approx(np.quantile(full, q), abs=0.02)
    # seeded: the same seed gives the same replicates, another seed others
    assert np.array_equal(bootstrap_metric("recall_at_fpr", y, s, 0.01, 200, (5, 1)),
                          bootstrap_metric("recall_at_fpr", y, s, 0.01, 200, (5, 1)))
    assert not np.array_equal(bootstrap_metric("recall_at_fpr", y, s, 0.01, 200, (5, 1)),
                              bootstrap_metric("recall_at_fpr", y, s, 0.01, 200, (5, 2)))


def test_recall_interval_covers_the_true_recall_at_fpr_and_is_wider_than_wilson():
    """Windows of 3,000 rows (~120 frauds) from a known score distribution: the 95% bootstrap
    interval covers the population's recall at FPR 0.01 in >= 90% of 150 windows, and it is
    wider than Wilson's on TP / positives, which ignores the threshold's noise."""
    from scipy.stats import norm

    mu = 2.0
    true_recall = float(norm.sf(norm.isf(0.01) - mu))      # negatives N(0,1), positives N(mu,1)
    covered, wider = [], []
    for i in range(150):
        rng = np.random.default_rng(100 + i)
        y = rng.random(3000) < 0.04
        s = rng.normal(mu * y, 1.0)
        reps = bootstrap_metric("recall_at_fpr", y, s, 0.01, 400, (i,))
        lo, hi = np.quantile(reps, [0.025, 0.975])
        covered.append(lo <= true_recall <= hi)
        point = window_metrics(y.astype(int), s, 0.01)["recall_at_fpr"]
        wl, wh = wilson(np.array([round(point * y.sum())]), np.array([y.sum()]), z_two_sided(0.95))
        wider.append(hi - lo > wh[0] - wl[0])
    assert np.mean(covered) >= 0.90, np.mean(covered)
    assert np.mean(wider) >= 0.8


def test_mean_curve_band_holds_the_cut_offs_spread():
    """No row noise at all, three cut-offs whose losses differ: the band is the cut-offs' spread;
    one cut-off without row noise: the band is a point."""
    reps = 2000
    losses = np.zeros((3, 50, 3))
    losses[:, :, 1] = np.array([0.0, 0.1, 0.2])[:, None]
    losses[:, :, 2] = np.array([0.1, 0.3, 0.5])[:, None]
    means = mean_loss_bootstrap(losses, reps, (1,))
    lo, hi = np.quantile(means, [0.025, 0.975], axis=0)
    assert lo[0] == hi[0] == 0.0
    eps = 1e-12
    assert -eps <= lo[1] < 0.1 < hi[1] <= 0.2 + eps and 0.1 - eps <= lo[2] < 0.3 < hi[2] <= 0.5 + eps
    one = mean_loss_bootstrap(losses[1:2], reps, (1,))
    assert np.all(one[:, 2] == 0.3)
    # NaN (an age a cut-off did not score) is left out, not counted as zero
    losses[0, :, 2] = np.nan
    assert np.nanmin(mean_loss_bootstrap(losses, reps, (1,))[:, 2]) >= 0.3


# ---- the three answers, from bands -------------------------------------------------------------
S = StalenessSettings(horizon_weeks=4, tolerance=0.10, fpr=0.01)


def test_credible_loss_beyond_tolerance_at_n_plus_1_weeks_says_retrain_at_least_every_n():
    mean = {1: 0.0, 2: 0.02, 3: 0.04, 4: 0.21}
    bands = {1: (0.0, 0.0), 2: (-0.05, 0.08), 3: (-0.02, 0.10), 4: (0.12, 0.30)}
    c = recommend(mean, bands, S, known_to=0.04)
    assert (c.kind, c.weeks, c.age, c.bound_weeks) == (RETRAIN, 3, 4, 3)
    assert c.text == ("recommended retraining cadence: retrain at least every 3 week(s): the mean relative loss of "
                      "recall at FPR 0.01 at 4 weeks is 0.210 [0.120, 0.300] (95% interval), credibly beyond the "
                      "tolerance 0.1, and credibly within it up to 3 weeks")
    # beyond already at the second week: every week
    c = recommend({1: 0.0, 2: 0.3}, {1: (0.0, 0.0), 2: (0.2, 0.4)}, S, known_to=0.04)
    assert (c.kind, c.weeks) == (RETRAIN, 1) and c.text.endswith("credibly beyond the tolerance 0.1")


def test_a_credible_loss_after_an_open_age_is_a_bound_not_a_cadence():
    """Beyond at 4 weeks, but 3 weeks straddles: retraining every 3 weeks may already serve a
    stale model, so the answer is cannot tell, with the bound it supports."""
    mean = {1: 0.0, 2: 0.02, 3: 0.09, 4: 0.21}
    bands = {1: (0.0, 0.0), 2: (-0.05, 0.08), 3: (0.01, 0.18), 4: (0.12, 0.30)}
    c = recommend(mean, bands, S, known_to=0.04)
    assert (c.kind, c.weeks, c.age, c.bound_weeks) == (CANNOT_TELL, None, 3, 3)
    assert c.text.startswith("recommended retraining cadence: cannot tell: weekly recall at FPR 0.01 is known only "
                             "to ±0.04 (95% interval); ")
    assert ("credibly beyond the tolerance 0.1 at 4 weeks (0.210 [0.120, 0.300]), so retrain at least every 3 "
            "week(s), but it may be beyond already at 3 weeks (0.090 [0.010, 0.180])") in c.text


def test_every_age_credibly_within_says_no_credible_decay():
    mean = {1: 0.0, 2: 0.01, 3: 0.03, 4: 0.04}
    bands = {1: (0.0, 0.0), 2: (-0.04, 0.05), 3: (-0.02, 0.07), 4: (-0.01, 0.10)}   # 0.10 == tolerance: within
    c = recommend(mean, bands, S, known_to=0.03)
    assert (c.kind, c.weeks, c.age) == (NO_DECAY, None, 4)
    assert c.text.startswith("recommended retraining cadence: no credible decay within the 4-week horizon: ")
    assert "0.040 [-0.010, 0.100] at 4 weeks" in c.text


def test_bands_wider_than_the_tolerance_say_cannot_tell_and_how_precisely_recall_is_known():
    mean = {1: 0.0, 2: -0.05, 3: 0.15, 4: 0.08}
    bands = {1: (0.0, 0.0), 2: (-0.30, 0.20), 3: (-0.10, 0.40), 4: (-0.20, 0.35)}
    c = recommend(mean, bands, S, known_to=0.1049)
    assert c.kind == CANNOT_TELL and c.weeks is None and c.age == 4   # the widest band not within
    assert "the mean relative loss of recall at FPR 0.01 at 4 weeks is 0.080 [-0.200, 0.350] against" in c.text
    assert c.text.startswith("recommended retraining cadence: cannot tell: weekly recall at FPR 0.01 is known only "
                             "to ±0.10; ")
    assert c.text.endswith("use more cut-offs, longer test windows or a smoother metric (AUC or AP over a month)")
    # a point estimate beyond the tolerance is not a credible loss
    assert mean[3] > S.tolerance and recommend_cadence(mean, S.tolerance) == 3


def test_judgement_boundaries_and_pooled_bins():
    assert judge((0.10, 0.3), 0.10) == STRADDLES          # low end AT the tolerance: not credibly beyond
    assert judge((0.1001, 0.3), 0.10) == BEYOND
    assert judge((-0.2, 0.10), 0.10) == WITHIN
    assert judge((float("nan"), float("nan")), 0.10) == STRADDLES   # unscored: nothing is known
    monthly = StalenessSettings(horizon_weeks=12, age_bin_weeks=4, metric="auc", loss="absolute", tolerance=0.02)
    c = recommend({4: 0.0, 8: 0.015, 12: 0.04}, {4: (0.0, 0.0), 8: (0.005, 0.025), 12: (0.025, 0.055)}, monthly, 0.01)
    assert (c.kind, c.weeks) == (CANNOT_TELL, None) and c.bound_weeks == 8   # 8 weeks straddles
    c = recommend({4: 0.0, 8: 0.01, 12: 0.04}, {4: (0.0, 0.0), 8: (0.0, 0.02), 12: (0.025, 0.055)}, monthly, 0.01)
    assert (c.kind, c.weeks) == (RETRAIN, 8) and "the mean loss of AUC at 12 weeks" in c.text
    c = recommend({4: 0.0, 8: 0.015}, {4: (0.0, 0.0), 8: (-0.01, 0.04)}, monthly, 0.012)
    assert c.kind == CANNOT_TELL and "4-weekly AUC is known only to ±0.01" in c.text
    assert "smoother metric" not in c.text and "longer test windows" in c.text


def test_cadence_point_estimate_helpers_are_unchanged():
    table = pd.DataFrame({"cutoff": ["a"] * 4 + ["b"] * 4, "age_weeks": [1, 2, 3, 4] * 2,
                          "loss": [0, 0.05, 0.2, 0.3, 0, 0.15, 0.1, 0.4]})
    mean = expected_loss(table)
    assert mean == pytest.approx({1: 0.0, 2: 0.1, 3: 0.15, 4: 0.35})
    assert recommend_cadence(mean, 0.12) == 3
    assert recommend_cadence(mean, 0.5) is None


# ---- the three answers, from backtests ---------------------------------------------------------
def _world(n: int, seed: int, change_day: int | None = None, days: int = 84) -> pd.DataFrame:
    """Fraud driven by f0; from `change_day` 60% of it by f1 instead (which the model trained
    before cannot have learnt)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, days * 86400, n))
    x = rng.normal(size=(n, 3))
    z = x[:, 0].copy()
    if change_day is not None:
        moved = (t >= change_day * 86400) & (rng.random(n) < 0.6)
        z[moved] = x[moved, 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-(-5.5 + 2.5 * z)))).astype(int)
    ts = pd.Timestamp("2025-01-01") + pd.to_timedelta(t, unit="s")
    return pd.DataFrame({"ts": ts, "label": y, "f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2]})


# cut-offs on days 42-44; a change on day 58 lands in every cut-off's third week
WORLD = StalenessSettings(cutoffs=("2025-02-12", "2025-02-13", "2025-02-14"), horizon_weeks=5, train_days=28,
                          fpr=0.05, tolerance=0.15, num_boost_round=12, replicates=200, min_positives=10)
XGB = {"max_depth": 3, "nthread": 1}


def _consistent(r) -> None:
    """The recommendation says exactly what the bands say."""
    ages = sorted(r.mean_loss_interval)[1:]
    first_beyond = next((a for a in ages if r.mean_loss_interval[a][0] > r.settings.tolerance), None)
    if r.recommendation == RETRAIN:
        assert first_beyond is not None and r.cadence_weeks == first_beyond - r.settings.age_bin_weeks
        assert all(r.mean_loss_interval[a][1] <= r.settings.tolerance for a in ages if a < first_beyond)
    elif r.recommendation == NO_DECAY:
        assert all(r.mean_loss_interval[a][1] <= r.settings.tolerance for a in ages)
    else:
        assert any(r.mean_loss_interval[a][1] > r.settings.tolerance for a in ages if first_beyond is None or a < first_beyond)
        assert r.cadence_bound_weeks == (None if first_beyond is None else first_beyond - r.settings.age_bin_weeks)
    assert r.judgement == {a: judge(r.mean_loss_interval[a], r.settings.tolerance) for a in ages}
    t = r.table.dropna(subset=["loss"])
    assert (t["loss_low"] <= t["loss_high"]).all() and (t["recall_at_fpr_low"] <= t["recall_at_fpr_high"]).all()


def test_backtests_give_each_answer_where_it_must_come_out(tmp_path):
    decay = backtest(_world(200_000, 1, change_day=58), ["f0", "f1", "f2"], WORLD, XGB)
    stable = backtest(_world(200_000, 1), ["f0", "f1", "f2"], WORLD, XGB)
    small = backtest(_world(20_000, 1), ["f0", "f1", "f2"], WORLD, XGB)
    for r in (decay, stable, small):
        print(r.cadence_text())
        _consistent(r)
    assert (decay.recommendation, decay.cadence_weeks) == (RETRAIN, 2)
    assert decay.cadence_text().startswith("recommended retraining cadence: retrain at least every 2 week(s)")
    assert stable.recommendation == NO_DECAY and stable.cadence_weeks is None
    assert small.recommendation == CANNOT_TELL and "known only to ±" in small.cadence_text()
    assert small.known_to > stable.known_to
    # seeded: a second run gives the same bands and words
    again = backtest(_world(20_000, 1), ["f0", "f1", "f2"], WORLD, XGB)
    assert again.mean_loss_interval == small.mean_loss_interval and again.cadence_text() == small.cadence_text()
    png = plot_staleness(decay, tmp_path / "staleness.png")
    assert png.stat().st_size > 10_000


def test_backtest_refuses_settings_it_cannot_honour():
    table = _world(5_000, 2)
    with pytest.raises(RatchetError, match="metric must be one of"):
        backtest(table, ["f0"], StalenessSettings(metric="f1"))
    with pytest.raises(RatchetError, match="fewer than two age bins"):
        backtest(table, ["f0"], StalenessSettings(horizon_weeks=6, age_bin_weeks=4))


# ---- the CLI and the config ----------------------------------------------------------------------
def test_cli_json_keeps_its_keys_and_takes_the_new_options(tmp_path, capsys):
    from ratchet.app.cli import main

    data = tmp_path / "table.parquet"
    _world(30_000, 3).to_parquet(data)
    out = tmp_path / "out"
    config = tmp_path / "monitor.yaml"
    config.write_text("version: 1\nstaleness:\n  num_boost_round: 8\n  train_days: 28\n  min_positives: 5\n")
    code = main(["staleness", "--data", str(data), "--features", "f0,f1,f2", "--config", str(config), "--out", str(out),
                 "--format", "json", "--cutoffs", "2025-02-12,2025-02-19", "--horizon-weeks", "4",
                 "--age-bin-weeks", "2", "--metric", "auc", "--loss", "absolute", "--tolerance", "0.02",
                 "--replicates", "50"])
    assert code == 0
    printed = capsys.readouterr()
    s = json.loads(printed.out)                       # stdout is the JSON alone
    assert "[ratchet]" in printed.err
    old = {"step", "alert", "event", "features", "cadence_weeks", "cadence", "cutoffs", "mean_loss", "settings", "table"}
    new = {"recommendation", "mean_loss_interval", "judgement", "known_to", "cadence_bound_weeks"}
    assert old | new <= set(s)
    assert s["recommendation"] in (RETRAIN, NO_DECAY, CANNOT_TELL) and s["event"] == s["cadence"]
    assert s["settings"]["num_boost_round"] == 8       # the config's, not overridden
    assert s["settings"]["metric"] == "auc" and s["settings"]["age_bin_weeks"] == 2 and s["settings"]["replicates"] == 50
    assert s["cutoffs"] == ["2025-02-12", "2025-02-19"] and set(s["mean_loss"]) == {"2", "4"}
    assert set(s["mean_loss_interval"]) == {"2", "4"} and set(s["judgement"]) == {"4"}
    row = s["table"][0]
    assert {"cutoff", "age_weeks", "rows", "positives", "recall_at_fpr", "auc", "loss", "auc_low", "auc_high",
            "loss_low", "loss_high"} <= set(row)
    assert json.loads((out / "staleness.json").read_text())["cadence"] == s["cadence"]
    assert (out / "staleness.png").stat().st_size > 10_000


def test_cli_help_names_the_new_options(capsys):
    from ratchet.app.cli import main

    with pytest.raises(SystemExit):
        main(["staleness", "--help"])
    text = capsys.readouterr().out
    for flag in ("--n-cutoffs", "--age-bin-weeks", "--metric", "--confidence", "--replicates", "--cutoffs"):
        assert flag in text


def test_config_takes_metric_bins_confidence_and_replicates():
    cfg = monitor_config_from_text("staleness:\n  metric: average_precision\n  age_bin_weeks: 4\n"
                                   "  confidence: 0.9\n  replicates: 100\n")
    s = cfg.staleness
    assert (s.metric, s.age_bin_weeks, s.confidence, s.replicates) == ("average_precision", 4, 0.9, 100)
    with pytest.raises(SpecError, match=r"m.yaml:2: staleness.metric"):
        monitor_config_from_text("staleness:\n  metric: precision\n", "m.yaml")


# ---- the synthetic world ------------------------------------------------------------------------
@pytest.mark.slow
def test_synthetic_stable_world_claims_no_cadence_and_the_plot_draws_the_bands(tmp_path):
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.monitor.features import point_in_time_features

    settings = StalenessSettings(cutoffs=("2025-03-24", "2025-03-31", "2025-04-07"), horizon_weeks=6, train_days=42,
                                 fpr=0.01, tolerance=0.15, num_boost_round=40, replicates=200)
    raw = generate(SynthConfig(rows=180_000, seed=5, days=161, drift_speed=0.0, new_pattern_day=-1, fraud_scale=3.0,
                               new_country=None, seasonality=0.0))
    stable = backtest(point_in_time_features(raw, FEATURES), FEATURES, settings, {"max_depth": 4, "eta": 0.2})
    print(stable.cadence_text())
    _consistent(stable)
    assert stable.recommendation != RETRAIN
    assert len(stable.table) == 3 * 6 and stable.table["auc"].between(0.5, 1).all()
    png = plot_staleness(stable, tmp_path / "staleness.png")
    assert png.stat().st_size > 10_000
