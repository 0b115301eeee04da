"""Contracts load with file:line errors; clauses judge generated scenarios as the issue demands."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from ratchet.contracts import ScoresError, contract_from_text, evaluate_contract, load_contract
from ratchet.contracts.model import SCHEMA_PATH
from ratchet.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
FRAUD = ROOT / "contracts" / "fraud.yaml"

GOOD = """\
version: 1
slices:
  country: {column: country}
clauses:
  - name: fpr
    kind: no_regression
    metric: fpr
    tolerance: {absolute: 0.001}
  - name: country_rate
    kind: rate_stability
    metric: block_rate
    per: country
    tolerance: {relative: 0.1}
"""


def test_default_contract_loads_and_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))
    c = load_contract(FRAUD)
    names = {cl.name: cl for cl in c.clauses}
    assert names["fpr_no_worse"].kind == "no_regression" and names["fpr_no_worse"].per is None
    assert names["recall_at_baseline_fpr"].kind == "must_improve"
    assert names["country_block_rate_stable"].tolerance.relative == 0.10
    assert names["category_approval_rate"].tolerance.absolute == 0.02
    assert c.slices["top_merchant"].top == 200
    assert names["auc_floor"].min is not None
    assert names["fpr_no_worse"].source.startswith(f"{FRAUD}:")
    contract_from_text(GOOD, "good.yaml")


@pytest.mark.parametrize("old,new,line,words", [
    ("metric: fpr", "metric: fpr_at_dawn", 7, "fpr_at_dawn"),                       # unknown metric
    ("column: country", "column: contry", 3, "unknown slice column 'contry'"),     # unknown slice column
    ("per: country", "per: region", 12, "unknown slice 'region'"),                 # unknown slice
    ("absolute: 0.001", "absolute: -0.001", 8, "minimum"),                         # bad tolerance
    ("relative: 0.1", "relative: oops", 13, "not of type"),                        # bad tolerance type
    ("tolerance: {absolute: 0.001}", "margin: {absolute: 0.001}", 5, "needs a tolerance"),
    ("kind: rate_stability", "kind: rate_stabilty", 10, "rate_stabilty"),          # unknown kind
    ("metric: block_rate", "metric: auc", 11, "label-free"),                       # kind/metric mismatch
])
def test_malformed_contract_names_file_and_line(old: str, new: str, line: int, words: str) -> None:
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    with pytest.raises(SpecError) as exc:
        contract_from_text(text, "contracts/bad.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"contracts/bad.yaml:{line}:"), msg
    assert words in msg


def test_load_errors_for_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_contract(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("version: 1\nslices: [\n")
    with pytest.raises(SpecError, match=str(p)):
        load_contract(p)


# -- scenarios ---------------------------------------------------------------------

def _sig(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def scenario(kind: str, n: int = 200_000, seed: int = 11) -> pd.DataFrame:
    """Generated scored data: a baseline and a candidate of the named kind."""
    rng = np.random.default_rng(seed)
    cat = rng.choice([f"cat{i:02d}" for i in range(19)], n).astype(object)
    cat[rng.random(n) < 0.005] = "podcasts"           # 0.5% of traffic
    df = pd.DataFrame({
        "country": rng.choice(list("ABCDEFGH"), n).astype(object), "merchant_category": cat,
        "channel": rng.choice(["web", "pos", "app"], n).astype(object),
        "merchant_id": rng.integers(0, 2000, n), "amount": rng.exponential(80, n),
    })
    y = (rng.random(n) < 0.02).astype(int)
    df["label"] = y
    df["baseline_score"] = _sig(2.5 * y + rng.normal(size=n) - 2.0)
    better = 3.0 * y + rng.normal(size=n) - 2.0
    if kind == "better":
        cand = better
    elif kind == "blocks_category":
        cand = better + 5.0 * (cat == "podcasts")
    elif kind == "recall_by_fpr":
        cand = better
        df["baseline_threshold"] = 0.5
        df["candidate_threshold"] = 0.35              # more recall, bought with false positives
    elif kind == "country_shift":
        cand = 2.5 * y + rng.normal(size=n) - 2.0
        df["candidate_threshold"] = 0.5
        cand = np.where(df["country"] == "C", cand + 0.12, cand)   # +~30% block rate in C
    elif kind == "tiny_noisy":
        cand = better
        tiny = np.arange(20)
        df.loc[tiny, "merchant_category"] = "tiny"
        cand[tiny] = 10.0                              # blocks all 20: a "regression" on 20 rows
    else:
        raise ValueError(kind)
    df["candidate_score"] = _sig(cand)
    return df


def _statuses(v, clause: str) -> dict[str, str]:
    return {r.slice: r.status for r in v.results if r.name == clause}


def test_better_candidate_passes() -> None:
    v = evaluate_contract(load_contract(FRAUD), scenario("better"))
    assert v.passed, v.to_text()
    assert v.overall["candidate"]["auc"] > v.overall["baseline"]["auc"] > 0.9
    assert _statuses(v, "recall_at_baseline_fpr") == {"all": "pass"}
    countries = _statuses(v, "country_block_rate_stable")
    assert "fail" not in countries.values() and list(countries.values()).count("pass") >= 6
    # what the data cannot show either way is an open question, not a silent pass
    oq = {r.key for r in v.open_questions()}
    assert {f"country_block_rate_stable[{s}]" for s, x in countries.items() if x == "inconclusive"} <= oq
    assert "open question" in v.headline() and "open_questions" in v.to_dict()


def test_candidate_blocking_a_small_category_fails_naming_it() -> None:
    v = evaluate_contract(load_contract(FRAUD), scenario("blocks_category"))
    assert not v.passed
    assert v.overall["candidate"]["auc"] > v.overall["baseline"]["auc"]   # better on average
    fails = v.failures()
    assert [(f.name, f.slice) for f in fails] == [("category_approval_rate", "merchant_category=podcasts")]
    f = fails[0]
    assert f.difference < -0.5 and f.interval[1] < -0.02 and f.support > 500
    assert "merchant_category=podcasts" in v.to_text().split("clauses:")[0]


def test_recall_bought_with_fpr_fails_the_fpr_clause() -> None:
    v = evaluate_contract(load_contract(FRAUD), scenario("recall_by_fpr"))
    assert not v.passed
    assert v.overall["candidate"]["recall"] > v.overall["baseline"]["recall"]
    assert _statuses(v, "fpr_no_worse") == {"all": "fail"}
    assert "fpr_no_worse" in {f.name for f in v.failures()}


def test_country_block_rate_shift_fails_for_that_country() -> None:
    df = scenario("country_shift")
    v = evaluate_contract(load_contract(FRAUD), df)
    st = _statuses(v, "country_block_rate_stable")
    assert st["country=C"] == "fail"
    assert [s for s, x in st.items() if x == "fail"] == ["country=C"]
    r = next(r for r in v.results if r.name == "country_block_rate_stable" and r.slice == "country=C")
    assert 0.2 < r.difference / r.baseline < 0.45        # about +30%


def test_tiny_noisy_slice_is_not_judged_and_does_not_block() -> None:
    v = evaluate_contract(load_contract(FRAUD), scenario("tiny_noisy"))
    r = next(r for r in v.results if r.name == "category_approval_rate" and r.slice == "merchant_category=tiny")
    assert r.status == "not_judged" and "support 20 < min_support 100" in r.reason
    assert r.difference < -0.5                              # it did "regress"
    assert v.passed


def test_bootstrap_without_baseline_judges_bounds_only() -> None:
    df = scenario("better").drop(columns=["baseline_score"])
    v = evaluate_contract(load_contract(FRAUD), df)
    assert v.passed and v.overall["baseline"] is None
    assert _statuses(v, "auc_floor") == {"all": "pass"}
    comp = [r for r in v.results if r.kind != "bound"]
    assert comp and all(r.status == "not_judged" and r.reason == "no baseline" for r in comp)
    assert v.overall["candidate"]["block_rate"] == pytest.approx(0.01, abs=1e-4)   # bootstrap_block_rate
    assert v.overall["reference_fpr"]["value"] == 0.005


def test_undefined_metric_is_not_judged_not_nan() -> None:
    df = scenario("better", n=20_000)
    df.loc[df["country"] == "A", "label"] = 0
    text = GOOD + """  - name: auc_country
    kind: bound
    metric: auc
    per: country
    min: 0.5
    min_support: 1
"""
    v = evaluate_contract(contract_from_text(text, "c.yaml"), df)
    r = next(r for r in v.results if r.name == "auc_country" and r.slice == "country=A")
    assert r.status == "not_judged" and r.candidate is None and "undefined" in r.reason
    json.dumps(v.to_dict(), allow_nan=False)


def test_unusable_scores_raise_scores_error() -> None:
    c = load_contract(FRAUD)
    df = scenario("better", n=2000)
    with pytest.raises(ScoresError, match="missing column 'label'"):
        evaluate_contract(c, df.drop(columns=["label"]))
    with pytest.raises(ScoresError, match="merchant_category"):
        evaluate_contract(c, df.drop(columns=["merchant_category"]))
    with pytest.raises(ScoresError, match="0/1"):
        evaluate_contract(c, df.assign(label=df["label"] * 2))
    with pytest.raises(ScoresError, match="numeric"):
        evaluate_contract(c, df.assign(candidate_score="high"))
    with pytest.raises(ScoresError, match="no rows"):
        evaluate_contract(c, df.iloc[:0])


def test_too_little_evidence_on_the_whole_test_set_fails_instead_of_passing() -> None:
    # 2,000 rows with ~40 positives: below the AUC floor's min_support of 200 positives.
    df = scenario("better", n=2_000).drop(columns=["baseline_score"])
    v = evaluate_contract(load_contract(FRAUD), df)
    r = next(r for r in v.results if r.name == "auc_floor")
    assert r.status == "fail" and "too little evidence on the whole test set" in r.reason
    assert not v.passed, "a blocking clause must not pass for lack of evidence"
    # ...while a slice that small is merely "not judged"
    df = scenario("tiny_noisy")
    v = evaluate_contract(load_contract(FRAUD), df)
    assert v.passed
