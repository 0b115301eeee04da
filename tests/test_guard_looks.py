"""Guards re-checked every pass: confidence sequences keep false rollbacks of a healthy
canary within the stated level over any number of looks, Holm keeps them so over many
countries, and a real breach is still caught."""

from __future__ import annotations

import numpy as np
import pytest

from ratchet.evaluate.stats import cs_multiplier, holm
from ratchet.rollout.guards import judge
from ratchet.rollout.plan import BlockRateGuard, Guards
from ratchet.rollout.state import Observations, RoleStats, SliceCounts

GUARDS = Guards(block_rate=BlockRateGuard(per="country", relative=0.10, absolute=0.0005, min_support=200),
                max_error_rate=None)
COUNTRIES = ("FR", "DE", "BR")


def test_the_confidence_sequence_is_wider_than_a_fixed_interval_and_grows_slowly() -> None:
    m = cs_multiplier(np.array([100, 800, 10_000, 1_000_000]), 0.05, 800)
    assert (m > 1.96).all()
    assert m[1] < m[0] and m[3] < 2.5 * m[1]   # tightest near the tuning point, log-like growth after


def test_holm_rejects_step_down_and_ignores_masked_entries() -> None:
    p = np.array([0.001, 0.02, 0.03, 0.9, 0.0001])
    assert holm(p, 0.05).tolist() == [True, False, False, False, True]
    assert holm(p, 0.05, mask=np.array([True, True, True, True, False])).tolist() == [True, False, False, False, False]
    assert holm(np.array([0.01, 0.02]), 0.05).tolist() == [True, True]


def _obs(base: np.ndarray, base_n: np.ndarray, cand: np.ndarray, cand_n: np.ndarray) -> Observations:
    rows = tuple(SliceCounts(c, int(bn), int(b), int(n), int(k))
                 for c, b, bn, k, n in zip(COUNTRIES, base, base_n, cand, cand_n))
    return Observations(roles={"canary": RoleStats(int(cand_n.sum()))}, block_counts={"canary": rows})


def _runs(rate_canary: float, looks: int, runs: int = 200, seed: int = 0) -> float:
    """Share of simulated steps in which some look declared a breach."""
    rng = np.random.default_rng(seed)
    per_look = 400  # decisions per country and role between two passes
    breached = 0
    for _ in range(runs):
        base = np.zeros(3, int)
        cand = np.zeros(3, int)
        for k in range(1, looks + 1):
            base += rng.binomial(per_look, 0.05, 3)
            cand += rng.binomial(per_look, rate_canary, 3)
            n = np.full(3, per_look * k)
            if judge(_obs(base, n, cand, n), "canary", GUARDS).breached:
                breached += 1
                break
    return breached / runs


def test_a_healthy_canary_checked_30_times_is_rarely_rolled_back() -> None:
    false = _runs(0.05, looks=30)
    print(f"\nhealthy canary, 30 looks, 3 countries: false rollbacks {false:.1%} (confidence sequences, Holm)")
    assert false <= 0.02


def test_a_real_breach_is_still_caught_within_a_few_looks() -> None:
    assert _runs(0.10, looks=5, runs=100) == 1.0   # block rate doubled everywhere


def test_the_method_and_the_numbers_are_in_the_evidence() -> None:
    n = np.full(3, 5000)
    v = judge(_obs(np.full(3, 250), n, np.array([250, 250, 600]), n), "canary", GUARDS)
    assert v.breached and "BR" in v.headline
    ev = next(c for c in v.checks if c.name == "block_rate[BR]").evidence
    assert ev["method"] == "confidence sequence, Holm over 3" and ev["interval"][0] > ev["allowance"]
    fr = next(c for c in v.checks if c.name == "block_rate[FR]")
    assert fr.status in ("pass", "inconclusive") and fr.evidence["p_fail"] == pytest.approx(1.0)


def test_a_paired_shadow_is_judged_on_its_discordant_units() -> None:
    # 20,000 shared requests per country; the shadow blocks 40 others and spares 40: same rate, tight interval
    same = tuple(SliceCounts(c, 20_000, 400, 20_000, 400, pairs=20_000, only_candidate=40, only_base=40)
                 for c in COUNTRIES)
    v = judge(Observations(roles={"shadow": RoleStats(60_000)}, block_counts={"shadow": same}), "shadow", GUARDS)
    assert {c.status for c in v.checks} == {"pass"}
    unpaired = tuple(SliceCounts(c, 20_000, 400, 20_000, 400) for c in COUNTRIES)
    v2 = judge(Observations(roles={"canary": RoleStats(60_000)}, block_counts={"canary": unpaired}), "canary", GUARDS)
    assert {c.status for c in v2.checks} == {"inconclusive"}
