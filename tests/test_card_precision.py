"""Card precision at k: the handbook's daily queue of distinct cards, as a metric and as a contract clause."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ratchet.contracts import ScoresError, contract_from_text, evaluate_contract
from ratchet.errors import SpecError
from ratchet.evaluate import kernels
from ratchet.evaluate.metrics import card_days, card_precision, card_precision_at_k, card_precision_replicates

# Three UTC days, k = 2. Hand-computed:
#   day 1: A takes its highest score (0.9) and its highest label (1, from the 0.2 row); B and C
#          tie at 0.8 and B (the smaller card_id) goes first: queue A, B -> 1 fraud / 2 = 0.5
#          (C would have made it 1.0).
#   day 2: A was found on day 1, so it is blocked: queue C, E -> 1 / 2 = 0.5
#          (without removal: A, C -> 2 / 2 = 1.0).
#   day 3: one card only, F, a fraud: 1 / 2 = 0.5 (the handbook divides by k, not by 1).
HAND = pd.DataFrame([
    ("2024-03-01T08:00", "A", 0, 0.9), ("2024-03-01T09:00", "A", 1, 0.2), ("2024-03-01T10:00", "B", 0, 0.8),
    ("2024-03-01T11:00", "C", 1, 0.8), ("2024-03-01T23:59", "D", 1, 0.1),
    ("2024-03-02T00:01", "A", 1, 0.95), ("2024-03-02T12:00", "C", 1, 0.7), ("2024-03-02T13:00", "E", 0, 0.6),
    ("2024-03-03T07:00", "F", 1, 0.5),
], columns=["ts", "card_id", "label", "score"]).assign(ts=lambda d: pd.to_datetime(d["ts"]))


def _cp(df: pd.DataFrame, k: int, **kw):  # noqa: ANN202
    return card_precision_at_k(df["ts"], df["card_id"], df["label"], df["score"], k, **kw)


def test_hand_computed_example_max_per_card_ties_and_a_short_day() -> None:
    r = _cp(HAND, 2)
    assert r.days == ("2024-03-01", "2024-03-02", "2024-03-03")
    assert r.per_day == (0.5, 0.5, 0.5)
    assert r.value == pytest.approx(0.5)
    assert (r.frauds, r.examined) == (3, 5)       # day 3's queue holds one card, still divided by k
    kept = _cp(HAND, 2, remove_detected=False)
    assert kept.per_day == (0.5, 1.0, 0.5) and kept.value == pytest.approx(2 / 3)
    assert _cp(HAND, 1).per_day == (1.0, 1.0, 1.0)   # A, then C (A blocked), then F
    assert _cp(HAND, 10).per_day == (0.3, 0.0, 0.1)  # every card, divided by 10; A and C blocked on day 2


def test_days_are_utc_calendar_days() -> None:
    paris = HAND.assign(ts=HAND["ts"].dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"))
    assert _cp(paris, 2).per_day == _cp(HAND, 2).per_day     # the same instants in another zone: the same days
    late = HAND.copy()
    late.loc[4, "ts"] = pd.Timestamp("2024-03-02T00:30")     # D moves to day 2 (UTC) ...
    moved = late.assign(ts=late["ts"].dt.tz_localize("UTC").dt.tz_convert("America/New_York"))
    assert _cp(moved, 10).per_day == (0.2, 0.1, 0.1)        # ... though it is still 1 March in New York
    strings = HAND.assign(ts=HAND["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert _cp(strings, 2).per_day == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="timestamps"):
        _cp(HAND.assign(ts=np.arange(len(HAND))), 2)


def _random(n: int = 4000, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"ts": np.datetime64("2024-05-01T00:00", "s") + rng.integers(0, 5 * 86400, n),
                       "card_id": rng.integers(0, 600, n).astype(str), "label": (rng.random(n) < 0.05).astype(int)})
    df["score"] = np.round(rng.random(n) * 0.7 + 0.3 * df["label"], 1)   # coarse: many ties
    df["other"] = np.round(rng.random(n), 1)
    return df


@pytest.mark.parametrize("remove", [True, False])
def test_compiled_walk_with_unit_weights_is_the_numpy_definition(remove: bool) -> None:
    df = _random()
    cd = card_days(df["ts"], df["card_id"], df["label"], {"m": df["score"].to_numpy()})
    days, start, card, label = cd.ranking("m")
    found = kernels.card_top_k_frauds(start, card, label, 25, cd.n_cards, 1, 0, False, remove)
    point = card_precision(cd, "m", 25, remove)
    assert found[0].sum() == point.frauds and found[0].tolist() == [round(p * 25) for p in point.per_day]


def test_bootstrap_is_deterministic_paired_and_centred() -> None:
    df = _random()
    cd = card_days(df["ts"], df["card_id"], df["label"], {"a": df["score"].to_numpy(), "b": df["score"].to_numpy(),
                                                          "c": df["other"].to_numpy()})
    r1, r2 = card_precision_replicates(cd, 25, reps=400, seed=3), card_precision_replicates(cd, 25, reps=400, seed=3)
    assert np.array_equal(r1["a"], r2["a"])
    assert np.array_equal(r1["a"], r1["b"])          # same card weights for every model: a difference is paired
    assert not np.array_equal(r1["a"], card_precision_replicates(cd, 25, reps=400, seed=4)["a"])
    point = card_precision(cd, "a", 25).value
    assert abs(r1["a"].mean() - point) < 3 * r1["a"].std() / np.sqrt(20) and 0 < r1["a"].std() < 0.2


# -- as a contract clause ----------------------------------------------------------------

CONTRACT = """\
version: 1
slices:
  country: {column: country}
clauses:
  - name: cp_floor
    kind: bound
    metric: card_precision_at_k
    k: 100
    min: 0.2
  - name: cp_high_bar
    kind: bound
    metric: card_precision_at_k
    k: 100
    min: 0.9
  - name: cp_no_worse
    kind: no_regression
    metric: card_precision_at_k
    k: 50
    tolerance: {absolute: 0.05}
  - name: fpr
    kind: no_regression
    metric: fpr
    tolerance: {absolute: 0.01}
"""


def _scored(n: int = 60_000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"ts": np.datetime64("2024-01-01T00:00", "s") + rng.integers(0, 7 * 86400, n),
                       "card_id": rng.integers(0, 5000, n).astype(str), "country": rng.choice(list("AB"), n)})
    y = (rng.random(n) < 0.01).astype(int)
    df["label"] = y
    df["baseline_score"] = 1 / (1 + np.exp(-(2.0 * y + rng.normal(size=n) - 3)))
    df["candidate_score"] = 1 / (1 + np.exp(-(2.3 * y + rng.normal(size=n) - 3)))
    return df


def test_a_card_precision_clause_is_judged_with_a_bootstrap_interval_and_rendered() -> None:
    contract = contract_from_text(CONTRACT, "contracts/cp.yaml")
    df = _scored()
    v = evaluate_contract(contract, df)
    res = {r.name: r for r in v.results}
    direct = card_precision_at_k(df["ts"], df["card_id"], df["label"], df["candidate_score"], 100)
    floor = res["cp_floor"]
    assert floor.candidate == pytest.approx(direct.value) and floor.support == direct.examined == 700
    assert floor.slice == "all" and floor.k == 100 and floor.source == "contracts/cp.yaml:5"
    lo, hi = floor.interval
    assert lo < floor.candidate < hi and 0.02 < hi - lo < 0.2
    assert floor.status == "pass" and res["cp_high_bar"].status == "fail"
    assert not v.passed
    nr = res["cp_no_worse"]
    base50 = card_precision_at_k(df["ts"], df["card_id"], df["label"], df["baseline_score"], 50).value
    assert nr.baseline == pytest.approx(base50) and nr.difference == pytest.approx(nr.candidate - base50)
    assert nr.interval[0] < nr.difference < nr.interval[1] and nr.status in ("pass", "inconclusive")
    assert res["fpr"].status != "not_judged"                 # the other clauses are judged as before
    d = json.loads(v.to_json())
    cp = next(c for c in d["clauses"] if c["name"] == "cp_floor")
    assert cp["k"] == 100 and cp["metric"] == "card_precision_at_k"
    assert cp["rule"] == "card_precision_at_k (k=100) >= 0.2"
    assert "k" not in next(c for c in d["clauses"] if c["name"] == "fpr")
    assert d["overall"]["candidate"]["card_precision_at_100"] == pytest.approx(direct.value)
    assert d["overall"]["baseline"]["card_precision_at_100"] is not None
    page = v.to_html()
    assert "card precision@100" in page and "card_precision_at_k (k=100) &gt;= 0.9" in page
    assert "CP@100" in v.to_text() and "CP@100" in v.to_markdown()
    # the same clause as a confidence sequence (live review) is wider, never narrower
    live = {r.name: r for r in evaluate_contract(contract, df, sequential=True).results}["cp_floor"]
    assert live.interval[0] < lo and live.interval[1] > hi



def test_cp_at_100_is_a_headline_metric_the_release_logs_for_both_models() -> None:
    from ratchet.evaluate.scoring import headline_metrics

    df = _scored(n=20_000)
    v = evaluate_contract(contract_from_text(CONTRACT, "contracts/cp.yaml"), df)
    m = headline_metrics(v, len(df))
    assert m["card_precision_at_100"] == pytest.approx(
        card_precision_at_k(df["ts"], df["card_id"], df["label"], df["candidate_score"], 100).value)
    assert m["baseline_card_precision_at_100"] == pytest.approx(
        card_precision_at_k(df["ts"], df["card_id"], df["label"], df["baseline_score"], 100).value)
    no_ts = headline_metrics(evaluate_contract(contract_from_text(CONTRACT, "contracts/cp.yaml"),
                                               df.drop(columns=["card_id"]), sequential=True), len(df))
    assert "card_precision_at_100" not in no_ts and "auc" in no_ts   # not computable: left out, not logged as 0

def test_card_precision_needs_ts_and_card_id() -> None:
    contract = contract_from_text(CONTRACT, "contracts/cp.yaml")
    df = _scored(n=5_000)
    with pytest.raises(ScoresError, match=r"clause 'cp_floor' \(contracts/cp.yaml:5\).*'ts'"):
        evaluate_contract(contract, df.drop(columns=["ts"]))
    live = evaluate_contract(contract, df.drop(columns=["card_id"]), sequential=True)   # a live join may lack them
    r = next(r for r in live.results if r.name == "cp_floor")
    assert r.status == "not_judged" and "needs columns ts and card_id" in r.reason
    head, tail = CONTRACT.split("  - name: cp_floor")[0], CONTRACT.split("tolerance: {absolute: 0.05}\n")[1]
    plain = contract_from_text(head + tail)   # no card clause: the overall CP@100 just goes missing
    assert evaluate_contract(plain, df.drop(columns=["ts"])).overall["candidate"]["card_precision_at_100"] is None


def test_too_few_cards_in_the_queues_fail_the_whole_population_clause() -> None:
    text = CONTRACT.replace("    k: 100\n    min: 0.2", "    k: 100\n    min: 0.2\n    min_support: 1000", 1)
    r = next(r for r in evaluate_contract(contract_from_text(text), _scored(n=20_000)).results if r.name == "cp_floor")
    assert r.status == "fail" and "min_support 1000" in r.reason


@pytest.mark.parametrize("old,new,line,words", [
    ("    k: 100\n    min: 0.2\n", "    min: 0.2\n", 7, "card_precision_at_k needs k"),          # k missing
    ("    tolerance: {absolute: 0.01}\n", "    tolerance: {absolute: 0.01}\n    k: 100\n", 24,
     "k belongs to card_precision_at_k; metric 'fpr' takes no k"),                            # k on another metric
    ("    k: 100\n    min: 0.2\n", "    k: 0\n    min: 0.2\n", 8, "0 is less than the minimum of 1"),   # k <= 0
    ("    k: 100\n    min: 0.2\n", "    k: -5\n    min: 0.2\n", 8, "-5 is less than the minimum of 1"),
    ("    k: 100\n    min: 0.2\n", "    k: 2.5\n    min: 0.2\n", 8, "not of type 'integer'"),
    ("    k: 100\n    min: 0.2\n", "    k: 100\n    per: country\n    min: 0.2\n", 9, "whole test population only"),
    ("kind: no_regression\n    metric: card_precision_at_k", "kind: rate_stability\n    metric: card_precision_at_k",
     17, "label-free"),
])
def test_malformed_card_precision_clauses_name_file_and_line(old: str, new: str, line: int, words: str) -> None:
    text = CONTRACT.replace(old, new, 1)
    assert text != CONTRACT
    with pytest.raises(SpecError) as exc:
        contract_from_text(text, "contracts/bad.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"contracts/bad.yaml:{line}:"), msg
    assert words in msg, msg
