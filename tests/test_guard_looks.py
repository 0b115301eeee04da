"""Guards re-checked every pass: alpha spending over the looks of a step keeps false rollbacks
of a healthy canary near the stated level, and a real breach is still caught."""

from __future__ import annotations

import numpy as np
import pytest

from ratchet.rollout.guards import evidence_look, judge, sequential_confidence
from ratchet.rollout.plan import BlockRateGuard, Guards
from ratchet.rollout.state import Observations, RoleStats, SliceCounts

GUARDS = Guards(block_rate=BlockRateGuard(per="country", relative=0.10, absolute=0.0005, min_support=200),
                max_error_rate=None)
COUNTRIES = ("FR", "DE", "BR")


def test_the_spent_levels_add_up_to_the_stated_one() -> None:
    alphas = [1 - sequential_confidence(0.95, k) for k in range(1, 20_000)]
    assert alphas[0] == pytest.approx(0.05 * 6 / np.pi ** 2)
    assert sum(alphas) == pytest.approx(0.05, rel=1e-3) and sum(alphas) < 0.05
    assert all(a >= b for a, b in zip(alphas, alphas[1:])) and alphas[100] < alphas[10] < alphas[1]


def _obs(base: np.ndarray, base_n: np.ndarray, cand: np.ndarray, cand_n: np.ndarray) -> Observations:
    rows = tuple(SliceCounts(c, int(bn), int(b), int(n), int(k))
                 for c, b, bn, k, n in zip(COUNTRIES, base, base_n, cand, cand_n))
    return Observations(roles={"canary": RoleStats(int(cand_n.sum()))}, block_counts={"canary": rows})


def _runs(rate_canary: float, looks: int, sequential: bool, runs: int = 200, seed: int = 0) -> float:
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
            if judge(_obs(base, n, cand, n), "canary", GUARDS, look=None if sequential else 1).breached:
                breached += 1
                break
    return breached / runs


def test_a_healthy_canary_checked_30_times_is_rarely_rolled_back() -> None:
    fixed = _runs(0.05, looks=30, sequential=False)
    spent = _runs(0.05, looks=30, sequential=True)
    print(f"\nhealthy canary, 30 looks, 3 countries: false rollbacks {fixed:.1%} at a fixed 95% level, "
          f"{spent:.1%} with alpha spending (and Bonferroni over countries in both)")
    assert spent <= 0.05
    assert fixed > spent


def test_a_real_breach_is_still_caught_within_a_few_looks() -> None:
    assert _runs(0.10, looks=5, sequential=True, runs=100) == 1.0   # block rate doubled everywhere


def test_looks_are_counted_by_doublings_of_the_evidence() -> None:
    assert [evidence_look(n, 500) for n in (0, 500, 999, 1000, 1999, 2000, 64_000)] == [1, 1, 1, 2, 2, 3, 8]
    n = np.full(3, 5000)   # 15,000 canary decisions = 75 x min_support 200: the 7th look
    v = judge(_obs(np.full(3, 250), n, np.full(3, 250), n), "canary", GUARDS)
    assert next(c for c in v.checks if c.name == "block_rate[FR]").evidence["look"] == 7


def test_the_look_and_its_level_are_in_the_evidence() -> None:
    n = np.full(3, 5000)
    v = judge(_obs(np.full(3, 250), n, np.array([250, 250, 600]), n), "canary", GUARDS, look=7)
    assert v.breached and "BR" in v.headline
    ev = next(c for c in v.checks if c.name == "block_rate[BR]").evidence
    # look 7's share of the 5%, split over the three countries judged
    assert ev["look"] == 7 and ev["confidence"] == pytest.approx(1 - (1 - sequential_confidence(0.95, 7)) / 3, abs=1e-6)
