"""Vectorized intervals for slice statistics: Wilson, Newcombe, Hanley-McNeil.

Every function takes numpy arrays (one entry per slice) and returns arrays, so a
contract with 1,500 slices costs a handful of array operations. Undefined entries
(zero denominators) come back as NaN; callers turn NaN into "not judged".

Baseline and candidate are scored on the same rows, so their metrics are positively
correlated. The intervals here treat the two as independent, which makes every
interval on a difference *wider* than the paired one: a violation that is credible
here is credible under pairing too. We accept losing some power to stay conservative
and cheap (a paired test needs per-row discordance counts per slice).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def z_two_sided(confidence: float) -> float:
    """Normal quantile for a two-sided interval at `confidence` (0.95 -> 1.96)."""
    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson(successes: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion; NaN where n == 0."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2 = z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        lo, hi = centre - half, centre + half
    lo = np.where(n > 0, np.clip(lo, 0.0, 1.0), np.nan)
    hi = np.where(n > 0, np.clip(hi, 0.0, 1.0), np.nan)
    return lo, hi


def newcombe(k1: np.ndarray, n1: np.ndarray, k2: np.ndarray, n2: np.ndarray,
             z: float) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval (method 10) for p2 - p1, from two Wilson intervals."""
    n1f, n2f = np.asarray(n1, float), np.asarray(n2, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p2 = np.asarray(k1, float) / n1f, np.asarray(k2, float) / n2f
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p2 - p1
    lo = d - np.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = d + np.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return lo, hi


def hanley_mcneil_se(auc: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    """Standard error of an AUC (Hanley & McNeil 1982); NaN where undefined."""
    a = np.asarray(auc, float)
    m, n = np.asarray(n_pos, float), np.asarray(n_neg, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q1 = a / (2 - a)
        q2 = 2 * a * a / (1 + a)
        var = (a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n)
        se = np.sqrt(np.maximum(var, 0.0))
    return np.where((m > 0) & (n > 0), se, np.nan)


# ---- three-valued judgements -------------------------------------------------------------
def p_two_sided(z: np.ndarray) -> np.ndarray:
    """Two-sided p-value of a z (the alpha at which a two-sided interval has this quantile)."""
    return 2.0 * norm.sf(np.asarray(z, dtype=float))


def z_for_alpha(alpha: np.ndarray | float) -> np.ndarray:
    """The two-sided normal quantile for `alpha` (0.05 -> 1.96)."""
    return norm.isf(np.asarray(alpha, dtype=float) / 2.0)


def evidence_p(interval_at, good_lo: np.ndarray, good_hi: np.ndarray, *, z_max: float = 12.0,
               steps: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(p_pass, p_fail) per slice, inverted from a family of intervals.

    interval_at(z) -> (lo, hi) per slice is the interval at the two-sided level whose normal
    quantile is z (wider as z grows). The allowance is [good_lo, good_hi] (either end may be
    infinite). p_pass is the smallest two-sided alpha at which the interval lies entirely
    inside the allowance; p_fail the smallest at which it lies entirely beyond it (on one
    side). A slice whose point estimate (z = 0) is inside has p_fail = 1, outside p_pass = 1.
    Found by bisection on z (vectorised over slices; intervals are monotone in z)."""
    lo0, hi0 = interval_at(np.zeros(np.shape(good_lo)))
    good_lo = np.asarray(good_lo, float)
    good_hi = np.asarray(good_hi, float)
    n = good_lo.shape

    def inside(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (lo >= good_lo) & (hi <= good_hi)

    def beyond(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (lo > good_hi) | (hi < good_lo)

    out = []
    for test in (inside, beyond):
        ok0 = test(lo0, hi0)
        a, b = np.zeros(n), np.full(n, z_max)  # test holds at a (where ok0), fails at b (unless it holds everywhere)
        lo_m, hi_m = interval_at(b)
        always = test(lo_m, hi_m) & ok0
        for _ in range(steps):
            mid = (a + b) / 2.0
            lo, hi = interval_at(mid)
            holds = test(lo, hi)
            a = np.where(holds, mid, a)
            b = np.where(holds, b, mid)
        p = p_two_sided(a)
        p = np.where(always, p_two_sided(np.full(n, z_max)), p)
        out.append(np.where(ok0, p, 1.0))
    return out[0], out[1]


def holm(p: np.ndarray, alpha: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Holm's step-down procedure (Holm 1979): which hypotheses are rejected at family-wise
    error `alpha`, among the entries where `mask` is True (default: all finite p)."""
    p = np.asarray(p, dtype=float)
    use = np.isfinite(p) if mask is None else (np.asarray(mask, bool) & np.isfinite(p))
    idx = np.flatnonzero(use)
    rejected = np.zeros(p.shape, dtype=bool)
    if not len(idx):
        return rejected
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    bounds = alpha / (m - np.arange(m))
    ok = p[order] <= bounds
    k = m if ok.all() else int(np.argmin(ok))  # first non-rejection stops the procedure
    rejected[order[:k]] = True
    return rejected


# ---- paired rates --------------------------------------------------------------------------
def paired_difference(only_b: np.ndarray, only_a: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, standard error) of p_b - p_a for matched pairs (same rows, two models).

    only_b: rows where only model b has the event (blocked), only_a: only model a. Agresti &
    Min (2005): add 0.5 to each of the four cells before the Wald interval, which keeps its
    coverage near nominal even with few discordant rows (and never gives zero width)."""
    b = np.asarray(only_b, float) + 0.5
    a = np.asarray(only_a, float) + 0.5
    nn = np.asarray(n, float) + 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (b - a) / nn
        var = ((b + a) / nn - d * d) / nn
    se = np.sqrt(np.maximum(var, 0.0))
    return d, np.where(np.asarray(n) > 0, se, np.nan)


def rate_se(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Standard error of a proportion, with half a success and half a failure added (never zero)."""
    nn = np.asarray(n, float) + 1.0
    p = (np.asarray(k, float) + 0.5) / nn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.asarray(n) > 0, np.sqrt(p * (1 - p) / nn), np.nan)


# ---- anytime-valid: confidence sequences -----------------------------------------------------
#: A confidence sequence is tightest around this many units of support (rows, cards) per
#: slice, as a multiple of the clause's or guard's min_support. Fixed in advance (it must
#: not depend on the data); widths vary only slowly with it.
TUNE_FACTOR = 4.0


def cs_multiplier(t: np.ndarray, alpha: np.ndarray | float, t_star: np.ndarray | float) -> np.ndarray:
    """The normal-mixture confidence-sequence multiplier that replaces z for an estimate
    with standard error se after t units of evidence: estimate ± multiplier * se covers the
    true value at every t at once with probability >= 1 - alpha (two-sided).

    Robbins' normal mixture (1970) in the asymptotic form of Waudby-Smith, Arbour, Sinha,
    Kennedy & Ramdas, "Time-uniform central limit theory and asymptotic confidence
    sequences" (Annals of Statistics, 2024), eq. (2.5): with rho^2 tuned for t_star,
    multiplier = sqrt(2 (t rho^2 + 1) / (t rho^2) * log(sqrt(t rho^2 + 1) / alpha))."""
    t = np.maximum(np.asarray(t, float), 1.0)
    a = np.asarray(alpha, float)
    la = -2.0 * np.log(np.asarray(0.05))  # tuning uses a fixed nominal level: rho may not depend on alpha's use
    rho2 = (la + np.log(la + 1.0)) / np.maximum(np.asarray(t_star, float), 1.0)
    tr = t * rho2
    return np.sqrt(2.0 * (tr + 1.0) / tr * np.log(np.sqrt(tr + 1.0) / a))


def cs_alpha_at(x: np.ndarray, t: np.ndarray, t_star: np.ndarray | float) -> np.ndarray:
    """The inverse of cs_multiplier: the alpha at which the multiplier equals x (capped at 1)."""
    t = np.maximum(np.asarray(t, float), 1.0)
    la = -2.0 * np.log(0.05)
    tr = t * (la + np.log(la + 1.0)) / np.maximum(np.asarray(t_star, float), 1.0)
    x = np.asarray(x, float)
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.sqrt(tr + 1.0) * np.exp(-x * x * tr / (2.0 * (tr + 1.0)))
    return np.minimum(a, 1.0)


def symmetric_p(est: np.ndarray, se: np.ndarray, good_lo: np.ndarray, good_hi: np.ndarray,
                alpha_at) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001 - x -> alpha
    """(p_pass, p_fail) as evidence_p, in closed form for intervals est ± multiplier(alpha) * se.

    alpha_at(x) is the alpha whose multiplier is x: p_two_sided for fixed-sample intervals,
    cs_alpha_at for confidence sequences."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.minimum(est - good_lo, good_hi - est)
        beyond = np.maximum(good_lo - est, est - good_hi)
        x_in = np.where(se > 0, inside / se, np.inf)
        x_out = np.where(se > 0, beyond / se, np.inf)
        p_pass = np.where(inside >= 0, alpha_at(np.where(np.isfinite(x_in), x_in, 1e6)), 1.0)
        p_fail = np.where(beyond > 0, alpha_at(np.where(np.isfinite(x_out), x_out, 1e6)), 1.0)
    return p_pass, p_fail


def cs_alpha(z: np.ndarray) -> np.ndarray:
    """The alpha a confidence sequence is drawn at when asked for the level of quantile z."""
    return np.clip(p_two_sided(z), 1e-300, 1.0)
