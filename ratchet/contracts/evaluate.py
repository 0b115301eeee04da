"""Judge scored rows against a contract: one vectorized metrics pass, then every clause.

    >>> verdict = evaluate_contract(load_contract("contracts/fraud.yaml"), scored_df)
    >>> verdict.passed, verdict.failures()

scored_df columns: `label` (0/1), `candidate_score`, optional `baseline_score` (absent:
bootstrap -- comparison clauses are "not judged: no baseline"), optional
`baseline_threshold` / `candidate_threshold` (per-row thresholds), and the slice columns
the contract's clauses use.

Statistics. Each clause is a constraint on a value: the candidate's metric (bound) or
the candidate-minus-baseline difference (the other kinds), and every judged clause x
slice gets one of three values:

- pass: the interval at the clause's confidence lies within the allowance;
- fail: the violation is credible -- the interval lies entirely beyond the allowance,
  after Holm's step-down correction over the clause's judged slices (a clause judged on
  300 slices does not get 300 chances of a false block);
- inconclusive: neither; the interval straddles the allowance.

Slices below min_support are "not judged". Inconclusive and not-judged slices of blocking
clauses are a verdict's open questions: the gate may still pass (no credible failure), and
the shadow phase must resolve them. Intervals: rate differences the two models are
thresholded on over the same rows (block, approval, false-positive, recall rates) are
paired (Agresti-Min's adjusted Wald interval on the discordant rows); other rates Wilson
and Newcombe's hybrid score interval; AUC Hanley-McNeil (a difference combines the two
errors as if independent, which is conservative). With `sequential=True` the same
standard errors are widened into confidence sequences (stats.cs_multiplier), valid at
every look of a review that re-judges a growing stream. Relative tolerances are
converted into metric units with the baseline's point estimate. average_precision has no
interval and is judged on its point estimate.

card_precision_at_k (the scored data needs `ts` and `card_id`) is judged on the whole
population only. Its interval is normal, estimate ± z * se, with se from a cluster
bootstrap over cards (metrics.card_precision_replicates: 1,000 Poisson(1)-weighted
replicates, seed 0, the test days held fixed; a difference is bootstrapped paired, both
models on the same replicate). A value's se is never below the binomial se of the queue's
places (k a day, stats.rate_se), so a queue full of frauds on every replicate is not
taken as certainty; a difference's never below 1 / (places + 2) (Agresti-Min's paired
se with half a place of disagreement each way). A binomial se on the places would be
too wide for a difference (a swap in one queue is not independent of the other's) and
would ignore that a card repeats across days for a value; hence the bootstrap.

`estimator: ipw` clauses (recall, fpr, block_rate; whole population) are for censored data:
the scored rows are the labelled ones the logging policy let through, each with its
`propensity` (the probability it was allowed; 1.0 where the model allowed it). Each row is
weighted by 1 / propensity (ratchet.evaluate.counterfactual: the self-normalised ratio
sum(w a) / sum(w c); for block_rate sum(w b) / sum(w)), so the estimate stands for every
explorable payment, blocked ones included. A bound judges the candidate's estimate, a
comparison the paired difference candidate - production on the same rows; both intervals
are normal, estimate ± z * se, with the linearised design variance (only explored rows
contribute), never below that of half an explored row in the denominator: with no explored
row that the policy (or, for a difference, just one of the two) blocks, the linearised
variance is ~0 however few explored rows there are, the Wald interval's failure at zero
successes; half a row of the explored rows' mean (1 - pi) / pi^2 keeps such an interval
honest (ipw_se_floor). Support is the labelled rows in the metric's denominator; a whole-population
clause with no explored row among them fails (nothing stands for production's blocks). The
reason reports the explored rows and Kish's effective sample size. A live review
(sequential) leaves them not judged: shadow traffic's decision logs carry no counterfactual
labels yet. Scores without a `propensity` column are a ScoresError.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ratchet.contracts.model import DIRECTION, SUPPORT_OF, Clause, Contract
from ratchet.contracts.verdict import ClauseResult, Verdict
from ratchet.data import columns as C
from ratchet.errors import MissingColumnError, RatchetError
from ratchet.evaluate import stats
from ratchet.evaluate.counterfactual import difference as ipw_difference
from ratchet.evaluate.counterfactual import ratio as ipw_ratio
from ratchet.evaluate.metrics import (CARD_METRICS, CARD_PRECISION_PREFIX, CardDays, card_days, card_precision, card_precision_replicates,
                                      slice_metrics, threshold_for_block_rate)
from ratchet.evaluate.slices import OVERALL, SliceCodes, assign

LABEL, CANDIDATE, BASELINE = "label", "candidate_score", "baseline_score"
CANDIDATE_THRESHOLD, BASELINE_THRESHOLD = "candidate_threshold", "baseline_threshold"
OVERALL_KEYS = ("rows", "auc", "average_precision", "recall_at_fpr", "fpr", "recall", "precision", "block_rate")
TS, CARD = "ts", "card_id"
#: Card precision reported with the overall metrics (when the scores carry ts and card_id).
OVERALL_CARD_K = 100
#: Bootstrap replicates and seed behind card_precision_at_k's intervals (fixed: verdicts reproduce).
CARD_REPLICATES, CARD_SEED = 1000, 0
PROPENSITY = C.PROPENSITY
#: Why an IPW clause is not judged in a live review.
IPW_LIVE = ("estimator ipw is judged at release only: the decision logs of shadow traffic carry no "
            "counterfactual labels yet")


class ScoresError(RatchetError):
    """The scored data cannot be judged (missing column, wrong type, empty, bad values)."""


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise ScoresError(f"column '{col}' must be numeric, got {s.dtype}")
    x = s.to_numpy(dtype=float)
    if np.isnan(x).any():
        raise ScoresError(f"column '{col}' has {int(np.isnan(x).sum())} missing value(s)")
    return x


def _ipw_weights(df: pd.DataFrame) -> np.ndarray | None:
    """1 / propensity per row on censored data (a missing propensity counts 1.0), else None."""
    if PROPENSITY not in df.columns:
        return None
    p = _propensity(df)
    return 1.0 / np.where(np.isnan(p), 1.0, p)


def _propensity(df: pd.DataFrame) -> np.ndarray:
    """The propensity column as floats, NaN where missing (nullable dtypes too)."""
    return df[PROPENSITY].astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def check_scores(df: pd.DataFrame, contract: Contract, *, sequential: bool = False) -> None:
    """Raise ScoresError naming what makes `df` unusable for `contract`.

    A card_precision_at_k clause needs ts and card_id; a live review (sequential) that
    lacks them leaves the clause not judged instead (the decision logs' joins drop ts)."""
    if len(df) == 0:
        raise ScoresError("the scored data has no rows")
    for col in (LABEL, CANDIDATE):
        if col not in df.columns:
            raise ScoresError(f"missing column '{col}' (have: {', '.join(map(str, df.columns))})")
    y = _numeric(df, LABEL)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ScoresError(f"column '{LABEL}' must be 0/1; found {y[bad][0]!r} ({int(bad.sum())} rows)")
    for col in (CANDIDATE, BASELINE, CANDIDATE_THRESHOLD, BASELINE_THRESHOLD):
        if col in df.columns:
            _numeric(df, col)
    if contract.thresholds.candidate == "column" and CANDIDATE_THRESHOLD not in df.columns:
        raise ScoresError(f"the contract's thresholds.candidate is 'column' but the scores have no '{CANDIDATE_THRESHOLD}'")
    for fam in contract.families():
        for col in fam.columns:
            if col not in df.columns:
                raise ScoresError(f"slice '{fam.name}' ({contract.slice_sources.get(fam.name, contract.path)}) "
                                  f"needs column '{col}', which the scored data lacks")
    card_clause = next((c for c in contract.clauses if c.metric in CARD_METRICS), None)
    if card_clause is not None and not sequential:
        for col in (TS, CARD):
            if col not in df.columns:
                raise ScoresError(f"clause '{card_clause.name}' ({card_clause.source}) ranks cards per day and "
                                  f"needs column '{col}', which the scored data lacks")
    ipw_clause = next((c for c in contract.clauses if c.estimator == "ipw"), None)
    if ipw_clause is not None and not sequential:
        what = (f"clause '{ipw_clause.name}' ({ipw_clause.source}) has estimator ipw, which weights each row by "
                f"1 / {PROPENSITY}")
        if PROPENSITY not in df.columns:
            raise ScoresError(f"{what} and needs column '{PROPENSITY}', which the scored data lacks: release on "
                              f"data that logs the production policy's decisions (columns {C.DECISION} and "
                              f"{PROPENSITY}; README \"Censored data\"), or remove estimator: ipw")
        _check_propensity(df, what)
    elif PROPENSITY in df.columns and contract.thresholds.candidate == "match_baseline_block_rate":
        _check_propensity(df, "the candidate's threshold is matched to the baseline's block rate with each row "
                              f"weighted by 1 / {PROPENSITY}")


def _check_propensity(df: pd.DataFrame, what: str) -> None:
    """Raise ScoresError unless the propensity column is numeric and in (0, 1] (missing: 1.0)."""
    s = df[PROPENSITY]
    if not pd.api.types.is_numeric_dtype(s):
        raise ScoresError(f"{what}; column '{PROPENSITY}' must be numeric, got {s.dtype}")
    p = _propensity(df)
    bad = ~np.isnan(p) & ~((p > 0) & (p <= 1))
    if bad.any():
        raise ScoresError(f"{what}; column '{PROPENSITY}' must be in (0, 1] (missing: 1.0), found "
                          f"{float(p[bad][0])!r} ({int(bad.sum())} rows)")


def _resolve_thresholds(df: pd.DataFrame, contract: Contract, has_baseline: bool) -> tuple[dict[str, Any], dict[str, str]]:
    th = contract.thresholds
    values: dict[str, Any] = {}
    how: dict[str, str] = {}
    if has_baseline:
        if BASELINE_THRESHOLD in df.columns:
            values["baseline"], how["baseline"] = df[BASELINE_THRESHOLD].to_numpy(float), f"column {BASELINE_THRESHOLD}"
        else:
            values["baseline"], how["baseline"] = th.default, f"default {th.default:g}"
    cand = df[CANDIDATE].to_numpy(float)
    if CANDIDATE_THRESHOLD in df.columns:
        values["candidate"], how["candidate"] = df[CANDIDATE_THRESHOLD].to_numpy(float), f"column {CANDIDATE_THRESHOLD}"
    elif th.candidate == "match_baseline_block_rate" and has_baseline:
        w = _ipw_weights(df)  # censored data: match the block rate on every payment, not on the ones let through
        blocked = df[BASELINE].to_numpy(float) >= values["baseline"]
        rate = float(np.mean(blocked) if w is None else np.sum(w * blocked) / np.sum(w))
        t = threshold_for_block_rate(cand, rate, w)
        kind = "block rate" if w is None else "IPW block rate (censored data: weighted by 1 / propensity)"
        values["candidate"], how["candidate"] = t, f"{t:.6g} (matches the baseline's {kind} {rate:.4%})"
    elif th.candidate == "match_baseline_block_rate" and th.bootstrap_block_rate is not None:
        w = _ipw_weights(df)
        t = threshold_for_block_rate(cand, th.bootstrap_block_rate, w)
        rows = "of rows" if w is None else "of the rows weighted by 1 / propensity"
        values["candidate"], how["candidate"] = t, f"{t:.6g} (bootstrap: blocks {th.bootstrap_block_rate:.2%} {rows})"
    else:
        values["candidate"], how["candidate"] = th.default, f"default {th.default:g}"
    return values, how


def _counts(tab: pd.DataFrame, metric: str, model: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(successes, trials) behind a rate metric, for intervals; None for non-rates."""
    rows, pos, neg = tab["rows"].to_numpy(), tab["positives"].to_numpy(), tab["negatives"].to_numpy()
    bl = tab[f"{model}_blocked"].to_numpy()
    if metric == "block_rate":
        return bl, rows
    if metric == "approval_rate":
        return rows - bl, rows
    if metric == "fpr":
        return tab[f"{model}_fp"].to_numpy(), neg
    if metric == "recall":
        return tab[f"{model}_tp"].to_numpy(), pos
    if metric == "precision":
        return tab[f"{model}_tp"].to_numpy(), bl
    if metric == "recall_at_fpr":
        return tab[f"{model}_recall_at_fpr_tp"].to_numpy(), pos
    return None


#: Rates both models are thresholded on over the same rows: their difference is paired.
PAIRED = ("block_rate", "approval_rate", "fpr", "recall")


def _discordant(tab: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(only candidate, only baseline, trials) for a paired rate, or None (not paired / no counts)."""
    if metric not in PAIRED or "c_only_blocked" not in tab.columns:
        return None
    col = {"block_rate": "blocked", "approval_rate": "blocked", "fpr": "fp", "recall": "tp"}[metric]
    denom = {"block_rate": "rows", "approval_rate": "rows", "fpr": "negatives", "recall": "positives"}[metric]
    c, b = tab[f"c_only_{col}"].to_numpy(float), tab[f"b_only_{col}"].to_numpy(float)
    if metric == "approval_rate":  # approvals are the complement: the candidate approves where only the baseline blocks
        c, b = b, c
    return c, b, tab[denom].to_numpy(float)


def _interval_family(clause: Clause, tab: pd.DataFrame, sequential: bool, support: np.ndarray):  # noqa: ANN202
    """(z -> (lo, hi) per slice, symmetric) on the candidate's value (bound) or candidate - baseline.

    symmetric is (estimate, standard error, x -> alpha) for intervals estimate ± multiplier *
    se, whose evidence has a closed form; None for Wilson / Newcombe score intervals."""
    metric = clause.metric
    t_star = stats.TUNE_FACTOR * max(1, clause.min_support)
    if sequential:
        def mult(z):  # noqa: ANN001, ANN202 - the confidence sequence's multiplier at the alpha of z
            return stats.cs_multiplier(support, stats.cs_alpha(z), t_star)

        def alpha_at(x):  # noqa: ANN001, ANN202
            return stats.cs_alpha_at(x, support, t_star)
    else:
        def mult(z):  # noqa: ANN001, ANN202
            return z
        alpha_at = stats.p_two_sided

    def sym(est: np.ndarray, se: np.ndarray):  # noqa: ANN202
        return (lambda z: (est - mult(z) * se, est + mult(z) * se)), (est, se, alpha_at)

    cand = tab[f"candidate_{metric}"].to_numpy(float)
    if metric in CARD_METRICS or clause.estimator == "ipw":  # bootstrap / design standard errors (module docstring)
        if clause.kind == "bound":
            return sym(cand, tab["candidate_se"].to_numpy(float))
        return sym(cand - tab[f"baseline_{metric}"].to_numpy(float), tab["difference_se"].to_numpy(float))
    pos, neg = tab["positives"].to_numpy(), tab["negatives"].to_numpy()
    if clause.kind == "bound":
        c = _counts(tab, metric, "candidate")
        if c is not None:
            return (lambda z: stats.wilson(c[0], c[1], z), None) if not sequential else sym(cand, stats.rate_se(*c))
        if metric == "auc":
            return sym(cand, stats.hanley_mcneil_se(cand, pos, neg))
        return sym(cand, np.zeros(len(cand)))  # average_precision: point estimate only
    base = tab[f"baseline_{metric}"].to_numpy(float)
    diff = cand - base
    disc = _discordant(tab, metric)
    if disc is not None:
        return sym(*stats.paired_difference(disc[0], disc[1], disc[2]))
    c, b = _counts(tab, metric, "candidate"), _counts(tab, metric, "baseline")
    if c is not None and b is not None:
        if not sequential:
            return lambda z: stats.newcombe(b[0], b[1], c[0], c[1], z), None
        return sym(diff, np.hypot(stats.rate_se(c[0], c[1]), stats.rate_se(b[0], b[1])))
    if metric == "auc":
        return sym(diff, np.hypot(stats.hanley_mcneil_se(cand, pos, neg), stats.hanley_mcneil_se(base, pos, neg)))
    return sym(diff, np.zeros(len(diff)))


def _allowance(clause: Clause, base: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[good_lo, good_hi] on the judged value (bound: the candidate's value; else candidate - baseline)."""
    inf = np.full(n, np.inf)
    if clause.kind == "bound":
        lo = np.full(n, clause.min) if clause.min is not None else -inf
        hi = np.full(n, clause.max) if clause.max is not None else inf
        return lo, hi
    if clause.kind == "rate_stability":
        tol = clause.tolerance.allowance(base)
        return -tol, tol
    need = (-clause.tolerance.allowance(base) if clause.kind == "no_regression"
            else (clause.margin.allowance(base) if clause.margin else np.zeros(n)))
    # oriented improvement sign * diff >= need
    return (need, inf) if DIRECTION[clause.metric] > 0 else (-inf, -need)


def _support(tab: pd.DataFrame, metric: str) -> np.ndarray:
    what = SUPPORT_OF[metric]
    return (tab["candidate_blocked"] if what == "blocked" else tab[what]).to_numpy()


def _fmt(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _judge(clause: Clause, tab: pd.DataFrame, has_baseline: bool, sequential: bool = False) -> list[ClauseResult]:
    """Three-valued judgement of one clause on every slice of its family.

    pass: the interval at the clause's confidence lies within the allowance; fail: the
    violation is credible after Holm's correction over the clause's judged slices;
    inconclusive: neither. Slices below min_support are not judged; the whole population
    below it fails (a gate never passes a blocking clause for want of evidence)."""
    n = len(tab)
    if clause.needs_baseline and not has_baseline:
        return [ClauseResult(
            name=clause.name, kind=clause.kind, metric=clause.metric, severity=clause.severity,
            status="not_judged", slice=str(tab["slice"].iat[i]), family=str(tab["family"].iat[i]),
            baseline=None, candidate=_fmt(tab[f"candidate_{clause.metric}"].iat[i]), difference=None,
            interval=None, support=int(_support(tab, clause.metric)[i]), min_support=clause.min_support,
            confidence=clause.confidence, rule=clause.rule(), reason=NO_BASELINE, excess=None,
            source=clause.source, k=clause.k, estimator=clause.estimator) for i in range(n)]
    alpha = 1.0 - clause.confidence
    z = stats.z_two_sided(clause.confidence)
    cand = tab[f"candidate_{clause.metric}"].to_numpy(float)
    base = tab[f"baseline_{clause.metric}"].to_numpy(float) if clause.needs_baseline else np.full(n, np.nan)
    support = _support(tab, clause.metric)
    interval_at, symmetric = _interval_family(clause, tab, sequential, support)
    good_lo, good_hi = _allowance(clause, base if clause.needs_baseline else cand, n)
    value = cand if clause.kind == "bound" else cand - base
    diff = np.full(n, np.nan) if clause.kind == "bound" else value
    # how far the point estimate is beyond the allowance (> 0: violated), for ordering
    with np.errstate(invalid="ignore"):
        excess = np.maximum(good_lo - value, value - good_hi)
    defined = np.isfinite(cand) & (np.isfinite(base) if clause.needs_baseline else True)
    whole = clause.per is None
    low = support < clause.min_support
    judged = defined & ~low
    with np.errstate(invalid="ignore"):
        p_pass, p_fail = (stats.symmetric_p(*symmetric[:2], good_lo, good_hi, symmetric[2]) if symmetric
                          else stats.evidence_p(interval_at, good_lo, good_hi))
    p_pass, p_fail = np.where(judged, p_pass, np.nan), np.where(judged, p_fail, np.nan)
    m = int(judged.sum())
    fail = stats.holm(p_fail, alpha, judged)
    passed = judged & ~fail & (p_pass <= alpha)
    status = np.where(fail, "fail", np.where(passed, "pass", "inconclusive")).astype(object)
    reason = np.full(n, "", dtype=object)
    multi = f"Holm over {m} judged slices" if m > 1 else ""
    straddles = judged & ~fail & ~passed
    alone = straddles & (p_fail <= alpha)
    reason[straddles] = "interval straddles the allowance"
    reason[alone] = f"beyond the allowance at {clause.confidence:.0%} on its own, not after {multi}"
    if multi:
        reason[fail] = f"credible after {multi}"
    # A slice too small to judge is "not judged"; the whole population too small to judge
    # fails: a gate must never pass a blocking clause merely because there was no evidence.
    status[low] = "fail" if whole else "not_judged"
    reason[low] = [f"support {s} < min_support {clause.min_support}"
                   + (": too little evidence on the whole test set; widen the test window" if whole else "")
                   for s in support[low]]
    undefined = ~defined
    status[undefined] = "fail" if whole else "not_judged"
    reason[undefined] = f"{clause.metric} undefined " + ("on the whole test set" if whole else "in this slice")
    with np.errstate(invalid="ignore"):
        lo, hi = interval_at(np.full(n, z))
    out = []
    for i in range(n):
        has_iv = np.isfinite(lo[i]) and np.isfinite(hi[i]) and not (lo[i] == hi[i] and clause.metric == "average_precision")
        out.append(ClauseResult(
            name=clause.name, kind=clause.kind, metric=clause.metric, severity=clause.severity,
            status=str(status[i]), slice=str(tab["slice"].iat[i]), family=str(tab["family"].iat[i]),
            baseline=_fmt(base[i]) if clause.needs_baseline else None, candidate=_fmt(cand[i]),
            difference=_fmt(diff[i]), interval=(float(lo[i]), float(hi[i])) if has_iv else None,
            support=int(support[i]), min_support=clause.min_support, confidence=clause.confidence,
            rule=clause.rule(), reason=str(reason[i]), excess=_fmt(excess[i]), source=clause.source,
            p_pass=_fmt(p_pass[i]), p_fail=_fmt(p_fail[i]), k=clause.k, estimator=clause.estimator,
        ))
    return out


NO_BASELINE = "no baseline"


def _card_days(scored: pd.DataFrame, scores: dict[str, np.ndarray]) -> CardDays:
    try:
        return card_days(scored[TS], scored[CARD], scored[LABEL].to_numpy(), scores)
    except ValueError as exc:
        raise ScoresError(f"columns '{TS}' and '{CARD}' cannot rank cards per day: {exc}") from None


def _card_table(k: int, cd: CardDays) -> pd.DataFrame:
    """The whole population's row for card_precision_at_k clauses of this k: each model's
    value, the support (cards in the candidate's daily queues) and the standard errors."""
    point = {m: card_precision(cd, m, k) for m in cd.score}
    reps = card_precision_replicates(cd, k, CARD_REPLICATES, CARD_SEED)
    cand = point["candidate"]
    places = k * len(cand.days)
    metric = CARD_METRICS[0]
    row: dict[str, Any] = {"family": OVERALL.name, "slice": "all", "cards": cand.examined,
                           f"candidate_{metric}": cand.value,
                           "candidate_se": max(float(np.std(reps["candidate"], ddof=1)),
                                               float(stats.rate_se(cand.frauds, places)))}
    if "baseline" in point:
        row[f"baseline_{metric}"] = point["baseline"].value
        row["difference_se"] = max(float(np.std(reps["candidate"] - reps["baseline"], ddof=1)), 1.0 / (places + 2))
    return pd.DataFrame([row])


def _unjudged(clause: Clause, reason: str) -> ClauseResult:
    """The whole population's result of a clause that could not be computed on these scores."""
    return ClauseResult(
        name=clause.name, kind=clause.kind, metric=clause.metric, severity=clause.severity, status="not_judged",
        slice="all", family=OVERALL.name, baseline=None, candidate=None, difference=None, interval=None, support=0,
        min_support=clause.min_support, confidence=clause.confidence, rule=clause.rule(), reason=reason,
        excess=None, source=clause.source, k=clause.k, estimator=clause.estimator)


def _ipw_table(metric: str, scored: pd.DataFrame, y: np.ndarray, scores: dict[str, np.ndarray],
               thresholds: dict[str, Any]) -> pd.DataFrame:
    """The whole population's row for ipw clauses of this metric: each model's IPW estimate,
    the counts of labelled rows (the support), the standard errors (of the candidate's value
    and of the paired difference), explored rows and effective sample size."""
    prop = _propensity(scored)
    prop = np.where(np.isnan(prop), 1.0, prop)   # as ratchet.evaluate.policy_estimates: missing = model-allowed
    blocks = {m: scores[m] >= np.asarray(thresholds[m], dtype=float) for m in scores}
    cand = ipw_ratio(y, prop, blocks["candidate"], metric)
    floor = ipw_se_floor(metric, y, prop)
    pos = int(np.sum(y == 1))
    row: dict[str, Any] = {"family": OVERALL.name, "slice": "all", "rows": len(y), "positives": pos,
                           "negatives": len(y) - pos, f"candidate_{metric}": cand.value, "candidate_se": max(cand.se, floor),
                           "explored": cand.explored, "ess": cand.ess}
    if "baseline" in blocks:
        d = ipw_difference(y, prop, blocks["candidate"], blocks["baseline"], metric)
        row[f"baseline_{metric}"] = d.value_b
        row["difference_se"] = max(d.se, floor)
    return pd.DataFrame([row])


def ipw_se_floor(metric: str, y: np.ndarray, propensity: np.ndarray) -> float:
    """The least standard error of an IPW ratio (or paired difference) of `metric`: the design
    variance of half an explored row in its denominator, sqrt(0.5 mean((1 - pi) / pi^2)) /
    sum(1 / pi), 0.0 without explored rows."""
    den = {"recall": y == 1, "fpr": y == 0}.get(metric, np.ones(len(y), dtype=bool))
    pi = propensity[den]
    explored = pi[pi < 1.0]
    if not len(explored):
        return 0.0
    return float(np.sqrt(0.5 * np.mean((1.0 - explored) / explored ** 2)) / np.sum(1.0 / pi))


def _judge_ipw(clause: Clause, tab: pd.DataFrame, has_baseline: bool) -> list[ClauseResult]:
    """_judge on the IPW row, with the weights' evidence in the reason; no explored row in
    the metric's denominator fails the clause (its estimate would be the naive one, certain)."""
    explored, ess = int(tab["explored"].iat[0]), float(tab["ess"].iat[0])
    note = f"IPW: {explored:,} explored rows, effective sample size {ess:,.0f}"
    out = []
    for r in _judge(clause, tab, has_baseline):
        if r.reason == NO_BASELINE:
            out.append(r)
        elif explored == 0 and not r.reason.startswith("support "):  # too little support says so itself
            out.append(replace(r, status="fail", reason=(
                f"no explored row among the {r.support:,} labelled rows in {clause.metric}'s denominator: nothing "
                "stands for the payments production blocked; judge it on data logged with exploration")))
        else:
            out.append(replace(r, reason=f"{r.reason}; {note}" if r.reason else note))
    return out


def _discordance(y: np.ndarray, scores: dict[str, np.ndarray], thresholds: dict[str, Any],
                 families: list[SliceCodes]) -> pd.DataFrame:
    """Per slice, rows blocked by only the candidate and by only the baseline (and their tp/fp):
    the discordant pairs that paired intervals on rate differences rest on."""
    cb = scores["candidate"] >= np.asarray(thresholds["candidate"], dtype=float)
    bb = scores["baseline"] >= np.asarray(thresholds["baseline"], dtype=float)
    tab = slice_metrics(y, {"c_only": (cb & ~bb).astype(float), "b_only": (bb & ~cb).astype(float)},
                        {"c_only": 0.5, "b_only": 0.5}, families, reference_fpr=0.0, ranking=False)
    return tab[[f"{m}_{k}" for m in ("c_only", "b_only") for k in ("blocked", "tp", "fp")]]


def evaluate_contract(contract: Contract, scored: pd.DataFrame, *, sequential: bool = False) -> Verdict:
    """Judge `scored` against every clause of `contract`; raises ScoresError on unusable data.

    sequential: draw confidence sequences instead of fixed-sample intervals (for reviews
    that look at a growing stream again and again: the shadow review)."""
    check_scores(scored, contract, sequential=sequential)
    has_baseline = BASELINE in scored.columns
    thresholds, how = _resolve_thresholds(scored, contract, has_baseline)
    scores = {"candidate": scored[CANDIDATE].to_numpy(float)}
    if has_baseline:
        scores = {"baseline": scored[BASELINE].to_numpy(float), **scores}
    if has_baseline and contract.reference_fpr == "baseline":
        ref: str | float = "baseline"
        ref_how = "the baseline's FPR in each slice"
    elif isinstance(contract.reference_fpr, float | int):
        ref, ref_how = float(contract.reference_fpr), f"{contract.reference_fpr:g}"
    elif contract.bootstrap_fpr is not None:
        ref, ref_how = float(contract.bootstrap_fpr), f"{contract.bootstrap_fpr:g} (bootstrap: no baseline)"
    else:
        ref, ref_how = float("nan"), "undefined (no baseline and no bootstrap_fpr)"
    try:
        families: list[SliceCodes] = [assign(scored, OVERALL)] + [assign(scored, f) for f in contract.families()]
    except MissingColumnError as exc:
        raise ScoresError(str(exc)) from None
    y = scored[LABEL].to_numpy()
    table = slice_metrics(y, scores, thresholds, families, reference_fpr=ref)
    if has_baseline:
        table = pd.concat([table, _discordance(y, scores, thresholds, families)], axis=1)
    cd: CardDays | None = None
    if TS in scored.columns and CARD in scored.columns:
        try:
            cd = _card_days(scored, scores)
        except ScoresError:
            if any(c.metric in CARD_METRICS for c in contract.clauses):
                raise
            # cd stays None: only the overall card precision is lost, and no clause needed it
    card_tables: dict[int, pd.DataFrame] = {}
    ipw_tables: dict[str, pd.DataFrame] = {}
    results: list[ClauseResult] = []
    for clause in contract.clauses:
        if clause.estimator == "ipw":
            if sequential:
                results.append(_unjudged(clause, IPW_LIVE))
                continue
            if clause.metric not in ipw_tables:
                ipw_tables[clause.metric] = _ipw_table(clause.metric, scored, y, scores, thresholds)
            results.extend(_judge_ipw(clause, ipw_tables[clause.metric], has_baseline))
            continue
        if clause.metric in CARD_METRICS:
            if cd is None:
                results.append(_unjudged(clause, f"needs columns {TS} and {CARD}, which these scores lack"))
                continue
            if clause.k not in card_tables:
                card_tables[clause.k] = _card_table(clause.k, cd)
            results.extend(_judge(clause, card_tables[clause.k], has_baseline, sequential))
            continue
        fam = clause.per or OVERALL.name
        results.extend(_judge(clause, table[table["family"] == fam].reset_index(drop=True), has_baseline, sequential))
    overall_row = table[table["family"] == OVERALL.name].iloc[0]
    overall: dict[str, dict[str, Any] | None] = {}
    for m in ("candidate", "baseline"):
        if m not in scores:
            overall[m] = None
            continue
        overall[m] = {k: (int(overall_row["rows"]) if k == "rows" else _fmt(overall_row[f"{m}_{k}"])) for k in OVERALL_KEYS}
        overall[m][f"{CARD_PRECISION_PREFIX}{OVERALL_CARD_K}"] = (
            _fmt(card_precision(cd, m, OVERALL_CARD_K).value) if cd is not None else None)
        t = thresholds[m]
        overall[m]["threshold"] = float(t) if np.ndim(t) == 0 else "per row"
    overall["reference_fpr"] = {"value": _fmt(float(overall_row["reference_fpr"])), "how": ref_how}  # type: ignore[assignment]
    return Verdict(contract=contract.path, contract_name=contract.name, results=results, overall=overall,
                   thresholds=how, has_baseline=has_baseline, table=table, threshold_values=thresholds,
                   sequential=sequential)
