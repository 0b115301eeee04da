"""Repair per-merchant thresholds until the contract's block-rate limits hold (pure).

The start is the policy's own choice (keep_fpr: one threshold per large merchant, a
global one for the rest). The units are merchants: a row is blocked when its score is at
least its merchant's own threshold, else the global one.

1. Boxes. A judged slice whose rows all belong to one merchant (a top merchant, a
   one-merchant country) confines that merchant's threshold to an interval: the
   thresholds that keep the slice's block rate within `share` of its allowance (the
   target box), at least within the allowance (the full box). A merchant's slices are
   intersected largest first (its own slice first); one that cannot hold together with
   the earlier ones is left unmet, naming the clause that binds. The merchant's
   threshold is moved into its target box (the nearest edge: the least change).
2. Every other slice beyond its target (a country, a category, the whole population) is
   repaired, worst first, by one slice-level threshold u: too many blocks, and every
   merchant of the slice gets at least u (the lowest-scoring blocked rows are let
   through first); too few, at most u. Each merchant stays within its box; u is the
   least change that brings the slice to its target (bisection over the slice's
   scores), else to its allowance, else as close as the boxes let it (the boxes' clauses
   bind). A move that would push another judged slice beyond its target is re-planned
   with the merchants it shares with that slice held where they are, so clauses that
   share merchants (a country and a category) settle instead of undoing each other;
   only when no such move exists are they moved anyway. Merchants on the global
   threshold get their own entry u, unless the slice holds every such merchant: then
   the global threshold moves.
3. Until no slice is beyond its target, or each one left was tried MAX_ATTEMPTS times
   (clauses that pull the same merchants apart) or cannot move.

Reach. Thresholds re-calibrate a new model's scores; they must not exempt a slice from
the model. No merchant's threshold moves further than a factor `reach` in odds
(t / (1 - t)) from where the policy put it (default 4: 0.15 -> at most 0.41). A model
that scores a whole category as fraud (a label bug) would need a threshold near 1 for it:
beyond the reach, so the clause stays violated, the gate judges it and names it.

A clause whose limits are weighted (an ipw clause on censored data, SliceLimits.weight)
is repaired on the same rule with weights: a slice's block rate is its blocked rows'
weight over its rows' weight, and "block at most k rows" becomes "at most that weight".

    >>> r = repair(score, merchant_codes, n_merchants, own, glob, limits, share=0.5)
    >>> r.own, r.glob, r.why, r.problems
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ratchet.thresholds.constraints import EPS, SliceLimits
from ratchet.thresholds.optimise import Grouped, group_rows

REACH = 4.0          # how far (a factor in odds) a repair may move a merchant's threshold from the policy's
REACH_WHY = "the repair's reach (thresholds move at most {reach:g}x in odds from the policy's)"
MAX_ATTEMPTS = 4     # repairs of one slice before it is declared in conflict with another clause
MAX_ROUNDS = 2000    # repairs in all (a guard; each round fixes one slice)
HOLD_ROUNDS = 6      # times a repair re-plans, holding the merchants whose move would push another slice out


@dataclass
class Repaired:
    """The thresholds after repair and why each one is where it is."""

    own: np.ndarray                 # per merchant; NaN: uses the global threshold
    glob: float
    why: list[str]                  # per merchant: the clause (slice) that set it; "" the policy's objective
    glob_why: str = ""
    problems: dict[tuple[str, str], str] = field(default_factory=dict)  # (clause, slice) -> what binds it
    rounds: int = 0

    def effective(self) -> np.ndarray:
        return np.where(np.isnan(self.own), self.glob, self.own)


@dataclass
class _Boxes:
    """Per merchant threshold intervals: target (share) inside full (allowance), and which slice set each edge."""

    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    lo_why: dict[str, list[str]]
    hi_why: dict[str, list[str]]


@dataclass(frozen=True)
class _Slices:
    """One clause's slices: grouped rows and, per slice, its merchant when it has only one (else -1)."""

    grouped: Grouped
    single: np.ndarray

    def rows(self, i: int) -> np.ndarray:
        a = self.grouped.start[i]
        return self.grouped.perm[a:a + self.grouped.size[i]]


def _mid(a: float, b: float) -> float:
    """A threshold in (a, b]: the midpoint, else b (adjacent floats)."""
    t = a + (b - a) / 2
    return float(t if a < t <= b else b)


def _just_above(sorted_scores: np.ndarray, v: float) -> float:
    idx = int(np.searchsorted(sorted_scores, v, side="right"))
    if idx >= len(sorted_scores):
        return float(np.nextafter(v, np.inf))
    return _mid(v, float(sorted_scores[idx]))


def _count_hi(n: int, rate: float) -> int:
    return int(np.floor(rate * n + 1e-9)) if np.isfinite(rate) else n


def _count_lo(n: int, rate: float) -> int:
    return max(0, int(np.ceil(rate * n - 1e-9))) if np.isfinite(rate) else 0


def _weight_hi(total: float, rate: float) -> float:
    return rate * total + 1e-9 * total if np.isfinite(rate) else total


def _weight_lo(total: float, rate: float) -> float:
    return max(0.0, rate * total - 1e-9 * total) if np.isfinite(rate) else 0.0


def _budgets(wr: np.ndarray | None, n: int, lo_rate: float, hi_rate: float) -> tuple[float, float]:
    """(least, most) blocked rows -- or weight, with weights -- that keep a block rate within [lo, hi]."""
    if wr is None:
        return _count_lo(n, lo_rate), _count_hi(n, hi_rate)
    total = float(np.sum(wr))
    return _weight_lo(total, lo_rate), _weight_hi(total, hi_rate)


def _blocked(r: np.ndarray, thr: np.ndarray | float, wr: np.ndarray | None) -> float:
    """Rows blocked at these thresholds (their weight, with weights)."""
    hit = r >= thr
    return int(hit.sum()) if wr is None else float(wr[hit].sum())


def _weighted_interval(scores: np.ndarray, weight: np.ndarray, lo_rate: float, hi_rate: float) -> tuple[float, float]:
    """interval() with the block rate as the blocked rows' share of the weight."""
    a = np.asarray(scores, dtype=float)
    w = np.asarray(weight, dtype=float)
    if len(a) == 0:
        return -np.inf, np.inf
    order = np.argsort(-a, kind="stable")
    desc, cum = a[order], np.cumsum(w[order])
    asc = np.sort(a)
    k_lo, k_hi = _weight_lo(float(cum[-1]), lo_rate), _weight_hi(float(cum[-1]), hi_rate)
    over = np.flatnonzero(cum > k_hi)
    low = -np.inf if len(over) == 0 else _just_above(asc, float(desc[over[0]]))
    if k_lo <= 0:
        return low, np.inf
    enough = np.flatnonzero(cum >= k_lo)
    j = int(enough[0]) if len(enough) else len(desc) - 1
    # a threshold at desc[j] blocks its tied rows too, which only adds weight
    return low, float(desc[j])


def interval(scores: np.ndarray, lo_rate: float, hi_rate: float,
             weight: np.ndarray | None = None) -> tuple[float, float]:
    """Thresholds t (score >= t blocks) that give these rows a block rate within
    [lo_rate, hi_rate]: (lowest, highest); lowest > highest when none does (tied scores).
    weight: per row (the block rate is then the blocked rows' share of the weight)."""
    if weight is not None:
        return _weighted_interval(scores, weight, lo_rate, hi_rate)
    a = np.sort(np.asarray(scores, dtype=float))
    n = len(a)
    k_hi, k_lo = _count_hi(n, hi_rate), _count_lo(n, lo_rate)
    low = -np.inf if k_hi >= n else _just_above(a, float(a[n - 1 - k_hi]))
    high = np.inf if k_lo <= 0 else float(a[n - k_lo])
    return low, high


def _slices(lim: SliceLimits, mcodes: np.ndarray, n_merchants: int) -> _Slices:
    n = len(lim.labels)
    inside = lim.codes >= 0
    pairs = np.unique(lim.codes[inside] * n_merchants + mcodes[inside])
    per_slice = np.bincount(pairs // n_merchants, minlength=n)
    single = np.full(n, -1, dtype=np.int64)
    one = per_slice[pairs // n_merchants] == 1
    single[pairs[one] // n_merchants] = pairs[one] % n_merchants
    return _Slices(group_rows(lim.codes, n), single)


def _boxes(score: np.ndarray, limits: Sequence[SliceLimits], slices: Sequence[_Slices], n_merchants: int,
           share: float, problems: dict[tuple[str, str], str]) -> _Boxes:
    """Intersect the boxes of every judged one-merchant slice, largest slice first."""
    items = []
    for li, (lim, sl) in enumerate(zip(limits, slices)):
        for i in np.flatnonzero(lim.judged & (sl.single >= 0)):
            items.append((int(sl.single[i]), -int(lim.rows[i]), li, int(i)))
    levels = ("full", "target")
    box = _Boxes({k: np.full(n_merchants, -np.inf) for k in levels}, {k: np.full(n_merchants, np.inf) for k in levels},
                 {k: [""] * n_merchants for k in levels}, {k: [""] * n_merchants for k in levels})
    for level, s in (("full", 1.0), ("target", share)):
        if level == "target":  # the target boxes lie within the full ones
            box.lo["target"], box.hi["target"] = box.lo["full"].copy(), box.hi["full"].copy()
            box.lo_why["target"], box.hi_why["target"] = list(box.lo_why["full"]), list(box.hi_why["full"])
        for m, _, li, i in sorted(items):
            lim = limits[li]
            lo, hi = lim.band(s)
            rows = slices[li].rows(i)
            a, b = interval(score[rows], float(lo[i]), float(hi[i]), lim.row_weight(rows))
            lo_m, hi_m = max(box.lo[level][m], a), min(box.hi[level][m], b)
            if lo_m > hi_m:
                if level == "full":
                    problems[(lim.clause.name, lim.labels[i])] = _clash(a, b, box, m, lim.label(i))
                continue
            if a > box.lo[level][m]:
                box.lo[level][m], box.lo_why[level][m] = a, lim.label(i)
            if b < box.hi[level][m]:
                box.hi[level][m], box.hi_why[level][m] = b, lim.label(i)
    return box


def _within_reach(box: _Boxes, start: np.ndarray, reach: float | None) -> None:
    """Confine every merchant's boxes to `reach` (a factor in odds) around its starting threshold."""
    if reach is None:
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = start / (1.0 - start)
        lo, hi = odds / reach, odds * reach
        t_lo, t_hi = lo / (1.0 + lo), np.where(np.isfinite(hi), hi / (1.0 + hi), 1.0)
    why = REACH_WHY.format(reach=reach)
    for level in ("full", "target"):
        raise_lo = t_lo > box.lo[level]
        lower_hi = t_hi < box.hi[level]
        box.lo[level] = np.maximum(box.lo[level], t_lo)
        box.hi[level] = np.minimum(box.hi[level], t_hi)
        for m in np.flatnonzero(raise_lo):
            box.lo_why[level][m] = why
        for m in np.flatnonzero(lower_hi):
            box.hi_why[level][m] = why
        empty = box.lo[level] > box.hi[level]   # a one-merchant slice's box out of reach: stay at the reach's edge
        box.lo[level] = np.where(empty, np.minimum(box.lo[level], t_hi), box.lo[level])
        box.hi[level] = np.where(empty, np.maximum(box.lo[level], box.hi[level]), box.hi[level])


def _clash(a: float, b: float, box: _Boxes, m: int, own: str) -> str:
    if a > b:
        return f"no threshold gives it a block rate within its allowance (tied scores); binding: {own}"
    other = box.hi_why["full"][m] if a > box.hi["full"][m] else box.lo_why["full"][m]
    return f"its merchant's threshold is held by {other}"


def _place(r: Repaired, box: _Boxes) -> None:
    """Move every boxed merchant's threshold into its target box (nearest edge)."""
    e = r.effective()
    new = np.clip(e, box.lo["target"], box.hi["target"])
    for m in np.flatnonzero(new != e):
        r.own[m] = new[m]
        r.why[m] = box.lo_why["target"][m] if new[m] > e[m] else box.hi_why["target"][m]


def _solve_up(r: np.ndarray, e: np.ndarray, cap: np.ndarray, k: float,
              wr: np.ndarray | None = None) -> tuple[float, bool]:
    """Least floor u (thresholds max(e, min(u, cap))) blocking at most k rows (weight k,
    with row weights wr); (u, reached)."""
    cand = np.unique(r[r >= e])

    def u_at(j: int) -> float:
        return _mid(float(cand[j]), float(cand[j + 1])) if j + 1 < len(cand) else float(np.nextafter(cand[j], np.inf))

    def count(j: int) -> float:
        return _blocked(r, np.maximum(e, np.minimum(u_at(j), cap)), wr)

    lo, hi = 0, len(cand) - 1
    if count(hi) > k:
        return u_at(hi), False
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if count(mid) <= k else (mid + 1, hi)
    return u_at(lo), True


def _solve_down(r: np.ndarray, e: np.ndarray, floor: np.ndarray, k: float,
                wr: np.ndarray | None = None) -> tuple[float, bool]:
    """Greatest cap u (thresholds min(e, max(u, floor))) blocking at least k rows (weight k,
    with row weights wr); (u, reached)."""
    cand = np.unique(r[r < e])

    def u_at(j: int) -> float:
        return _mid(float(cand[j - 1]), float(cand[j])) if j > 0 else float(cand[0])

    def count(j: int) -> float:
        return _blocked(r, np.minimum(e, np.maximum(u_at(j), floor)), wr)

    lo, hi = 0, len(cand) - 1
    if count(lo) < k:
        return u_at(lo), False
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(mid) >= k else (lo, mid - 1)
    return u_at(lo), True


class _Counts:
    """Blocked rows per slice of every clause, kept up to date as thresholds change, and the
    change a move of some merchants' thresholds would make (computed on their rows only)."""

    def __init__(self, limits: Sequence[SliceLimits], score: np.ndarray, mcodes: np.ndarray, n_merchants: int,
                 e: np.ndarray) -> None:
        self.limits, self.score, self.mcodes = limits, score, mcodes
        self.by_merchant = group_rows(mcodes, n_merchants)
        blocked = score >= e[mcodes]
        self.blocked = [np.bincount(lim.codes[lim.codes >= 0], weights=_hits(lim, blocked)[lim.codes >= 0],
                                    minlength=len(lim.labels)) for lim in limits]
        self.totals = [lim.total for lim in limits]

    def rows_of(self, merchants: np.ndarray) -> np.ndarray:
        g = self.by_merchant
        parts = [g.perm[g.start[m]:g.start[m] + g.size[m]] for m in merchants]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def delta(self, merchants: np.ndarray, old: np.ndarray, new: np.ndarray) -> list[np.ndarray]:
        """Per clause, the change in blocked rows per slice if `merchants` moved from old to new thresholds."""
        rows = self.rows_of(merchants)
        where = np.searchsorted(merchants, self.mcodes[rows])  # merchants is sorted (np.unique)
        s = self.score[rows]
        d = (s >= new[where]).astype(float) - (s >= old[where])
        out = []
        for lim in self.limits:
            c = lim.codes[rows]
            dw = d if lim.weight is None else d * lim.weight[rows]
            out.append(np.bincount(c[c >= 0], weights=dw[c >= 0], minlength=len(lim.labels)))
        return out

    def rates(self, li: int, delta: list[np.ndarray] | None = None) -> np.ndarray:
        lim = self.limits[li]
        b = self.blocked[li] + (delta[li] if delta is not None else 0)
        if lim.weight is not None:
            total = self.totals[li]
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(total > 0, b / np.where(total > 0, total, 1.0), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(lim.rows > 0, b / np.maximum(lim.rows, 1), np.nan)

    def commit(self, delta: list[np.ndarray]) -> None:
        self.blocked = [b + d for b, d in zip(self.blocked, delta)]


def _hits(lim: SliceLimits, blocked: np.ndarray) -> np.ndarray:
    """Each row's blocked count for this clause's slices: 0/1, or its weight when blocked."""
    return blocked if lim.weight is None else lim.weight * blocked


def _offended(counts: _Counts, delta: list[np.ndarray], share: float, up: bool,
              skip: tuple[int, int]) -> list[tuple[int, int]]:
    """Other judged slices a move pushes beyond their target, in the direction it pushes."""
    out = []
    for li, lim in enumerate(counts.limits):
        lo, hi = lim.band(share)
        after = counts.rates(li, delta)
        bad = (after < lo - EPS) & (delta[li] < 0) if up else (after > hi + EPS) & (delta[li] > 0)
        out += [(li, int(i)) for i in np.flatnonzero(bad & lim.judged) if (li, int(i)) != skip]
    return out


@dataclass(frozen=True)
class _Move:
    """A repair of one slice: merchants (sorted), their thresholds before and after, what binds it."""

    merchants: np.ndarray
    old: np.ndarray
    new: np.ndarray
    reached: bool
    held_by: tuple[str, ...] = ()


def _solve(sc: np.ndarray, e: np.ndarray, mc: np.ndarray, merchants: np.ndarray, e_m: np.ndarray, lim: SliceLimits,
           i: int, band: float, edge: np.ndarray, held: set[int], up: bool,
           wr: np.ndarray | None = None) -> tuple[np.ndarray, bool, float]:
    """One slice-level threshold for the slice's rows (weights wr, None: counts), held
    merchants kept where they are; (new threshold per merchant, target reached, u)."""
    lo, hi = lim.band(band)
    n = len(sc)
    keep = np.isin(mc, list(held)) if held else np.zeros(n, dtype=bool)
    row_edge = np.where(keep, e, edge[mc])
    k_lo, k_hi = _budgets(wr, n, float(lo[i]), float(hi[i]))
    if up:
        u, ok = _solve_up(sc, e, row_edge, k_hi, wr)
        new = np.maximum(e_m, np.minimum(u, edge[merchants]))
    else:
        u, ok = _solve_down(sc, e, row_edge, k_lo, wr)
        new = np.minimum(e_m, np.maximum(u, edge[merchants]))
    if held:
        new = np.where(np.isin(merchants, list(held)), e_m, new)
    return new, ok, u


def _plan(r: Repaired, counts: _Counts, rows: np.ndarray, li: int, i: int, box: _Boxes, share: float) -> _Move:
    """The least move bringing slice i of clause li to its target, preferring one that pushes
    no other slice beyond its target (merchants that would are held), then its allowance;
    failing all, as close as the boxes allow (what binds: the boxes' clauses)."""
    lim = counts.limits[li]
    mc = counts.mcodes[rows]
    sc = counts.score[rows]
    e_all = r.effective()
    e = e_all[mc]
    merchants = np.unique(mc)
    e_m = e_all[merchants]
    wr = lim.row_weight(rows)
    rate = float(np.mean(sc >= e)) if wr is None else float(np.sum(wr * (sc >= e)) / max(float(np.sum(wr)), 1e-300))
    up = rate > float(lim.band(share)[1][i])
    levels = (("target", share), ("full", share), ("full", 1.0))
    pushed: set[str] = set()
    for holding in (True, False):
        for level, band in levels:
            edge = box.hi[level] if up else box.lo[level]
            held: set[int] = set()
            for _ in range(HOLD_ROUNDS):
                new, ok, u = _solve(sc, e, mc, merchants, e_m, lim, i, band, edge, held, up, wr)
                if not ok:
                    break
                if not holding:
                    return _Move(merchants, e_m, new, True)
                moved = new != e_m
                hit = _offended(counts, counts.delta(merchants[moved], e_m[moved], new[moved]), share, up, (li, i))
                if not hit:
                    return _Move(merchants, e_m, new, True)
                pushed |= {counts.limits[lj].label(j) for lj, j in hit}
                more = {int(m) for lj, j in hit for m in np.unique(mc[counts.limits[lj].codes[rows] == j])} - held
                if not more:
                    break
                held |= more
    edge = box.hi["full"] if up else box.lo["full"]
    new, _, u = _solve(sc, e, mc, merchants, e_m, lim, i, 1.0, edge, set(), up, wr)
    why = box.hi_why["full"] if up else box.lo_why["full"]
    capped = edge[merchants] < u if up else edge[merchants] > u
    held_by = tuple(sorted({why[m] for m in merchants[capped] if why[m]}))
    return _Move(merchants, e_m, new, False, held_by)


def _apply(r: Repaired, counts: _Counts, move: _Move, why: str) -> bool:
    """Commit a move (False when it changes nothing)."""
    changed = move.new != move.old
    if not changed.any():
        return False
    counts.commit(counts.delta(move.merchants[changed], move.old[changed], move.new[changed]))
    _assign(r, move.merchants, move.new, changed, why)
    return True


def _assign(r: Repaired, merchants: np.ndarray, new: np.ndarray, changed: np.ndarray, why: str) -> None:
    """New thresholds for `merchants`: the global one moves when they include every merchant on it
    and all get the same value; otherwise each changed merchant gets its own."""
    fallback = np.flatnonzero(np.isnan(r.own))
    on_global = np.isnan(r.own[merchants])
    moved = np.unique(new[on_global])
    if fallback.size and on_global.sum() == fallback.size and len(moved) == 1 and moved[0] != r.glob:
        r.glob, r.glob_why = float(moved[0]), why
        own_changed = changed & ~on_global
    else:
        own_changed = changed
    for m, v in zip(merchants[own_changed], new[own_changed]):
        r.own[m], r.why[m] = float(v), why


def _worst(counts: _Counts, slices: Sequence[_Slices], share: float,
           skip: set[tuple[str, str]]) -> tuple[int, int] | None:
    """The multi-merchant judged slice furthest beyond its target, as (clause index, slice index)."""
    best, where = EPS, None
    for li, (lim, sl) in enumerate(zip(counts.limits, slices)):
        rate = counts.rates(li)
        lo, hi = lim.band(share)
        over = np.where(lim.judged & (sl.single < 0), np.maximum(rate - hi, lo - rate), -np.inf)
        over = np.nan_to_num(over / np.maximum(lim.allowance, EPS), nan=-np.inf)
        for i in np.argsort(-over):
            if over[i] <= best:
                break
            if (lim.clause.name, lim.labels[i]) not in skip:
                best, where = float(over[i]), (li, int(i))
                break
    return where


def _listing(labels: Sequence[str], n: int = 3) -> str:
    labels = sorted(labels)
    return ", ".join(labels[:n]) + (f" and {len(labels) - n} more" if len(labels) > n else "")


def repair(score: np.ndarray, mcodes: np.ndarray, n_merchants: int, own: np.ndarray, glob: float,
           limits: Sequence[SliceLimits], share: float, max_rounds: int = MAX_ROUNDS,
           reach: float | None = REACH) -> Repaired:
    """Thresholds (own per merchant, NaN: global) repaired to honour `limits` (see the module doc)."""
    score = np.asarray(score, dtype=float)
    mcodes = np.asarray(mcodes, dtype=np.int64)
    r = Repaired(own=np.array(own, dtype=float), glob=float(glob), why=[""] * n_merchants)
    slices = [_slices(lim, mcodes, n_merchants) for lim in limits]
    box = _boxes(score, limits, slices, n_merchants, share, r.problems)
    _within_reach(box, r.effective(), reach)
    _place(r, box)
    counts = _Counts(limits, score, mcodes, n_merchants, r.effective())
    attempts: dict[tuple[str, str], int] = {}
    skip: set[tuple[str, str]] = set()
    for r.rounds in range(1, max_rounds + 1):
        found = _worst(counts, slices, share, skip)
        if found is None:
            break
        li, i = found
        lim = limits[li]
        key = (lim.clause.name, lim.labels[i])
        attempts[key] = attempts.get(key, 0) + 1
        move = _plan(r, counts, slices[li].rows(i), li, i, box, share)
        changed = _apply(r, counts, move, lim.label(i))
        if move.held_by:
            r.problems[key] = f"its merchants have no room: held by {_listing(move.held_by)}"
        if not changed or attempts[key] >= MAX_ATTEMPTS:
            skip.add(key)
            r.problems.setdefault(key, "repairing it again would push other slices of its merchants beyond their "
                                  "target (clauses pulling the same merchants apart)" if changed else
                                  "no threshold of its merchants moves it further")
    return r
