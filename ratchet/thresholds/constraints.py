"""The contract's limits on block rates, per slice: what thresholds must honour (pure).

A blocking clause constrains thresholds when it watches a decision rate:
`rate_stability` of block_rate / approval_rate (two-sided: the candidate's block rate in
a slice stays within baseline +- allowance) and `no_regression` of approval_rate /
block_rate (one-sided: the block rate may rise by at most the allowance). The allowance
is the clause's tolerance, max(absolute, relative * production's rate), in block-rate
units. A slice is judged when it has at least the clause's min_support rows.

Thresholds aim the point estimate of every judged slice within `share` of its allowance
(the threshold policy's `contract_target`, default TARGET_SHARE), so the contract's
interval test has room to say "pass"; an edit is refused when it moves a slice beyond
the allowance itself (share 1).

On censored data (the rows carry a `propensity`), a clause with `estimator: ipw` is judged by
the contract engine on rows weighted by 1 / propensity, so its limits here are weighted too
(production's block rate, the candidate's, the allowance); a plain clause is judged on the
let-through rows as they are, and so is it here. Support (min_support) is counted in rows.

    >>> clauses = rate_clauses(contract)
    >>> limits = slice_limits(scored, clauses, baseline_blocked)
    >>> [b.sentence() for b in breaches(limits, candidate_blocked, share=0.5)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ratchet.evaluate.slices import OVERALL, SliceFamily, assign
from ratchet.thresholds.weighted import ipw_weights

#: Default share of a clause's allowance the suggestion aims a slice's point estimate within.
TARGET_SHARE = 0.5
RATE_METRICS = ("block_rate", "approval_rate")
RATE_KINDS = ("rate_stability", "no_regression")
EPS = 1e-12  # as the contract engine: a point estimate beyond its limit by more than this is a breach


@dataclass(frozen=True)
class RateClause:
    """A blocking clause that limits the candidate's block rate in each slice of `family`."""

    name: str
    kind: str                 # rate_stability (two-sided) | no_regression (block rate may only rise so much)
    metric: str               # block_rate | approval_rate
    family: SliceFamily
    absolute: float | None
    relative: float | None
    min_support: int
    source: str = ""
    estimator: str = "plain"  # "ipw": the contract engine judges it on rows weighted by 1 / propensity

    @property
    def two_sided(self) -> bool:
        return self.kind == "rate_stability"

    def allowance(self, base_block: np.ndarray) -> np.ndarray:
        """Allowed move of the block rate per slice, from production's block rate."""
        b = np.asarray(base_block, dtype=float)
        ref = np.abs(b if self.metric == "block_rate" else 1.0 - b)
        parts = [np.full_like(ref, self.absolute)] if self.absolute is not None else []
        if self.relative is not None:
            parts.append(self.relative * ref)
        return np.maximum.reduce(parts) if parts else np.zeros_like(ref)

    def to_dict(self) -> dict[str, Any]:
        f = self.family
        out: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "metric": self.metric, "absolute": self.absolute,
            "relative": self.relative, "min_support": self.min_support, "source": self.source,
            "family": {"name": f.name, "columns": list(f.columns), "top": f.top,
                       "bands": list(f.bands) if f.bands is not None else None}}
        if self.estimator != "plain":  # stored only when weighted: plain clauses' records stay as they were
            out["estimator"] = self.estimator
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RateClause:
        f = d["family"]
        fam = SliceFamily(name=f["name"], columns=tuple(f["columns"]), top=f.get("top"),
                          bands=tuple(f["bands"]) if f.get("bands") is not None else None)
        return cls(name=d["name"], kind=d["kind"], metric=d["metric"], family=fam, absolute=d.get("absolute"),
                   relative=d.get("relative"), min_support=int(d["min_support"]), source=d.get("source", ""),
                   estimator=d.get("estimator", "plain"))


def rate_clauses(contract: Any) -> tuple[RateClause, ...]:
    """The contract's blocking clauses on block / approval rates (ratchet.contracts.model.Contract)."""
    out = []
    for c in contract.clauses:
        if c.severity != "block" or c.kind not in RATE_KINDS or c.metric not in RATE_METRICS or c.tolerance is None:
            continue
        fam = contract.slices[c.per] if c.per else OVERALL
        out.append(RateClause(name=c.name, kind=c.kind, metric=c.metric, family=fam, absolute=c.tolerance.absolute,
                              relative=c.tolerance.relative, min_support=int(c.min_support), source=c.source,
                              estimator=getattr(c, "estimator", "plain") or "plain"))
    return tuple(out)


@dataclass(frozen=True)
class SliceLimits:
    """One clause's slices: row codes, support, production's block rate and the allowance
    (weighted by `weight`, 1 / propensity, for an ipw clause on censored data; None: counts)."""

    clause: RateClause
    codes: np.ndarray          # row -> slice, -1: in no slice
    labels: list[str]
    rows: np.ndarray           # rows per slice
    baseline: np.ndarray       # production's block rate per slice
    allowance: np.ndarray      # allowed move of the block rate per slice
    weight: np.ndarray | None = None   # per row; None: every row counts 1

    @property
    def total(self) -> np.ndarray:
        """What a slice's block rate divides by: its rows, or their total weight."""
        if self.weight is None:
            return self.rows
        inside = self.codes >= 0
        return np.bincount(self.codes[inside], weights=self.weight[inside], minlength=len(self.labels))

    def row_weight(self, rows: np.ndarray) -> np.ndarray | None:
        """The weights of these rows (None: counts)."""
        return None if self.weight is None else self.weight[rows]

    @property
    def judged(self) -> np.ndarray:
        return (self.rows >= max(self.clause.min_support, 1)) & np.isfinite(self.baseline)

    def band(self, share: float) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) block rate per slice within `share` of the allowance."""
        room = share * self.allowance
        lo = self.baseline - room if self.clause.two_sided else np.full_like(self.baseline, -np.inf)
        return lo, self.baseline + room

    def rates(self, blocked: np.ndarray) -> np.ndarray:
        """The block rate per slice given each row's decision."""
        inside = self.codes >= 0
        n = len(self.labels)
        if self.weight is not None:
            hits = np.bincount(self.codes[inside], weights=self.weight[inside] * blocked[inside], minlength=n)
            total = self.total
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(total > 0, hits / np.where(total > 0, total, 1.0), np.nan)
        hits = np.bincount(self.codes[inside], weights=blocked[inside].astype(float), minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.rows > 0, hits / np.maximum(self.rows, 1), np.nan)

    def label(self, i: int) -> str:
        return f"{self.clause.name} ({self.labels[i]})"


def slice_limits(frame: pd.DataFrame, clauses: Sequence[RateClause], baseline_blocked: np.ndarray
                 ) -> tuple[list[SliceLimits], list[str]]:
    """The limits of every clause on `frame`'s rows, and notes for clauses whose slice
    columns the rows lack (those are skipped: the contract evaluation reports them). An ipw
    clause's limits are weighted by 1 / propensity when the rows carry one."""
    out, notes = [], []
    base = np.asarray(baseline_blocked, dtype=bool)
    weight = ipw_weights(frame) if any(c.estimator == "ipw" for c in clauses) else None
    for c in clauses:
        missing = [col for col in c.family.columns if col not in frame.columns]
        if missing:
            notes.append(f"{c.name}: the scored rows lack column(s) {', '.join(missing)}; its slices were not "
                         "taken into account")
            continue
        sc = assign(frame, c.family)
        codes = sc.codes.astype(np.int64)
        inside = codes >= 0
        rows = np.bincount(codes[inside], minlength=sc.n_slices).astype(np.int64)
        w = weight if c.estimator == "ipw" else None
        if w is not None:
            total = np.bincount(codes[inside], weights=w[inside], minlength=sc.n_slices)
            hits = np.bincount(codes[inside], weights=w[inside] * base[inside], minlength=sc.n_slices)
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(total > 0, hits / np.where(total > 0, total, 1.0), np.nan)
        else:
            hits = np.bincount(codes[inside], weights=base[inside].astype(float), minlength=sc.n_slices)
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(rows > 0, hits / np.maximum(rows, 1), np.nan)
        out.append(SliceLimits(c, codes, list(sc.labels), rows, rate, c.allowance(np.nan_to_num(rate)), w))
    return out, notes


@dataclass(frozen=True)
class Breach:
    """A judged slice whose candidate block rate (point estimate) lies beyond `share` of its allowance."""

    clause: str
    slice: str
    rows: int
    baseline: float
    candidate: float
    allowance: float
    share: float
    source: str = ""
    metric: str = "block_rate"   # the clause's metric: an approval_rate clause is told in approval rates

    @property
    def key(self) -> tuple[str, str]:
        return self.clause, self.slice

    @property
    def label(self) -> str:
        return f"{self.clause} ({self.slice})"

    @property
    def excess(self) -> float:
        """How far beyond the limit, in allowances (0: at the limit)."""
        return (abs(self.candidate - self.baseline) - self.share * self.allowance) / max(self.allowance, EPS)

    def sentence(self) -> str:
        approval = self.metric == "approval_rate"
        b, c = (1 - self.baseline, 1 - self.candidate) if approval else (self.baseline, self.candidate)
        move = c - b
        rel = f", {move / b:+.0%}" if b > 0 else ""
        where = f" ({self.source})" if self.source else ""
        limit = (f"its allowance of {self.allowance * 100:.2f} points" if self.share >= 1 else
                 f"{self.share:.0%} of its allowance ({self.share * self.allowance * 100:.2f} of "
                 f"{self.allowance * 100:.2f} points)")
        return (f"{self.clause}{where}, {self.slice} ({self.rows:,} rows): {self.metric.replace('_', ' ')} "
                f"{b:.2%} -> {c:.2%} ({move * 100:+.2f} points{rel}), beyond {limit}")

    def to_dict(self) -> dict[str, Any]:
        return {"clause": self.clause, "slice": self.slice, "rows": self.rows, "baseline": self.baseline,
                "candidate": self.candidate, "allowance": self.allowance, "share": self.share, "source": self.source,
                "metric": self.metric}


def slice_breaches(lim: SliceLimits, rate: np.ndarray, share: float) -> list[Breach]:
    """The judged slices of one clause beyond `share` of the allowance at block rates `rate`."""
    lo, hi = lim.band(share)
    bad = lim.judged & ((rate - hi > EPS) | (lo - rate > EPS))
    return [Breach(lim.clause.name, lim.labels[i], int(lim.rows[i]), float(lim.baseline[i]), float(rate[i]),
                   float(lim.allowance[i]), share, lim.clause.source, lim.clause.metric) for i in np.flatnonzero(bad)]


def breaches(limits: Sequence[SliceLimits], blocked: np.ndarray, share: float) -> list[Breach]:
    """Every judged slice beyond `share` of its allowance, worst first."""
    out = [b for lim in limits for b in slice_breaches(lim, lim.rates(blocked), share)]
    return sorted(out, key=lambda b: (-b.excess, b.clause, b.slice))


def row_thresholds(merchants: pd.Series, threshold: float, per_merchant: dict[str, float]) -> np.ndarray:
    """Each row's threshold: its merchant's own, else the global one (as the decision service)."""
    mapped = merchants.astype(str).map(per_merchant).to_numpy(dtype=float, na_value=np.nan) if per_merchant \
        else np.full(len(merchants), np.nan)
    return np.where(np.isnan(mapped), float(threshold), mapped)


def edit_breaches(limits: Sequence[SliceLimits], score: np.ndarray, suggested: np.ndarray,
                  approved: np.ndarray) -> list[Breach]:
    """Slices the approved thresholds put beyond their allowance (share 1) that the
    suggested ones did not, or that they push further out. Per-row thresholds in."""
    s = np.asarray(score, dtype=float)
    before = {b.key: b for b in breaches(limits, s >= suggested, 1.0)}
    out = []
    for b in breaches(limits, s >= approved, 1.0):
        was = before.get(b.key)
        if was is None or abs(b.candidate - b.baseline) > abs(was.candidate - was.baseline) + EPS:
            out.append(b)
    return out
