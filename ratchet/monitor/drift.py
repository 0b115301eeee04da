"""Feature drift: recent traffic (or a recent data window) against the training set.

Evidently does the statistics (its DataDriftPreset picks a test per column: Wasserstein
or Jensen-Shannon distance on large samples, K-S or chi-square p-values on small ones;
the config may force one). Per column we keep the score, the test, its threshold and a
*severity* that makes tests comparable: score / threshold for distances, log(p) /
log(threshold) for p-values, so severity >= 1 means drifted and larger is worse. The
same is measured inside the largest values of each key slice column (country,
merchant_category, ...), where a shift can hide behind a stable total.

Multiplicity: many features (and slices) are tested at once, so for p-value tests (K-S,
chi-square: what Evidently picks on small samples) the severity is computed from Holm's
step-down adjusted p-values (Holm 1979, ratchet.evaluate.stats), within each family: the
overall columns of one comparison, and every feature x slice test together. A feature
then counts as drifted only when Holm rejects "no drift" at the test's threshold as the
family-wise error rate, so the chance that a window with no drift flags any feature stays
at the threshold (0.05) however many features are compared; `p_value` keeps the raw
p-value, `p_adjusted` the one judged. Distance tests (Wasserstein, Jensen-Shannon, PSI:
Evidently's choice on large samples) are effect sizes, not tests: each feature is judged
on its own documented threshold (Evidently's 0.1 unless the config sets one), and with
`sample_rows` rows a side their sampling noise is far below it (tests/test_drift.py: random
halves of one window flag nothing).

Deciding is separate and pure: judge_drift(result, rule) applies the config's rule
(share of drifted features, key features that must not drift, slices) and returns an
alert with a one-line event naming the worst features.

    result = measure_drift(train_df, recent_df, features, DriftSettings(), html_path="drift.html")
    alert = judge_drift(result, DriftRule(max_drifted_share=0.3, key_features=("amount",)))
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ratchet.errors import RatchetError

OVERALL = "all"


@dataclass(frozen=True)
class DriftRule:
    """When drift becomes an alert (the `drift.rule` section of contracts/monitor.yaml)."""

    max_drifted_share: float = 0.3          # alert when this share of the features drifted (or more)
    key_features: tuple[str, ...] = ()      # alert when any of these drifts overall
    slice_key_features: bool = True         # ... or inside any key slice
    min_severity: float = 1.0               # drifted means severity >= this (1 = the test's own threshold)


@dataclass(frozen=True)
class DriftSettings:
    """What to compare and how (the `drift` section of contracts/monitor.yaml)."""

    method: str | None = None               # Evidently stattest for every column (None: its default per type)
    threshold: float | None = None          # the test's threshold (None: Evidently's default)
    sample_rows: int = 50_000               # rows per side given to Evidently
    slice_columns: tuple[str, ...] = ("country", "merchant_category")
    slice_top: int = 3                      # largest values of each slice column
    min_slice_rows: int = 1_000             # rows per side a slice needs to be measured
    rule: DriftRule = field(default_factory=DriftRule)
    seed: int = 0


@dataclass(frozen=True)
class ColumnDrift:
    """One column in one slice: the test's score and whether it says drifted."""

    feature: str
    slice: str
    score: float
    test: str
    threshold: float
    drifted: bool
    severity: float
    p_adjusted: float | None = None         # p-value tests: Holm-adjusted p within its family (judged)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("score", "threshold", "severity", "p_adjusted"):
            if d[k] is not None:
                d[k] = None if not math.isfinite(d[k]) else round(float(d[k]), 6)
        return d


@dataclass(frozen=True)
class DriftResult:
    """Every column's drift overall (worst first) and inside the key slices."""

    columns: list[ColumnDrift]              # overall, worst first
    slices: list[ColumnDrift]               # per slice, worst first
    features: list[str]                     # the model features compared (share counts these)
    reference_rows: int
    current_rows: int
    html: str | None = None

    def feature_drift(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.feature in self.features]

    @property
    def drifted_share(self) -> float:
        f = self.feature_drift()
        return sum(c.drifted for c in f) / len(f) if f else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"reference_rows": self.reference_rows, "current_rows": self.current_rows,
                "drifted_share": round(self.drifted_share, 4), "features": self.features,
                "columns": [c.to_dict() for c in self.columns], "slices": [c.to_dict() for c in self.slices],
                "html": self.html}


@dataclass(frozen=True)
class DriftAlert:
    """The rule's decision: alert or not, why, and the worst drifted features."""

    alert: bool
    reasons: list[str]
    worst: list[str]
    event: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_p_value(method: str) -> bool:
    return "p_value" in method.lower() or "p-value" in method.lower()


def severity(score: float, threshold: float, method: str) -> float:
    """How far past its threshold a test is: >= 1 drifted, larger is worse."""
    if not (math.isfinite(score) and math.isfinite(threshold)) or threshold <= 0:
        return float("nan")
    if _is_p_value(method):
        if threshold >= 1:
            return float("nan")
        return math.log(max(score, 1e-300)) / math.log(threshold)
    return score / threshold


def _sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=seed)


def _run_evidently(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], settings: DriftSettings,
                   slice_label: str, html_path: str | Path | None = None) -> list[ColumnDrift]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    kwargs: dict[str, Any] = {"columns": columns}
    if settings.method:
        kwargs["method"] = settings.method
    if settings.threshold is not None:
        kwargs["threshold"] = settings.threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(**kwargs)]).run(current[columns], reference[columns])
    if html_path is not None:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    out = []
    for m in snapshot.dict().get("metrics", []):
        cfg = m.get("config", {})
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        value = m.get("value")
        score = float(value) if isinstance(value, (int, float)) else float("nan")
        method, thr = str(cfg.get("method", "")), float(cfg.get("threshold", float("nan")))
        sev = severity(score, thr, method)
        out.append(ColumnDrift(feature=str(cfg.get("column")), slice=slice_label, score=score, test=method,
                               threshold=thr, drifted=bool(math.isfinite(sev) and sev >= settings.rule.min_severity),
                               severity=sev))
    return out


def holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: entry i is rejected by ratchet.evaluate.stats.holm at
    family-wise level alpha exactly when adjusted[i] <= alpha (NaN stays NaN, outside the family)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if not len(idx):
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = stepped
    return out


def with_multiplicity(items: list[ColumnDrift], min_severity: float) -> list[ColumnDrift]:
    """The family's p-value tests judged on Holm-adjusted p-values (severity and drifted redone);
    distance tests unchanged."""
    pv = [i for i, c in enumerate(items) if _is_p_value(c.test) and math.isfinite(c.score)]
    if not pv:
        return items
    adj = holm_adjusted(np.array([items[i].score for i in pv]))
    out = list(items)
    for i, a in zip(pv, adj):
        c = items[i]
        sev = severity(float(a), c.threshold, c.test)
        out[i] = replace(c, p_adjusted=float(a), severity=sev,
                         drifted=bool(math.isfinite(sev) and sev >= min_severity))
    return out


def _worst_first(items: list[ColumnDrift]) -> list[ColumnDrift]:
    return sorted(items, key=lambda c: (-(c.severity if math.isfinite(c.severity) else -1.0), c.feature, c.slice))


def _comparable(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns both sides have with at least one value (Evidently rejects all-empty ones)."""
    return [c for c in columns if c in reference.columns and c in current.columns
            and reference[c].notna().any() and current[c].notna().any()]


def measure_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str] | tuple[str, ...],
                  settings: DriftSettings = DriftSettings(), html_path: str | Path | None = None) -> DriftResult:
    """Drift of `features` (and the slice columns' mix) overall, then inside the key slices."""
    if len(reference) == 0 or len(current) == 0:
        raise RatchetError(f"drift needs rows on both sides (reference {len(reference)}, current {len(current)}); "
                           "widen the window or check the decision log path")
    feats = _comparable(reference, current, list(features))
    missing = [f for f in features if f not in feats]
    if not feats:
        raise RatchetError(f"no feature is present on both sides (asked for {', '.join(features)}); "
                           "the reference must be a training-set table and the current data carry the same features")
    mix = [c for c in _comparable(reference, current, list(settings.slice_columns)) if c not in feats]
    ref = _sample(reference, settings.sample_rows, settings.seed + 1)
    cur = _sample(current, settings.sample_rows, settings.seed + 2)
    for c in mix:  # slice keys are categories, whatever their dtype
        ref = ref.assign(**{c: ref[c].astype(str)})
        cur = cur.assign(**{c: cur[c].astype(str)})
    overall = _run_evidently(ref, cur, feats + mix, settings, OVERALL, html_path)
    per_slice: list[ColumnDrift] = []
    for col in settings.slice_columns:
        if col not in reference.columns or col not in current.columns:
            continue
        top = current[col].astype(str).value_counts().head(settings.slice_top).index
        rkey, ckey = reference[col].astype(str), current[col].astype(str)
        for value in top:
            r, c = reference[rkey == value], current[ckey == value]
            if len(r) < settings.min_slice_rows or len(c) < settings.min_slice_rows:
                continue
            cols = _comparable(r, c, feats)
            if cols:
                per_slice += _run_evidently(_sample(r, settings.sample_rows, settings.seed + 3),
                                            _sample(c, settings.sample_rows, settings.seed + 4),
                                            cols, settings, f"{col}={value}")
    overall = with_multiplicity(overall, settings.rule.min_severity)
    per_slice = with_multiplicity(per_slice, settings.rule.min_severity)
    result = DriftResult(columns=_worst_first(overall), slices=_worst_first(per_slice), features=feats,
                         reference_rows=len(reference), current_rows=len(current),
                         html=str(html_path) if html_path else None)
    if missing:
        warnings.warn(f"features absent from one side, not compared: {', '.join(missing)}", stacklevel=2)
    return result


def judge_drift(result: DriftResult, rule: DriftRule) -> DriftAlert:
    """Apply the rule; the event names the worst drifted features and the numbers that decided."""
    feats = result.feature_drift()
    drifted = [c for c in feats if c.severity >= rule.min_severity]
    share = len(drifted) / len(feats) if feats else 0.0
    reasons = []
    if feats and share >= rule.max_drifted_share:
        reasons.append(f"{len(drifted)}/{len(feats)} features drifted ({share:.0%} >= {rule.max_drifted_share:.0%})")
    keys = set(rule.key_features)
    for c in drifted:
        if c.feature in keys:
            reasons.append(f"key feature {c.feature} drifted ({c.test} {c.score:.4g}, threshold {c.threshold:g})")
    if rule.slice_key_features and keys:
        for c in result.slices:
            if c.feature in keys and c.severity >= rule.min_severity:
                reasons.append(f"key feature {c.feature} drifted in {c.slice} ({c.test} {c.score:.4g})")
    worst = [c.feature for c in drifted]  # already worst first
    top = ", ".join(f"{c.feature} (severity {c.severity:.1f})" for c in drifted[:3]) or "none"
    if reasons:
        event = f"DRIFT ALERT: {reasons[0]}; worst: {top}"
    else:
        event = f"drift ok: {len(drifted)}/{len(feats)} features drifted (< {rule.max_drifted_share:.0%}); worst: {top}"
    return DriftAlert(alert=bool(reasons), reasons=reasons, worst=worst, event=event)


def features_from_decision_log(log: pd.DataFrame, role: str = "production") -> pd.DataFrame:
    """The served rows of one role, with the `features` map spread into columns (NaN for missing)."""
    if "features" not in log.columns:
        raise RatchetError("the decision log has no 'features' column; it must come from the decision service")
    rows = log
    if "role" in rows.columns:
        rows = rows[rows["role"].astype(str) == role]
    if "status" in rows.columns:
        rows = rows[rows["status"].astype(str) == "ok"]
    rows = rows[rows["features"].notna()]
    feats = pd.DataFrame([dict(m) for m in rows["features"]], index=rows.index)
    keys = [c for c in rows.columns if c != "features"]
    return pd.concat([rows[keys], feats.astype(float)], axis=1).reset_index(drop=True)


def window(frame: pd.DataFrame, since: str | None = None, until: str | None = None,
           days: float | None = None, ts: str = "ts") -> pd.DataFrame:
    """Rows with since <= ts < until; `days` alone means the last `days` days of the data."""
    if ts not in frame.columns or len(frame) == 0:
        return frame
    t = pd.to_datetime(frame[ts], utc=True)
    keep = np.ones(len(frame), dtype=bool)
    if since:
        keep &= (t >= pd.Timestamp(since, tz="UTC")).to_numpy()
    if until:
        keep &= (t < pd.Timestamp(until, tz="UTC")).to_numpy()
    if days and not since:
        end = pd.Timestamp(until, tz="UTC") if until else t.max()
        keep &= (t >= end - pd.Timedelta(days=days)).to_numpy()
    return frame[keep].reset_index(drop=True)
