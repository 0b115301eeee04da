"""How quickly do our models get stale? A backtest that answers with a number and its interval.

For each cut-off date c the model is trained on [c - train_days, c) and scored on every
following week [c + 7(k-1) days, c + 7k days), k = 1..horizon, all with final (matured)
labels: age counts from the end of the training data. A real release trains on data
that ends `maturity_days` before its date (the labels must settle), so a model serving
for t weeks is t + maturity_days/7 weeks old in these terms. Weeks may be pooled into
age bins of `age_bin_weeks` (a month: 4), which trades resolution for precision.

Per cut-off and age: the metric (recall at a fixed false-positive rate, read at the
window's own score ranking as the contract engine defines it; or AUC, or average
precision) and its loss from the first age bin, relative (default) or absolute. The
mean loss over cut-offs is the expected loss of a model that age.

Uncertainty, all from one seeded bootstrap (nothing depends on machine speed):
- rows: each replicate gives every row a Poisson(1) weight (the Poisson bootstrap) and
  recomputes the weighted metric of every cut-off x age window, so the interval on a
  recall at FPR carries both the positives' noise and the threshold's (read from the
  negatives); the loss of a replicate is computed from that replicate's first bin;
- cut-offs: the mean curve's replicate draws the cut-offs with replacement, each drawn
  cut-off with a row replicate of its own (a two-stage bootstrap), so its interval holds
  the cut-offs' spread as well as each window's noise. Percentile intervals at `confidence`.

The cadence says only what the bands support. Per age the mean loss's interval is
judged against the tolerance, as the contract engine judges a clause: *beyond* (its low
end above the tolerance), *within* (its high end at or below), otherwise *straddles*.
- "retrain at least every N weeks" when the age N+1 is the first one credibly beyond and
  every age up to N is credibly within: N is then the cadence, not only a bound;
- "no credible decay within the horizon" when every age is within;
- "cannot tell" otherwise: the bands are wider than the distance to the tolerance, and
  the text says how precisely the metric is known and what buys precision. When a later
  age is credibly beyond but an earlier one straddles, the text still gives the bound it
  supports ("retrain at least every N weeks, but it may be beyond already at k weeks") and
  cadence_bound_weeks carries N: a team that retrains every N weeks would serve a model
  that may be stale in its k-th week, so N is not stated as the cadence.
  (bench/staleness.py: with the bound alone stated as the cadence, 12% of fast-drift worlds
  got a cadence one week too long.)
Multiplicity: each age is judged on its own interval (one-sided 2.5% at the default
0.95). A loss that grows with age puts at most the age just before its crossing near
the tolerance, so a claim of an age that is in truth within tolerance stays near 2.5%;
the worst case (every age sitting exactly at the tolerance) is (ages - 1) x 2.5%.
bench/staleness.py measures the rates on synthetic worlds with known answers.

The work is pandas and numpy on one feature table built once (Spark or
ratchet.monitor.features); only training goes to XGBoost.

    result = backtest(table, features, StalenessSettings(cutoffs=("2025-05-01", "2025-06-01")))
    result.cadence_text()   # 'recommended retraining cadence: retrain at least every 3 weeks (...)'
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.errors import RatchetError
from ratchet.evaluate.metrics import slice_metrics
from ratchet.evaluate.slices import OVERALL, assign
from ratchet.train.spec import DEFAULT_PARAMS, TrainingSpec, XGBoostSpec
from ratchet.train.trainer import predict, train_model

LABEL = "label"
_WEEK = timedelta(days=7)
METRICS = ("recall_at_fpr", "auc", "average_precision")
RETRAIN, NO_DECAY, CANNOT_TELL = "retrain", "no_decay", "cannot_tell"
BEYOND, WITHIN, STRADDLES = "beyond", "within", "straddles"


@dataclass(frozen=True)
class StalenessSettings:
    """Backtest knobs (the `staleness:` section of contracts/monitor.yaml)."""

    cutoffs: tuple[str, ...] = ()          # ISO dates; empty: `n_cutoffs` spread over the data
    n_cutoffs: int = 3
    horizon_weeks: int = 8
    train_days: int = 60
    fpr: float = 0.01
    tolerance: float = 0.10
    loss: str = "relative"                 # relative | absolute (drop of the metric from the first age bin)
    min_positives: int = 20                # windows with fewer positives are not scored
    num_boost_round: int = 100
    seed: int = 7                          # XGBoost's and the bootstrap's seed
    metric: str = "recall_at_fpr"          # recall_at_fpr | auc | average_precision
    age_bin_weeks: int = 1                 # weeks pooled per age bin (4: a month)
    confidence: float = 0.95               # two-sided level of every interval
    replicates: int = 400                  # bootstrap replicates


@dataclass(frozen=True)
class Cadence:
    """What the bands support: retrain (with weeks), no_decay or cannot_tell, and why."""

    kind: str                              # retrain | no_decay | cannot_tell
    weeks: int | None                      # retrain: at least every `weeks`; else None
    age: int | None                        # the age (weeks) that decided: first beyond, or the widest band
    text: str
    bound_weeks: int | None = None         # a credible upper bound on the cadence (retrain; cannot_tell with a
                                           # credible loss later on), else None


@dataclass(frozen=True)
class StalenessResult:
    """The decay table (one row per cut-off and age), mean loss per age with its interval, and the cadence."""

    table: pd.DataFrame                    # cutoff, age_weeks, rows, positives, recall_at_fpr, auc, ..., loss, loss_low, loss_high
    mean_loss: dict[int, float]            # age (weeks) -> mean loss over cut-offs
    cadence_weeks: int | None              # retrain at least every this many weeks; None: no credible cadence
    settings: StalenessSettings
    cutoffs: list[str] = field(default_factory=list)
    mean_loss_interval: dict[int, tuple[float, float]] = field(default_factory=dict)
    judgement: dict[int, str] = field(default_factory=dict)   # age -> beyond | within | straddles
    recommendation: str = CANNOT_TELL      # retrain | no_decay | cannot_tell
    known_to: float = float("nan")         # median half-width of the per-window metric intervals
    text: str = ""
    cadence_bound_weeks: int | None = None  # retrain at least this often (also when the exact cadence is unknown)

    def cadence_text(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "cadence_weeks": self.cadence_weeks,
            "cadence": self.cadence_text(),
            "recommendation": self.recommendation,
            "cadence_bound_weeks": self.cadence_bound_weeks,
            "cutoffs": self.cutoffs,
            "mean_loss": {str(k): _num(v) for k, v in self.mean_loss.items()},
            "mean_loss_interval": {str(k): [_num(a), _num(b)] for k, (a, b) in self.mean_loss_interval.items()},
            "judgement": {str(k): v for k, v in self.judgement.items()},
            "known_to": _num(self.known_to),
            "settings": asdict(self.settings),
            "table": [{k: _num(v) for k, v in r.items()} for r in self.table.to_dict(orient="records")],
        }


def _num(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else round(float(v), 6)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _day(s: str) -> datetime:
    try:
        return datetime.fromisoformat(str(s))
    except ValueError:
        raise RatchetError(f"cut-off {s!r} is not an ISO date such as 2025-05-01") from None


def default_cutoffs(ts: pd.Series, settings: StalenessSettings) -> list[datetime]:
    """`n_cutoffs` dates, evenly spaced, each with train_days before it and horizon weeks after."""
    lo = pd.Timestamp(ts.min()).to_pydatetime() + timedelta(days=settings.train_days)
    hi = pd.Timestamp(ts.max()).to_pydatetime() - settings.horizon_weeks * _WEEK
    if hi < lo:
        raise RatchetError(f"the data spans {ts.min()} .. {ts.max()}: too short for train_days="
                           f"{settings.train_days} plus horizon_weeks={settings.horizon_weeks}; "
                           "shorten them or give more data")
    n = max(1, settings.n_cutoffs)
    if n == 1:
        return [datetime(lo.year, lo.month, lo.day)]
    step = (hi - lo) / (n - 1)
    return [datetime((lo + i * step).year, (lo + i * step).month, (lo + i * step).day) for i in range(n)]


def week_metrics(label: np.ndarray, score: np.ndarray, fpr: float) -> tuple[float, float]:
    """(recall at `fpr`, AUC) of one window, from the contract engine (NaN when undefined)."""
    m = window_metrics(label, score, fpr)
    return m["recall_at_fpr"], m["auc"]


def window_metrics(label: np.ndarray, score: np.ndarray, fpr: float) -> dict[str, float]:
    """Recall at `fpr`, AUC and average precision of one window, from the contract engine."""
    frame = pd.DataFrame(index=np.arange(len(label)))
    tab = slice_metrics(label, {"m": score}, {"m": np.inf}, [assign(frame, OVERALL)], reference_fpr=fpr)
    row = tab.iloc[0]
    return {k: float(row[f"m_{k}"]) for k in METRICS}


# ---- the row bootstrap: weighted metrics, one row per replicate --------------------------------
def weighted_metric(metric: str, label: np.ndarray, score: np.ndarray, weights: np.ndarray,
                    fpr: float) -> np.ndarray:
    """The metric of one window under each row of `weights` (replicates x rows, e.g. Poisson
    counts): the contract engine's definitions on the resample the weights stand for.

    recall_at_fpr: positives scored strictly above the (m+1)-th highest negative, m the most
    negatives with m / negatives <= fpr (metrics.slice_metrics); auc: Mann-Whitney, ties
    half; average_precision: precision at each positive's tie block end."""
    y = np.asarray(label).astype(bool)
    s = np.asarray(score, dtype=float)
    w = np.asarray(weights, dtype=float)
    if metric == "recall_at_fpr":
        neg_order = np.argsort(-s[~y], kind="stable")
        wn = w[:, ~y][:, neg_order]
        return _recall_at_fpr(s[~y][neg_order], wn, wn.sum(axis=1), s[y], w[:, y], fpr)
    order = np.argsort(s, kind="stable")                     # ascending; ties form contiguous blocks
    so, yo, wo = s[order], y[order], w[:, order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(so) != 0) + 1]) if len(so) else np.zeros(0, int)
    if not len(so):
        return np.full(len(w), np.nan)
    pos_b = np.add.reduceat(wo * yo, starts, axis=1)        # replicates x tie blocks
    neg_b = np.add.reduceat(wo * ~yo, starts, axis=1)
    tot_p, tot_n = pos_b.sum(axis=1), neg_b.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "auc":
            below = np.cumsum(neg_b, axis=1) - neg_b
            u = (pos_b * (below + 0.5 * neg_b)).sum(axis=1)
            out = u / (tot_p * tot_n)
        elif metric == "average_precision":
            cp = np.cumsum(pos_b[:, ::-1], axis=1)[:, ::-1]      # positives at or above each block
            cn = np.cumsum(neg_b[:, ::-1], axis=1)[:, ::-1]
            prec = np.where(cp + cn > 0, cp / np.maximum(cp + cn, 1e-300), 0.0)
            out = (pos_b * prec).sum(axis=1) / tot_p
        else:
            raise RatchetError(f"staleness metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return np.where((tot_p > 0) & (tot_n > 0), out, np.nan)


def _recall_at_fpr(neg_desc: np.ndarray, wn: np.ndarray, tot_n: np.ndarray, pos: np.ndarray, wp: np.ndarray,
                   fpr: float) -> np.ndarray:
    """Weighted recall at `fpr`: negatives' scores descending with their weights (the first
    columns suffice when the rest's total is in tot_n), positives' scores and weights."""
    m = np.floor(fpr * tot_n + 1e-9)
    cum = np.cumsum(wn, axis=1)
    reached = cum >= (m + 1)[:, None]
    first = np.argmax(reached, axis=1)                   # the (m+1)-th negative of the resample
    cut = neg_desc[first] if len(neg_desc) else np.full(len(tot_n), -np.inf)
    cut = np.where(reached.any(axis=1), cut, -np.inf)
    tot_p = wp.sum(axis=1)
    tp = (wp * (pos[None, :] > cut[:, None])).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = tp / tot_p
    return np.where((tot_p > 0) & (tot_n > 0), out, np.nan)


def _bootstrap_recall(label: np.ndarray, score: np.ndarray, fpr: float, replicates: int,
                      seed: tuple[int, ...]) -> np.ndarray:
    """The Poisson bootstrap of recall at `fpr`, drawing weights only for the positives and the
    top negatives (the threshold lives there) and one Poisson total for the other negatives:
    the same distribution as weighting every row, at a fraction of the cost."""
    y = np.asarray(label).astype(bool)
    s = np.asarray(score, dtype=float)
    neg_desc = np.sort(s[~y])[::-1]
    n_neg = len(neg_desc)
    k = min(n_neg, int(math.ceil(2 * fpr * n_neg + 6 * math.sqrt(fpr * n_neg + 1) + 20)))
    while True:
        rng = np.random.default_rng([*seed, k])
        wp = rng.poisson(1.0, (replicates, int(y.sum())))
        wn = rng.poisson(1.0, (replicates, k))
        tot_n = wn.sum(axis=1) + rng.poisson(float(n_neg - k), replicates)
        m = np.floor(fpr * tot_n + 1e-9)
        if k == n_neg or (wn.sum(axis=1) >= m + 1).all():
            return _recall_at_fpr(neg_desc[:k], wn, tot_n, s[y], wp, fpr)
        k = min(n_neg, 2 * k)                           # the top was too short for some replicate


def bootstrap_metric(metric: str, label: np.ndarray, score: np.ndarray, fpr: float, replicates: int,
                     seed: tuple[int, ...], chunk: int = 100) -> np.ndarray:
    """`replicates` Poisson-bootstrap values of the metric of one window (seeded by `seed`)."""
    if metric == "recall_at_fpr":
        return _bootstrap_recall(label, score, fpr, replicates, seed)
    rng = np.random.default_rng(list(seed))
    out = []
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        out.append(weighted_metric(metric, label, score, rng.poisson(1.0, (r, len(label))), fpr))
    return np.concatenate(out) if out else np.empty(0)


def _loss(base: np.ndarray, value: np.ndarray, kind: str) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = base - value
        return drop / base if kind == "relative" else drop


def _interval(x: np.ndarray, confidence: float, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates along `axis` (NaN replicates left out)."""
    a = (1.0 - confidence) / 2.0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN slices give NaN, as they should
        lo, hi = np.nanquantile(x, [a, 1.0 - a], axis=axis)
    return lo, hi


def expected_loss(table: pd.DataFrame) -> dict[int, float]:
    """Mean loss per age over the cut-offs that scored that age."""
    g = table.dropna(subset=["loss"]).groupby("age_weeks")["loss"].mean()
    return {int(k): float(v) for k, v in g.items()}


def mean_loss_bootstrap(losses: np.ndarray, replicates: int, seed: tuple[int, ...]) -> np.ndarray:
    """Two-stage bootstrap of the mean loss per age: `losses` is cut-offs x row replicates x ages;
    each replicate draws the cut-offs with replacement, each draw with its own row replicate.
    Returns replicates x ages (NaN where no drawn cut-off scored that age)."""
    n_cut, n_rep, _ = losses.shape
    rng = np.random.default_rng(list(seed))
    j = rng.integers(0, n_cut, (replicates, n_cut))
    u = rng.integers(0, n_rep, (replicates, n_cut))
    drawn = losses[j, u, :]                       # replicates x cut-offs x ages
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(drawn, axis=1)


def judge(interval: tuple[float, float], tolerance: float) -> str:
    """beyond (credibly over the tolerance), within (credibly at or under it) or straddles."""
    lo, hi = interval
    if math.isfinite(lo) and lo > tolerance:
        return BEYOND
    if math.isfinite(hi) and hi <= tolerance:
        return WITHIN
    return STRADDLES


def _metric_words(s: StalenessSettings) -> str:
    name = {"recall_at_fpr": f"recall at FPR {s.fpr:g}", "auc": "AUC", "average_precision": "average precision"}
    return name.get(s.metric, s.metric)


def _window_words(s: StalenessSettings) -> str:
    return "weekly" if s.age_bin_weeks == 1 else f"{s.age_bin_weeks}-weekly"


def recommend(mean_loss: dict[int, float], intervals: dict[int, tuple[float, float]],
              settings: StalenessSettings, known_to: float) -> Cadence:
    """The three-way cadence from the mean loss's bands (pure; see the module docstring)."""
    s = settings
    what = f"mean {'relative ' if s.loss == 'relative' else ''}loss of {_metric_words(s)}"
    ages = sorted(intervals)
    judged = {a: judge(intervals[a], s.tolerance) for a in ages[1:]}   # the first bin is the baseline

    def band(a: int) -> str:
        lo, hi = intervals[a]
        return f"{mean_loss.get(a, float('nan')):.3f} [{lo:.3f}, {hi:.3f}]"

    prefix = "recommended retraining cadence: "
    conf = f"{s.confidence:.0%} interval"
    advice = ("use more cut-offs, longer test windows or a smoother metric (AUC or AP over a month)"
              if s.metric == "recall_at_fpr" else "use more cut-offs or longer test windows (pooled age bins)")
    known = f"{_window_words(s)} {_metric_words(s)} is known only to ±{known_to:.2f}"

    def widest(candidates: list[int]) -> int:
        return max(candidates, key=lambda a: (intervals[a][1] - intervals[a][0])
                   if all(map(math.isfinite, intervals[a])) else math.inf)

    beyond = [a for a in ages[1:] if judged[a] == BEYOND]
    if beyond:
        first = beyond[0]
        weeks = ages[ages.index(first) - 1]
        open_before = [a for a in ages[1:] if a < first and judged[a] != WITHIN]
        if not open_before:
            return Cadence(RETRAIN, weeks, first, prefix + (
                f"retrain at least every {weeks} week(s): the {what} at {first} weeks is {band(first)} ({conf}), "
                f"credibly beyond the tolerance {s.tolerance:g}"
                + (f", and credibly within it up to {weeks} weeks" if weeks > ages[0] else "")), bound_weeks=weeks)
        w = widest(open_before)
        return Cadence(CANNOT_TELL, None, w, prefix + (
            f"cannot tell: {known} ({conf}); the {what} is credibly beyond the tolerance {s.tolerance:g} at "
            f"{first} weeks ({band(first)}), so retrain at least every {weeks} week(s), but it may be beyond "
            f"already at {w} weeks ({band(w)}); " + advice), bound_weeks=weeks)
    horizon = ages[-1] if ages else s.horizon_weeks
    if judged and all(v == WITHIN for v in judged.values()):
        worst = max(judged, key=lambda a: intervals[a][1])
        return Cadence(NO_DECAY, None, worst, prefix + (
            f"no credible decay within the {horizon}-week horizon: the {what} stays credibly within the "
            f"tolerance {s.tolerance:g} at every age (highest band {band(worst)} at {worst} weeks, {conf})"))
    open_ages = [a for a in judged if judged[a] != WITHIN]
    w = widest(open_ages) if open_ages else None
    where = f"; the {what} at {w} weeks is {band(w)} against the tolerance {s.tolerance:g}" if w else ""
    return Cadence(CANNOT_TELL, None, w, prefix + f"cannot tell: {known}{where} ({conf}); " + advice)


def recommend_cadence(mean_loss: dict[int, float], tolerance: float) -> int | None:
    """The first age (weeks) whose point estimate of the expected loss exceeds the tolerance
    (no uncertainty: the cadence itself comes from `recommend`, which needs the bands)."""
    for age in sorted(mean_loss):
        if mean_loss[age] > tolerance:
            return age
    return None


def backtest(table: pd.DataFrame, features: list[str] | tuple[str, ...],
             settings: StalenessSettings = StalenessSettings(),
             params: dict[str, Any] | None = None) -> StalenessResult:
    """Train at each cut-off, score each following age bin, bootstrap the figures, derive the cadence.

    `table`: ts, label (final 0/1), optional label_available_at, and the features.
    """
    s = settings
    for col in (C.TS, LABEL, *features):
        if col not in table.columns:
            raise RatchetError(f"the feature table lacks column '{col}'")
    if s.loss not in ("relative", "absolute"):
        raise RatchetError(f"staleness loss must be 'relative' or 'absolute', got {s.loss!r}")
    if s.metric not in METRICS:
        raise RatchetError(f"staleness metric must be one of {', '.join(METRICS)}, got {s.metric!r}")
    if s.age_bin_weeks < 1 or s.horizon_weeks // s.age_bin_weeks < 2:
        raise RatchetError(f"age_bin_weeks={s.age_bin_weeks} leaves fewer than two age bins in the "
                           f"{s.horizon_weeks}-week horizon; lengthen horizon_weeks or pool fewer weeks")
    if not 0.5 <= s.confidence < 1 or s.replicates < 20:
        raise RatchetError(f"staleness confidence must be in [0.5, 1) and replicates >= 20, "
                           f"got {s.confidence} and {s.replicates}")
    ts = pd.to_datetime(table[C.TS])
    tsv = ts.to_numpy(dtype="datetime64[us]")
    cutoffs = [_day(c) for c in s.cutoffs] if s.cutoffs else default_cutoffs(ts, s)
    y = table[LABEL].to_numpy().astype(np.int8)
    spec = TrainingSpec(name="staleness", label=LABEL, features=tuple(features),
                        xgboost=XGBoostSpec(params={**DEFAULT_PARAMS, **(params or {}), "seed": s.seed},
                                            num_boost_round=s.num_boost_round))
    bins = s.horizon_weeks // s.age_bin_weeks
    ages = [(k + 1) * s.age_bin_weeks for k in range(bins)]
    rows: list[dict[str, Any]] = []
    reps = np.full((len(cutoffs), s.replicates, bins), np.nan)   # the chosen metric per row replicate
    for ci, c in enumerate(cutoffs):
        c64 = np.datetime64(c, "us")
        train = (tsv >= np.datetime64(c - timedelta(days=s.train_days), "us")) & (tsv < c64)
        if train.sum() == 0 or y[train].sum() == 0:
            raise RatchetError(f"cut-off {c.date()}: no labelled fraud in the {s.train_days} days before it")
        model = train_model(table.loc[train].reset_index(drop=True), spec).booster
        after = np.flatnonzero((tsv >= c64) & (tsv < np.datetime64(c + bins * s.age_bin_weeks * _WEEK, "us")))
        score = predict(model, table.iloc[after])  # once for the horizon, sliced by age bin below
        week = ((tsv[after] - c64) // np.timedelta64(7, "D")).astype(np.int64)
        age_bin = week // s.age_bin_weeks
        for k in range(bins):
            w = age_bin == k
            yw, sw = y[after][w], score[w]
            n, pos = int(w.sum()), int(yw.sum())
            m = dict.fromkeys(METRICS, float("nan"))
            lo = hi = float("nan")
            if pos >= s.min_positives and n > pos:
                m = window_metrics(yw, sw, s.fpr)
                reps[ci, :, k] = bootstrap_metric(s.metric, yw, sw, s.fpr, s.replicates, (s.seed, ci, k))
                lo, hi = (float(v) for v in _interval(reps[ci, :, k], s.confidence))
            rows.append({"cutoff": c.date().isoformat(), "age_weeks": ages[k], "rows": n, "positives": pos,
                         **m, f"{s.metric}_low": lo, f"{s.metric}_high": hi})
    out = pd.DataFrame(rows)
    first = out[out.age_weeks == ages[0]].set_index("cutoff")[s.metric]
    out["loss"] = _loss(out["cutoff"].map(first).to_numpy(dtype=float), out[s.metric].to_numpy(dtype=float), s.loss)
    losses = _loss(reps[:, :, :1], reps, s.loss)               # cut-offs x replicates x ages
    losses[:, :, 0] = np.where(np.isfinite(reps[:, :, 0]), 0.0, np.nan)
    losses[~np.isfinite(losses)] = np.nan
    cell_lo, cell_hi = _interval(losses, s.confidence, axis=1)   # cut-offs x ages
    out["loss_low"] = cell_lo.reshape(-1)
    out["loss_high"] = cell_hi.reshape(-1)
    scored = out["loss"].notna().to_numpy().reshape(len(cutoffs), bins)
    losses[~np.broadcast_to(scored[:, None, :], losses.shape)] = np.nan   # as the point table: unscored stays out
    mean = expected_loss(out)
    means = mean_loss_bootstrap(losses, s.replicates, (s.seed, 10_000 + len(cutoffs)))
    m_lo, m_hi = _interval(means, s.confidence, axis=0)
    intervals = {a: (float(m_lo[k]), float(m_hi[k])) for k, a in enumerate(ages) if a in mean}
    half = (out[f"{s.metric}_high"] - out[f"{s.metric}_low"]) / 2.0
    known_to = float(half.median()) if half.notna().any() else float("nan")
    cad = recommend(mean, intervals, s, known_to)
    judged = {a: judge(intervals[a], s.tolerance) for a in sorted(intervals)[1:]}
    return StalenessResult(out, mean, cad.weeks, s, [c.date().isoformat() for c in cutoffs],
                           mean_loss_interval=intervals, judgement=judged, recommendation=cad.kind,
                           known_to=known_to, text=cad.text, cadence_bound_weeks=cad.bound_weeks)


def plot_staleness(result: StalenessResult, out_png: str | Path) -> Path:
    """Per cut-off: the metric by age with its interval; its loss with intervals; the mean loss
    with its band, the tolerance, and the recommendation in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.settings
    t = result.table
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    cuts = list(t["cutoff"].unique())
    off = {c: (i - (len(cuts) - 1) / 2) * 0.06 * s.age_bin_weeks for i, c in enumerate(cuts)}
    for cutoff, g in t.groupby("cutoff", sort=False):
        x = g.age_weeks + off[cutoff]
        v, lo, hi = g[s.metric], g[f"{s.metric}_low"], g[f"{s.metric}_high"]
        ax1.errorbar(x, v, yerr=[(v - lo).clip(lower=0), (hi - v).clip(lower=0)], marker="o", ms=4, lw=1.1,
                     capsize=2, label=f"cut-off {cutoff}")
        ax2.errorbar(x, g.loss, yerr=[(g.loss - g.loss_low).clip(lower=0), (g.loss_high - g.loss).clip(lower=0)],
                     marker="o", ms=3, lw=0.8, alpha=0.45, capsize=2, label=f"cut-off {cutoff}")
    ages = sorted(result.mean_loss)
    lo = [result.mean_loss_interval.get(a, (np.nan, np.nan))[0] for a in ages]
    hi = [result.mean_loss_interval.get(a, (np.nan, np.nan))[1] for a in ages]
    ax2.fill_between(ages, lo, hi, color="black", alpha=0.15, label=f"mean: {s.confidence:.0%} band")
    ax2.plot(ages, [result.mean_loss[a] for a in ages], color="black", lw=2.5, label="mean (expected loss)")
    ax2.axhline(s.tolerance, color="red", ls="--", lw=1.5, label=f"tolerance {s.tolerance:g}")
    if result.cadence_weeks is not None:
        ax2.axvline(result.cadence_weeks, color="red", ls=":", lw=1.2)
    metric = _metric_words(s)
    ax1.set(title=f"{metric} by model age ({_window_words(s)}, {s.confidence:.0%} intervals)",
            xlabel="model age (weeks)", ylabel=metric)
    short = {RETRAIN: f"retrain at least every {result.cadence_weeks} wk", NO_DECAY: "no credible decay",
             CANNOT_TELL: f"cannot tell (±{result.known_to:.2f})"}[result.recommendation]
    ax2.set(title=f"loss vs first {'week' if s.age_bin_weeks == 1 else 'bin'} — {short}",
            xlabel="model age (weeks)", ylabel=f"{s.loss} loss")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
