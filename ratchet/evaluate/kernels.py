"""Compiled loops of the slice engine (numba, released GIL, cached on disk).

Three kernels, each one linear pass (the sort: a few) over the rows:

- `row_matrix`: every family's slice code and the label side by side, one row per
  transaction, so the ranking pass reads one cache line per row instead of one per family;
- `threshold_counts`: rows, positives, blocked and true positives per slice for one model;
- `argsort_desc`: a stable LSD radix sort of the scores, highest first (exact for every
  float64, several times faster than numpy's comparison sort on 10M rows);
- `ranking_sums`: one walk down a model's score order, tie block by tie block, keeping
  per-slice running counts; from them the Mann-Whitney AUC sums, the average precision
  sums (scikit-learn's step definition) and the true positives at the largest number of
  false positives each slice allows (recall at a per-slice FPR).

Slices of all families share one global index: slice `c` of family `f` is `offsets[f] + c`.
A code of -1 means "in no slice of that family".
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BITS = 11
_RADIX = 1 << _BITS
_PASSES = 6  # 6 x 11 bits cover the 64-bit key


@njit(cache=True, nogil=True)
def row_matrix(codes, label, out):  # pragma: no cover - compiled
    """out[i, f] = codes[f][i] for each family f, out[i, F] = label[i]."""
    n, F = out.shape[0], len(codes)
    for f in range(F):
        col = codes[f]
        for i in range(n):
            out[i, f] = col[i]
    for i in range(n):
        out[i, F] = label[i]
    return out


@njit(cache=True, nogil=True)
def threshold_counts(rows, offsets, n_slices, score, threshold):  # pragma: no cover - compiled
    """(rows, positives, blocked, true positives) per global slice; blocked: score >= threshold.

    threshold has one element (a scalar for every row) or one per row.
    """
    n, F = rows.shape[0], rows.shape[1] - 1
    count = np.zeros(n_slices, np.int64)
    pos = np.zeros(n_slices, np.int64)
    blocked = np.zeros(n_slices, np.int64)
    tp = np.zeros(n_slices, np.int64)
    scalar = threshold.shape[0] == 1
    t0 = threshold[0]
    for i in range(n):
        t = t0 if scalar else threshold[i]
        b = score[i] >= t
        yi = rows[i, F] != 0
        for f in range(F):
            c = rows[i, f]
            if c < 0:
                continue
            g = offsets[f] + c
            count[g] += 1
            if yi:
                pos[g] += 1
                if b:
                    tp[g] += 1
            if b:
                blocked[g] += 1
    return count, pos, blocked, tp


@njit(cache=True, nogil=True)
def argsort_desc(score):  # pragma: no cover - compiled
    """(order, keys): row indices by descending score (ties by row index) and the sorted keys.

    Keys are the scores' bit patterns mapped so that unsigned order is descending score order;
    equal keys mean equal scores (-0.0 is folded into 0.0). NaN scores sort last.
    """
    n = score.shape[0]
    sign = np.uint64(1) << np.uint64(63)
    keys = np.empty(n, np.uint64)
    bits = score.view(np.uint64)
    for i in range(n):
        b = bits[i]
        if b == sign:           # -0.0 == 0.0
            b = np.uint64(0)
        k = (~b) if (b & sign) else (b | sign)   # ascending unsigned == ascending float
        keys[i] = ~k                             # ... flipped: descending
    mask = np.uint64(_RADIX - 1)
    hist = np.zeros((_PASSES, _RADIX), np.int64)
    for i in range(n):
        k = keys[i]
        for p in range(_PASSES):
            hist[p, (k >> np.uint64(p * _BITS)) & mask] += 1
    order = np.arange(n).astype(np.int64)
    keys2 = np.empty_like(keys)
    order2 = np.empty_like(order)
    for p in range(_PASSES):
        h = hist[p]
        if h.max() == n:        # every key has the same digit here: nothing to do
            continue
        offs = np.empty(_RADIX, np.int64)
        acc = 0
        for d in range(_RADIX):
            offs[d] = acc
            acc += h[d]
        shift = np.uint64(p * _BITS)
        for i in range(n):
            k = keys[i]
            d = (k >> shift) & mask
            o = offs[d]
            keys2[o] = k
            order2[o] = order[i]
            offs[d] = o + 1
        keys, keys2 = keys2, keys
        order, order2 = order2, order
    return order, keys


@njit(cache=True, nogil=True)
def ranking_sums(keys, srt, offsets, neg_total, max_neg, pos_total):  # pragma: no cover - compiled
    """srt: the row matrix in descending score order (keys: the sorted keys of argsort_desc).

    Per global slice: sum over positives of the Mann-Whitney U (ties count half), sum of
    precisions at each positive's tie block end, and the true positives ranked strictly
    before the tie block holding the slice's (max_neg+1)-th negative (pos_total when the
    slice has no more than max_neg negatives; never reached when max_neg < 0).
    """
    n, F = srt.shape[0], srt.shape[1] - 1
    G = neg_total.shape[0]
    pos_cnt = np.zeros(G, np.int64)
    neg_cnt = np.zeros(G, np.int64)
    u = np.zeros(G, np.float64)
    ap = np.zeros(G, np.float64)
    tp_at = pos_total.copy()
    blk_pos = np.zeros(G, np.int64)
    blk_neg = np.zeros(G, np.int64)
    touched = np.empty(G, np.int64)
    i = 0
    while i < n:
        j = i + 1
        while j < n and keys[j] == keys[i]:
            j += 1
        if j == i + 1:          # no tie: the common case
            yi = srt[i, F] != 0
            for f in range(F):
                c = srt[i, f]
                if c < 0:
                    continue
                g = offsets[f] + c
                if yi:
                    u[g] += neg_total[g] - neg_cnt[g]
                    pc = pos_cnt[g] + 1
                    ap[g] += pc / (pc + neg_cnt[g])
                    pos_cnt[g] = pc
                else:
                    if neg_cnt[g] == max_neg[g]:
                        tp_at[g] = pos_cnt[g]
                    neg_cnt[g] += 1
        else:                   # a tie block: count it per slice first, then settle
            nt = 0
            for k in range(i, j):
                yi = srt[k, F] != 0
                for f in range(F):
                    c = srt[k, f]
                    if c < 0:
                        continue
                    g = offsets[f] + c
                    if blk_pos[g] == 0 and blk_neg[g] == 0:
                        touched[nt] = g
                        nt += 1
                    if yi:
                        blk_pos[g] += 1
                    else:
                        blk_neg[g] += 1
            for t in range(nt):
                g = touched[t]
                bp, bn = blk_pos[g], blk_neg[g]
                if bp > 0:
                    u[g] += bp * (neg_total[g] - neg_cnt[g] - 0.5 * bn)
                    pc = pos_cnt[g] + bp
                    ap[g] += bp * pc / (pc + neg_cnt[g] + bn)
                if neg_cnt[g] <= max_neg[g] and max_neg[g] < neg_cnt[g] + bn:
                    tp_at[g] = pos_cnt[g]
                pos_cnt[g] += bp
                neg_cnt[g] += bn
                blk_pos[g] = 0
                blk_neg[g] = 0
        i = j
    return u, ap, tp_at
