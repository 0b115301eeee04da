"""bench/gate_power.py's pieces at tiny sizes: the simulated world is what it says, the harms
have the stated size, and every section runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr


BENCH = Path(__file__).resolve().parents[1] / "bench" / "gate_power.py"


@pytest.fixture(scope="module")
def gp():  # noqa: ANN201 - the bench module
    spec = importlib.util.spec_from_file_location("gate_power", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gate_power"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("gate_power", None)


@pytest.fixture(scope="module")
def world(gp):  # noqa: ANN001, ANN201
    return gp.make_world(calibration_rows=200_000)


def test_world_blocks_about_one_percent_and_a_harm_has_its_stated_size(gp, world) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    rows = gp.draw_rows(world, 200_000, rng)
    d, _ = gp._deterministic(world, rows)
    assert ndtr(d - world.t0).mean() == pytest.approx(gp.BLOCK_RATE, rel=0.1)
    for harm, (mult, _, _) in gp.HARMS.items():
        m = gp.harm_mask(rows, harm)
        shift = gp.lift_for(d[m], world.t0, mult)
        assert ndtr(d[m] + shift - world.t0).mean() == pytest.approx(mult * ndtr(d[m] - world.t0).mean(), rel=1e-6)


def test_contracts_the_bench_judges(gp) -> None:  # noqa: ANN001
    big = gp.big_contract()
    names = {c.name: c for c in big.clauses}
    assert names["merchant_1000_block_rate_stable"].blocking and names["country_category_approval_rate"].blocking
    assert big.slices["top_merchant_1000"].top == 1000
    full = gp.fraud_contract()
    for _, target, _ in gp.HARMS.values():
        assert len(gp.harm_clause(full, target).clauses) == 1
    assert gp.review_needs(full) == (200, 200, 0)


def test_looks_start_where_the_review_can_judge(gp) -> None:  # noqa: ANN001
    y = np.zeros(10_000, np.int8)
    y[::50] = 1                                   # 200 frauds by row 9,951
    sizes = gp.looks_for(y, (100, 200, 0), 5)
    assert sizes[0] == 4951 and sizes[-1] == 10_000 and sizes == sorted(sizes) and len(sizes) == 5
    assert gp.looks_for(y, (500, 0, 0), 5) == []


def test_every_section_runs_at_tiny_sizes(gp, world, capsys) -> None:  # noqa: ANN001
    aa = gp.bench_aa(world, trials=1, rows=30_000, rho=0.9, seed=1)
    assert aa["trials"] == 1 and aa["judged"][1] > 50
    sh = gp.bench_shadow(world, trials=1, rows=25_000, looks=2, rho=0.9, seed=2)
    assert set(sh["fails"]) == {True, False}
    pw = gp.bench_power(world, trials=1, sizes=[25_000], looks=2, rho=0.9, seed=3, harms=["merchant_3x"],
                        shadow_max=25_000)
    assert pw[("merchant_3x", 25_000)]["support"] > 500
    gd = gp.bench_guards(world, trials=1, rows=4_000, looks=2, rho=0.9, seed=4)
    assert {"canary", "shadow"} <= set(gd)
    out = capsys.readouterr().out
    assert "[aa]" in out and "[shadow]" in out and "[power]" in out and "[guards]" in out
