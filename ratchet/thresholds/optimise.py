"""Choose one threshold per group (merchant) under a budget: grouped selection, no full sort.

The slice engine's grouping (ratchet.evaluate.slices codes, and a stable radix sort of
those 16-bit codes) puts each merchant's rows side by side. A budget then becomes an
order statistic: "block at most k of the merchant's counted rows" (k = the false
positives production makes there, for keep_fpr; the rows it blocks, for
match_block_rate) means the threshold must lie just above v, the (k+1)-th highest
score among its counted rows. The lowest such threshold blocks the most rows without
breaking the budget -- for keep_fpr, the one with the highest recall. v is found by
selection (np.partition, linear time) rather than by sorting, which is what makes 10M
rows cheap; the threshold returned is the midpoint between v and the next higher score
of the merchant, which makes the same decisions on these rows and is less brittle on
the next ones. (This is the same threshold the engine's recall_at_fpr reads.)

With weights (1 / propensity on a censored test window) the budget is a weight: the
lowest threshold whose blocked counted rows weigh at most budget[g] (the same rule: equal
weights of 1 and an integer budget give the count rule's threshold).

    >>> grouped = group_rows(merchant_codes.codes, merchant_codes.n_slices)
    >>> thr = thresholds_at_budget(score, label == 0, grouped, budget=production_fp)
    >>> thr_ipw = thresholds_at_budget(score, label == 0, grouped, budget=production_fp_weight, weight=1 / propensity)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grouped:
    """Row indices grouped by code: group g's rows are perm[start[g]:start[g] + size[g]]."""

    perm: np.ndarray
    start: np.ndarray
    size: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.size)


def group_rows(codes: np.ndarray | None, n_groups: int, n_rows: int | None = None) -> Grouped:
    """Group rows by code (-1: in no group). codes=None: every row in one group (n_rows rows)."""
    if codes is None:
        n = int(n_rows or 0)
        return Grouped(perm=np.arange(n), start=np.zeros(1, np.int64), size=np.array([n], np.int64))
    c = np.asarray(codes)
    perm = np.argsort(c, kind="stable")  # numpy's radix sort for 16-bit codes
    size = np.bincount(c[c >= 0], minlength=n_groups).astype(np.int64)
    skip = len(c) - int(size.sum())      # rows in no group (-1) sort first
    start = skip + np.concatenate(([0], np.cumsum(size)[:-1])).astype(np.int64)
    return Grouped(perm=perm, start=start, size=size)


def _threshold(scores: np.ndarray, counted: np.ndarray, k: int) -> float:
    """One group: lowest threshold (midpoint form) blocking at most k counted rows."""
    c = scores[counted]
    if len(c) == 0:
        return float("nan")
    if k >= len(c):
        return float(scores.min())  # the budget allows blocking every row
    v = -np.partition(-c, k)[k]    # (k+1)-th highest counted score: it must pass
    return _just_above(scores, float(v))


def _just_above(scores: np.ndarray, v: float) -> float:
    """The midpoint between v and the next higher score of `scores` (blocks exactly the scores above v)."""
    above = scores[scores > v]
    if len(above) == 0:
        return float(np.nextafter(v, np.inf))
    t = v + (above.min() - v) / 2
    return float(t if t > v else np.nextafter(v, np.inf))  # adjacent floats: stay above v


#: Relative slack when a weighted total is compared with a weighted budget (sums in another order).
WEIGHT_SLACK = 1e-9


def _weighted_threshold(scores: np.ndarray, counted: np.ndarray, weight: np.ndarray, budget: float) -> float:
    """One group: lowest threshold (midpoint form) whose blocked counted rows weigh at most `budget`."""
    c, w = scores[counted], weight[counted]
    if len(c) == 0:
        return float("nan")
    order = np.argsort(-c, kind="stable")
    cum = np.cumsum(w[order])
    over = np.flatnonzero(cum > budget + WEIGHT_SLACK * max(abs(budget), float(cum[-1]), 1e-300))
    if len(over) == 0:
        return float(scores.min())  # the budget allows blocking every row
    return _just_above(scores, float(c[order][over[0]]))  # the first counted row over budget must pass


def thresholds_at_budget(score: np.ndarray, counted: np.ndarray, grouped: Grouped, budget: np.ndarray,
                         only: np.ndarray | None = None, weight: np.ndarray | None = None) -> np.ndarray:
    """Per group, the lowest threshold (score >= t blocks) that blocks at most budget[g] of
    the group's counted rows, as a midpoint between observed scores (see module doc).

    counted: bool per row. only: bool per group, the groups to compute (others NaN).
    NaN for groups with no counted row (nothing to budget). A budget at or above the
    group's counted rows blocks every row of the group (its lowest score). weight: per
    row (e.g. 1 / propensity); the budget is then the blocked counted rows' total weight.
    """
    if weight is not None:
        return _weighted_at_budget(np.asarray(score, dtype=float), np.asarray(counted, dtype=bool), grouped,
                                   np.asarray(budget, dtype=float), only, np.asarray(weight, dtype=float))
    s = np.asarray(score, dtype=float)
    cnt = np.asarray(counted, dtype=bool)
    k = np.maximum(np.asarray(budget, dtype=np.int64), 0)
    out = np.full(grouped.n_groups, np.nan)
    todo = np.flatnonzero(grouped.size > 0) if only is None else np.flatnonzero((grouped.size > 0) & only)
    if grouped.n_groups == 1 and len(grouped.perm) == len(s) and only is None:
        out[0] = _threshold(s, cnt, int(k[0]))  # the whole population: no gather needed
        return out
    sg, cg = s[grouped.perm], cnt[grouped.perm]
    for g in todo:
        a = grouped.start[g]
        b = a + grouped.size[g]
        out[g] = _threshold(sg[a:b], cg[a:b], int(k[g]))
    return out


def _weighted_at_budget(s: np.ndarray, cnt: np.ndarray, grouped: Grouped, budget: np.ndarray,
                        only: np.ndarray | None, w: np.ndarray) -> np.ndarray:
    out = np.full(grouped.n_groups, np.nan)
    todo = np.flatnonzero(grouped.size > 0) if only is None else np.flatnonzero((grouped.size > 0) & only)
    sg, cg, wg = s[grouped.perm], cnt[grouped.perm], w[grouped.perm]
    for g in todo:
        a = grouped.start[g]
        b = a + grouped.size[g]
        out[g] = _weighted_threshold(sg[a:b], cg[a:b], wg[a:b], max(float(budget[g]), 0.0))
    return out
