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
