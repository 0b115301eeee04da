"""The exploration policy: propensities, the deterministic draw, opt-out, the loss cap, its file."""

from __future__ import annotations

import pytest

from ratchet.errors import SpecError
from ratchet.exploration import ExplorationPolicy, Explorer, draw, exploration_policy_from_text


def test_allowed_payments_are_never_touched_and_blocks_are_explored_at_the_share() -> None:
    ex = Explorer(ExplorationPolicy(share=0.05, seed=3))
    assert ex.decide(0.2, 0.5, 10.0, "k", 0.0) == ("allow", 1.0, False, 0.0)
    ds = [ex.decide(0.9, 0.5, 10.0, f"tx-{i}", 0.0) for i in range(20_000)]
    explored = [d for d in ds if d.explored]
    assert 0.045 < len(explored) / len(ds) < 0.055
    assert all(d.decision == "allow" and d.propensity == 0.05 for d in explored)
    assert all(d.decision == "block" and d.propensity == pytest.approx(0.95) for d in ds if not d.explored)


def test_the_draw_is_a_pure_function_of_seed_and_key() -> None:
    assert draw(7, "tx-1") == draw(7, "tx-1") and draw(7, "tx-1") != draw(8, "tx-1")
    a = [Explorer(ExplorationPolicy(share=0.1, seed=7)).decide(0.9, 0.5, 1.0, f"k{i}", 0.0) for i in range(500)]
    b = [Explorer(ExplorationPolicy(share=0.1, seed=7)).decide(0.9, 0.5, 1.0, f"k{i}", 0.0) for i in range(500)]
    assert a == b


def test_rising_with_lower_scores_is_linear_between_share_and_min_share() -> None:
    p = ExplorationPolicy(share=0.1, min_share=0.02)
    assert p.share_at(0.6, 0.6) == pytest.approx(0.1) and p.share_at(1.0, 0.6) == pytest.approx(0.02)
    assert p.share_at(0.8, 0.6) == pytest.approx(0.06)
    d = next(d for i in range(5000) if (d := Explorer(p).decide(0.8, 0.6, 1.0, f"k{i}", 0.0)).explored)
    assert d.propensity == pytest.approx(0.06) and d.share == pytest.approx(0.06)


def test_opted_out_merchants_and_categories_are_never_explored() -> None:
    ex = Explorer(ExplorationPolicy(share=0.5, opt_out_merchants=frozenset({"m1"}),
                                    opt_out_categories=frozenset({"gambling"})))
    for i in range(2000):
        assert ex.decide(0.9, 0.5, 1.0, f"k{i}", 0.0, "m1", "grocery") == ("block", 1.0, False, 0.0)
        assert ex.decide(0.9, 0.5, 1.0, f"k{i}", 0.0, "m2", "gambling") == ("block", 1.0, False, 0.0)
    assert any(ex.decide(0.9, 0.5, 1.0, f"k{i}", 0.0, "m2", "grocery").explored for i in range(20))


def test_the_daily_loss_cap_stops_exploring_until_the_next_utc_day() -> None:
    ex = Explorer(ExplorationPolicy(share=0.5, max_expected_loss_per_day=100.0, seed=1))
    day1 = [ex.decide(0.8, 0.5, 50.0, f"a{i}", 1000.0 + i) for i in range(200)]
    explored = [d for d in day1 if d.explored]
    assert len(explored) == 2 and ex.spent_today() == pytest.approx(80.0)      # 0.8 x 50 = 40 each, 3rd would pass 100
    after = day1[day1.index(explored[-1]) + 1:]
    assert all(d == ("block", 1.0, False, 0.0) for d in after if d.propensity == 1.0)
    assert any(d.propensity == 1.0 for d in after)                             # capped blocks are certain
    assert any(ex.decide(0.8, 0.5, 50.0, f"b{i}", 86400.0 + i).explored for i in range(50))   # a new day


def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError, match="share"):
        ExplorationPolicy(share=0.0)
    with pytest.raises(ValueError, match="min_share"):
        ExplorationPolicy(share=0.05, min_share=0.1)


def test_the_file_reads_every_key_and_names_file_and_line_on_errors() -> None:
    p = exploration_policy_from_text(
        "exploration:\n  share: 0.05\n  min_share: 0.01\n  max_expected_loss_per_day: 500\n"
        "  opt_out:\n    merchant_id: [m1]\n    merchant_category: [gambling]\n  seed: 7\n", "x.yaml")
    assert p == ExplorationPolicy(share=0.05, min_share=0.01, max_expected_loss_per_day=500.0,
                                  opt_out_merchants=frozenset({"m1"}), opt_out_categories=frozenset({"gambling"}), seed=7)
    for text, where, words in [
        ("exploration:\n  share: 0.7\n", "x.yaml:2: exploration.share", "share in (0, 0.5]"),
        ("exploration:\n  share: 0.05\n  min_share: 0.2\n", "x.yaml:3: exploration.min_share", "may not exceed"),
        ("exploration:\n  share: 0.05\n  opt_out:\n    merchant: [m1]\n", "x.yaml:4: exploration.opt_out.merchant", ""),
        ("explore:\n  share: 0.05\n", "x.yaml", ""),
        ("version: 2\nexploration:\n  share: 0.05\n", "x.yaml:1: version", "version 1"),
    ]:
        with pytest.raises(SpecError) as err:
            exploration_policy_from_text(text, "x.yaml")
        assert str(err.value).startswith(where) and words in str(err.value), str(err.value)
