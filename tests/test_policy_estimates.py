"""The release's counterfactual estimates on a censored test window: both policies' naive
and IPW recall / FPR / block rate, in the verdict's Markdown, counterfactual.json and the
headline metrics; nothing changes for data without logged decisions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ratchet.app.steps.evaluate import evaluate_candidate
from ratchet.contracts import load_contract
from ratchet.files import project_file

CONTRACT = project_file("contracts/fraud.yaml")


def world(n: int = 80_000, seed: int = 4, share: float = 0.05):
    """Every payment with its truth; production blocks score >= 0.5 and explores `share` of its
    blocks; the test window holds the payments it let through, with their propensity."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.03).astype(int)
    base = 1 / (1 + np.exp(-(3.0 * y + rng.normal(size=n) - 3.0)))
    cand = 1 / (1 + np.exp(-(3.4 * y + rng.normal(size=n) - 3.2)))
    blocked = base >= 0.5
    explored = blocked & (rng.random(n) < share)
    seen = ~blocked | explored
    full = pd.DataFrame({"label": y, "baseline_score": base, "candidate_score": cand, "baseline_threshold": 0.5,
                         "candidate_threshold": 0.5, "country": rng.choice(list("ABCD"), n).astype(object),
                         "merchant_category": rng.choice(["food", "travel"], n).astype(object),
                         "channel": "web", "merchant_id": rng.integers(0, 50, n).astype(str),
                         "amount": rng.exponential(60, n),
                         "propensity": np.where(explored, share, 1.0)})
    return full, full[seen].reset_index(drop=True)


def truth(full: pd.DataFrame, score: str) -> dict[str, float]:
    b = full[score].to_numpy() >= 0.5
    y = full["label"].to_numpy() == 1
    return {"recall": b[y].mean(), "fpr": b[~y].mean(), "block_rate": b.mean()}


def test_ipw_estimates_recover_both_policies_where_the_naive_ones_are_far_off() -> None:
    full, logged = world()
    ev = evaluate_candidate(logged, object(), object(), load_contract(CONTRACT), scored=logged)
    est = ev.estimates
    assert est is not None and est["rows"] == len(logged) and est["explored"] == int((logged["propensity"] < 1).sum())
    for name, score in (("production", "baseline_score"), ("candidate", "candidate_score")):
        true = truth(full, score)
        for metric in ("recall", "fpr", "block_rate"):
            e = est[name]["metrics"][metric]
            value, lo, hi = (e["snipw"], e["snipw_low"], e["snipw_high"]) if metric == "block_rate" else \
                (e["ipw"], e["low"], e["high"])
            half = (hi - lo) / 2
            assert abs(value - true[metric]) < max(3 * half, 0.002), (name, metric, value, true[metric], lo, hi)
    # production's naive recall sees only the frauds it let through: a fraction of the truth
    naive = est["production"]["metrics"]["recall"]["naive"]
    assert naive < 0.25 * truth(full, "baseline_score")["recall"]
    m = ev.metrics
    assert m["baseline_naive_recall"] == pytest.approx(naive) and m["ipw_recall"] == pytest.approx(
        est["candidate"]["metrics"]["recall"]["ipw"])
    files = ev.renderings()
    assert "Counterfactual estimates (censored test window)" in files["verdict.md"]
    assert "| production | recall |" in files["verdict.md"]
    assert json.loads(files["counterfactual.json"])["candidate"]["metrics"]["fpr"]["labelled"] > 0


def test_data_without_logged_decisions_gets_no_estimates() -> None:
    _, logged = world(n=20_000)
    ev = evaluate_candidate(logged, object(), object(), load_contract(CONTRACT),
                            scored=logged.drop(columns=["propensity"]))
    assert ev.estimates is None and "counterfactual.json" not in ev.renderings()
    assert not any(k.startswith(("ipw_", "naive_", "baseline_ipw_")) for k in ev.metrics)


def test_on_censored_data_the_candidate_is_matched_to_productions_block_rate_on_every_payment() -> None:
    from ratchet.contracts import evaluate_contract

    full, logged = world(n=120_000, seed=6)
    v = evaluate_contract(load_contract(CONTRACT), logged.drop(columns=["candidate_threshold"]))
    t = v.threshold_values["candidate"]
    assert "IPW block rate" in v.thresholds["candidate"]
    true_rate = truth(full, "baseline_score")["block_rate"]
    cand_rate = float((full["candidate_score"].to_numpy() >= t).mean())
    assert abs(cand_rate - true_rate) < 0.1 * true_rate, (cand_rate, true_rate)
    # matched on the let-through rows as they are, it would block almost nothing
    naive = evaluate_contract(load_contract(CONTRACT), logged.drop(columns=["candidate_threshold", "propensity"]))
    assert float((full["candidate_score"].to_numpy() >= naive.threshold_values["candidate"]).mean()) < 0.5 * true_rate


def test_the_weighted_threshold_rule_is_the_count_rule_with_equal_weights() -> None:
    from ratchet.evaluate.metrics import threshold_for_block_rate

    s = np.random.default_rng(1).random(10_001)
    for rate in (0.0, 0.001, 0.0123, 0.3, 1.0):
        assert threshold_for_block_rate(s, rate, np.full(len(s), 2.5)) == threshold_for_block_rate(s, rate), rate
    # a row weighing 4 counts as 4 rows: 70% of 8 is nearest the top three rows' 6
    s2 = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert threshold_for_block_rate(s2, 0.7, np.array([1.0, 1.0, 4.0, 1.0, 1.0])) == 0.7
    assert threshold_for_block_rate(s2, 0.7) == 0.6


def test_propensities_that_weigh_the_matched_threshold_are_checked() -> None:
    from ratchet.contracts import ScoresError, evaluate_contract

    _, logged = world(n=20_000)
    bad = logged.drop(columns=["candidate_threshold"]).assign(propensity=lambda d: d["propensity"].where(d.index != 5, 0.0))
    with pytest.raises(ScoresError, match=r"matched to the baseline's block rate.*\(0, 1\].*0\.0 \(1 rows\)"):
        evaluate_contract(load_contract(CONTRACT), bad)
