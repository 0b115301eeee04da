"""Compiled loops of the slice engine (numba, released GIL, cached on disk).

Kernels, each one linear pass (the sort: a few) over the rows:

- `fill_column`: builds the row matrix -- every family's slice code and the label side by
  side, one row per transaction, so the ranking pass reads one cache line per row;
- `threshold_counts`: rows, positives, blocked and true positives per slice for one model;
- `argsort_desc`: a stable LSD radix sort of the scores, highest first (exact for every
  float64, several times faster than numpy's comparison sort on 10M rows);
- `ranking_sums`: one walk down a model's score order, tie block by tie block, keeping
  per-slice running counts; from them the Mann-Whitney AUC sums, the average precision
  sums (scikit-learn's step definition) and the true positives at the largest number of
  false positives each slice allows (recall at a per-slice FPR);
- `card_top_k_frauds`: the fraud investigators' daily walk down a model's card ranking
  (card precision at k), under Poisson(1) bootstrap weights per card (or unit weights).

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
def fill_column(out, f, values):  # pragma: no cover - compiled
    """out[:, f] = values (numba's strided copy beats numpy's on 10M rows)."""
    for i in range(out.shape[0]):
        out[i, f] = values[i]


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
def _float32_exact(score):  # pragma: no cover - compiled
    for i in range(score.shape[0]):
        x = score[i]
        if np.float64(np.float32(x)) != x and not np.isnan(x):
            return False
    return True


@njit(cache=True, nogil=True)
def _descending_keys(bits, sign):  # pragma: no cover - compiled
    """Unsigned keys whose ascending order is the floats' descending order; -0.0 folded into 0.0."""
    keys = np.empty_like(bits)
    zero = bits.dtype.type(0)
    for i in range(bits.shape[0]):
        b = bits[i]
        if b == sign:
            b = zero
        k = (~b) if (b & sign) else (b | sign)   # ascending unsigned == ascending float
        keys[i] = ~k
    return keys


@njit(cache=True, nogil=True)
def _radix_argsort(keys, n_passes):  # pragma: no cover - compiled
    """Stable LSD radix sort on 11-bit digits; skips digits every key shares."""
    n = keys.shape[0]
    mask = np.uint64(_RADIX - 1)
    hist = np.zeros((n_passes, _RADIX), np.int64)
    for i in range(n):
        k = np.uint64(keys[i])
        for p in range(n_passes):
            hist[p, (k >> np.uint64(p * _BITS)) & mask] += 1
    order = np.arange(n).astype(np.int64)
    keys2 = np.empty_like(keys)
    order2 = np.empty_like(order)
    offs = np.empty(_RADIX, np.int64)
    for p in range(n_passes):
        h = hist[p]
        if h.max() == n:
            continue
        acc = 0
        for d in range(_RADIX):
            offs[d] = acc
            acc += h[d]
        shift = np.uint64(p * _BITS)
        for i in range(n):
            k = keys[i]
            d = (np.uint64(k) >> shift) & mask
            o = offs[d]
            keys2[o] = k
            order2[o] = order[i]
            offs[d] = o + 1
        keys, keys2 = keys2, keys
        order, order2 = order2, order
    return order, keys


def argsort_desc(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, keys): row indices by descending score (ties by row index) and the sorted keys.

    Equal keys mean equal scores. Scores that are all float32 values (XGBoost's output)
    sort on 32-bit keys, three passes; others on 64-bit keys, up to six. NaN sorts last.
    """
    if _float32_exact(score):
        bits32 = np.ascontiguousarray(score, dtype=np.float32).view(np.uint32)
        return _radix_argsort(_descending_keys(bits32, np.uint32(1) << np.uint32(31)), 3)
    return _radix_argsort(_descending_keys(score.view(np.uint64), np.uint64(1) << np.uint64(63)), _PASSES)


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


# ---- card precision at k: the investigators' daily queue ------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_POISSON1_CDF = np.cumsum(np.exp(-1.0) / np.cumprod(np.concatenate(([1.0], np.arange(1.0, 20.0)))))


@njit(cache=True, nogil=True)
def _poisson1(seed, rep, card, cdf):  # pragma: no cover - compiled
    """A Poisson(1) draw that depends only on (seed, rep, card): splitmix64 of the three, by
    inversion. The same card weighs the same on every day and for every model of a replicate."""
    x = (np.uint64(seed) * _GOLDEN) ^ (np.uint64(rep + 1) * np.uint64(0xBF58476D1CE4E5B9)) \
        ^ (np.uint64(card + 1) * np.uint64(0x94D049BB133111EB))
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    u = np.float64(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    w = 0
    while w < cdf.shape[0] - 1 and u >= cdf[w]:
        w += 1
    return w


@njit(cache=True, nogil=True)
def card_top_k_frauds(day_start, card, label, k, n_cards, reps, seed, weighted, remove):  # pragma: no cover - compiled
    """Fraudulent cards found per (replicate, day) in each day's top k (reps x days, int64).

    Entries are (day, card) pairs sorted by day, then the model's score (highest first),
    then card; day d is entries day_start[d]:day_start[d + 1]. Each day the walk takes
    cards in order until k places are filled; a card of weight w fills w places (weighted:
    w ~ Poisson(1) from _poisson1, else 1). With `remove`, a fraudulent card found on a day
    is skipped on later days (the handbook's investigators block it)."""
    n_days = day_start.shape[0] - 1
    out = np.zeros((reps, n_days), np.int64)
    removed = np.zeros(n_cards, np.bool_)
    found = np.empty(n_cards, np.int64)
    cdf = _POISSON1_CDF
    for r in range(reps):
        n_found = 0
        for d in range(n_days):
            left = k
            for j in range(day_start[d], day_start[d + 1]):
                if left <= 0:
                    break
                c = card[j]
                if remove and removed[c]:
                    continue
                w = _poisson1(seed, r, c, cdf) if weighted else 1
                if w == 0:
                    continue
                t = w if w < left else left
                left -= t
                if label[j] != 0:
                    out[r, d] += t
                    if remove:
                        removed[c] = True
                        found[n_found] = c
                        n_found += 1
        for i in range(n_found):  # the next replicate starts with no card blocked
            removed[found[i]] = False
    return out
