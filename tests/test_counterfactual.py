"""Censoring (ratchet.data.censoring) and counterfactual estimates (ratchet.evaluate.counterfactual)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ratchet.data import columns as C
from ratchet.data.censoring import DECISION, PROPENSITY, TRUE_LABEL, apply_logged, censor
from ratchet.data.synth import SynthConfig, generate
from ratchet.errors import RatchetError
from ratchet.evaluate.counterfactual import estimate, estimate_frame
from ratchet.evaluate.stats import z_two_sided
from ratchet.exploration import ExplorationPolicy

NAN = np.nan


@pytest.fixture(scope="module")
def payments() -> pd.DataFrame:
    return generate(SynthConfig(rows=6000, seed=3, days=10, new_country=None, fraud_scale=3.0))


def _score(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """A noisy score that knows the truth: frauds score higher on average."""
    rng = np.random.default_rng(seed)
    y = frame[C.IS_FRAUD].to_numpy()
    return np.clip(rng.normal(0.2 + 0.5 * y, 0.2), 0, 1)


def test_ipw_by_hand():
    # rows: model allow fraud, model allow genuine, explored fraud (p 0.25), explored genuine (p 0.5),
    # kept block (1 - 0.25), model allow genuine; the target blocks all but the first two
    label = np.array([1, 0, 1, 0, NAN, 0])
    prop = np.array([1.0, 1.0, 0.25, 0.5, 0.75, 1.0])
    decision = np.array(["allow", "allow", "allow", "allow", "block", "allow"])
    target = np.array([False, False, True, True, True, True])
    r = estimate(label, prop, decision, target)
    rec, fpr, br = r.metrics["recall"], r.metrics["fpr"], r.metrics["block_rate"]
    assert rec.naive == pytest.approx(1 / 2)
    assert rec.ipw == pytest.approx(4 / (1 + 4)) == rec.snipw
    assert fpr.naive == pytest.approx(2 / 3)
    assert fpr.ipw == pytest.approx((2 + 1) / (1 + 2 + 1))
    assert br.naive == pytest.approx(3 / 5)
    assert br.ipw == pytest.approx((4 + 2 + 1) / 6)
    assert br.snipw == pytest.approx((4 + 2 + 1) / (1 + 1 + 4 + 2 + 1))
    assert r.observed_block_rate == pytest.approx(4 / 6)
    # only the explored fraud (pi 0.25, w 4) carries variance: (1 - pi) w^2 ((a - R c) / C)^2
    var = 0.75 * 16 * ((1 - 0.8) / 5) ** 2
    assert rec.low == pytest.approx(0.8 - z_two_sided(0.95) * var ** 0.5)
    assert rec.high == 1.0
    assert rec.ess == pytest.approx(25 / 17)
    assert (r.rows, r.labelled, r.explored, r.unexplorable_blocks) == (6, 5, 2, 0)


def test_censor_nulls_exactly_the_blocked(payments):
    score = _score(payments)
    out = censor(payments, score, 0.6, ExplorationPolicy(share=0.2, seed=1))
    blocked = out[DECISION].to_numpy() == "block"
    would_block = score >= 0.6
    assert blocked.any() and (would_block & ~blocked).any(), "needs both kept blocks and explored allows"
    assert (blocked <= would_block).all()
    assert out[C.IS_FRAUD].isna().to_numpy().tolist() == blocked.tolist()
    assert out[C.LABEL_AVAILABLE_AT].isna().to_numpy().tolist() == blocked.tolist()
    allowed = ~blocked
    assert (out.loc[allowed, C.IS_FRAUD].astype(int).to_numpy() == payments.loc[allowed, C.IS_FRAUD].to_numpy()).all()
    assert (out.loc[allowed, C.LABEL_AVAILABLE_AT] == payments.loc[allowed, C.LABEL_AVAILABLE_AT]).all()
    assert (out[TRUE_LABEL].to_numpy() == payments[C.IS_FRAUD].to_numpy()).all()
    prop = out[PROPENSITY].to_numpy()
    assert set(np.round(prop[~would_block], 9)) == {1.0}
    assert set(np.round(prop[would_block & allowed], 9)) == {0.2}
    assert set(np.round(prop[blocked], 9)) == {0.8}
    assert payments[C.IS_FRAUD].notna().all(), "censor() must not change its input"


def test_no_policy_explores_nothing(payments):
    score = _score(payments)
    out = censor(payments, score, 0.6, None)
    assert (out[DECISION] == np.where(score >= 0.6, "block", "allow")).all()
    assert (out[PROPENSITY] == 1.0).all()
    r = estimate_frame(out, score >= 0.6)
    assert r.unexplorable_blocks == int((score >= 0.6).sum()) and "never be explored" in r.positivity



def test_per_row_thresholds_block_each_row_at_its_own(payments):
    score = _score(payments)
    same = censor(payments, score, np.full(len(payments), 0.6), ExplorationPolicy(share=0.2, seed=1))
    pd.testing.assert_frame_equal(same, censor(payments, score, 0.6, ExplorationPolicy(share=0.2, seed=1)))
    per_row = np.where(np.arange(len(payments)) % 2 == 0, 0.3, 0.9)   # per-merchant style thresholds
    out = censor(payments, score, per_row, None)
    assert (out[DECISION] == np.where(score >= per_row, "block", "allow")).all()

def test_opted_out_merchants_are_never_explored(payments):
    score = _score(payments)
    cat = "electronics"
    out = censor(payments, score, 0.6, ExplorationPolicy(share=0.5, seed=2, opt_out_categories=frozenset({cat})))
    mine = (payments[C.MERCHANT_CATEGORY] == cat).to_numpy() & (score >= 0.6)
    others = (payments[C.MERCHANT_CATEGORY] != cat).to_numpy() & (score >= 0.6)
    assert mine.sum() > 5
    assert (out.loc[mine, DECISION] == "block").all() and (out.loc[mine, PROPENSITY] == 1.0).all()
    assert (out.loc[others, DECISION] == "allow").any(), "other merchants must still be explored"
    r = estimate_frame(out, score >= 0.6)
    assert r.unexplorable_blocks == int(mine.sum()) == r.unexplorable_target_blocks


def test_censor_follows_the_loss_cap_in_time_order(payments):
    score = _score(payments)
    shuffled = payments.sample(frac=1.0, random_state=4)
    policy = ExplorationPolicy(share=0.5, seed=3, max_expected_loss_per_day=300.0)
    a = censor(payments, score, 0.6, policy)
    b = censor(shuffled, score[shuffled.index.to_numpy()], 0.6, policy).loc[payments.index]
    assert (a[DECISION] == b[DECISION]).all() and (a[PROPENSITY] == b[PROPENSITY]).all()
    capped = (a[DECISION] == "block") & (a[PROPENSITY] == 1.0)
    assert capped.any(), "a 300/day cap must stop exploration on some days"


def _population(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int8)
    frame = pd.DataFrame({C.TRANSACTION_ID: np.arange(n), C.AMOUNT: 50.0, C.IS_FRAUD: y,
                          C.TS: pd.Timestamp("2025-01-01") + pd.to_timedelta(np.arange(n), unit="s")})
    logging = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    candidate = np.clip(0.5 * logging + 0.5 * rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    return frame, logging, candidate


def test_ipw_unbiased_where_naive_is_not():
    frame, logging, candidate = _population(1500, seed=5)
    target = candidate >= 0.5
    y = frame[C.IS_FRAUD].to_numpy().astype(bool)
    true = {"recall": target[y].mean(), "fpr": target[~y].mean()}
    ipw, naive, covered = {k: [] for k in true}, {k: [] for k in true}, {k: 0 for k in true}
    draws = 200
    for i in range(draws):
        r = estimate_frame(censor(frame, logging, 0.5, ExplorationPolicy(share=0.3, seed=i)), target)
        for k in true:
            ipw[k].append(r.metrics[k].ipw)
            naive[k].append(r.metrics[k].naive)
            covered[k] += r.metrics[k].covers(true[k])
    for k, t in true.items():
        se = np.std(ipw[k]) / np.sqrt(draws)
        assert abs(np.mean(ipw[k]) - t) < 4 * se + 1e-3, (k, np.mean(ipw[k]), t)
        assert abs(np.mean(naive[k]) - t) > 10 * se, (k, np.mean(naive[k]), t)
        assert covered[k] >= 0.85 * draws, (k, covered[k])


def test_deterministic_per_seed(payments):
    score = _score(payments)
    policy = ExplorationPolicy(share=0.2, seed=7)
    a, b = censor(payments, score, 0.6, policy), censor(payments, score, 0.6, policy)
    pd.testing.assert_frame_equal(a, b)
    other = censor(payments, score, 0.6, ExplorationPolicy(share=0.2, seed=8))
    assert (a[DECISION] != other[DECISION]).any()
    target = _score(payments, seed=1) >= 0.55
    one = estimate_frame(a, target, method="bootstrap", seed=1).to_dict()
    assert one == estimate_frame(a, target, method="bootstrap", seed=1).to_dict()
    two = estimate_frame(a, target, method="bootstrap", seed=2).metrics["recall"]
    assert (two.low, two.high) != (one["metrics"]["recall"]["low"], one["metrics"]["recall"]["high"])
    assert one["metrics"]["recall"]["low"] <= one["metrics"]["recall"]["ipw"] <= one["metrics"]["recall"]["high"]


def test_errors_name_the_problem():
    label, prop = np.array([1.0, 0.0]), np.array([1.0, 0.5])
    with pytest.raises(RatchetError, match="blocked payment.*carry a label"):
        estimate(label, prop, np.array(["allow", "block"]), np.array([True, True]))
    with pytest.raises(RatchetError, match="propensity must be in"):
        estimate(label, np.array([1.0, 0.0]), np.array(["allow", "allow"]), np.array([True, True]))
    with pytest.raises(RatchetError, match="matured"):
        estimate(np.array([1.0, NAN]), prop, np.array(["allow", "allow"]), np.array([True, True]))
    with pytest.raises(RatchetError, match="not booleans"):
        estimate(label, prop, np.array([True, True]), np.array([True, True]))
    with pytest.raises(RatchetError, match="3 scores for 2 payments"):
        frame, _, _ = _population(2, seed=0)
        censor(frame, np.zeros(3), 0.5, None)


def test_apply_logged_censors_only_the_decided_payments(payments):
    later = payments[payments[C.TS] >= payments[C.TS].quantile(0.5)]
    logged = censor(later, _score(later), 0.6, ExplorationPolicy(share=0.2, seed=1)).sample(frac=1, random_state=0)
    world = apply_logged(payments, logged)
    assert world[C.TRANSACTION_ID].tolist() == payments[C.TRANSACTION_ID].tolist(), "rows stay in raw's order"
    decided = world[C.TRANSACTION_ID].isin(later[C.TRANSACTION_ID]).to_numpy()
    by_id = logged.set_index(C.TRANSACTION_ID).loc[world.loc[decided, C.TRANSACTION_ID]]
    assert (world.loc[decided, DECISION].to_numpy() == by_id[DECISION].to_numpy()).all()
    assert np.allclose(world.loc[decided, PROPENSITY].to_numpy(), by_id[PROPENSITY].to_numpy())
    blocked = world[DECISION].to_numpy() == "block"
    assert blocked.any() and not blocked[~decided].any()
    assert world[C.IS_FRAUD].isna().to_numpy().tolist() == blocked.tolist()
    assert world[C.LABEL_AVAILABLE_AT].isna().to_numpy().tolist() == blocked.tolist()
    assert (world.loc[~decided, PROPENSITY] == 1.0).all() and (world.loc[~decided, DECISION] == "allow").all()
    assert (world[TRUE_LABEL].to_numpy() == payments[C.IS_FRAUD].to_numpy()).all()
    kept = ~blocked
    assert (world.loc[kept, C.IS_FRAUD].astype(int).to_numpy() == payments.loc[kept, C.IS_FRAUD].to_numpy()).all()
    stranger = logged.head(1).assign(**{C.TRANSACTION_ID: -1})
    with pytest.raises(RatchetError, match="1 logged payments are not in the raw payments"):
        apply_logged(payments, pd.concat([logged, stranger]))
