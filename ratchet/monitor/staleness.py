"""How quickly do our models get stale? A backtest that answers with a number.

For each cut-off date c the model is trained on [c - train_days, c) and scored on every
following week [c + 7(k-1) days, c + 7k days), k = 1..horizon, all with final (matured)
labels: age counts from the end of the training data. A real release trains on data
that ends `maturity_days` before its date (the labels must settle), so a model serving
for t weeks is t + maturity_days/7 weeks old in these terms. Per week: recall at a fixed false-positive rate (read at the week's
own score ranking, the contract engine's definition) and AUC. The loss at age k is the
drop of recall-at-FPR from week 1, relative (default) or absolute; its mean over
cut-offs is the expected loss of a model that age. The recommended cadence is the
first age whose expected loss exceeds the tolerance: retrain before the model gets
that old. If no age within the horizon exceeds it, the answer is ">= horizon".

The work is pandas and numpy on one feature table built once (Spark or
ratchet.monitor.features); only training goes to XGBoost.

    result = backtest(table, features, StalenessSettings(cutoffs=("2025-05-01", "2025-06-01")))
    result.cadence_text()   # 'retrain at least every 3 weeks (...)'
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class StalenessSettings:
    """Backtest knobs (the `staleness:` section of contracts/monitor.yaml)."""

    cutoffs: tuple[str, ...] = ()          # ISO dates; empty: `n_cutoffs` spread over the data
    n_cutoffs: int = 3
    horizon_weeks: int = 8
    train_days: int = 60
    fpr: float = 0.01
    tolerance: float = 0.10
    loss: str = "relative"                 # relative | absolute (drop of recall at fpr from week 1)
    min_positives: int = 20                # weeks with fewer positives are not scored
    num_boost_round: int = 100
    seed: int = 7


@dataclass(frozen=True)
class StalenessResult:
    """The decay table (one row per cut-off and age), mean loss per age and the cadence."""

    table: pd.DataFrame                    # cutoff, age_weeks, rows, positives, recall_at_fpr, auc, loss
    mean_loss: dict[int, float]            # age (weeks) -> mean loss over cut-offs
    cadence_weeks: int | None              # first age whose mean loss > tolerance; None: never in horizon
    settings: StalenessSettings
    cutoffs: list[str] = field(default_factory=list)

    def cadence_text(self) -> str:
        s = self.settings
        what = f"{'relative ' if s.loss == 'relative' else ''}loss of recall at FPR {s.fpr:g}"
        if self.cadence_weeks is None:
            return (f"recommended retraining cadence: >= {s.horizon_weeks} weeks (mean {what} stays within "
                    f"{s.tolerance:g} for the whole {s.horizon_weeks}-week horizon)")
        loss = self.mean_loss[self.cadence_weeks]
        return (f"recommended retraining cadence: {self.cadence_weeks} week(s) (mean {what} reaches "
                f"{loss:.3f} > tolerance {s.tolerance:g} at age {self.cadence_weeks} weeks)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "cadence_weeks": self.cadence_weeks,
            "cadence": self.cadence_text(),
            "cutoffs": self.cutoffs,
            "mean_loss": {str(k): _num(v) for k, v in self.mean_loss.items()},
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
    frame = pd.DataFrame(index=np.arange(len(label)))
    tab = slice_metrics(label, {"m": score}, {"m": np.inf}, [assign(frame, OVERALL)], reference_fpr=fpr)
    row = tab.iloc[0]
    return float(row["m_recall_at_fpr"]), float(row["m_auc"])


def expected_loss(table: pd.DataFrame) -> dict[int, float]:
    """Mean loss per age over the cut-offs that scored that age."""
    g = table.dropna(subset=["loss"]).groupby("age_weeks")["loss"].mean()
    return {int(k): float(v) for k, v in g.items()}


def recommend_cadence(mean_loss: dict[int, float], tolerance: float) -> int | None:
    """The first age (weeks) whose expected loss exceeds the tolerance; None if none does."""
    for age in sorted(mean_loss):
        if mean_loss[age] > tolerance:
            return age
    return None


def backtest(table: pd.DataFrame, features: list[str] | tuple[str, ...],
             settings: StalenessSettings = StalenessSettings(),
             params: dict[str, Any] | None = None) -> StalenessResult:
    """Train at each cut-off, score each following week, and derive the cadence.

    `table`: ts, label (final 0/1), optional label_available_at, and the features.
    """
    for col in (C.TS, LABEL, *features):
        if col not in table.columns:
            raise RatchetError(f"the feature table lacks column '{col}'")
    if settings.loss not in ("relative", "absolute"):
        raise RatchetError(f"staleness loss must be 'relative' or 'absolute', got {settings.loss!r}")
    ts = pd.to_datetime(table[C.TS])
    tsv = ts.to_numpy(dtype="datetime64[us]")
    cutoffs = [_day(c) for c in settings.cutoffs] if settings.cutoffs else default_cutoffs(ts, settings)
    y = table[LABEL].to_numpy().astype(np.int8)
    spec = TrainingSpec(name="staleness", label=LABEL, features=tuple(features),
                        xgboost=XGBoostSpec(params={**DEFAULT_PARAMS, **(params or {}), "seed": settings.seed},
                                            num_boost_round=settings.num_boost_round))
    rows: list[dict[str, Any]] = []
    for c in cutoffs:
        c64 = np.datetime64(c, "us")
        train = (tsv >= np.datetime64(c - timedelta(days=settings.train_days), "us")) & (tsv < c64)
        if train.sum() == 0 or y[train].sum() == 0:
            raise RatchetError(f"cut-off {c.date()}: no labelled fraud in the {settings.train_days} days before it")
        model = train_model(table.loc[train].reset_index(drop=True), spec).booster
        after = np.flatnonzero((tsv >= c64) & (tsv < np.datetime64(c + settings.horizon_weeks * _WEEK, "us")))
        score = predict(model, table.iloc[after])  # once for the horizon, sliced by week below
        age = ((tsv[after] - c64) // np.timedelta64(7, "D")).astype(np.int64) + 1
        for k in range(1, settings.horizon_weeks + 1):
            w = age == k
            yw = y[after][w]
            n, pos = int(w.sum()), int(yw.sum())
            rec = auc = float("nan")
            if pos >= settings.min_positives and n > pos:
                rec, auc = week_metrics(yw, score[w], settings.fpr)
            rows.append({"cutoff": c.date().isoformat(), "age_weeks": k, "rows": n, "positives": pos,
                         "recall_at_fpr": rec, "auc": auc})
    out = pd.DataFrame(rows)
    first = out[out.age_weeks == 1].set_index("cutoff")["recall_at_fpr"]
    base = out["cutoff"].map(first).to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = base - out["recall_at_fpr"].to_numpy(dtype=float)
        out["loss"] = drop / base if settings.loss == "relative" else drop
    mean = expected_loss(out)
    return StalenessResult(out, mean, recommend_cadence(mean, settings.tolerance), settings,
                           [c.date().isoformat() for c in cutoffs])


def plot_staleness(result: StalenessResult, out_png: str | Path) -> Path:
    """Decay per cut-off (recall at FPR and its loss by age) with the tolerance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.settings
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for cutoff, g in result.table.groupby("cutoff"):
        ax1.plot(g.age_weeks, g.recall_at_fpr, marker="o", lw=1.2, label=f"cut-off {cutoff}")
        ax2.plot(g.age_weeks, g.loss, marker="o", lw=1, alpha=0.6, label=f"cut-off {cutoff}")
    ages = sorted(result.mean_loss)
    ax2.plot(ages, [result.mean_loss[a] for a in ages], color="black", lw=2.5, label="mean (expected loss)")
    ax2.axhline(s.tolerance, color="red", ls="--", lw=1.5, label=f"tolerance {s.tolerance:g}")
    if result.cadence_weeks is not None:
        ax2.axvline(result.cadence_weeks, color="red", ls=":", lw=1.2)
    ax1.set(title=f"recall at FPR {s.fpr:g} by model age", xlabel="model age (weeks)", ylabel="recall at FPR")
    ax2.set(title="loss vs week 1 — " + (f"retrain every {result.cadence_weeks} wk" if result.cadence_weeks
                                         else f"within tolerance for {s.horizon_weeks} wk"),
            xlabel="model age (weeks)", ylabel=f"{s.loss} loss")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
