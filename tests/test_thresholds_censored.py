"""Threshold suggestions on censored data (issue 17): with a `propensity` column the per-merchant
and global figures are IPW estimates and the thresholds are chosen on them; without one,
every output is what it was (byte for byte).

The world: payments whose truth is known, scored by a production model and a candidate, then
censored by production's per-merchant thresholds with ratchet.data.censoring.censor and a 20%
exploration share (one merchant opted out). The scored test window is what a release sees:
the let-through rows only, with their propensity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from ratchet.contracts import contract_from_text, evaluate_contract
from ratchet.contracts.model import load_contract
from ratchet.data.censoring import DECISION, PROPENSITY, TRUE_LABEL, censor
from ratchet.evaluate.counterfactual import ratio
from ratchet.evaluate.metrics import slice_metrics
from ratchet.evaluate.slices import OVERALL, SliceFamily, assign
from ratchet.exploration import ExplorationPolicy
from ratchet.thresholds import MinSupport, Suggestions, ThresholdPolicy, suggest_thresholds
from ratchet.thresholds.constraints import RateClause, slice_limits
from ratchet.thresholds.contract_fit import judge_edit
from ratchet.thresholds.optimise import group_rows, thresholds_at_budget
from ratchet.thresholds.repair import repair
from ratchet.thresholds.suggest import COLUMNS, IPW_COLUMNS
from ratchet.thresholds.weighted import MIN_EXPLORED, weighted_table
from tests.test_threshold_contract import FRAUD, country_world
from tests.test_threshold_contract import POLICY as CONTRACT_POLICY
from tests.test_thresholds import POLICY as PLAIN_POLICY
from tests.test_thresholds import world as plain_world

ROOT = Path(__file__).resolve().parent.parent
POLICY = ThresholdPolicy(min_support=MinSupport(rows=2000, negatives=1000))
SHARE = 0.2
OPTED_OUT = "m004"
#: name, rows, production's FPR, production's and the candidate's score shift, the candidate's fraud separation
MERCHANTS = [("m000", 40_000, 0.03, 0.0, 0.4, 3.0), ("m001", 40_000, 0.05, 0.3, -0.3, 3.0),
             ("m002", 40_000, 0.04, -0.2, 0.6, 1.2),   # a weaker candidate here: same FPR, fewer blocks
             ("m003", 40_000, 0.02, 0.1, 0.5, 1.2),    # likewise
             (OPTED_OUT, 40_000, 0.04, 0.0, 0.0, 3.0),  # never explored
             ("m005", 3_000, 0.01, 0.0, 0.0, 3.0)]     # a handful of explored rows
BLOCK_LESS = ("m002", "m003")


def sig(x):
    return 1 / (1 + np.exp(-x))


def censored_world(seed: int = 0, small: int = 10, small_rows: int = 400) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every payment, censored: is_fraud null where blocked, TRUE_LABEL the truth; the scored
    test window: the let-through rows with label, scores, thresholds, merchant_id, propensity).
    Production's legitimate scores are sig(shift + N(0,1) - 3), so its threshold
    sig(shift + z_{1-f} - 3) has FPR f."""
    rng = np.random.default_rng(seed)
    spec = MERCHANTS + [(f"s{i:02d}", small_rows, 0.03, 0.0, 0.0, 3.0) for i in range(small)]
    names = np.array([s[0] for s in spec], dtype=object)
    sizes, fpr, sb, sc, sep = (np.array([s[k] for s in spec]) for k in range(1, 6))
    m = np.repeat(np.arange(len(spec)), sizes)
    n = len(m)
    y = (rng.random(n) < 0.02).astype(np.int8)
    base = sig(sb[m] + rng.normal(size=n) + 2.0 * y - 3)
    cand = sig(sc[m] + rng.normal(size=n) + sep[m] * y - 3)
    thr = sig(sb + norm.ppf(1 - fpr) - 3)[m]
    payments = pd.DataFrame({
        "transaction_id": np.arange(n), "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), "s"),
        "amount": 10.0, "is_fraud": y, "merchant_id": names[m], "candidate_score": cand, "baseline_score": base,
        "baseline_threshold": thr})
    logged = censor(payments, base, thr, ExplorationPolicy(share=SHARE, seed=seed,
                                                           opt_out_merchants=frozenset({OPTED_OUT})))
    let = logged[logged[DECISION] == "allow"]
    scored = pd.DataFrame({"label": let["is_fraud"].astype("int8").to_numpy(),
                           **{c: let[c].to_numpy() for c in ("candidate_score", "baseline_score", "baseline_threshold",
                                                             "merchant_id", PROPENSITY)}})
    return logged, scored


def truth(logged: pd.DataFrame, s: Suggestions) -> dict[str, dict[str, float]]:
    """Per merchant, production's and the suggested thresholds' FPR / recall / block rate on every payment."""
    glob, per = s.thresholds()
    thr = logged["merchant_id"].map(per).fillna(glob).to_numpy(float)
    frame = logged.assign(y=logged[TRUE_LABEL], after=logged.candidate_score >= thr,
                          before=logged.baseline_score >= logged.baseline_threshold)
    out = {}
    for name, g in frame.groupby("merchant_id"):
        neg, pos = g.y == 0, g.y == 1
        out[name] = {f"{when}_{k}": float(v) for when in ("before", "after")
                     for k, v in (("fpr", g[when][neg].mean()), ("recall", g[when][pos].mean()),
                                  ("block_rate", g[when].mean()))}
    return out


@pytest.fixture(scope="module")
def censored():
    logged, scored = censored_world()
    ipw = suggest_thresholds(scored, POLICY)
    counts = suggest_thresholds(scored.drop(columns=[PROPENSITY]), POLICY)
    return logged, scored, ipw, counts


def rows_of(s: Suggestions) -> dict[str, dict]:
    return {r["merchant"]: r for r in s.merchants}


def rel(a: float, b: float) -> float:
    return abs(a / b - 1)


def well_explored(s: Suggestions) -> list[dict]:
    return [r for r in s.merchants if r["source"] == "merchant" and r["explored"] >= 100]


# ---- the figures ------------------------------------------------------------------------
def test_ipw_per_merchant_figures_are_near_the_truth_and_plain_counts_are_not(censored):
    logged, _, ipw, counts = censored
    true = truth(logged, ipw)
    assert ipw.estimator == "ipw" and counts.estimator == "counts"
    mine = well_explored(ipw)
    assert {r["merchant"] for r in mine} == {"m000", "m001", "m002", "m003"}
    plain = rows_of(counts)
    for r in mine:
        t, c = true[r["merchant"]], plain[r["merchant"]]
        # production today: what the merchant's FPR, block rate and recall really are
        for k in ("before_fpr", "before_block_rate"):
            assert rel(r[k], t[k]) < 0.15, (r["merchant"], k, r[k], t[k])
            assert rel(c[k], t[k]) > 0.6, (r["merchant"], k, c[k], t[k])   # counts see the explored blocks only
        assert abs(r["before_recall"] - t["before_recall"]) < 0.05
        assert abs(c["before_recall"] - t["before_recall"]) > 0.25
        # the candidate at the suggested threshold
        assert rel(r["after_fpr"], t["after_fpr"]) < 0.1
        assert rel(r["after_block_rate"], t["after_block_rate"]) < 0.1
        assert abs(r["after_recall"] - t["after_recall"]) < 0.05
    # the global row: near the truth on the payments that could be seen (positivity: the opted-out
    # merchant's blocks have no weight standing for them, so the estimate leaves them out)
    seeable = ~((logged[DECISION] == "block") & (logged[PROPENSITY] >= 1.0))
    neg = (logged[TRUE_LABEL] == 0) & seeable
    before = logged.baseline_score >= logged.baseline_threshold
    assert rel(ipw.global_row["before_fpr"], float(before[neg].mean())) < 0.05
    assert rel(counts.global_row["before_fpr"], float(before[neg].mean())) > 0.6


def test_ipw_figures_are_the_release_estimators(censored):
    """Each merchant's figures are exactly ratchet.evaluate.counterfactual's self-normalised ratio."""
    _, scored, ipw, _ = censored
    glob, per = ipw.thresholds()
    y = scored["label"].to_numpy(float)
    prop = scored[PROPENSITY].to_numpy(float)
    after = scored.candidate_score.to_numpy() >= scored.merchant_id.map(per).fillna(glob).to_numpy(float)
    before = scored.baseline_score.to_numpy() >= scored.baseline_threshold.to_numpy()
    for name, r in rows_of(ipw).items():
        inside = (scored.merchant_id == name).to_numpy()
        for metric in ("fpr", "recall", "block_rate"):
            for when, block in (("before", before), ("after", after)):
                est = ratio(y[inside], prop[inside], block[inside], metric)
                assert r[f"{when}_{metric}"] == pytest.approx(est.value, rel=1e-12, abs=1e-15), (name, when, metric)
        assert r["explored"] == int(np.sum(prop[inside] < 1))


def test_block_less_gets_an_estimated_recall_and_fpr(censored):
    """Where the candidate is weaker, keeping production's FPR means a threshold above production's
    and fewer blocks: the IPW figures say how much recall that costs; the counts cannot."""
    logged, scored, ipw, counts = censored
    true = truth(logged, ipw)
    for name in BLOCK_LESS:
        r = rows_of(ipw)[name]
        t = true[name]
        assert r["source"] == "merchant" and r["suggested_threshold"] > r["current_threshold"]   # block less
        assert r["after_block_rate"] < r["before_block_rate"] and t["after_block_rate"] < t["before_block_rate"]
        assert abs(r["after_recall"] - t["after_recall"]) < 0.03, (name, r["after_recall"], t["after_recall"])
        assert rel(r["after_fpr"], t["after_fpr"]) < 0.05
        assert r["after_recall"] < r["before_recall"] - 0.2 and t["after_recall"] < t["before_recall"] - 0.2
        # the recall the change costs, and the blocks it saves: as the truth says
        assert abs((r["before_recall"] - r["after_recall"]) - (t["before_recall"] - t["after_recall"])) < 0.05
        saved = r["before_block_rate"] - r["after_block_rate"]
        true_saved = t["before_block_rate"] - t["after_block_rate"]
        assert saved > 0 and abs(saved - true_saved) < 0.003
        # counted on the let-through rows as they are, the same change blocks more and catches more:
        # production's blocks there are its explored ones only, so "before" is a fraction of the truth
        c = rows_of(counts)[name]
        rows = scored[scored.merchant_id == name]
        blocked = rows.candidate_score >= r["suggested_threshold"]
        assert float(blocked.mean()) > 2 * c["before_block_rate"]
        assert float(blocked[rows.label == 1].mean()) > c["before_recall"]
        assert float(blocked[rows.label == 0].mean()) > 2 * c["before_fpr"]


def test_thresholds_are_chosen_on_the_weighted_figures(censored):
    """keep_fpr: the lowest threshold whose weighted false positives stay within production's;
    match_block_rate: the weighted block rate matches production's (the truth, not the counts')."""
    logged, scored, ipw, counts = censored
    w = 1 / scored[PROPENSITY].to_numpy(float)
    for name, r in rows_of(ipw).items():
        if r["source"] != "merchant":
            continue
        rows = (scored.merchant_id == name).to_numpy()
        neg = rows & (scored.label == 0).to_numpy()
        s = scored.candidate_score.to_numpy()
        budget = np.sum(w[neg] * (scored.baseline_score.to_numpy() >= scored.baseline_threshold.to_numpy())[neg])
        t = r["suggested_threshold"]
        assert np.sum(w[neg] * (s[neg] >= t)) <= budget * (1 + 1e-9)
        lower = np.max(s[neg][s[neg] < t])  # the next lower legitimate score would break the budget
        assert np.sum(w[neg] * (s[neg] >= lower)) > budget
    # the counts keep production's let-through FPR, a fifth of its true one: thresholds far too high
    assert all(rows_of(counts)[r["merchant"]]["suggested_threshold"] > r["suggested_threshold"] + 0.05
               for r in well_explored(ipw))

    match = suggest_thresholds(scored, ThresholdPolicy(objective="match_block_rate",
                                                       min_support=MinSupport(rows=2000, negatives=1000)))
    true = truth(logged, match)
    for r in well_explored(match):
        assert r["after_block_rate"] <= r["before_block_rate"] + 1e-12
        assert rel(true[r["merchant"]]["after_block_rate"], true[r["merchant"]]["before_block_rate"]) < 0.15


def test_positivity_is_said_and_an_unexplored_merchant_gets_the_global_threshold(censored, tmp_path):
    _, _, ipw, counts = censored
    rows = rows_of(ipw)
    opted = rows[OPTED_OUT]
    assert opted["explored"] == 0 and opted["source"] == "global"
    assert opted["suggested_threshold"] == ipw.global_threshold
    assert "nothing explored here" in opted["note"] and "(positivity)" in opted["note"]
    assert rows_of(counts)[OPTED_OUT]["source"] == "merchant"  # counts cannot tell
    few = rows["m005"]
    assert 0 < few["explored"] < MIN_EXPLORED and few["source"] == "merchant"
    assert f"only {few['explored']} explored row(s)" in few["note"] and "uncertain" in few["note"]
    assert all("positivity" not in r["note"] for r in well_explored(ipw))
    assert any("IPW estimates" in n for n in ipw.notes)

    ipw.write(tmp_path / "ipw")
    counts.write(tmp_path / "counts")
    d = json.loads((tmp_path / "ipw" / "suggestions.json").read_text())
    assert d["estimator"] == "ipw" and "explored" in d["global"]
    assert "estimator" not in json.loads((tmp_path / "counts" / "suggestions.json").read_text())
    assert Suggestions.from_dict(d).estimator == "ipw" and Suggestions.from_dict(d).to_dict() == d
    assert pd.read_csv(tmp_path / "ipw" / "suggestions.csv").columns.tolist() == list(IPW_COLUMNS)
    assert pd.read_csv(tmp_path / "counts" / "suggestions.csv").columns.tolist() == list(COLUMNS)
    page = (tmp_path / "ipw" / "suggestions.html").read_text()
    assert "Estimator <b>ipw</b>" in page and "<th>explored</th>" in page
    assert "Estimator" not in (tmp_path / "counts" / "suggestions.html").read_text()
    assert "IPW estimates" in ipw.to_text().splitlines()[0]


def test_unlabelled_rows_weigh_nothing(censored):
    """Production's blocks left in the window without a label change nothing but their count."""
    logged, scored, ipw, _ = censored
    blocked = logged[logged[DECISION] == "block"]
    extra = pd.DataFrame({"label": pd.array([pd.NA] * len(blocked), dtype="Int8"),
                          **{c: blocked[c].to_numpy() for c in ("candidate_score", "baseline_score",
                                                                "baseline_threshold", "merchant_id", PROPENSITY)}})
    both = pd.concat([scored.astype({"label": "Int8"}), extra], ignore_index=True)
    s = suggest_thresholds(both, POLICY)
    assert s.thresholds() == ipw.thresholds()
    for a, b in zip([s.global_row, *s.merchants], [ipw.global_row, *ipw.merchants]):
        assert {k: v for k, v in a.items() if k != "note"} == {k: v for k, v in b.items() if k != "note"}
    assert any(f"{len(blocked):,} rows without a label weigh 0" in n for n in s.notes)


def test_a_propensity_outside_0_1_is_refused(censored):
    _, scored, _, _ = censored
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="propensity"):
            suggest_thresholds(scored.assign(**{PROPENSITY: bad}), POLICY)


# ---- the contract -----------------------------------------------------------------------
CONTRACT = """\
version: 1
name: censored
significance: {confidence: 0.95, min_support: 50}
thresholds: {candidate: column, default: 0.5}
slices:
  merchant: {column: merchant_id}
clauses:
  - name: block_rate_ipw
    kind: rate_stability
    metric: block_rate
    estimator: ipw
    tolerance: {relative: 0.05}
  - name: block_rate_plain
    kind: rate_stability
    metric: block_rate
    tolerance: {relative: 10}
"""


def snipw_block_rate(scored: pd.DataFrame, score: np.ndarray, thr: np.ndarray) -> float:
    w = 1 / scored[PROPENSITY].to_numpy(float)
    return float(np.sum(w * (score >= thr)) / np.sum(w))


def test_contract_ipw_clause_is_honoured_on_weighted_block_rates_and_plain_on_counts(censored):
    _, scored, _, _ = censored
    contract = contract_from_text(CONTRACT)
    s = suggest_thresholds(scored, POLICY, contract=contract)
    base = snipw_block_rate(scored, scored.baseline_score.to_numpy(), scored.baseline_threshold.to_numpy())
    counted_base = float((scored.baseline_score >= scored.baseline_threshold).mean())
    assert base > 3 * counted_base   # the weights matter here

    clauses = {c["name"]: c for c in s.contract["clauses"]}
    assert clauses["block_rate_ipw"]["estimator"] == "ipw" and "estimator" not in clauses["block_rate_plain"]
    before = {b["clause"]: b for b in s.contract["before"]}
    assert before["block_rate_ipw"]["baseline"] == pytest.approx(base, rel=1e-12)   # the objective alone breaks it
    scored_at = s.apply(scored)
    cand = snipw_block_rate(scored, scored_at.candidate_score.to_numpy(), scored_at.candidate_threshold.to_numpy())
    assert abs(cand - base) <= 0.5 * 0.05 * base + 1e-12   # repaired to within half its allowance, weighted
    assert s.contract["unresolved"] == []
    assert any("ipw clause(s) block_rate_ipw" in n for n in s.notes)
    assert any("plain clause(s) block_rate_plain" in n for n in s.notes)

    verdict = evaluate_contract(contract, scored_at)   # the engine judges the same weighted figures
    judged = {r.name: r for r in verdict.results}
    assert judged["block_rate_ipw"].baseline == pytest.approx(base, rel=1e-9)
    assert judged["block_rate_ipw"].candidate == pytest.approx(cand, rel=1e-9)
    assert judged["block_rate_ipw"].status != "fail"   # within half its allowance (tight: the interval may not show it)
    assert judged["block_rate_plain"].baseline == pytest.approx(counted_base, rel=1e-9)

    # an approval re-judges edits on the stored rows, weighted too: they carry the propensity
    rows = s.judged_rows
    assert PROPENSITY in rows.columns
    glob, per = s.thresholds()
    lower = dict(per, m001=per["m001"] - 0.03)   # blocks more of a large merchant
    refused = judge_edit(s.contract, rows, (glob, per), (glob, lower))
    assert [b.clause for b in refused] == ["block_rate_ipw"]
    assert refused[0].baseline == pytest.approx(base, rel=1e-12)
    assert judge_edit(s.contract, rows, (glob, per), (glob, dict(per))) == []


@pytest.mark.parametrize("n_merchants", [1, 2])   # one merchant: its box; two: a slice-level repair
def test_the_repair_holds_a_weighted_slice_on_weighted_rates(n_merchants):
    """Explored rows (weight 10) sit at the top of the scores, so weighted and counted block rates
    differ threefold: the repair must bring the weighted one within half the allowance."""
    rng = np.random.default_rng(3)
    n = 4000
    score = rng.random(n)
    frame = pd.DataFrame({"label": np.zeros(n, np.int8), "merchant_id": rng.integers(0, n_merchants, n).astype(str),
                          PROPENSITY: np.where(score > 0.7, 0.1, 1.0)})
    clause = RateClause("br", "rate_stability", "block_rate", OVERALL, 0.02, None, 1, estimator="ipw")
    limits, _ = slice_limits(frame, [clause], score >= 0.9)
    w = 1 / frame[PROPENSITY].to_numpy()
    assert limits[0].baseline[0] == pytest.approx(np.sum(w * (score >= 0.9)) / np.sum(w))
    assert limits[0].baseline[0] > 2.5 * np.mean(score >= 0.9)
    codes = frame.merchant_id.astype(int).to_numpy()
    r = repair(score, codes, n_merchants, np.full(n_merchants, 0.8), 0.8, limits, 0.5)
    blocked = score >= r.effective()[codes]
    assert abs(np.sum(w * blocked) / np.sum(w) - limits[0].baseline[0]) <= 0.5 * 0.02 + 1e-12
    assert r.why[0] == "br (all)"


# ---- the optimiser ----------------------------------------------------------------------
def test_the_weighted_optimiser_with_unit_weights_is_the_count_rule():
    rng = np.random.default_rng(5)
    n, G = 20_000, 7
    score = np.round(rng.random(n), 2)           # many ties
    counted = rng.random(n) < 0.8
    codes = rng.integers(0, G, n)
    grouped = group_rows(codes, G)
    budget = rng.integers(0, 300, G)
    budget[0] = 10**6                              # every row may be blocked
    plain = thresholds_at_budget(score, counted, grouped, budget)
    unit = thresholds_at_budget(score, counted, grouped, budget.astype(float), weight=np.ones(n))
    np.testing.assert_array_equal(plain, unit)
    # weights: a row of weight 5 counts five rows
    s = np.array([0.9, 0.8, 0.7, 0.6])
    one = group_rows(None, 1, 4)
    assert thresholds_at_budget(s, np.ones(4, bool), one, np.array([5.0]), weight=np.array([1, 5, 1, 1.0]))[0] \
        == pytest.approx(0.85)   # 0.9 (1) fits, 0.8 (1 + 5) does not
    assert thresholds_at_budget(s, np.ones(4, bool), one, np.array([6.0]), weight=np.array([1, 5, 1, 1.0]))[0] \
        == pytest.approx(0.75)


def test_the_weighted_table_with_unit_weights_is_the_slice_engine():
    df, _, _ = plain_world(2, n_large=3, rows_large=3000, n_small=4, rows_small=200)
    y = df.label.to_numpy()
    merchant = assign(df, SliceFamily("merchant", ("merchant_id",)))
    blocked = (df.baseline_score >= df.baseline_threshold).to_numpy()
    engine = slice_metrics(y, {"baseline": df.baseline_score.to_numpy()},
                           {"baseline": df.baseline_threshold.to_numpy()}, [merchant], ranking=False)
    mine = weighted_table(y, np.ones(len(y)), {"baseline": blocked}, merchant.codes, merchant.n_slices)
    for k in ("rows", "positives", "negatives", "baseline_fp", "baseline_blocked"):
        np.testing.assert_array_equal(mine[k], engine[k].to_numpy())
    for k in ("baseline_fpr", "baseline_recall", "baseline_block_rate"):
        np.testing.assert_allclose(mine[k], engine[k].to_numpy(), rtol=1e-12)
    assert (mine["explored"] == 0).all()
    overall = weighted_table(y, np.ones(len(y)), {"baseline": blocked}, assign(df, OVERALL).codes, 1)
    assert overall["rows"][0] == len(df)


# ---- without a propensity column: as before, byte for byte ---------------------------------
#: sha256 (first 16 hex digits) of suggestions.json / .csv / .html on three fixtures, written by
#: the code before suggestions knew of propensities (commit 1c2beb1), generated_at set to "FIXED" and
#: the checkout's folder written "ROOT" (the contract's clauses name their source file by its path).
BEFORE = {
    "keep_fpr": ("78c7ace3105ea21c", "23a83bcdf756561f", "869b18ab2f27ef06"),
    "match_block_rate": ("df651e3383ef498e", "3fc95401c97d7c75", "ba3f521a2bd34be7"),
    "contract": ("e14e437e1bab9d62", "f66fc3781416e53a", "8ae43fe34d5c5950"),
}


def _digests(s: Suggestions, folder) -> tuple[str, ...]:
    s.generated_at = "FIXED"
    s.write(folder)
    return tuple(hashlib.sha256((folder / f).read_bytes().replace(str(ROOT).encode(), b"ROOT")).hexdigest()[:16]
                 for f in ("suggestions.json", "suggestions.csv", "suggestions.html"))


def test_without_propensity_every_output_is_as_before(tmp_path):
    df, _, _ = plain_world(1)
    mbr = ThresholdPolicy(objective="match_block_rate", min_support=MinSupport(rows=2000, negatives=1000))
    got = {
        "keep_fpr": suggest_thresholds(df, PLAIN_POLICY),
        "match_block_rate": suggest_thresholds(df, mbr),
        "contract": suggest_thresholds(country_world(), CONTRACT_POLICY, contract=load_contract(FRAUD),
                                       current_per_merchant={"zz": 0.4}),
    }
    for name, s in got.items():
        assert s.estimator == "counts" and "estimator" not in s.to_dict()
        assert all("explored" not in r for r in [s.global_row, *s.merchants])
        assert _digests(s, tmp_path / name) == BEFORE[name], name
