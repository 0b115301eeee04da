"""The slice metrics engine: every metric, every slice, every model, in one vectorized pass.

Each model's rows are radix-sorted by score once (descending), then walked once, tie
block by tie block, keeping a running count of positives and negatives for every slice
of every family at the same time (ratchet/evaluate/kernels.py, compiled with numba).
Each positive's count of negatives above it in its slice gives the AUC (Mann-Whitney,
ties counted half, which is the trapezoid rule); each tie block's end gives the average
precision (scikit-learn's step definition); the tie block holding a slice's (m+1)-th
negative gives the recall at the slice's FPR m/negatives. Threshold metrics (block rate,
FPR, recall, precision) use a threshold per row -- a scalar or a column, so per-merchant
thresholds work -- and are counted in one sequential pass. The two models run on two
threads (the kernels release the GIL).

Undefined values (AUC of a slice without positives, FPR without negatives, ...) are
NaN in the arrays and None in anything user-facing.

Card precision at k is not a slice metric: it ranks distinct cards per day, as fraud
investigators work a daily queue (card_precision_at_k below, and its bootstrap).

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ratchet.evaluate import kernels
from ratchet.evaluate.slices import OVERALL, SliceCodes

#: Metrics the engine computes per model; the contract language names these.
MODEL_METRICS: tuple[str, ...] = (
    "auc", "average_precision", "recall_at_fpr", "fpr", "recall", "precision",
    "block_rate", "approval_rate",
)
#: Metrics judged on each test day's ranking of distinct cards (whole population only).
CARD_METRICS: tuple[str, ...] = ("card_precision_at_k",)
#: Key of a card precision among a model's overall metrics: card_precision_at_<k> (CP@k).
CARD_PRECISION_PREFIX = "card_precision_at_"
#: Every metric a contract clause may name.
CONTRACT_METRICS: tuple[str, ...] = MODEL_METRICS + CARD_METRICS
#: Metrics computable without labels (usable on live traffic).
LABEL_FREE: frozenset[str] = frozenset({"block_rate", "approval_rate"})
#: +1: higher is better; -1: lower is better (blocking good customers is the cost).
DIRECTION: dict[str, int] = {
    "auc": 1, "average_precision": 1, "recall_at_fpr": 1, "recall": 1, "precision": 1,
    "approval_rate": 1, "fpr": -1, "block_rate": -1, "card_precision_at_k": 1,
}


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


def _threads(n_tasks: int) -> int:
    return max(1, min(n_tasks, os.cpu_count() or 1))


def _row_matrix(families: Sequence[SliceCodes], y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(rows x (families + 1) codes-and-label matrix, each family's global slice offset, slices)."""
    sizes = [sc.n_slices for sc in families]
    wide = any(sc.codes.dtype.itemsize > 2 for sc in families) or sum(sizes) >= 32_000
    dtype = np.int32 if wide else np.int16
    mat = np.empty((len(y), len(families) + 1), dtype=dtype)
    for f, column in enumerate([*(sc.codes for sc in families), y]):
        kernels.fill_column(mat, f, np.ascontiguousarray(column, dtype=dtype))
    offsets = np.zeros(len(families), dtype=np.int64)
    np.cumsum(sizes[:-1], out=offsets[1:])
    return mat, offsets, int(sum(sizes))


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
    y = np.ascontiguousarray(np.asarray(label).astype(np.int8, copy=False))
    models = list(scores)
    if isinstance(reference_fpr, str) and reference_fpr not in models:
        raise ValueError(f"reference_fpr names model '{reference_fpr}', which was not given")
    if not families:
        return pd.DataFrame()
    score = {m: np.ascontiguousarray(scores[m], dtype=np.float64) for m in models}
    mat, offsets, G = _row_matrix(families, y)
    ranking = ranking and len(y) > 0

    def counts_and_order(mname: str):
        thr = np.ascontiguousarray(np.atleast_1d(np.asarray(thresholds[mname], dtype=np.float64)))
        counted = kernels.threshold_counts(mat, offsets, G, score[mname], thr)
        return counted, (kernels.argsort_desc(score[mname]) if ranking else None)

    # the kernels release the GIL: one thread per model uses both cores
    with ThreadPoolExecutor(_threads(len(models))) as ex:
        per_model = dict(zip(models, ex.map(counts_and_order, models)))

    d: dict[str, np.ndarray] = {}
    for k, mname in enumerate(models):
        (rows, pos, blocked, tp), _ = per_model[mname]
        if k == 0:
            d.update(rows=rows, positives=pos, negatives=rows - pos)
        d[f"{mname}_blocked"], d[f"{mname}_tp"], d[f"{mname}_fp"] = blocked, tp, blocked - tp
    if not models:
        empty = np.zeros(G, dtype=np.int64)
        d.update(rows=empty, positives=empty, negatives=empty)
    rows, pos, neg = d["rows"], d["positives"], d["negatives"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if isinstance(reference_fpr, str):
            d["reference_fpr"] = d[f"{reference_fpr}_fp"] / neg
        else:
            d["reference_fpr"] = np.where(neg > 0, float(reference_fpr), np.nan)

    if ranking:
        max_neg = _max_count_at_rate(d["reference_fpr"], neg)

        def rank(mname: str):
            order, keys = per_model[mname][1]
            # np.take gathers rows 3x faster than a compiled loop (memcpy per row)
            return kernels.ranking_sums(keys, np.take(mat, order, axis=0), offsets, neg, max_neg, pos)

        with ThreadPoolExecutor(_threads(len(models))) as ex:
            ranked = dict(zip(models, ex.map(rank, models)))
        with np.errstate(invalid="ignore", divide="ignore"):
            for mname in models:
                u, ap_sum, tp_at = ranked[mname]
                auc = u / (pos * neg)
                auc[(pos == 0) | (neg == 0)] = np.nan
                ap = ap_sum / pos
                ap[pos == 0] = np.nan
                recall_at = tp_at / pos
                recall_at[(pos == 0) | (neg == 0) | (max_neg < 0)] = np.nan
                d[f"{mname}_auc"], d[f"{mname}_average_precision"] = auc, ap
                d[f"{mname}_recall_at_fpr"], d[f"{mname}_recall_at_fpr_tp"] = recall_at, tp_at.astype(float)

    with np.errstate(invalid="ignore", divide="ignore"):
        for mname in models:
            bl = d[f"{mname}_blocked"]
            d[f"{mname}_block_rate"] = np.where(rows > 0, bl / rows, np.nan)
            d[f"{mname}_approval_rate"] = np.where(rows > 0, 1 - bl / rows, np.nan)
            d[f"{mname}_fpr"] = np.where(neg > 0, d[f"{mname}_fp"] / neg, np.nan)
            d[f"{mname}_recall"] = np.where(pos > 0, d[f"{mname}_tp"] / pos, np.nan)
            d[f"{mname}_precision"] = np.where(bl > 0, d[f"{mname}_tp"] / bl, np.nan)
            if not ranking:
                for k in ("auc", "average_precision", "recall_at_fpr", "recall_at_fpr_tp"):
                    d[f"{mname}_{k}"] = np.full(G, np.nan)
    table = pd.DataFrame(_column_order(d, models))
    table.insert(0, "slice", [lab for sc in families for lab in sc.labels])
    table.insert(0, "family", np.repeat([sc.family.name for sc in families], [sc.n_slices for sc in families]))
    return table


def _column_order(d: dict[str, np.ndarray], models: list[str]) -> dict[str, np.ndarray]:
    """The table's columns in the order documented above (counts, then each model's metrics)."""
    keys = ["rows", "positives", "negatives"]
    keys += [f"{m}_{k}" for m in models for k in ("blocked", "tp", "fp")]
    keys += ["reference_fpr"]
    keys += [f"{m}_{k}" for m in models for k in ("auc", "average_precision", "recall_at_fpr", "recall_at_fpr_tp")
             if f"{m}_{k}" in d]
    keys += [f"{m}_{k}" for m in models for k in ("block_rate", "approval_rate", "fpr", "recall", "precision")]
    return {k: d[k] for k in keys if k in d}


def threshold_for_block_rate(score: np.ndarray, rate: float, weight: np.ndarray | None = None) -> float:
    """A scalar threshold that blocks about `rate` of the rows (score >= threshold).

    With `weight` (e.g. 1 / propensity on a censored test window), `rate` is of the weighted
    rows: the lowest threshold whose blocked rows hold at most `rate` of the total weight, to
    the nearest row, as the unweighted rule does with counts."""
    if weight is not None:
        return _weighted_threshold(np.asarray(score, dtype=float), rate, np.asarray(weight, dtype=float))
    s = np.asarray(score, dtype=float)
    k = int(round(rate * len(s)))
    if len(s) == 0 or k <= 0:
        return float(np.inf)
    if k >= len(s):
        return float(s.min())
    return float(np.partition(s, len(s) - k)[len(s) - k])


def _weighted_threshold(s: np.ndarray, rate: float, w: np.ndarray) -> float:
    if len(s) == 0 or rate <= 0:
        return float(np.inf)
    order = np.argsort(-s, kind="stable")
    cum = np.cumsum(w[order])
    k = int(np.searchsorted(cum, rate * cum[-1] * (1 + 1e-12), side="right"))  # rows whose weight fits the rate
    if k <= 0:
        k = 1 if abs(cum[0] - rate * cum[-1]) <= abs(rate * cum[-1]) else 0   # nearest: one row or none
        if k == 0:
            return float(np.inf)
    if k >= len(s):
        return float(s.min())
    if k < len(s) and abs(cum[k] - rate * cum[-1]) < abs(cum[k - 1] - rate * cum[-1]):
        k += 1                                                               # the next row is nearer the rate
    return float(s[order][k - 1])


# ---- card precision at k ----------------------------------------------------------------------
@dataclass(frozen=True)
class CardDays:
    """One entry per (UTC day, card) of a test set, sorted by day then card: the card's
    highest label and, per model, its highest score that day. `card` codes rank the card
    ids (so ties break by card_id, whatever the rows' order)."""

    day: np.ndarray                 # int64, days since 1970-01-01 (UTC)
    card: np.ndarray                # int64 code, in card_id order
    label: np.ndarray               # int8, 1 when any of the card's payments that day is fraud
    score: dict[str, np.ndarray]    # model -> float64
    n_cards: int
    _rankings: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict, repr=False, compare=False)

    def ranking(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(days, day_start, card, label): entries by day, then score (highest first), then card_id."""
        if model not in self._rankings:
            first = np.flatnonzero(np.r_[True, self.day[1:] != self.day[:-1]]) if len(self.day) else np.zeros(0, int)
            bounds = np.append(first, len(self.day)).astype(np.int64)
            score = self.score[model]
            # within a day entries are in card order already: a stable sort keeps it for ties
            order = np.concatenate([a + np.argsort(-score[a:b], kind="stable") for a, b in zip(bounds[:-1], bounds[1:])]
                                   or [np.zeros(0, np.int64)])
            self._rankings[model] = (self.day[first], bounds, self.card[order], self.label[order])
        return self._rankings[model]  # type: ignore[return-value]


@dataclass(frozen=True)
class CardPrecision:
    """Card precision at k of one model: the mean over test days of each day's precision."""

    k: int
    value: float                    # NaN without any day
    days: tuple[str, ...]           # ISO dates (UTC), ascending
    per_day: tuple[float, ...]      # frauds among the day's top k cards / k
    frauds: int                     # fraudulent cards in the daily top-k lists, over all days
    examined: int                   # cards in those lists (k a day; fewer on a day with fewer cards)


def utc_days(ts: Any) -> np.ndarray:
    """Calendar days (UTC) of timestamps, as int64 days since 1970-01-01. Naive timestamps
    are taken as UTC (ratchet's canonical ts); strings are parsed; numbers are refused."""
    s = pd.Series(np.asarray(ts) if not isinstance(ts, pd.Series) else ts)
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        raise ValueError(f"ts must be timestamps, got {s.dtype}; convert epoch numbers with "
                         "pd.to_datetime(..., unit=...)")
    if not pd.api.types.is_datetime64_any_dtype(s):
        try:
            s = pd.to_datetime(s, utc=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"ts is not parseable as timestamps ({exc})") from None
    if s.isna().any():
        raise ValueError(f"ts has {int(s.isna().sum())} missing value(s)")
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy().astype("datetime64[D]").astype(np.int64)


def _card_codes(card_id: Any) -> np.ndarray:
    """Each row's card as the rank of its card_id among the distinct ids (numbers by value,
    anything else by its text)."""
    codes, uniques = pd.factorize(np.asarray(card_id))
    if (codes < 0).any():
        raise ValueError(f"card_id has {int((codes < 0).sum())} missing value(s)")
    u = np.asarray(uniques)
    rank = np.empty(len(u), dtype=np.int64)
    rank[np.argsort(u if u.dtype.kind in "iuf" else u.astype(str), kind="stable")] = np.arange(len(u))
    return rank[codes]


def card_days(ts: Any, card_id: Any, label: Any, scores: Mapping[str, np.ndarray]) -> CardDays:
    """Group rows by (UTC day, card): the highest label and each model's highest score."""
    day, card = utc_days(ts), _card_codes(card_id)
    n_cards = int(card.max()) + 1 if len(card) else 0
    first_day = int(day.min()) if len(day) else 0
    key = (day - first_day) * max(n_cards, 1) + card
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)

    def highest(x: Any) -> np.ndarray:
        return np.maximum.reduceat(np.asarray(x)[order], first) if len(first) else np.asarray(x)[:0]

    out: dict[str, np.ndarray] = {}
    for m, sc in scores.items():
        sc = np.asarray(sc, dtype=np.float64)
        if np.isnan(sc).any():
            raise ValueError(f"scores of '{m}' have {int(np.isnan(sc).sum())} missing value(s)")
        out[m] = highest(sc)
    return CardDays(day=key[first] // max(n_cards, 1) + first_day, card=key[first] % max(n_cards, 1),
                    label=highest(np.asarray(label).astype(np.int8)), score=out, n_cards=n_cards)


def card_precision(cd: CardDays, model: str, k: int, remove_detected: bool = True) -> CardPrecision:
    """Card precision at k of `model` on grouped card days (see card_precision_at_k)."""
    if k < 1:
        raise ValueError(f"k must be a positive number of cards, got {k}")
    days, start, card, label = cd.ranking(model)
    detected = np.zeros(cd.n_cards, dtype=bool)
    frauds = np.zeros(len(days), dtype=np.int64)
    examined = np.zeros(len(days), dtype=np.int64)
    for i in range(len(days)):
        c, y = card[start[i]:start[i + 1]], label[start[i]:start[i + 1]]
        if remove_detected:
            keep = ~detected[c]
            c, y = c[keep], y[keep]
        top_c, top_y = c[:k], y[:k]
        frauds[i], examined[i] = int(top_y.sum()), len(top_c)
        detected[top_c[top_y == 1]] = True
    per_day = frauds / float(k)
    return CardPrecision(k=k, value=float(per_day.mean()) if len(days) else float("nan"),
                         days=tuple(str(np.datetime64(int(d), "D")) for d in days),
                         per_day=tuple(float(p) for p in per_day), frauds=int(frauds.sum()),
                         examined=int(examined.sum()))


def card_precision_at_k(ts: Any, card_id: Any, label: Any, score: Any, k: int, *,
                        remove_detected: bool = True) -> CardPrecision:
    """Card precision at k (Le Borgne et al., *Reproducible Machine Learning for Credit Card
    Fraud Detection*, ch. 4, `card_precision_top_k`): investigators check k cards a day.

    For each calendar day (UTC, by ts) the rows are grouped by card_id, taking each card's
    highest score and highest label; the day's k cards with the highest scores (ties: the
    smaller card_id first) are checked, and the day's precision is the frauds among them
    divided by k -- by k even on a day with fewer than k cards, as the handbook does (the
    unused places of the queue count as misses). CP@k is the mean over the test days.
    remove_detected (the handbook's default, remove_detected_compromised_cards=True): a
    fraudulent card found on a day is blocked and left out of the following days.

        >>> card_precision_at_k(df.ts, df.card_id, df.label, scores, k=100).value
    """
    return card_precision(card_days(ts, card_id, label, {"model": score}), "model", k, remove_detected)


def card_precision_replicates(cd: CardDays, k: int, reps: int = 1000, seed: int = 0,
                              remove_detected: bool = True) -> dict[str, np.ndarray]:
    """Per model, `reps` bootstrap replicates of card precision at k.

    A cluster bootstrap over cards: each replicate weighs every card by a Poisson(1) draw
    (all its days together, and the same for every model, so differences are paired); a
    card of weight w takes w places of a day's queue. The test days themselves are kept
    (their number is small: 7 in the handbook's protocol). Deterministic per seed."""
    out: dict[str, np.ndarray] = {}
    for m in cd.score:
        days, start, card, label = cd.ranking(m)
        found = kernels.card_top_k_frauds(start, card, label, int(k), cd.n_cards, int(reps), int(seed), True,
                                          bool(remove_detected))
        out[m] = found.sum(axis=1) / float(k * max(len(days), 1))
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels for every argument type slice_metrics
    passes them: 16- and 32-bit slice codes, float32-exact and general float64 scores."""
    rng = np.random.default_rng(0)
    y = (rng.random(64) < 0.3).astype(np.int8)
    general = rng.random(64)
    for codes in (np.zeros(64, np.int16), np.zeros(64, np.int32)):
        slice_metrics(y, {"a": general, "b": general.astype(np.float32).astype(np.float64)},
                      {"a": 0.5, "b": general}, [SliceCodes(OVERALL, codes, ["all"])], reference_fpr="a")
    cd = card_days(np.datetime64("2024-01-01", "D") + (np.arange(64) % 3), np.arange(64) % 7, y, {"a": general})
    card_precision_replicates(cd, 2, reps=2)


if __name__ == "__main__":
    warm_up()
