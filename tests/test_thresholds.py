"""Per-merchant threshold suggestions: the optimiser, the suggestion table, the policy file
and the graduation rule (pure functions; the registry side is in test_threshold_ledger.py)."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from ratchet.errors import SpecError
from ratchet.thresholds import (
    GLOBAL, Graduation, MinSupport, Suggestions, ThresholdError, ThresholdPolicy, decide, graduation, parse_edits,
    policy_from_text, suggest_thresholds,
)
from ratchet.thresholds.ledger import build_entry, verify_chain
from ratchet.thresholds.optimise import group_rows, thresholds_at_budget


def sig(x):
    return 1 / (1 + np.exp(-x))


def world(seed: int, n_large: int = 12, rows_large: int = 20_000, n_small: int = 30, rows_small: int = 300):
    """Merchants whose production FPR is known by construction: legitimate baseline scores
    are sig(shift_m + N(0,1) - 3), so threshold sig(shift_m + z_{1-f_m} - 3) has FPR f_m.
    The candidate is a better model with its own per-merchant score shift."""
    rng = np.random.default_rng(seed)
    M = n_large + n_small
    sizes = np.r_[np.full(n_large, rows_large), np.full(n_small, rows_small)]
    m = np.repeat(np.arange(M), sizes)
    n = len(m)
    y = (rng.random(n) < 0.02).astype(np.int8)
    p = np.random.default_rng(99)  # merchant parameters: the same in every sample
    shift_b, shift_c = p.normal(0, 0.5, M), p.normal(0, 0.7, M)
    fpr = p.uniform(0.005, 0.05, M)
    b = sig(shift_b[m] + rng.normal(size=n) + 2.0 * y - 3)
    c = sig(shift_c[m] + rng.normal(size=n) + 3.0 * y - 3)
    thr = sig(shift_b + norm.ppf(1 - fpr) - 3)
    df = pd.DataFrame({"label": y, "candidate_score": c, "baseline_score": b, "baseline_threshold": thr[m],
                       "merchant_id": np.array([f"m{i:03d}" for i in range(M)], dtype=object)[m]})
    return df, fpr, thr


POLICY = ThresholdPolicy(min_support=MinSupport(rows=2000, negatives=1000))


def rates(df, thr_col, score_col):
    blocked = df[score_col] >= df[thr_col]
    g = df.assign(b=blocked, fp=blocked & (df.label == 0), tp=blocked & (df.label == 1))
    agg = g.groupby("merchant_id").agg(neg=("label", lambda s: int((s == 0).sum())), pos=("label", "sum"),
                                      fp=("fp", "sum"), tp=("tp", "sum"))
    return agg.fp / agg.neg, agg.tp / agg.pos, agg


def test_large_merchants_keep_production_fpr_and_recall_does_not_fall():
    df, fpr, _ = world(1)
    s = suggest_thresholds(df, POLICY)
    thr = dict(s.thresholds()[1])
    assert len(thr) == 12 and all(m.startswith("m0") and int(m[1:]) < 12 for m in thr)
    # on the window they were chosen on: exactly at or below production, merchant by merchant
    scored = s.apply(df)
    cf, cr, _ = rates(scored, "candidate_threshold", "candidate_score")
    bf, br, agg = rates(df, "baseline_threshold", "baseline_score")
    for mname in thr:
        assert cf[mname] <= bf[mname] + 1e-12
        assert cr[mname] >= br[mname]
    # on a fresh sample from the same world: at or below the known production FPR within
    # sampling tolerance (3 standard errors), and recall no lower than production's
    fresh, _, _ = world(2)
    fresh["candidate_threshold"] = fresh["merchant_id"].map(thr).fillna(s.global_threshold)
    cf2, cr2, agg2 = rates(fresh, "candidate_threshold", "candidate_score")
    _, br2, _ = rates(fresh, "baseline_threshold", "baseline_score")
    for mname in thr:
        i = int(mname[1:])
        se = np.sqrt(2 * fpr[i] * (1 - fpr[i]) / agg2.neg[mname])  # two independent samples
        assert cf2[mname] <= fpr[i] + 3 * se, mname
        assert cr2[mname] >= br2[mname] - 3 * np.sqrt(0.25 / agg2.pos[mname]), mname
    # the table says the same as the direct count
    row = next(r for r in s.merchants if r["merchant"] == "m000")
    assert row["after_fpr"] == pytest.approx(cf["m000"]) and row["before_fpr"] == pytest.approx(bf["m000"])
    assert row["source"] == "merchant" and row["current_threshold"] == pytest.approx(df.baseline_threshold.iat[0])


def test_thresholds_are_the_lowest_within_budget():
    """Optimality: the next lower observed score would break the merchant's FPR budget."""
    df, _, _ = world(3, n_large=6, n_small=0)
    s = suggest_thresholds(df, POLICY)
    for mname, t in s.thresholds()[1].items():
        g = df[df.merchant_id == mname]
        neg_scores = g.candidate_score[g.label == 0].to_numpy()
        budget = int(((g.baseline_score >= g.baseline_threshold) & (g.label == 0)).sum())
        assert (neg_scores >= t).sum() <= budget
        lower = g.candidate_score[g.candidate_score < t].max()
        assert (neg_scores >= lower).sum() > budget


def test_small_merchants_get_the_global_threshold_chosen_on_the_whole_population():
    df, _, _ = world(4)
    s = suggest_thresholds(df, POLICY)
    scored = s.apply(df)
    small = scored[scored.merchant_id.str[1:].astype(int) >= 12]
    assert np.allclose(small.candidate_threshold, s.global_threshold)
    # the global threshold keeps production's overall FPR
    neg = df.label == 0
    base_fp = ((df.baseline_score >= df.baseline_threshold) & neg).sum()
    assert ((df.candidate_score >= s.global_threshold) & neg).sum() <= base_fp
    assert s.fallback == {"merchants": 30, "rows": 30 * 300}
    assert not any(m["merchant"] == "m020" for m in s.merchants)  # below support, not listed


def test_merchant_without_negatives_or_positives_is_handled_and_explained():
    df, _, _ = world(5, n_large=4, n_small=0)
    df.loc[df.merchant_id == "m001", "label"] = 1      # only fraud: FPR undefined
    df.loc[df.merchant_id == "m002", "label"] = 0      # no fraud: recall unmeasurable
    s = suggest_thresholds(df, ThresholdPolicy(min_support=MinSupport(rows=2000, negatives=0)))
    by = {m["merchant"]: m for m in s.merchants}
    assert by["m001"]["source"] == "global" and by["m001"]["suggested_threshold"] == s.global_threshold
    assert "no legitimate payments" in by["m001"]["note"] and by["m001"]["after_fpr"] is None
    assert by["m002"]["source"] == "merchant" and "recall cannot be measured" in by["m002"]["note"]
    assert by["m002"]["after_recall"] is None and by["m002"]["after_fpr"] <= by["m002"]["before_fpr"]
    # a merchant production never blocks wrongly keeps FPR 0
    df2, _, _ = world(6, n_large=2, n_small=0)
    df2.loc[df2.merchant_id == "m000", "baseline_threshold"] = 1.0
    s2 = suggest_thresholds(df2, POLICY)
    r = next(m for m in s2.merchants if m["merchant"] == "m000")
    assert r["after_fpr"] == 0 and "blocks none" in r["note"]


def test_match_block_rate_objective_and_bootstrap():
    df, _, _ = world(7, n_large=3, n_small=0)
    s = suggest_thresholds(df, ThresholdPolicy(objective="match_block_rate", min_support=MinSupport(2000, 1000)))
    for r in s.merchants:
        assert r["after_block_rate"] <= r["before_block_rate"] + 1e-12
        assert r["after_block_rate"] > r["before_block_rate"] - 0.002  # as close as the scores allow
    boot = suggest_thresholds(df.drop(columns=["baseline_score", "baseline_threshold"]), POLICY,
                              bootstrap_block_rate=0.01)
    assert boot.bootstrap and boot.merchants == [] and not boot.reviewable()
    assert boot.global_row["after_block_rate"] == pytest.approx(0.01, abs=1e-4)
    assert "bootstrap" in boot.notes[0]


def test_renderings_round_trip(tmp_path):
    df, _, _ = world(8, n_large=3, n_small=5)
    df.loc[df.merchant_id == "m004", "baseline_threshold"] = 0.4  # production's own threshold for m004
    s = suggest_thresholds(df, POLICY, current_default=0.3, current_per_merchant={"m004": 0.4, "gone": 0.5})
    paths = s.write(tmp_path)
    assert [p.name for p in paths] == ["suggestions.csv", "suggestions.json", "suggestions.html"]
    back = Suggestions.from_dict(json.loads((tmp_path / "suggestions.json").read_text()))
    assert back.thresholds() == s.thresholds() and back.merchants == s.merchants
    csv = pd.read_csv(tmp_path / "suggestions.csv")
    assert csv.merchant.iloc[0] == GLOBAL and {"before_fpr", "after_recall", "suggested_threshold"} <= set(csv.columns)
    by = {m["merchant"]: m for m in s.merchants}
    assert "had its own threshold" in by["m004"]["note"] and by["m004"]["current_threshold"] == 0.4
    assert by["gone"]["rows"] == 0 and "no payments" in by["gone"]["note"]
    assert "<table>" in (tmp_path / "suggestions.html").read_text() and "m000" in s.to_text()


def test_optimiser_ties_budget_edges():
    score = np.array([0.9, 0.9, 0.8, 0.8, 0.7, 0.2, 0.9, 0.1])
    codes = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int16)
    neg = np.array([1, 0, 1, 1, 0, 1, 1, 1], dtype=bool)
    g = group_rows(codes, 2)
    # group 0: budget 1 negative -> the 0.9 tie holds one negative, the 0.8 tie two more
    t = thresholds_at_budget(score, neg, g, np.array([1, 5]))
    assert t[0] == pytest.approx(0.85) and t[1] == pytest.approx(0.1)   # budget >= negatives: block all
    t = thresholds_at_budget(score, neg, g, np.array([0, 0]))
    assert t[0] > 0.9 and t[1] > 0.9                                    # nothing may be blocked
    t = thresholds_at_budget(score, neg, g, np.array([3, 1]))
    assert t[0] == pytest.approx(0.45) and t[1] == pytest.approx(0.5)
    assert np.isnan(thresholds_at_budget(score, np.zeros(8, bool), g, np.array([1, 1]))).all()
    t = thresholds_at_budget(score, neg, g, np.array([1, 1]), only=np.array([False, True]))
    assert np.isnan(t[0]) and t[1] == pytest.approx(0.5)
    one = thresholds_at_budget(score, neg, group_rows(None, 1, 8), np.array([2]))
    assert one[0] == pytest.approx(0.85)  # 0.9 tie: 2 negatives (rows 0 and 6); 0.8 would add 2 more


def test_policy_file_errors_name_file_and_line():
    good = policy_from_text("mode: auto\nobjective: match_block_rate\nmin_support: {rows: 10}\n", "t.yaml")
    assert good.mode == "auto" and good.min_support.rows == 10 and good.min_support.negatives == 1000
    cases = {
        "mode: sometimes\n": "t.yaml:1: mode: expected one of suggest, auto",
        "mode: suggest\nobjective: max_profit\n": "t.yaml:2: objective",
        "graduation:\n  cycles: 3\n  min_accepted_share: 90\n": "t.yaml:3: graduation.min_accepted_share",
        "min_support:\n  rowz: 5\n": "t.yaml:2: min_support.rowz: unknown key",
        "graduation: {cycles: 0}\n": "graduation.cycles: needs at least 1",
    }
    for text, msg in cases.items():
        with pytest.raises(SpecError) as exc:
            policy_from_text(text, "t.yaml")
        assert msg in str(exc.value)


# ---- decisions and graduation ----------------------------------------------------------
def tiny(n_own: int = 9) -> Suggestions:
    rows = [{"merchant": f"m{i}", "suggested_threshold": 0.5, "source": "merchant", "rows": 5000} for i in range(n_own)]
    rows.append({"merchant": "small", "suggested_threshold": 0.4, "source": "global", "rows": 2500})
    return Suggestions(objective="keep_fpr", policy=POLICY.to_dict(), bootstrap=False,
                       global_row={"merchant": GLOBAL, "suggested_threshold": 0.4}, merchants=rows,
                       fallback={"merchants": 1, "rows": 2500}, version=3)


def test_decisions_accept_edit_reject():
    a = decide(tiny(), parse_edits(["m0=0.55", "small=0.45", "m1=0.5"]), ["m2"], actor="alice")
    kinds = {d.merchant: d.decision for d in a.decisions}
    assert kinds["m0"] == "edited" and kinds["m1"] == "accepted" and kinds["m2"] == "rejected"
    assert kinds["small"] == "edited" and kinds[GLOBAL] == "accepted"
    assert a.merchant_thresholds["m0"] == 0.55 and "m2" not in a.merchant_thresholds
    assert a.merchant_thresholds["small"] == 0.45 and a.threshold == 0.4
    s = a.summary()
    assert (s["suggestions"], s["accepted"], s["edited"], s["rejected"]) == (11, 8, 2, 1)
    assert s["max_edit"] == pytest.approx(0.05)


@pytest.mark.parametrize("sets, rejects, msg", [
    (["nobody=0.5"], [], "unknown merchant"),
    (["m0=1.5"], [], "within [0, 1]"),
    (["m0=-0.1"], [], "within [0, 1]"),
    (["m0=abc"], [], "not a number"),
    (["m0"], [], "MERCHANT=VALUE"),
    (["m0=0.5", "m0=0.6"], [], "two values"),
    (["m0=0.5"], ["m0"], "both --set and --reject"),
    ([], ["*"], "cannot be rejected"),
    ([], ["small"], "no threshold of their own"),
    ([], ["ghost"], "unknown merchant"),
])
def test_bad_decisions_are_refused(sets, rejects, msg):
    with pytest.raises(ThresholdError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        decide(tiny(), parse_edits(sets), rejects, actor="x")


def entries_for(edits_per_cycle, modes=None):
    """Ledger entries, one per cycle, each with the given edits (list of (merchant, value))."""
    out = []
    for i, edits in enumerate(edits_per_cycle):
        s = tiny()
        mode = (modes or {}).get(i, "suggest")
        a = decide(s, dict(edits), [], actor="auto" if mode == "auto" else "p", mode=mode)
        out.append(build_entry(a, s, model="fraud", version=10 + i, cycle=i + 1, at=f"2025-01-{i + 1:02d}",
                               previous=out))
    return out


def test_graduation_triggers_exactly_at_the_boundary():
    rule = Graduation(cycles=3, min_accepted_share=0.9, max_edit=0.02)
    at_limit = [("m0", 0.52)]            # an edit of exactly max_edit (0.5 -> 0.52)
    # tiny() has 11 suggestions: one edit -> 10/11 = 90.9% unchanged; two edits -> 81.8%
    two_edits = [("m0", 0.51), ("m1", 0.51)]
    e = entries_for([at_limit, at_limit])
    assert not graduation(e, rule).met and graduation(e, rule).streak == 2
    assert "1 more reviewed cycle" in graduation(e, rule).sentence
    e = entries_for([at_limit, at_limit, at_limit])
    rep = graduation(e, rule)
    assert rep.met and rep.streak == 3 and "MET" in rep.sentence      # edit of exactly max_edit passes
    assert not graduation(entries_for([at_limit, at_limit, [("m0", 0.5201)]]), rule).met   # just over
    assert not graduation(entries_for([at_limit, at_limit, two_edits]), rule).met          # share too low
    # share exactly at the limit: 10 suggestions with 9 unchanged = 90%
    rule90 = Graduation(cycles=1, min_accepted_share=0.9, max_edit=0.02)
    s = Suggestions(objective="keep_fpr", policy=POLICY.to_dict(), bootstrap=False,
                    global_row={"merchant": GLOBAL, "suggested_threshold": 0.4},
                    merchants=[{"merchant": f"m{i}", "suggested_threshold": 0.5, "source": "merchant"} for i in range(9)],
                    fallback={"merchants": 0, "rows": 0}, version=1)
    one = build_entry(decide(s, {"m0": 0.51}, [], actor="p"), s, model="f", version=1, cycle=1, at="t", previous=[])
    assert one["summary"]["accepted_share"] == 0.9 and graduation([one], rule90).met
    two = build_entry(decide(s, {"m0": 0.51, "m1": 0.51}, [], actor="p"), s, model="f", version=2, cycle=2,
                      at="t", previous=[one])
    assert not graduation([one, two], rule90).met
    # auto cycles are skipped; a supersending re-approval replaces its version's cycle
    e = entries_for([at_limit, at_limit, at_limit, []], modes={3: "auto"})
    assert graduation(e, rule).met and e[3]["decisions"][0]["decision"] == "auto"
    a = decide(tiny(), dict(two_edits), [], actor="p")
    e.append(build_entry(a, tiny(), model="fraud", version=12, cycle=5, at="t", previous=e))
    assert e[-1]["supersedes"] == 3 and not graduation(e, rule).met
    assert verify_chain(e) == []
    e[1]["summary"]["edited"] = 0
    assert "digest" in verify_chain(e)[0]
