"""Judge scored rows against a contract: one vectorized metrics pass, then every clause.

    >>> verdict = evaluate_contract(load_contract("contracts/fraud.yaml"), scored_df)
    >>> verdict.passed, verdict.failures()

scored_df columns: `label` (0/1), `candidate_score`, optional `baseline_score` (absent:
bootstrap -- comparison clauses are "not judged: no baseline"), optional
`baseline_threshold` / `candidate_threshold` (per-row thresholds), and the slice columns
the contract's clauses use.

Statistics. Each clause is a constraint on a value: the candidate's metric (bound) or
the candidate-minus-baseline difference oriented so that positive is better (the other
kinds). A slice *fails* only when the whole interval at the clause's confidence lies
beyond the limit; when the point estimate is beyond it but the interval is not, the
slice passes with the note "not credible". Intervals: Wilson (rates), Newcombe's hybrid
score interval (differences of rates), Hanley-McNeil (AUC, and for an AUC difference the
two errors combined as if independent). Baseline and candidate are scored on the same
rows; treating them as independent widens every interval (the scores are positively
correlated), so failures are conservative. Relative tolerances are converted into
metric units with the baseline's point estimate. average_precision has no interval and
is judged on its point estimate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ratchet.contracts.model import DIRECTION, SUPPORT_OF, Clause, Contract
from ratchet.contracts.verdict import ClauseResult, Verdict
from ratchet.errors import MissingColumnError, RatchetError
from ratchet.evaluate import stats
from ratchet.evaluate.metrics import slice_metrics, threshold_for_block_rate
from ratchet.evaluate.slices import OVERALL, SliceCodes, assign

LABEL, CANDIDATE, BASELINE = "label", "candidate_score", "baseline_score"
CANDIDATE_THRESHOLD, BASELINE_THRESHOLD = "candidate_threshold", "baseline_threshold"
OVERALL_KEYS = ("rows", "auc", "average_precision", "recall_at_fpr", "fpr", "recall", "precision", "block_rate")


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


def check_scores(df: pd.DataFrame, contract: Contract) -> None:
    """Raise ScoresError naming what makes `df` unusable for `contract`."""
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
        rate = float(np.mean(df[BASELINE].to_numpy(float) >= values["baseline"]))
        t = threshold_for_block_rate(cand, rate)
        values["candidate"], how["candidate"] = t, f"{t:.6g} (matches the baseline's block rate {rate:.4%})"
    elif th.candidate == "match_baseline_block_rate" and th.bootstrap_block_rate is not None:
        t = threshold_for_block_rate(cand, th.bootstrap_block_rate)
        values["candidate"], how["candidate"] = t, f"{t:.6g} (bootstrap: blocks {th.bootstrap_block_rate:.2%} of rows)"
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


def _value_interval(tab: pd.DataFrame, metric: str, z: float) -> tuple[np.ndarray, np.ndarray]:
    c = _counts(tab, metric, "candidate")
    if c is not None:
        return stats.wilson(c[0], c[1], z)
    v = tab[f"candidate_{metric}"].to_numpy(float)
    if metric == "auc":
        se = stats.hanley_mcneil_se(v, tab["positives"].to_numpy(), tab["negatives"].to_numpy())
        return v - z * se, v + z * se
    return v, v  # average_precision: point estimate only


def _diff_interval(tab: pd.DataFrame, metric: str, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval on candidate - baseline (raw, not oriented)."""
    c, b = _counts(tab, metric, "candidate"), _counts(tab, metric, "baseline")
    if c is not None and b is not None:
        return stats.newcombe(b[0], b[1], c[0], c[1], z)
    vc, vb = tab[f"candidate_{metric}"].to_numpy(float), tab[f"baseline_{metric}"].to_numpy(float)
    d = vc - vb
    if metric == "auc":
        pos, neg = tab["positives"].to_numpy(), tab["negatives"].to_numpy()
        se = np.hypot(stats.hanley_mcneil_se(vc, pos, neg), stats.hanley_mcneil_se(vb, pos, neg))
        return d - z * se, d + z * se
    return d, d


def _support(tab: pd.DataFrame, metric: str) -> np.ndarray:
    what = SUPPORT_OF[metric]
    return (tab["candidate_blocked"] if what == "blocked" else tab[what]).to_numpy()


def _fmt(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _judge(clause: Clause, tab: pd.DataFrame, has_baseline: bool) -> list[ClauseResult]:
    z = stats.z_two_sided(clause.confidence)
    n = len(tab)
    if clause.needs_baseline and not has_baseline:
        return [ClauseResult(
            name=clause.name, kind=clause.kind, metric=clause.metric, severity=clause.severity,
            status="not_judged", slice=str(tab["slice"].iat[i]), family=str(tab["family"].iat[i]),
            baseline=None, candidate=_fmt(tab[f"candidate_{clause.metric}"].iat[i]), difference=None,
            interval=None, support=int(_support(tab, clause.metric)[i]), min_support=clause.min_support,
            confidence=clause.confidence, rule=clause.rule(), reason="no baseline", excess=None,
            source=clause.source) for i in range(n)]
    cand = tab[f"candidate_{clause.metric}"].to_numpy(float)
    base = tab[f"baseline_{clause.metric}"].to_numpy(float) if has_baseline else np.full(n, np.nan)
    support = _support(tab, clause.metric)
    status = np.full(n, "pass", dtype=object)
    reason = np.full(n, "", dtype=object)
    excess = np.zeros(n)  # how far the point estimate is beyond the limit (> 0: violation)
    limit = ""
    if clause.kind == "bound":
        lo, hi = _value_interval(tab, clause.metric, z)
        diff = np.full(n, np.nan)
        value = cand
        fail = np.zeros(n, dtype=bool)
        if clause.min is not None:
            fail |= hi < clause.min
            excess = np.maximum(excess, clause.min - value)
        if clause.max is not None:
            fail |= lo > clause.max
            excess = np.maximum(excess, value - clause.max)
        limit = clause.rule()
    else:
        lo, hi = _diff_interval(tab, clause.metric, z)
        diff = cand - base
        sign = DIRECTION[clause.metric]
        if clause.kind == "rate_stability":
            tol = clause.tolerance.allowance(base)
            fail = (lo > tol) | (hi < -tol)
            excess = np.abs(diff) - tol
        else:
            # oriented improvement: positive is better
            g, g_lo, g_hi = sign * diff, np.minimum(sign * lo, sign * hi), np.maximum(sign * lo, sign * hi)
            if clause.kind == "no_regression":
                need = -clause.tolerance.allowance(base)
            else:
                need = clause.margin.allowance(base) if clause.margin else np.zeros(n)
            fail = g_hi < need
            excess = need - g
            del g_lo
        limit = clause.rule()
    defined = np.isfinite(cand) & (np.isfinite(base) if clause.needs_baseline else True)
    fail &= defined
    status[fail] = "fail"
    noisy = (~fail) & defined & (excess > 1e-12)
    reason[noisy] = "violation not statistically credible"
    # A slice too small to judge is "not judged"; the whole population too small to judge
    # fails: a gate must never pass a blocking clause merely because there was no evidence.
    whole = clause.per is None
    low = support < clause.min_support
    status[low] = "fail" if whole else "not_judged"
    reason[low] = [f"support {s} < min_support {clause.min_support}"
                   + (": too little evidence on the whole test set; widen the test window" if whole else "")
                   for s in support[low]]
    undefined = ~defined
    status[undefined] = "fail" if whole else "not_judged"
    reason[undefined] = f"{clause.metric} undefined " + ("on the whole test set" if whole else "in this slice")
    out = []
    for i in range(n):
        out.append(ClauseResult(
            name=clause.name, kind=clause.kind, metric=clause.metric, severity=clause.severity,
            status=str(status[i]), slice=str(tab["slice"].iat[i]), family=str(tab["family"].iat[i]),
            baseline=_fmt(base[i]), candidate=_fmt(cand[i]), difference=_fmt(diff[i]),
            interval=None if not (np.isfinite(lo[i]) and np.isfinite(hi[i])) or (lo[i] == hi[i] and clause.metric == "average_precision")
            else (float(lo[i]), float(hi[i])),
            support=int(support[i]), min_support=clause.min_support, confidence=clause.confidence,
            rule=limit, reason=str(reason[i]), excess=_fmt(excess[i]), source=clause.source,
        ))
    return out


def evaluate_contract(contract: Contract, scored: pd.DataFrame) -> Verdict:
    """Judge `scored` against every clause of `contract`; raises ScoresError on unusable data."""
    check_scores(scored, contract)
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
    table = slice_metrics(scored[LABEL].to_numpy(), scores, thresholds, families, reference_fpr=ref)
    results: list[ClauseResult] = []
    for clause in contract.clauses:
        fam = clause.per or OVERALL.name
        results.extend(_judge(clause, table[table["family"] == fam].reset_index(drop=True), has_baseline))
    overall_row = table[table["family"] == OVERALL.name].iloc[0]
    overall: dict[str, dict[str, Any] | None] = {}
    for m in ("candidate", "baseline"):
        if m not in scores:
            overall[m] = None
            continue
        overall[m] = {k: (int(overall_row["rows"]) if k == "rows" else _fmt(overall_row[f"{m}_{k}"])) for k in OVERALL_KEYS}
        t = thresholds[m]
        overall[m]["threshold"] = float(t) if np.ndim(t) == 0 else "per row"
    overall["reference_fpr"] = {"value": _fmt(float(overall_row["reference_fpr"])), "how": ref_how}  # type: ignore[assignment]
    return Verdict(contract=contract.path, contract_name=contract.name, results=results, overall=overall,
                   thresholds=how, has_baseline=has_baseline, table=table, threshold_values=thresholds)
