"""Counterfactual evaluation: another policy's recall, FPR and block rate from censored logs.

The logs hold a label only for allowed payments: the ones the model allowed (propensity
1.0) and the would-be blocks that exploration let through (propensity p, ratchet.exploration).
A row seen with probability pi stands for 1 / pi rows, so weighting each labelled row by
1 / propensity (inverse-propensity weighting, Horvitz-Thompson totals) recovers totals over
every payment, blocked ones included. For a target policy's blocks b (known on every row:
its score is), labels y and weights w = 1 / propensity on the labelled rows:

    recall      naive  sum(y b) / sum(y)             IPW  HT(y b) / HT(y)         = sum(w y b) / sum(w y)
    FPR         naive  sum((1-y) b) / sum(1-y)       IPW  HT((1-y) b) / HT(1-y)
    block rate  naive  mean(b) on labelled rows      IPW  HT(b) / N, SNIPW  HT(b) / sum(w)

Recall and FPR are ratios of two HT totals, which is already the self-normalised (Hajek)
form: their IPW and SNIPW estimates are the same number. Block rate needs no label at all
(b is known on every row), so `observed_block_rate` gives it exactly; its IPW and SNIPW
estimates are there as a check on the weights (SNIPW, normalised by the weights' own sum,
absorbs a sampling shortfall that HT / N does not).

Intervals (`method`):
- "linearised" (default): the design-based variance of the HT totals under the logging
  policy's own randomness: a labelled row with propensity pi contributes
  (1 - pi) / pi^2 * u^2, with u the ratio's linearised residual (a - R c) / C; model-allowed
  rows (pi = 1) contribute nothing. Normal interval, clipped to [0, 1]. The estimand is the
  target's metric on these very payments (the period's truth), not a population beyond them.
- "bootstrap": a seeded Poisson bootstrap of the explored rows (each gets a Poisson(1)
  multiplicity; model-allowed rows are a census and stay fixed), percentile interval;
  slightly wider than the design variance (by about 1 / (1 - pi)). Deterministic per seed.
Naive estimates get a Wilson interval, as if the labelled rows were the whole story; they
are biased whenever the target blocks differently from the logging policy.

Positivity: a block that could not be explored (opted-out merchant, a day whose loss cap
was reached) has propensity 1.0 and is never labelled, so no weight stands for it. The
estimates then describe the allowed and explorable payments only, and are biased for the
target's metric on all payments wherever the unexplorable ones differ. Every result counts
them (`unexplorable_blocks`, and how many the target blocks too) and says so in `positivity`.

    r = estimate(label, propensity, decision, target_block=candidate_score >= 0.7)
    r.metrics["recall"].ipw, r.metrics["recall"].low, r.metrics["recall"].high, r.to_dict()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.data.censoring import DECISION, PROPENSITY
from ratchet.errors import RatchetError
from ratchet.evaluate.stats import wilson, z_two_sided

Method = Literal["linearised", "bootstrap"]
METRICS: tuple[str, ...] = ("recall", "fpr", "block_rate")


@dataclass(frozen=True)
class MetricEstimate:
    """One metric of the target policy: naive, IPW and SNIPW estimates with their intervals.

    ess: Kish's effective sample size, (sum w)^2 / sum w^2, of the labelled rows in the
    metric's denominator (frauds for recall, genuine payments for FPR, all for block rate)."""

    metric: str
    naive: float
    naive_low: float
    naive_high: float
    ipw: float
    low: float
    high: float
    snipw: float
    snipw_low: float
    snipw_high: float
    labelled: int
    ess: float

    def covers(self, value: float) -> bool:
        """Whether the IPW interval contains `value`."""
        return bool(self.low <= value <= self.high)

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class CounterfactualResult:
    """A target policy's estimated metrics from censored logs, and what the logs could see."""

    rows: int
    labelled: int
    explored: int
    unexplorable_blocks: int
    unexplorable_target_blocks: int
    observed_block_rate: float
    confidence: float
    method: str
    metrics: dict[str, MetricEstimate] = field(default_factory=dict)

    @property
    def positivity(self) -> str:
        if self.unexplorable_blocks == 0:
            return "every blocked payment could be explored"
        return (f"{self.unexplorable_blocks:,} blocked payments could never be explored (propensity 1.0: "
                f"opted-out merchants, capped days), {self.unexplorable_target_blocks:,} of them blocked by "
                "the target too: the estimates leave them out and describe the explorable payments only")

    def to_dict(self) -> dict[str, object]:
        return {"rows": self.rows, "labelled": self.labelled, "explored": self.explored,
                "unexplorable_blocks": self.unexplorable_blocks,
                "unexplorable_target_blocks": self.unexplorable_target_blocks,
                "observed_block_rate": self.observed_block_rate, "confidence": self.confidence,
                "method": self.method, "positivity": self.positivity,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()}}


def _allowed(decision: np.ndarray) -> np.ndarray:
    d = np.asarray(decision)
    if d.dtype == bool:
        raise RatchetError("decision must be the logged 'allow' / 'block' strings, not booleans "
                           "(which way round would be a guess); pass np.where(allowed, 'allow', 'block')")
    d = d.astype(str)
    bad = ~np.isin(d, ("allow", "block"))
    if bad.any():
        raise RatchetError(f"decision has {int(bad.sum())} value(s) other than 'allow' / 'block', "
                           f"e.g. {d[bad][0]!r}; pass the logged decision after exploration")
    return d == "allow"


def _validate(label: np.ndarray, propensity: np.ndarray, allowed: np.ndarray, target: np.ndarray) -> None:
    n = len(label)
    for name, a in (("propensity", propensity), ("decision", allowed), ("target_block", target)):
        if len(a) != n:
            raise RatchetError(f"{name} has {len(a)} rows but label has {n}; give one entry per logged payment")
    if n == 0:
        raise RatchetError("no logged payments to estimate from")
    if not np.all((propensity > 0) & (propensity <= 1)):
        raise RatchetError("propensity must be in (0, 1] on every row (the probability of the logged "
                           "decision); a 0 or a missing one means the log was not written by an Explorer")
    seen = ~np.isnan(label)
    if (seen & ~allowed).any():
        raise RatchetError(f"{int((seen & ~allowed).sum())} blocked payment(s) carry a label; a blocked "
                           "payment's label is never observed, so censor the logs (is_fraud null when blocked)")
    if (~seen & allowed).any():
        raise RatchetError(f"{int((~seen & allowed).sum())} allowed payment(s) have no label yet; keep only "
                           "payments whose labels have matured (label_available_at <= now)")
    if not np.isin(label[seen], (0.0, 1.0)).all():
        raise RatchetError("labels must be 0 or 1 (NaN when censored)")


def _design_var(u: np.ndarray, w: np.ndarray) -> float:
    """sum over labelled rows of (1 - pi) / pi^2 u^2, w = 1 / pi (model-allowed rows, pi = 1, contribute 0)."""
    return float(np.sum((1.0 - 1.0 / w) * w * w * u * u))


def _ratio_variance(a: np.ndarray, c: np.ndarray, w: np.ndarray, ratio: float) -> float:
    """Design variance of sum(w a) / sum(w c) (linearised), rows with weight w = 1 / pi."""
    total = float(np.sum(w * c))
    if total <= 0:
        return float("nan")
    return _design_var((a - ratio * c) / total, w)


def _check_confidence(confidence: float) -> float:
    """z of a two-sided interval at `confidence`, which must be in (0, 1)."""
    if not 0 < confidence < 1:
        raise RatchetError(f"confidence must be in (0, 1), got {confidence}")
    return z_two_sided(confidence)


def _normal(centre: float, var: float, z: float) -> tuple[float, float]:
    if not np.isfinite(centre) or not np.isfinite(var):
        return float("nan"), float("nan")
    half = z * float(np.sqrt(max(var, 0.0)))
    return max(0.0, centre - half), min(1.0, centre + half)


def _ess(w: np.ndarray) -> float:
    s2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _bootstrap(parts: dict[str, tuple[np.ndarray, np.ndarray, float | None]], w: np.ndarray,
               replicates: int, seed: int, confidence: float) -> dict[str, tuple[float, float]]:
    """Percentile intervals of sum(w a) / (sum(w c) or fixed N) with Poisson(1) multiplicities
    on the explored rows (w > 1); the model-allowed rows (w == 1) are a census."""
    rng = np.random.default_rng(seed)
    explored = w > 1.0
    m = rng.poisson(1.0, size=(replicates, int(explored.sum()))).astype(np.float64)
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    out = {}
    for name, (a, c, fixed) in parts.items():
        num = np.sum(w[~explored] * a[~explored]) + m @ (w[explored] * a[explored])
        den = np.full(replicates, fixed) if fixed is not None else \
            np.sum(w[~explored] * c[~explored]) + m @ (w[explored] * c[explored])
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, num / den, np.nan)
        r = r[np.isfinite(r)]
        out[name] = (float(np.quantile(r, lo_q)), float(np.quantile(r, hi_q))) if len(r) else (np.nan, np.nan)
    return out


def estimate(label: np.ndarray, propensity: np.ndarray, decision: np.ndarray, target_block: np.ndarray,
             confidence: float = 0.95, method: Method = "linearised", replicates: int = 400,
             seed: int = 0) -> CounterfactualResult:
    """The target policy's recall, FPR and block rate from logged, censored payments.

    label: 0/1 on labelled (allowed) rows, NaN where censored (blocked). propensity: of the
    logged decision. decision: the logged "allow" / "block". target_block: bool, the target's
    block on every row. See the module docstring for the estimators and intervals."""
    z = _check_confidence(confidence)
    if method not in ("linearised", "bootstrap"):
        raise RatchetError(f"unknown interval method {method!r}; use 'linearised' or 'bootstrap'")
    y_all = np.asarray(label, dtype=np.float64)
    pi_all = np.asarray(propensity, dtype=np.float64)
    allowed = _allowed(decision)
    b_all = np.asarray(target_block, dtype=bool)
    _validate(y_all, pi_all, allowed, b_all)
    seen = ~np.isnan(y_all)
    y, w, b = y_all[seen], 1.0 / pi_all[seen], b_all[seen].astype(np.float64)
    n = len(y_all)
    ones = np.ones_like(b)
    parts = {"recall": (y * b, y), "fpr": ((1 - y) * b, 1 - y), "block_rate": (b, ones)}
    boot = {} if method != "bootstrap" else _bootstrap(
        {"recall": (y * b, y, None), "fpr": ((1 - y) * b, 1 - y, None), "block_rate": (b, ones, float(n)),
         "block_rate_sn": (b, ones, None)}, w, replicates, seed, confidence)
    metrics = {}
    for name, (a, c) in parts.items():
        k, m = float(np.sum(a)), float(np.sum(c))
        naive = _div(k, m)
        nlo, nhi = wilson(np.array([k]), np.array([m]), z)
        snipw = _div(float(np.sum(w * a)), float(np.sum(w * c)))
        sn_var = _ratio_variance(a, c, w, snipw)
        if name == "block_rate":
            ipw = float(np.sum(w * a)) / n
            var = _design_var(a / n, w)
        else:
            ipw, var = snipw, sn_var
        lo, hi = boot.get(name) or _normal(ipw, var, z)
        slo, shi = boot.get("block_rate_sn" if name == "block_rate" else name) or _normal(snipw, sn_var, z)
        metrics[name] = MetricEstimate(name, naive, float(nlo[0]), float(nhi[0]), ipw, lo, hi, snipw, slo, shi,
                                       int(np.sum(c > 0)), _ess(w[c > 0]))
    unexplorable = ~allowed & (pi_all >= 1.0)
    return CounterfactualResult(
        rows=n, labelled=int(seen.sum()), explored=int(np.sum(allowed & (pi_all < 1.0))),
        unexplorable_blocks=int(unexplorable.sum()), unexplorable_target_blocks=int(np.sum(unexplorable & b_all)),
        observed_block_rate=float(b_all.mean()), confidence=confidence, method=method, metrics=metrics)


def estimate_frame(logged: pd.DataFrame, target_block: np.ndarray, confidence: float = 0.95,
                   method: Method = "linearised", replicates: int = 400, seed: int = 0) -> CounterfactualResult:
    """estimate() on a frame from ratchet.data.censoring.censor (is_fraud, propensity, decision)."""
    missing = [c for c in (C.IS_FRAUD, PROPENSITY, DECISION) if c not in logged.columns]
    if missing:
        raise RatchetError(f"the logged payments lack column(s) {', '.join(missing)}; they come from "
                           "ratchet.data.censoring.censor or the decision log")
    label = logged[C.IS_FRAUD].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return estimate(label, logged[PROPENSITY].to_numpy(dtype=np.float64), logged[DECISION].to_numpy(),
                    target_block, confidence, method, replicates, seed)


# ---- one policy's ratio, and two policies' paired difference, on labelled rows ---------------
#: The contract clauses' IPW metrics: (numerator, denominator) of each ratio sum(w a) / sum(w c).
RATIO_METRICS: tuple[str, ...] = METRICS


@dataclass(frozen=True)
class RatioEstimate:
    """A policy's IPW (self-normalised) estimate of one metric, with its linearised standard error.

    labelled: rows in the metric's denominator (frauds for recall, genuine for FPR, all for
    block rate); explored: those of them with propensity < 1; ess: their Kish effective size."""

    metric: str
    value: float
    se: float
    low: float
    high: float
    labelled: int
    explored: int
    ess: float

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)


@dataclass(frozen=True)
class DifferenceEstimate:
    """value_a - value_b of two policies on the same labelled rows, with a paired interval."""

    metric: str
    value_a: float
    value_b: float
    difference: float
    se: float
    low: float
    high: float
    labelled: int
    explored: int
    ess: float

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)


def _labelled(label: np.ndarray, propensity: np.ndarray, blocks: list[np.ndarray],
              metric: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(c, w, [b...]) on the labelled rows: the metric's denominator indicator, weights, blocks."""
    if metric not in RATIO_METRICS:
        raise RatchetError(f"no IPW estimate for metric {metric!r}; use one of {', '.join(RATIO_METRICS)}")
    y_all = np.asarray(label, dtype=np.float64)
    pi_all = np.asarray(propensity, dtype=np.float64)
    n = len(y_all)
    for name, a in (("propensity", pi_all), *((f"block {i}", b) for i, b in enumerate(blocks))):
        if len(a) != n:
            raise RatchetError(f"{name} has {len(a)} rows but label has {n}; give one entry per labelled payment")
    seen = ~np.isnan(y_all)
    if not np.isin(y_all[seen], (0.0, 1.0)).all():
        raise RatchetError("labels must be 0 or 1 (NaN when censored)")
    pi = pi_all[seen]
    if not np.all((pi > 0) & (pi <= 1)):
        raise RatchetError("propensity must be in (0, 1] on every labelled row (the probability it was allowed)")
    y = y_all[seen]
    c = {"recall": y, "fpr": 1.0 - y, "block_rate": np.ones_like(y)}[metric]
    return c, 1.0 / pi, [np.asarray(b, dtype=bool)[seen].astype(np.float64) for b in blocks]


def _residual(b: np.ndarray, c: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """(sum(w b c) / sum(w c), linearised residual (b c - R c) / sum(w c)); the numerator is b c."""
    total = float(np.sum(w * c))
    if total <= 0:
        return float("nan"), np.full(len(c), np.nan)
    r = float(np.sum(w * b * c)) / total
    return r, (b * c - r * c) / total


def ratio(label: np.ndarray, propensity: np.ndarray, block: np.ndarray, metric: str,
          confidence: float = 0.95) -> RatioEstimate:
    """One policy's IPW recall / FPR / block rate (self-normalised) on labelled rows.

    label: 0/1 (NaN rows, censored, are left out); propensity: the probability each row was
    allowed (1.0 for the ones the logging model allowed); block: the policy's block per row.
    Same estimate and linearised variance as estimate()'s SNIPW."""
    z = _check_confidence(confidence)
    c, w, (b,) = _labelled(label, propensity, [block], metric)
    r, u = _residual(b, c, w)
    se = float(np.sqrt(max(_design_var(u, w), 0.0))) if np.isfinite(r) else float("nan")
    lo, hi = _normal(r, se * se, z)
    den = c > 0
    return RatioEstimate(metric, r, se, lo, hi, int(den.sum()), int(np.sum(den & (w > 1.0))), _ess(w[den]))


def difference(label: np.ndarray, propensity: np.ndarray, block_a: np.ndarray, block_b: np.ndarray,
               metric: str, confidence: float = 0.95) -> DifferenceEstimate:
    """Policy a's IPW metric minus policy b's on the same labelled rows, with a paired interval.

    Both ratios share the denominator sum(w c), so the difference's linearised residual on a
    row is u_a - u_b; its design variance is sum((1 - pi) / pi^2 (u_a - u_b)^2): only explored
    rows contribute, and rows both policies treat alike contribute only through the ratios'
    centring. Normal interval, clipped to [-1, 1]."""
    z = _check_confidence(confidence)
    c, w, (ba, bb) = _labelled(label, propensity, [block_a, block_b], metric)
    ra, ua = _residual(ba, c, w)
    rb, ub = _residual(bb, c, w)
    d = ra - rb
    if np.isfinite(d):
        se = float(np.sqrt(max(_design_var(ua - ub, w), 0.0)))
        half = z * se
        lo, hi = max(-1.0, d - half), min(1.0, d + half)
    else:
        se, lo, hi = float("nan"), float("nan"), float("nan")
    den = c > 0
    return DifferenceEstimate(metric, ra, rb, d, se, lo, hi, int(den.sum()), int(np.sum(den & (w > 1.0))),
                              _ess(w[den]))
