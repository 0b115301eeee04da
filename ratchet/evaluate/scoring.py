"""Score a candidate and @production on the same out-of-time test set.

Builds the scored table the contract engine reads (label, baseline_score,
candidate_score, baseline_threshold and the slice columns), the headline metrics of a
verdict and the Evidently reports beside it. Judging is ratchet.contracts'; the release
step that puts them together is ratchet.app.steps.evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.errors import MissingColumnError
from ratchet.evaluate.metrics import CARD_PRECISION_PREFIX
from ratchet.train.trainer import LABEL_COLUMN, predict

if TYPE_CHECKING:
    from ratchet.evaluate.report_process import ReportBuilder

SLICE_COLUMNS = (C.MERCHANT_ID, C.MERCHANT_CATEGORY, C.COUNTRY, C.CARD_COUNTRY, C.CHANNEL, C.AMOUNT, C.CARD_ID, C.TS)
DRIFT_REPORT = "data-drift.html"
METRIC_KEYS = ("auc", "average_precision", "recall_at_fpr", "fpr", "recall", "block_rate", "rows")


@dataclass(frozen=True)
class Thresholds:
    """A version's decision thresholds: one default, optionally overridden per merchant."""

    default: float
    per_merchant: dict[str, float] = field(default_factory=dict)

    def per_row(self, merchant_ids: pd.Series | None, rows: int) -> np.ndarray:
        """The threshold of each row (per-merchant where one is set)."""
        out = np.full(rows, self.default, dtype=float)
        if self.per_merchant and merchant_ids is not None:
            mapped = merchant_ids.astype(str).map(self.per_merchant).to_numpy(dtype=float, na_value=np.nan)
            out = np.where(np.isnan(mapped), out, mapped)
        return out


def check_baseline_features(baseline, columns) -> None:
    """Refuse a test set that lacks a feature the production model needs, naming it."""
    missing = [f for f in (baseline.feature_names or []) if f not in columns]
    if missing:
        raise MissingColumnError(
            f"the production model needs feature(s) {', '.join(missing)} that the current spec does not "
            "build; keep them in the spec's features: so both models can be compared on the same rows"
        )


def scored_table(test: pd.DataFrame, candidate, baseline=None, baseline_thresholds: Thresholds | None = None) -> pd.DataFrame:
    """label, candidate_score, baseline_score and baseline_threshold (when there is a
    baseline) and the slice columns."""
    if LABEL_COLUMN not in test.columns:
        raise MissingColumnError(f"the test set has no '{LABEL_COLUMN}' column")
    out = pd.DataFrame({"label": test[LABEL_COLUMN].astype("int8").to_numpy()})
    out["candidate_score"] = predict(candidate, test)
    if baseline is not None:
        check_baseline_features(baseline, test.columns)
        out["baseline_score"] = predict(baseline, test)
        if baseline_thresholds is not None:  # production is judged at the thresholds it really uses
            out["baseline_threshold"] = baseline_thresholds.per_row(test.get(C.MERCHANT_ID), len(test))
    for col in SLICE_COLUMNS:
        if col in test.columns:
            out[col] = test[col].to_numpy()
    if C.PROPENSITY in test.columns:  # censored data: the logging policy's propensities (ratchet.evaluate.policy_estimates)
        out[C.PROPENSITY] = test[C.PROPENSITY].to_numpy()
    return out


def headline_metrics(verdict: Any, rows: int) -> dict[str, float]:
    """The candidate's overall test metrics, plus the baseline's prefixed `baseline_`."""
    overall = verdict.overall
    cand = overall.get("candidate", overall)
    keys = METRIC_KEYS + tuple(sorted(k for k in cand if k.startswith(CARD_PRECISION_PREFIX)))
    metrics: dict[str, float] = {k: cand.get(k) for k in keys if cand.get(k) is not None}
    metrics["rows"] = rows
    if isinstance(cand.get("threshold"), float):
        metrics["threshold"] = cand["threshold"]
    base = overall.get("baseline") or {}
    metrics.update({f"baseline_{k}": base[k] for k in keys if base.get(k) is not None and k != "rows"})
    return metrics


def write_reports(scored: pd.DataFrame, verdict: Any, contract: Any, drift: tuple[pd.DataFrame, pd.DataFrame] | None,
                  features: list[str], report_dir: Path) -> list[Path]:
    """Evidently reports next to the verdict, built in this process: feature drift from the
    training set to the test window, and candidate vs production on the worst slices the
    engine found (see verdict_reports)."""
    from ratchet.evaluate.report_process import InProcess

    builder = InProcess()
    if drift is not None:
        builder.drift(drift[0], drift[1], features, report_dir / DRIFT_REPORT)
    verdict_reports(builder, scored, verdict, contract, report_dir)
    return builder.finish()


def verdict_reports(builder: ReportBuilder, scored: pd.DataFrame, verdict: Any, contract: Any, report_dir: Path) -> None:
    """Ask `builder` (ratchet.evaluate.report_process) for the reports a verdict needs: the
    worst-slices chart and one Evidently comparison per worst slice."""
    from ratchet.evaluate.reports import forest_rows, slice_masks

    builder.chart(forest_rows(verdict), report_dir / "worst-slices.png")
    masks = slice_masks(scored, contract, verdict.worst_slices(n=3))
    builder.slices(scored, verdict.threshold_values, masks, report_dir)
