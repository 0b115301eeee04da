"""The verdict page's chart: a forest plot of differences against the allowed band, checked on
the rows it draws (forest_rows), not on pixels."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ratchet.contracts import contract_from_text, evaluate_contract
from ratchet.contracts.evaluate import _allowance
from ratchet.evaluate.reports import allowed_band, forest_rows, worst_slices_plot

CONTRACT = """\
version: 1
slices:
  country: {column: country}
clauses:
  - name: country_block_rate_stable
    kind: rate_stability
    metric: block_rate
    per: country
    tolerance: {relative: 0.10, absolute: 0.0005}
    min_support: 500
  - name: country_approval_rate
    kind: no_regression
    metric: approval_rate
    per: country
    tolerance: {absolute: 0.002}
    severity: warn
  - name: recall_holds
    kind: must_improve
    metric: recall
    margin: {absolute: 0.0}
  - name: fpr_no_worse
    kind: no_regression
    metric: fpr
    tolerance: {absolute: 0.0005}
"""


def doubled_block_rate(n: int = 200_000, seed: int = 3) -> pd.DataFrame:
    """Eight countries at a 0.7% block rate; in C the candidate blocks 1.4% (nested: it blocks
    every row production blocks, and as many more)."""
    rng = np.random.default_rng(seed)
    country = rng.choice(list("ABCDEFGH"), n).astype(object)
    u = rng.random(n)
    base = u < 0.007
    cand = u < np.where(country == "C", 0.014, 0.007)
    y = ((rng.random(n) < 0.02) | (base & (rng.random(n) < 0.5))).astype(int)
    return pd.DataFrame({"country": country, "label": y, "baseline_score": base.astype(float),
                         "candidate_score": cand.astype(float), "baseline_threshold": 0.5,
                         "candidate_threshold": 0.5})


@pytest.fixture(scope="module")
def judged():
    contract = contract_from_text(CONTRACT, "chart.yaml")
    return contract, evaluate_contract(contract, doubled_block_rate())


def test_a_doubled_small_block_rate_lies_outside_its_band(judged):
    _, verdict = judged
    rows = forest_rows(verdict)
    top = rows[0]
    assert (top.clause, top.slice, top.status) == ("country_block_rate_stable", "country=C", "fail")
    assert top.difference == pytest.approx(0.007, abs=0.001)          # 0.7% -> 1.4%: +0.7 points
    base_c = next(r.baseline for r in verdict.results if r.key == "country_block_rate_stable[country=C]")
    tol = max(0.10 * base_c, 0.0005)                                  # 10% relative of ~0.7%: ~0.07 points
    assert top.band == pytest.approx((-tol, tol)) and tol == pytest.approx(0.0007, abs=0.0001)
    assert top.interval[0] > top.band[1] and top.beyond and top.margin < 0
    # the other countries stay inside theirs; the warning on approvals in C follows the blocking failure
    others = [r for r in rows if r.clause == "country_block_rate_stable" and r.slice != "country=C"]
    assert others and not any(r.beyond for r in others) and all(r.status != "fail" for r in others)
    approval = next(r for r in rows if r.clause == "country_approval_rate" and r.slice == "country=C")
    assert approval.status == "fail" and approval.severity == "warn" and approval.beyond
    assert approval.band[0] == pytest.approx(-0.002) and approval.band[1] == math.inf


def test_rows_come_worst_first_and_the_band_is_the_one_judged(judged):
    contract, verdict = judged
    rows = forest_rows(verdict, n=50)
    rank = {"fail": 0, "inconclusive": 1, "pass": 2}
    keys = [(rank[r.status], r.severity != "block", r.margin) for r in rows]
    assert keys == sorted(keys)
    assert forest_rows(verdict, n=3) == rows[:3]
    assert {r.clause for r in rows} == {c.name for c in contract.clauses}
    clauses = {c.name: c for c in contract.clauses}
    for r in verdict.results:  # the band recovered from `excess` is the engine's own allowance
        if r.difference is None or r.excess is None:
            continue
        lo, hi = _allowance(clauses[r.name], np.array([r.baseline]), 1)
        assert allowed_band(r) == pytest.approx((lo[0], hi[0]), abs=1e-12), r.key
    must = next(r for r in rows if r.clause == "recall_holds")
    assert must.band == (pytest.approx(0.0, abs=1e-12), math.inf)
    fpr = next(r for r in rows if r.clause == "fpr_no_worse")
    assert fpr.band[0] == -math.inf and fpr.band[1] == pytest.approx(0.0005)


def test_the_chart_is_written_and_deterministic(judged, tmp_path):
    _, verdict = judged
    a = worst_slices_plot(verdict, tmp_path / "a.png")
    b = worst_slices_plot(verdict, tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert a.read_bytes() == b.read_bytes()
