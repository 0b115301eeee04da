"""Inverse-propensity weights for threshold suggestions on censored data (pure).

On a censored test window (the rows carry the logging policy's `propensity`) the labelled
rows are the payments production let through: the ones its model allowed (propensity
1.0) and the would-be blocks exploration allowed (propensity p < 1). Counted as they are,
a merchant's false-positive rate, recall and block rate describe the let-through payments
only (production's own blocks there are its explored ones, a few percent of them), and a
threshold that blocks less than production's has no figures at all. Weighting each
labelled row by 1 / propensity makes them stand for every payment, blocked ones included;
the per-merchant figures here are the self-normalised (Hajek) estimates of
ratchet.evaluate.counterfactual:

    FPR         sum(w (1-y) b) / sum(w (1-y))
    recall      sum(w y b) / sum(w y)
    block rate  sum(w b) / sum(w)

Positivity: only explored rows stand for production's blocks. A merchant with few of them
(opted out of exploration, a capped day, a small merchant) has figures that rest on those
few rows, and a merchant with none has the let-through payments' figures only: its note
says so (MIN_EXPLORED).

    >>> w = ipw_weights(scored)            # None without a propensity column: plain counts
    >>> tab = weighted_table(y, w, {"baseline": base_blocked}, codes, n_groups)
    >>> tab["baseline_fpr"], tab["explored"]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.evaluate.policy_estimates import has_logged_decisions

PROPENSITY = C.PROPENSITY
#: suggestions.json's `estimator`: plain counts of the labelled rows, or IPW (self-normalised).
COUNTS, IPW = "counts", "ipw"
#: Below this many explored rows a merchant's IPW figures are called uncertain (positivity).
MIN_EXPLORED = 30


def censored(scored: pd.DataFrame) -> bool:
    """Whether the scored rows carry the logging policy's propensities (then figures are weighted)."""
    return has_logged_decisions(scored)


def ipw_weights(scored: pd.DataFrame) -> np.ndarray | None:
    """1 / propensity per row on censored data (a missing propensity counts 1.0, as in the
    release's estimates), weight 0 for a row without a label; None when the rows carry no
    propensity (then every figure is a plain count). ValueError for a propensity outside (0, 1]."""
    if not censored(scored):
        return None
    p = scored[PROPENSITY].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    p = np.where(np.isnan(p), 1.0, p)
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        raise ValueError(f"column '{PROPENSITY}' weighs each row by 1 / propensity in the threshold suggestions "
                         f"and must be in (0, 1] (missing: 1.0); found {float(p[bad][0])!r} ({int(bad.sum())} rows)")
    w = 1.0 / p
    if "label" in scored.columns:
        w = np.where(scored["label"].isna().to_numpy(), 0.0, w)  # a censored row: its explored peers stand for it
    return w


def label_array(scored: pd.DataFrame, weight: np.ndarray | None) -> np.ndarray:
    """The 0/1 labels as int8; with weights, a missing label (weight 0) reads 0."""
    y = scored["label"]
    if weight is not None and y.isna().any():
        y = y.astype("Float64").fillna(0)
    return y.to_numpy().astype(np.int8, copy=False)


def weighted_table(y: np.ndarray, weight: np.ndarray, blocked: Mapping[str, np.ndarray], codes: np.ndarray | None,
                   n_groups: int) -> dict[str, np.ndarray]:
    """Per group (codes: -1 in none; None: one group of every row), the labelled rows' counts
    (rows, positives, negatives, explored: propensity < 1) and, per model M, the weighted
    M_fp, M_tp and M_blocked totals and the self-normalised M_fpr, M_recall, M_block_rate
    (NaN where the denominator weighs nothing)."""
    w = np.asarray(weight, dtype=float)
    g = np.zeros(len(w), dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64)
    G = 1 if codes is None else int(n_groups)
    inside = g >= 0
    g, w, yy = g[inside], w[inside], np.asarray(y)[inside].astype(bool)
    seen = w > 0

    def total(x: np.ndarray) -> np.ndarray:
        return np.bincount(g, weights=x, minlength=G)

    def count(x: np.ndarray) -> np.ndarray:
        return np.bincount(g[x], minlength=G).astype(np.int64)

    rows, pos = count(seen), count(seen & yy)
    out: dict[str, np.ndarray] = {"rows": rows, "positives": pos, "negatives": rows - pos,
                                  "explored": count(seen & (w > 1.0))}
    w_all, w_pos = total(w), total(w * yy)
    w_neg = w_all - w_pos
    for m, b in blocked.items():
        bb = np.asarray(b, dtype=bool)[inside]
        blk, tp = total(w * bb), total(w * (bb & yy))
        fp = blk - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{m}_blocked"], out[f"{m}_tp"], out[f"{m}_fp"] = blk, tp, fp
            out[f"{m}_fpr"] = np.where(w_neg > 0, fp / w_neg, np.nan)
            out[f"{m}_recall"] = np.where(w_pos > 0, tp / w_pos, np.nan)
            out[f"{m}_block_rate"] = np.where(w_all > 0, blk / w_all, np.nan)
    return out


def stack(*tables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tables of the same keys, one after the other (the overall row first, then the merchants)."""
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def positivity_note(explored: int) -> str:
    """What a merchant's explored rows say about its IPW figures ("" when there are enough)."""
    if explored >= MIN_EXPLORED:
        return ""
    if explored == 0:
        return ("no explored row: whatever production blocked here has nothing standing for it, so its figures "
                "describe the payments production let through only (positivity)")
    return (f"only {explored} explored row(s) (< {MIN_EXPLORED}): its IPW figures rest on them and are "
            "uncertain, above all for a threshold that blocks less than production's (positivity)")
