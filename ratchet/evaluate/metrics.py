"""The slice metrics engine: every metric, every slice, every model, in one vectorized pass.

For each model the rows are sorted by score once (descending). For each slice family,
a stable radix sort of the family's slice codes *in that score order* groups the rows
by slice while keeping them score-sorted inside each slice. From there only the
positives (fraud is rare) need work: each positive's position inside its slice gives
the negatives ranked above it, hence the AUC (Mann-Whitney, ties counted half, which
is the trapezoid rule), the average precision (scikit-learn's step definition) and the
recall at any per-slice false-positive rate. Threshold metrics (block rate, FPR,
recall, precision) use a threshold per row -- a scalar or a column, so per-merchant
thresholds work -- and are plain bincounts.

Undefined values (AUC of a slice without positives, FPR without negatives, ...) are
NaN in the arrays and None in anything user-facing.

    >>> table = slice_metrics(label, {"candidate": s1, "baseline": s0},
    ...                       {"candidate": 0.5, "baseline": thr_column},
    ...                       [assign(df, OVERALL), assign(df, country_family)],
    ...                       reference_fpr="baseline")
    >>> table.loc[table.slice == "country=US", "candidate_auc"]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ratchet.evaluate.slices import SliceCodes

#: Metrics the engine computes per model; the contract language names these.
MODEL_METRICS: tuple[str, ...] = (
    "auc", "average_precision", "recall_at_fpr", "fpr", "recall", "precision",
    "block_rate", "approval_rate",
)
#: Metrics computable without labels (usable on live traffic).
LABEL_FREE: frozenset[str] = frozenset({"block_rate", "approval_rate"})


@dataclass(frozen=True)
class _Sorted:
    """One model's scores in descending order, with tie blocks."""

    order: np.ndarray      # row indices, highest score first
    y: np.ndarray          # labels in that order (int8)
    tie: np.ndarray | None  # tie-block id per sorted position (None: no ties at all)


def _sort_model(label: np.ndarray, score: np.ndarray) -> _Sorted:
    order = np.argsort(score)[::-1]
    s = score[order]
    y = label[order]
    new_block = np.empty(len(s), dtype=bool)
    if len(s):
        new_block[0] = False
        np.not_equal(s[1:], s[:-1], out=new_block[1:])
    n_blocks = int(new_block.sum()) + 1 if len(s) else 0
    tie = None
    if n_blocks < len(s):
        tie = np.cumsum(new_block, dtype=np.int64)
    return _Sorted(order=order, y=y, tie=tie)


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.zeros(len(x), dtype=np.int64)
    np.cumsum(x[:-1], out=out[1:])
    return out


def _max_count_at_rate(rate: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Largest integer m with m / n <= rate, computed with the same float division as a
    reference implementation would use (so boundaries agree with scikit-learn)."""
    nf = n.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.floor(rate * nf)
        m = np.where((m + 1) / nf <= rate, m + 1, m)
        m = np.where(m / nf > rate, m - 1, m)
    m = np.nan_to_num(m, nan=-1.0)
    return np.clip(m, -1, n).astype(np.int64)


def _block_edge(tie_of, lo: np.ndarray, hi: np.ndarray, q: np.ndarray, which: str) -> np.ndarray:
    """First (or last) grouped position in [lo, hi] sharing q's tie block.

    Tie ids are non-decreasing inside a slice, so this is a binary search -- run only for
    the queries whose neighbour shares their block (few, unless scores tie heavily).
    """
    t = tie_of(q)
    out = q.copy()
    nb = q - 1 if which == "first" else q + 1
    inside = (nb >= lo) if which == "first" else (nb <= hi)
    todo = np.flatnonzero(inside)
    todo = todo[tie_of(nb[todo]) == t[todo]]
    if len(todo) == 0:
        return out
    tt = t[todo]
    if which == "first":   # smallest i in [lo, q-1] with tie(i) == t
        L, H = lo[todo].copy(), q[todo] - 1
        while True:
            act = L < H
            if not act.any():
                break
            mid = (L + H) // 2
            less = tie_of(mid) < tt
            L = np.where(act & less, mid + 1, L)
            H = np.where(act & ~less, mid, H)
        out[todo] = L
    else:                  # largest i in [q+1, hi] with tie(i) == t
        L, H = q[todo] + 1, hi[todo].copy()
        while True:
            act = L < H
            if not act.any():
                break
            mid = (L + H + 1) // 2
            more = tie_of(mid) > tt
            H = np.where(act & more, mid - 1, H)
            L = np.where(act & ~more, mid, L)
        out[todo] = L
    return out


def _ranking_metrics(srt: _Sorted, sc: SliceCodes, rows: np.ndarray, pos: np.ndarray,
                     ref_fpr: np.ndarray) -> dict[str, np.ndarray]:
    """AUC, average precision and recall at ref_fpr (per slice) for one model, one family."""
    G = sc.n_slices
    neg = rows - pos
    codes_sorted = sc.codes[srt.order]
    perm = np.argsort(codes_sorted, kind="stable")
    n_out = len(perm) - int(rows.sum())          # rows in no slice sort first (code -1)
    perm = perm[n_out:]
    start = _exclusive_cumsum(rows)
    pos_start = _exclusive_cumsum(pos)
    yp = srt.y[perm]
    posq = np.flatnonzero(yp)                     # positives' positions, grouped by slice
    g = np.repeat(np.arange(G), pos)
    j = np.arange(len(posq)) - pos_start[g]       # rank among the slice's positives
    rel = posq - start[g]                         # rank among the slice's rows
    negs_above = rel - j
    tie_of = None
    if srt.tie is not None:
        tie = srt.tie

        def tie_of(i: np.ndarray) -> np.ndarray:
            return tie[perm[i]]

        end = start + rows
        a = _block_edge(tie_of, start[g], posq, posq, "first")
        b = _block_edge(tie_of, posq, end[g] - 1, posq, "last")
        fp_before = (a - start[g]) - (np.searchsorted(posq, a, "left") - pos_start[g])
        tp_end = np.searchsorted(posq, b, "right") - pos_start[g]
        n_end = b + 1 - start[g]
        fp_end = n_end - tp_end
        u = neg[g] - 0.5 * (fp_before + fp_end)
        prec = tp_end / n_end
    else:
        u = (neg[g] - negs_above).astype(float)
        prec = (j + 1) / (rel + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.bincount(g, weights=u, minlength=G) / (pos * neg)
        ap = np.bincount(g, weights=prec, minlength=G) / pos
    auc[(pos == 0) | (neg == 0)] = np.nan
    ap[pos == 0] = np.nan

    # recall at FPR f: TPR at the last score-threshold whose FPR is <= f. The (m+1)-th
    # negative (m = most negatives allowed) starts the first block that breaks the
    # FPR, so the answer is the positives ranked strictly before its tie block.
    m = _max_count_at_rate(ref_fpr, neg)
    below = negs_above <= m[g]
    r_star = m + np.bincount(g, weights=below, minlength=G).astype(np.int64)
    tp_at = pos.astype(np.int64).copy()           # m >= neg: every threshold allowed
    inside = (m < neg) & (m >= 0)
    q_star = start[inside] + r_star[inside]
    if tie_of is not None:
        q_star = _block_edge(tie_of, start[inside], q_star, q_star, "first")
    tp_at[inside] = np.searchsorted(posq, q_star, "left") - pos_start[inside]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_at = tp_at / pos
    recall_at[(pos == 0) | (neg == 0) | (m < 0)] = np.nan
    return {"auc": auc, "average_precision": ap, "recall_at_fpr": recall_at,
            "recall_at_fpr_tp": tp_at.astype(float)}


def _count(codes: np.ndarray, idx: np.ndarray | None, G: int) -> np.ndarray:
    c = codes if idx is None else codes[idx]
    c = c[c >= 0]
    return np.bincount(c, minlength=G).astype(np.int64)


def _threads(n_tasks: int) -> int:
    return max(1, min(n_tasks, os.cpu_count() or 1))


def slice_metrics(label: np.ndarray, scores: Mapping[str, np.ndarray],
                  thresholds: Mapping[str, np.ndarray | float],
                  families: Sequence[SliceCodes],
                  reference_fpr: str | float = "baseline",
                  ranking: bool = True) -> pd.DataFrame:
    """One row per (family, slice) with counts and every metric of every model.

    label: 0/1 per row (or None-free int array). scores/thresholds: per model name; a row
    is blocked when score >= threshold. reference_fpr: the FPR at which recall_at_fpr is
    read -- a number, or the name of a model whose thresholded FPR in each slice is used.
    ranking=False skips AUC, AP and recall_at_fpr (label-free or quick runs).

    Columns: family, slice, rows, positives, negatives, reference_fpr, and for each model
    M: M_blocked, M_tp, M_fp, M_block_rate, M_approval_rate, M_fpr, M_recall,
    M_precision, M_auc, M_average_precision, M_recall_at_fpr, M_recall_at_fpr_tp.
    """
    y = np.asarray(label).astype(np.int8, copy=False)
    pos_idx = np.flatnonzero(y)
    models = list(scores)
    blocked_idx: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for mname in models:
        s = np.asarray(scores[mname])
        blocked = s >= np.asarray(thresholds[mname])
        blocked_idx[mname] = (np.flatnonzero(blocked), np.flatnonzero(blocked & (y == 1)),
                              np.flatnonzero(blocked & (y == 0)))

    counts: list[dict[str, np.ndarray]] = []
    for sc in families:
        G = sc.n_slices
        rows = _count(sc.codes, None, G)
        pos = _count(sc.codes, pos_idx, G)
        d: dict[str, np.ndarray] = {"rows": rows, "positives": pos, "negatives": rows - pos}
        for mname in models:
            b, tp, fp = blocked_idx[mname]
            d[f"{mname}_blocked"] = _count(sc.codes, b, G)
            d[f"{mname}_tp"] = _count(sc.codes, tp, G)
            d[f"{mname}_fp"] = _count(sc.codes, fp, G)
        with np.errstate(invalid="ignore", divide="ignore"):
            if isinstance(reference_fpr, str):
                if reference_fpr not in models:
                    raise ValueError(f"reference_fpr names model '{reference_fpr}', which was not given")
                d["reference_fpr"] = d[f"{reference_fpr}_fp"] / d["negatives"]
            else:
                d["reference_fpr"] = np.where(d["negatives"] > 0, float(reference_fpr), np.nan)
        counts.append(d)

    if ranking and len(y):
        with ThreadPoolExecutor(_threads(len(models))) as ex:
            sorted_models = dict(zip(models, ex.map(lambda m: _sort_model(y, np.asarray(scores[m])), models)))
        tasks = [(fi, m) for fi in range(len(families)) for m in models]

        def run(task: tuple[int, str]) -> dict[str, np.ndarray]:
            fi, mname = task
            d = counts[fi]
            return _ranking_metrics(sorted_models[mname], families[fi], d["rows"], d["positives"],
                                    d["reference_fpr"])

        # Serial on purpose: the per-family passes are gathers that hold the GIL and are
        # memory-bound; measured on 2 cores, two threads were 30% slower than one.
        results = [run(t) for t in tasks]
        for (fi, mname), res in zip(tasks, results):
            for k, v in res.items():
                counts[fi][f"{mname}_{k}"] = v

    frames = []
    for sc, d in zip(families, counts):
        G = sc.n_slices
        with np.errstate(invalid="ignore", divide="ignore"):
            for mname in models:
                rows, neg, pos = d["rows"], d["negatives"], d["positives"]
                bl = d[f"{mname}_blocked"]
                d[f"{mname}_block_rate"] = np.where(rows > 0, bl / rows, np.nan)
                d[f"{mname}_approval_rate"] = np.where(rows > 0, 1 - bl / rows, np.nan)
                d[f"{mname}_fpr"] = np.where(neg > 0, d[f"{mname}_fp"] / neg, np.nan)
                d[f"{mname}_recall"] = np.where(pos > 0, d[f"{mname}_tp"] / pos, np.nan)
                d[f"{mname}_precision"] = np.where(bl > 0, d[f"{mname}_tp"] / bl, np.nan)
                if not (ranking and len(y)):
                    for k in ("auc", "average_precision", "recall_at_fpr", "recall_at_fpr_tp"):
                        d[f"{mname}_{k}"] = np.full(G, np.nan)
        frame = pd.DataFrame(d)
        frame.insert(0, "slice", sc.labels)
        frame.insert(0, "family", sc.family.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def threshold_for_block_rate(score: np.ndarray, rate: float) -> float:
    """A scalar threshold that blocks about `rate` of the rows (score >= threshold)."""
    s = np.asarray(score, dtype=float)
    k = int(round(rate * len(s)))
    if len(s) == 0 or k <= 0:
        return float(np.inf)
    if k >= len(s):
        return float(s.min())
    return float(np.partition(s, len(s) - k)[len(s) - k])
