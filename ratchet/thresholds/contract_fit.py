"""Suggestions that honour the contract, and edits re-judged by it (pure).

`fit_contract` takes the policy's own thresholds (keep_fpr) and repairs them
(ratchet.thresholds.repair) until every judged slice of the contract's blocking
block-rate clauses lies within `share` of its allowance, and says what it could not do
and which clause binds. Its `section` goes into suggestions.json ("contract"): the
clauses with their slice families, so an approval can re-judge edits later against the
scored rows stored next to it (suggestions-scored.parquet), with no contract file at hand.

On censored data (a `propensity` column) each clause is honoured as the contract engine
judges it: an `estimator: ipw` clause on rows weighted by 1 / propensity, a plain clause on
the let-through rows as they are (ratchet.thresholds.constraints); the note says which.

    >>> fit = fit_contract(scored, cand, base_blocked, codes, G, own, glob, contract, share=0.5)
    >>> refused = judge_edit(s.contract, rows, s.thresholds(), (0.7, {"m001": 0.9}))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ratchet.thresholds.constraints import (
    Breach, RateClause, SliceLimits, breaches, edit_breaches, rate_clauses, row_thresholds, slice_limits,
)
from ratchet.thresholds.repair import interval, repair
from ratchet.thresholds.weighted import PROPENSITY, censored

ROW_BASE = ("label", "candidate_score", "baseline_score", "baseline_threshold")


@dataclass
class ContractFit:
    """Repaired thresholds (own: NaN uses the global), why each moved, and the report."""

    own: np.ndarray
    glob: float
    why: list[str]
    glob_why: str
    section: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def row_columns(clauses: tuple[RateClause, ...], merchant_column: str) -> list[str]:
    """The columns an approval needs to re-judge edits: scores, thresholds, merchant, slice
    columns (and the propensity, for a clause weighted by it)."""
    cols = [*ROW_BASE, merchant_column]
    for c in clauses:
        cols += [col for col in c.family.columns if col not in cols]
    if any(c.estimator == "ipw" for c in clauses):
        cols.append(PROPENSITY)
    return cols


def _section(contract: Any, clauses: tuple[RateClause, ...], share: float, merchant_column: str) -> dict[str, Any]:
    return {"name": getattr(contract, "name", ""), "path": getattr(contract, "path", ""), "target_share": share,
            "merchant_column": merchant_column, "clauses": [c.to_dict() for c in clauses], "before": [],
            "unresolved": []}


def fit_contract(scored: pd.DataFrame, cand: np.ndarray, baseline_blocked: np.ndarray, mcodes: np.ndarray,
                 n_merchants: int, own: np.ndarray, glob: float, contract: Any, share: float,
                 merchant_column: str) -> ContractFit:
    """Repair (own, glob) to honour `contract`'s blocking block-rate clauses on `scored`."""
    clauses = rate_clauses(contract)
    section = _section(contract, clauses, share, merchant_column)
    start = ContractFit(np.array(own, dtype=float), float(glob), [""] * n_merchants, "", section)
    if not clauses:
        start.notes.append(f"contract {section['name']}: no blocking clause limits block or approval rates; "
                           "thresholds follow the policy's objective only")
        return start
    limits, notes = slice_limits(scored, clauses, baseline_blocked)
    start.notes += notes + _weighting_notes(section["name"], limits, censored(scored))
    thr0 = np.where(np.isnan(start.own), start.glob, start.own)[mcodes]
    before = breaches(limits, cand >= thr0, 1.0)
    r = repair(cand, mcodes, n_merchants, start.own, start.glob, limits, share)
    blocked = cand >= r.effective()[mcodes]
    over = {b.key for b in breaches(limits, blocked, 1.0)}
    left = breaches(limits, blocked, share)
    unresolved = [{**b.to_dict(), "beyond": "allowance" if b.key in over else "target",
                   "binding": r.problems.get(b.key, "")} for b in left]
    section.update(before=[b.to_dict() for b in before], unresolved=unresolved, rounds=r.rounds)
    notes = start.notes + _notes(section, before, left, r.problems)
    return ContractFit(r.own, r.glob, r.why, r.glob_why, section, notes)


def _weighting_notes(name: str, limits: list[SliceLimits], on_censored: bool) -> list[str]:
    """On censored data: which clauses' slices were weighted by 1 / propensity and which counted."""
    if not on_censored or not limits:
        return []
    ipw = [lim.clause.name for lim in limits if lim.weight is not None]
    plain = [lim.clause.name for lim in limits if lim.weight is None]
    out = []
    if ipw:
        out.append(f"contract {name}: ipw clause(s) {', '.join(ipw)}: honoured on block rates weighted by "
                   "1 / propensity, as the contract engine judges them")
    if plain:
        out.append(f"contract {name}: plain clause(s) {', '.join(plain)}: the contract engine judges them on the "
                   "let-through rows as they are, so they are honoured here on plain counts too, not on estimates "
                   "for all payments; only estimator: ipw clauses (whole population) are weighted")
    return out


def _notes(section: dict[str, Any], before: list[Breach], left: list[Breach],
           problems: dict[tuple[str, str], str]) -> list[str]:
    share = section["target_share"]
    name = section["name"]
    out = []
    if before:
        worst = "; ".join(b.sentence() for b in before[:3])
        out.append(f"contract {name}: the policy's objective alone would put {len(before)} judged slice(s) beyond "
                   f"their allowance ({worst}{' ...' if len(before) > 3 else ''}); thresholds were repaired")
    if not left:
        out.append(f"contract {name}: every judged slice of its blocking block-rate clauses is within "
                   f"{share:.0%} of its allowance")
        return out
    for b in left[:10]:
        binding = problems.get(b.key) or "no threshold of its merchants can move it further"
        beyond = replace(b, share=1.0).sentence() if abs(b.candidate - b.baseline) > b.allowance else (
            f"{b.label}: block rate {b.baseline:.2%} -> {b.candidate:.2%}, within its allowance but not within "
            f"{share:.0%} of it")
        out.append(f"contract {name}: cannot hold {beyond}: {binding}")
    if len(left) > 10:
        out.append(f"contract {name}: and {len(left) - 10} more slice(s) beyond {share:.0%} of their allowance "
                   "(see contract.unresolved in suggestions.json)")
    return out


def limits_for(section: dict[str, Any], rows: pd.DataFrame) -> list[SliceLimits]:
    """The stored clauses' limits on the stored scored rows (at approval time)."""
    clauses = tuple(RateClause.from_dict(c) for c in section.get("clauses", []))
    base = rows["baseline_score"].to_numpy(float) >= rows["baseline_threshold"].to_numpy(float)
    return slice_limits(rows, clauses, base)[0]


def judge_edit(section: dict[str, Any], rows: pd.DataFrame, suggested: tuple[float, dict[str, float]],
               approved: tuple[float, dict[str, float]]) -> list[Breach]:
    """Slices the approved thresholds put (further) beyond their allowance, compared with the suggestion."""
    limits = limits_for(section, rows)
    merchants = rows[section["merchant_column"]]
    score = rows["candidate_score"].to_numpy(float)
    return edit_breaches(limits, score, row_thresholds(merchants, *suggested), row_thresholds(merchants, *approved))


def edit_hint(section: dict[str, Any], rows: pd.DataFrame, breach: Breach) -> str:
    """What to --set instead, for a breach of a one-merchant slice: the thresholds of that
    merchant that keep it within its allowance; "" when the slice has several merchants."""
    lim = next((x for x in limits_for(section, rows) if x.clause.name == breach.clause), None)
    if lim is None or breach.slice not in lim.labels:
        return ""
    i = lim.labels.index(breach.slice)
    inside = lim.codes == i
    names = rows.loc[inside, section["merchant_column"]].astype(str).unique()
    if len(names) != 1:
        return ""
    lo, hi = lim.band(1.0)
    low, high = interval(rows.loc[inside, "candidate_score"].to_numpy(float), float(lo[i]), float(hi[i]),
                         lim.row_weight(np.flatnonzero(inside)))
    if low > high:
        return f"no threshold of {names[0]} keeps it within its allowance"
    lo_v, hi_v = np.ceil(max(low, 0.0) * 1e6) / 1e6, np.floor(min(high, 1.0) * 1e6) / 1e6  # printed values stay inside
    return f"--set {names[0]}=VALUE with VALUE in [{lo_v:.6g}, {hi_v:.6g}] keeps it within"
