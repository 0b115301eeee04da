"""Performance before labels arrive: confidence-based estimation of recall and FPR.

Chargebacks take weeks, so a shadow or canary is judged on estimates first. This is
NannyML's CBPE idea, built here: NannyML 0.13 would pull in about twenty packages and
pin xgboost back to 2.1 (ours is newer), and the method is twenty lines.

1. Calibrate: on a reference window with matured labels, fit score -> P(fraud)
   (isotonic regression, or Platt scaling on the logit of the score).
2. Estimate, on live decisions without labels, with p_i the calibrated score:
   E[TP] = sum of p_i over blocked rows, E[positives] = sum of p_i,
   E[FP] = sum of (1 - p_i) over blocked rows, E[negatives] = sum of (1 - p_i);
   recall ~ E[TP] / E[positives], FPR ~ E[FP] / E[negatives].
3. Uncertainty: a parametric bootstrap. Each replicate refits the calibration on a
   resample of the reference (calibration error) and draws every label from
   Bernoulli(p_i) (the window's own sampling noise); the interval is the replicates'
   central `confidence` share. It is the interval of the *realised* value, which is
   what it is later compared with. Fraud comes in bursts (a card-testing run is twenty
   fraudulent rows, not twenty independent coins), so labels vary more than independent
   draws say: the spread is widened by sqrt(phi), phi being the overdispersion of
   daily label counts in the reference (observed squared error / Bernoulli variance,
   cross-fitted on alternate days so calibration error counts too; at least 1). Without it the FPR interval covered about 80% of weeks, with it > 90%.

It assumes P(fraud | score) is the same live as in the reference: covariate drift is
fine, a new fraud pattern the model scores low is not (no label-free method sees that).
That is why a past promotion is re-checked when its labels land (recheck_promotion).

    cal = fit_calibration(ref_scores, ref_labels, "isotonic", replicates=300, seed=1)
    est = estimate(cal, scores, blocked, confidence=0.95)
    est.recall, est.recall_interval
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ratchet.errors import RatchetError

METHODS = ("isotonic", "platt")


@dataclass(frozen=True)
class Calibration:
    """score -> P(fraud): the fit on the whole reference and one per bootstrap replicate."""

    method: str
    knots: list[tuple[np.ndarray, np.ndarray]]   # isotonic: (x, y) per fit; index 0 = full fit
    platt: np.ndarray | None                     # platt: (a, b) per fit, rows; index 0 = full fit
    reference_rows: int
    reference_positives: int
    dispersion: float = 1.0                      # overdispersion of labels (>= 1), widens intervals

    @property
    def replicates(self) -> int:
        return (len(self.knots) if self.method == "isotonic" else len(self.platt)) - 1  # type: ignore[arg-type]

    def prob(self, score: np.ndarray, fit: int = 0) -> np.ndarray:
        s = np.asarray(score, dtype=float)
        if self.method == "isotonic":
            x, y = self.knots[fit]
            return np.clip(np.interp(s, x, y), 0.0, 1.0)
        a, b = self.platt[fit]  # type: ignore[index]
        return 1.0 / (1.0 + np.exp(-(a * _logit(s) + b)))


def _logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 1e-6, 1 - 1e-6)
    return np.log(s / (1 - s))


def _fit_one(method: str, s: np.ndarray, y: np.ndarray) -> Any:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
        return (np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float))
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=200).fit(_logit(s).reshape(-1, 1), y)
    return np.array([lr.coef_[0, 0], lr.intercept_[0]])


def dispersion(p: np.ndarray, y: np.ndarray, score: np.ndarray, groups: np.ndarray, top_share: float = 0.02) -> float:
    """Overdispersion of label counts per group (e.g. day): mean of (observed - expected)^2 /
    Bernoulli variance, over all rows and over the top-scored `top_share` (where blocks are);
    at least 1."""
    codes, uniq = pd.factorize(groups)
    if len(uniq) < 5:
        return 1.0
    top = score >= np.quantile(score, 1 - top_share)
    phis = []
    for mask in (np.ones(len(y), bool), top):
        obs = np.bincount(codes[mask], weights=y[mask], minlength=len(uniq))
        exp = np.bincount(codes[mask], weights=p[mask], minlength=len(uniq))
        var = np.bincount(codes[mask], weights=p[mask] * (1 - p[mask]), minlength=len(uniq))
        ok = var > 0
        if ok.sum() >= 5:
            phis.append(float(np.mean((obs[ok] - exp[ok]) ** 2 / var[ok])))
    return max([1.0, *phis])  # the worse of the two regions: an interval too wide beats one too narrow


def fit_calibration(score: np.ndarray, label: np.ndarray, method: str = "isotonic", *,
                    replicates: int = 200, seed: int = 0, groups: np.ndarray | None = None) -> Calibration:
    """Fit score -> P(fraud) on matured labels, plus `replicates` bootstrap refits.

    `groups` (e.g. the day of each reference row) lets the label overdispersion be measured."""
    if method not in METHODS:
        raise RatchetError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    s, y = np.asarray(score, dtype=float), np.asarray(label).astype(int)
    if len(s) != len(y) or len(s) == 0:
        raise RatchetError("calibration needs scores and labels of the same, non-zero length")
    pos = int(y.sum())
    if pos == 0 or pos == len(y):
        raise RatchetError(f"the calibration reference has {pos} positives in {len(y)} rows: it needs both labels")
    rng = np.random.default_rng(seed)
    fits = [_fit_one(method, s, y)]
    for _ in range(replicates):
        idx = rng.integers(0, len(s), len(s))
        yb = y[idx]
        fits.append(_fit_one(method, s[idx], yb) if 0 < yb.sum() < len(yb) else fits[0])
    if method == "isotonic":
        cal = Calibration(method, fits, None, len(s), pos)
    else:
        cal = Calibration(method, [], np.vstack(fits), len(s), pos)
    if groups is None:
        return cal
    # cross-fitted: each half of the groups is predicted by a calibration fitted on the other
    # half, so the measured spread includes calibration error, not an in-sample fit
    codes, uniq = pd.factorize(np.asarray(groups))
    fold = codes % 2
    p_out = np.empty(len(s))
    for f in (0, 1):
        a, b = fold != f, fold == f
        if not (0 < y[a].sum() < a.sum()) or not b.any():
            p_out = cal.prob(s)
            break
        one = _fit_one(method, s[a], y[a])
        if method == "isotonic":
            p_out[b] = np.clip(np.interp(s[b], *one), 0.0, 1.0)
        else:
            p_out[b] = 1.0 / (1.0 + np.exp(-(one[0] * _logit(s[b]) + one[1])))
    phi = dispersion(p_out, y, s, codes)
    return Calibration(cal.method, cal.knots, cal.platt, len(s), pos, phi)


@dataclass(frozen=True)
class Estimate:
    """Estimated recall and FPR of one window, with intervals at `confidence`."""

    rows: int
    blocked: int
    recall: float
    recall_interval: tuple[float, float]
    fpr: float
    fpr_interval: tuple[float, float]
    expected_positives: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _round(v) for k, v in asdict(self).items()}


def _round(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_round(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(v) else round(float(v), 6)
    return v


def estimate(cal: Calibration, score: np.ndarray, blocked: np.ndarray, *, confidence: float = 0.95,
             seed: int = 0) -> Estimate:
    """Label-free recall and FPR of decisions (score, blocked) with bootstrap intervals."""
    s = np.asarray(score, dtype=float)
    b = np.asarray(blocked, dtype=bool)
    p = cal.prob(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = float(p[b].sum() / p.sum())
        fpr = float((1 - p[b]).sum() / (1 - p).sum())
    rng = np.random.default_rng(seed)
    R = max(cal.replicates, 1)
    recs, fprs = np.empty(R), np.empty(R)
    for r in range(R):
        pr = cal.prob(s, r + 1 if cal.replicates else 0)
        y = rng.random(len(pr)) < pr
        tp, pos = np.count_nonzero(y & b), np.count_nonzero(y)
        fp, neg = np.count_nonzero(~y & b), np.count_nonzero(~y)
        recs[r] = tp / pos if pos else np.nan
        fprs[r] = fp / neg if neg else np.nan
    lo, hi = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    widen = math.sqrt(cal.dispersion)

    def interval(x: np.ndarray) -> tuple[float, float]:
        x = x[np.isfinite(x)]
        if not len(x):
            return (math.nan, math.nan)
        c = float(np.mean(x))
        a, b = (c + widen * (q - c) for q in np.quantile(x, [lo, hi]))
        return (max(0.0, float(a)), min(1.0, float(b)))

    return Estimate(rows=len(s), blocked=int(b.sum()), recall=recall, recall_interval=interval(recs), fpr=fpr,
                    fpr_interval=interval(fprs), expected_positives=float(p.sum()), confidence=confidence)


def realised(label: np.ndarray, blocked: np.ndarray) -> tuple[float, float]:
    """(recall, FPR) once labels have matured (NaN when undefined)."""
    y, b = np.asarray(label).astype(bool), np.asarray(blocked, dtype=bool)
    pos, neg = y.sum(), (~y).sum()
    return (float((y & b).sum() / pos) if pos else math.nan, float((~y & b).sum() / neg) if neg else math.nan)


def weekly_estimates(cal: Calibration, frame: pd.DataFrame, *, confidence: float = 0.95, freq: str = "7D",
                     seed: int = 0) -> pd.DataFrame:
    """One row per window of `frame` (ts, score, blocked, optional label): estimate, interval and,
    where every row of the window has a label, the realised value and whether it fell inside."""
    ts = pd.to_datetime(frame["ts"], utc=True)
    start = ts.min().floor("D")
    key = ((ts - start) // pd.Timedelta(freq)).to_numpy()
    rows = []
    end = ts.max()
    for i, k in enumerate(np.unique(key)):
        w = frame[key == k]
        if start + (k + 1) * pd.Timedelta(freq) > end + pd.Timedelta(hours=1):
            continue  # the last, incomplete window: too few rows to say anything fair
        est = estimate(cal, w["score"].to_numpy(), w["blocked"].to_numpy(), confidence=confidence, seed=seed + i)
        row: dict[str, Any] = {"window_start": (start + k * pd.Timedelta(freq)).isoformat(), **est.to_dict()}
        row["recall_low"], row["recall_high"] = row.pop("recall_interval")
        row["fpr_low"], row["fpr_high"] = row.pop("fpr_interval")
        if "label" in w.columns and w["label"].notna().all():
            rr, rf = realised(w["label"].to_numpy(), w["blocked"].to_numpy())
            row.update(realised_recall=rr, realised_fpr=rf,
                       recall_covered=bool(row["recall_low"] <= rr <= row["recall_high"]),
                       fpr_covered=bool(row["fpr_low"] <= rf <= row["fpr_high"]))
        rows.append(row)
    return pd.DataFrame(rows)


def plot_estimates(table: pd.DataFrame, out_png: str, title: str = "") -> str:
    """Estimated recall and FPR per window with their intervals, realised values as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = pd.to_datetime(table["window_start"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, m in zip(axes, ("recall", "fpr")):
        ax.fill_between(x, table[f"{m}_low"], table[f"{m}_high"], alpha=0.25, label="estimate interval")
        ax.plot(x, table[m], lw=1.5, label="estimate (no labels)")
        if f"realised_{m}" in table.columns:
            ax.plot(x, table[f"realised_{m}"], "o", ms=4, color="black", label="realised (matured labels)")
        ax.set(title=f"{m} {title}".strip(), xlabel="window start")
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
