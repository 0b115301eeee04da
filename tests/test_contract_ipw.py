"""Contract clauses with `estimator: ipw` (issue 17): recall, FPR and block rate judged on a
censored test window by inverse-propensity weighting, where the plain estimates are biased."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ratchet.contracts import ScoresError, contract_from_text, evaluate_contract, load_contract
from ratchet.errors import SpecError
from ratchet.evaluate.counterfactual import difference, ratio
from ratchet.files import project_file
from tests.test_policy_estimates import world

CONTRACT = """\
version: 1
name: ipw
significance: {confidence: 0.95, min_support: 50}
thresholds: {candidate: column, default: 0.5}
slices:
  country: {column: country}
clauses:
  - name: recall_ipw
    kind: no_regression
    metric: recall
    estimator: ipw
    tolerance: {absolute: 0.02}
  - name: recall_plain
    kind: no_regression
    metric: recall
    tolerance: {absolute: 0.02}
  - name: recall_gain_ipw
    kind: must_improve
    metric: recall
    estimator: ipw
    margin: {absolute: 0.2}
  - name: recall_gain_plain
    kind: must_improve
    metric: recall
    margin: {absolute: 0.2}
  - name: fpr_ipw
    kind: no_regression
    metric: fpr
    estimator: ipw
    tolerance: {absolute: 0.001}
  - name: fpr_cap_ipw
    kind: bound
    metric: fpr
    estimator: ipw
    max: 0.005
  - name: recall_floor_ipw
    kind: bound
    metric: recall
    estimator: ipw
    min: 0.3
  - name: block_rate_ipw
    kind: no_regression
    metric: block_rate
    estimator: ipw
    tolerance: {relative: 0.5}
  - name: block_rate_cap_ipw
    kind: bound
    metric: block_rate
    estimator: ipw
    max: 0.03
  - name: fpr_by_country
    kind: no_regression
    metric: fpr
    per: country
    tolerance: {absolute: 0.01}
"""

IPW_CLAUSES = ("recall_ipw", "recall_gain_ipw", "fpr_ipw", "fpr_cap_ipw", "recall_floor_ipw", "block_rate_ipw",
               "block_rate_cap_ipw")


@pytest.fixture(scope="module")
def worlds() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """'better': the candidate at 0.5 catches more fraud than production at 0.5 and blocks fewer
    genuine payments; 'noisy': the same candidate at 0.25 blocks far more genuine payments."""
    full, logged = world()
    return {"better": (full, logged),
            "noisy": (full.assign(candidate_threshold=0.25), logged.assign(candidate_threshold=0.25))}


def _truth(full: pd.DataFrame) -> dict[str, dict[str, float]]:
    y = full["label"].to_numpy() == 1
    out = {}
    for m, score, th in (("candidate", "candidate_score", "candidate_threshold"),
                         ("baseline", "baseline_score", "baseline_threshold")):
        b = full[score].to_numpy() >= full[th].to_numpy()
        out[m] = {"recall": b[y].mean(), "fpr": b[~y].mean(), "block_rate": b.mean()}
    return out


def _results(verdict) -> dict:  # noqa: ANN001
    return {r.name: r for r in verdict.results if r.slice == "all"}


@pytest.fixture(scope="module")
def verdicts(worlds) -> dict:  # noqa: ANN001
    contract = contract_from_text(CONTRACT, "contracts/ipw.yaml")
    return {name: evaluate_contract(contract, logged) for name, (_, logged) in worlds.items()}


def test_a_truly_better_recall_passes_the_ipw_clause_where_the_plain_one_is_fooled(worlds, verdicts) -> None:  # noqa: ANN001
    true = _truth(worlds["better"][0])
    gain = true["candidate"]["recall"] - true["baseline"]["recall"]
    assert 0.05 < gain < 0.2                                  # truly better, by less than 0.2
    r = _results(verdicts["better"])
    assert r["recall_ipw"].status == "pass" and r["recall_ipw"].rule == "recall (IPW) may drop by at most 0.02"
    assert r["recall_ipw"].interval[0] <= gain <= r["recall_ipw"].interval[1]
    assert r["recall_ipw"].support == int(worlds["better"][1]["label"].sum())     # labelled frauds
    assert "explored rows, effective sample size" in r["recall_ipw"].reason
    # the plain clause sees production's recall on the frauds it let through: ~0.06, not ~0.5
    plain = r["recall_plain"]
    assert plain.baseline < 0.2 * true["baseline"]["recall"]
    assert plain.difference > 3 * gain and not plain.interval[0] <= gain <= plain.interval[1]
    # ... so it passes a 0.2 improvement the candidate does not make; the IPW clause fails it
    assert r["recall_gain_plain"].status == "pass"
    assert r["recall_gain_ipw"].status == "fail" and r["recall_gain_ipw"].interval[1] < 0.2
    assert verdicts["better"].passed is False and {f.name for f in verdicts["better"].failures()} == {"recall_gain_ipw"}


def test_a_truly_worse_fpr_fails_the_ipw_clauses(worlds, verdicts) -> None:  # noqa: ANN001
    true = _truth(worlds["noisy"][0])
    assert true["candidate"]["fpr"] > 10 * true["baseline"]["fpr"]
    r = _results(verdicts["noisy"])
    assert r["fpr_ipw"].status == "fail" and r["fpr_ipw"].interval[0] > 0.001
    assert r["fpr_cap_ipw"].status == "fail" and r["fpr_cap_ipw"].interval[0] > 0.005
    assert r["fpr_cap_ipw"].rule == "fpr (IPW) <= 0.005"
    assert r["block_rate_ipw"].status == "fail" and r["block_rate_cap_ipw"].status == "fail"
    assert r["recall_floor_ipw"].status == "pass"
    # the same candidate at 0.5 is within both
    better = _results(verdicts["better"])
    assert better["fpr_ipw"].status == better["fpr_cap_ipw"].status == "pass"


def test_intervals_cover_the_truth_in_this_seeded_world(worlds, verdicts) -> None:  # noqa: ANN001
    metric_of = {"recall_ipw": "recall", "recall_gain_ipw": "recall", "fpr_ipw": "fpr", "fpr_cap_ipw": "fpr",
                 "recall_floor_ipw": "recall", "block_rate_ipw": "block_rate", "block_rate_cap_ipw": "block_rate"}
    for name, (full, logged) in worlds.items():
        true = _truth(full)
        r = _results(verdicts[name])
        for clause, metric in metric_of.items():
            res = r[clause]
            value = true["candidate"][metric] - (true["baseline"][metric] if res.kind != "bound" else 0.0)
            assert res.interval[0] <= value <= res.interval[1], (name, clause, value, res.interval)
            assert abs((res.candidate if res.kind == "bound" else res.difference) - value) < 0.1
    # the estimators themselves: same numbers as the engine, paired with each other
    full, logged = worlds["better"]
    y, p = logged["label"].to_numpy(float), logged["propensity"].to_numpy(float)
    bc, bb = logged["candidate_score"].to_numpy() >= 0.5, logged["baseline_score"].to_numpy() >= 0.5
    true = _truth(full)
    for metric in ("recall", "block_rate"):
        c, d = ratio(y, p, bc, metric), difference(y, p, bc, bb, metric)
        assert c.covers(true["candidate"][metric]) and ratio(y, p, bb, metric).covers(true["baseline"][metric])
        assert d.covers(true["candidate"][metric] - true["baseline"][metric])
        assert d.value_a == pytest.approx(c.value) and d.difference == pytest.approx(c.value - d.value_b)
        assert d.explored == c.explored > 0 and 0 < d.ess < d.labelled
    assert _results(verdicts["better"])["recall_ipw"].difference == pytest.approx(difference(y, p, bc, bb, "recall").difference)


def test_an_unexplored_window_fails_the_ipw_clause_rather_than_trusting_the_naive_estimate(worlds) -> None:  # noqa: ANN001
    _, logged = worlds["better"]
    unexplored = logged[logged["propensity"] == 1.0]
    r = _results(evaluate_contract(contract_from_text(CONTRACT), unexplored))
    assert r["recall_ipw"].status == "fail" and "no explored row" in r["recall_ipw"].reason


def test_the_estimator_is_in_every_rendering(verdicts) -> None:  # noqa: ANN001
    v = verdicts["noisy"]
    d = v.to_dict()
    by_name = {c["name"]: c for c in d["clauses"]}
    assert by_name["fpr_cap_ipw"]["estimator"] == "ipw" and "estimator" not in by_name["recall_plain"]
    assert by_name["fpr_cap_ipw"]["rule"] == "fpr (IPW) <= 0.005"
    json.loads(v.to_json())
    for text in (v.to_text(), v.to_markdown(), v.to_html()):
        assert "fpr (IPW) &lt;= 0.005" in text or "fpr (IPW) <= 0.005" in text
        assert "recall (IPW) must improve by at least 0.2" in text
        assert "recall may drop by at most 0.02" in text            # a plain clause reads as before


@pytest.mark.parametrize("old,new,line,words", [
    ("    metric: recall\n    estimator: ipw\n    tolerance", "    metric: auc\n    estimator: ipw\n    tolerance",
     11, "estimator ipw estimates recall, fpr, block_rate from censored data, not 'auc'"),
    ("    metric: recall\n    estimator: ipw\n    tolerance",
     "    metric: recall\n    estimator: ipw\n    per: country\n    tolerance", 12, "whole test population only"),
    ("    estimator: ipw\n    tolerance: {absolute: 0.02}", "    estimator: snipw\n    tolerance: {absolute: 0.02}",
     11, "'snipw' is not one of plain, ipw"),
    ("  - name: fpr_by_country\n    kind: no_regression\n    metric: fpr\n",
     "  - name: fpr_by_country\n    kind: no_regression\n    metric: fpr\n    estimator: ipw\n", 55,
     "whole test population only"),
])
def test_malformed_ipw_clauses_name_file_and_line(old: str, new: str, line: int, words: str) -> None:
    text = CONTRACT.replace(old, new, 1)
    assert text != CONTRACT
    with pytest.raises(SpecError) as exc:
        contract_from_text(text, "contracts/bad.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"contracts/bad.yaml:{line}:"), msg
    assert words in msg, msg


def test_scores_without_propensity_name_the_clause(worlds) -> None:  # noqa: ANN001
    contract = contract_from_text(CONTRACT, "contracts/ipw.yaml")
    _, logged = worlds["better"]
    with pytest.raises(ScoresError, match=r"clause 'recall_ipw' \(contracts/ipw.yaml:8\).*'propensity'.*decision"):
        evaluate_contract(contract, logged.drop(columns=["propensity"]))
    with pytest.raises(ScoresError, match=r"recall_ipw.*\(0, 1\]"):
        evaluate_contract(contract, logged.assign(propensity=np.where(logged.index == 3, 0.0, logged["propensity"])))


def test_a_live_review_leaves_ipw_clauses_not_judged(worlds) -> None:  # noqa: ANN001
    contract = contract_from_text(CONTRACT, "contracts/ipw.yaml")
    _, logged = worlds["better"]
    live = evaluate_contract(contract, logged.drop(columns=["propensity"]), sequential=True)
    r = _results(live)
    for name in IPW_CLAUSES:
        assert r[name].status == "not_judged" and "counterfactual labels" in r[name].reason, name
        assert r[name].open_question and "(IPW)" in r[name].rule
    assert r["recall_plain"].status != "not_judged"


def _without(text: str, clause_names: tuple[str, ...]) -> str:
    head, *items = text.split("  - name: ")
    return head + "".join("  - name: " + it for it in items if it.split("\n", 1)[0] not in clause_names)


def _unsourced(d: dict) -> dict:
    """A verdict's dict without the clauses' file:line (an added key moves the lines below it)."""
    return {**d, "clauses": [{**c, "source": None} for c in d["clauses"]]}


def test_contracts_without_estimator_keys_judge_as_before(worlds) -> None:  # noqa: ANN001
    _, logged = worlds["better"]
    # an explicit `estimator: plain` is the default: the same verdict, no estimator key in it
    plain_text = _without(CONTRACT, IPW_CLAUSES)
    explicit = plain_text.replace("    kind: no_regression\n", "    kind: no_regression\n    estimator: plain\n")
    assert explicit != plain_text
    v = evaluate_contract(contract_from_text(plain_text, "c.yaml"), logged)
    assert _unsourced(v.to_dict()) == _unsourced(evaluate_contract(contract_from_text(explicit, "c.yaml"),
                                                                   logged).to_dict())
    assert not any("estimator" in c for c in v.to_dict()["clauses"])
    # a propensity column changes nothing for plain clauses
    assert v.to_dict() == evaluate_contract(contract_from_text(plain_text, "c.yaml"),
                                            logged.drop(columns=["propensity"])).to_dict()
    # ipw clauses added to a contract leave the plain clauses' results as they were
    with_ipw = {(c["name"], c["slice"]): c for c in evaluate_contract(contract_from_text(CONTRACT, "c.yaml"), logged).to_dict()["clauses"]}
    for c in v.to_dict()["clauses"]:      # (their lines moved: the ipw clauses were in between)
        assert {**with_ipw[c["name"], c["slice"]], "source": None} == {**c, "source": None}
    # the project's own contract: untouched by the feature
    fraud = load_contract(project_file("contracts/fraud.yaml"))
    assert all(c.estimator == "plain" for c in fraud.clauses)
    d = evaluate_contract(fraud, logged).to_dict()
    assert d == evaluate_contract(fraud, logged.drop(columns=["propensity"])).to_dict()
