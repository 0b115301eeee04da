"""Evaluate a candidate against @production on the same out-of-time test set.

Scores both models on the test window, builds the scored table the contract engine
reads (label, baseline_score, candidate_score and the slice columns) and returns the
verdict. With no production model (`bootstrap`), only absolute bounds are judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.errors import MissingColumnError
from ratchet.train.trainer import LABEL_COLUMN, predict

SLICE_COLUMNS = (C.MERCHANT_ID, C.MERCHANT_CATEGORY, C.COUNTRY, C.CARD_COUNTRY, C.CHANNEL, C.AMOUNT, C.CARD_ID, C.TS)
METRIC_KEYS = ("auc", "average_precision", "recall_at_fpr", "fpr", "recall", "block_rate", "rows")


@dataclass(frozen=True)
class Evaluation:
    """The contract verdict on a candidate, with its renderings and headline metrics."""

    passed: bool
    verdict: Any  # ratchet.contracts Verdict
    metrics: dict[str, float]
    reason: str
    suggestions: Any = None  # ratchet.thresholds Suggestions the contract was judged at, if any
    figures: dict[str, bytes] = field(default_factory=dict)  # title -> PNG, embedded in verdict.html

    def renderings(self) -> dict[str, str]:
        """The verdict as files: JSON, Markdown, HTML and plain text."""
        import json

        return {
            "verdict.json": json.dumps(self.verdict.to_dict(), indent=2, default=str),
            "verdict.md": self.verdict.to_markdown(),
            "verdict.html": self.verdict.to_html(self.figures),
            "verdict.txt": self.verdict.to_text(),
        }


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
    return out


def headline_metrics(verdict: Any, rows: int) -> dict[str, float]:
    """The candidate's overall test metrics, plus the baseline's prefixed `baseline_`."""
    overall = verdict.overall
    cand = overall.get("candidate", overall)
    metrics: dict[str, float] = {k: cand.get(k) for k in METRIC_KEYS if cand.get(k) is not None}
    metrics["rows"] = rows
    if isinstance(cand.get("threshold"), float):
        metrics["threshold"] = cand["threshold"]
    base = overall.get("baseline") or {}
    metrics.update({f"baseline_{k}": base[k] for k in METRIC_KEYS if base.get(k) is not None and k != "rows"})
    return metrics


def write_reports(scored: pd.DataFrame, verdict: Any, contract: Any, drift: tuple[pd.DataFrame, pd.DataFrame] | None,
                  features: list[str], report_dir: Path) -> list[Path]:
    """Evidently reports next to the verdict: feature drift from the training set to the
    test window, and candidate vs production on the worst slices the engine found."""
    from ratchet.evaluate.reports import drift_report, slice_comparison_reports, slice_masks

    from ratchet.evaluate.reports import worst_slices_plot

    written = []
    chart = worst_slices_plot(verdict, report_dir / "worst-slices.png")
    if chart is not None:
        written.append(chart)
    if drift is not None:
        written.append(drift_report(drift[0], drift[1], features, report_dir / "data-drift.html"))
    masks = slice_masks(scored, contract, verdict.worst_slices(n=3))
    written += slice_comparison_reports(scored, verdict.threshold_values, masks, report_dir)
    return written


def evaluate_candidate(test: pd.DataFrame, candidate, baseline, contract,
                       baseline_thresholds: Thresholds | None = None, *, train: pd.DataFrame | None = None,
                       report_dir: Path | None = None, scored: pd.DataFrame | None = None,
                       threshold_policy: Any = None) -> Evaluation:
    """Score, judge against the contract, write Evidently reports (if report_dir), summarise.

    `scored`: the scored table when it was built elsewhere (on Spark, for a large test
    set); `test` is then only read for the drift report and may be a sample.
    `threshold_policy` (ratchet.thresholds ThresholdPolicy): suggest per-merchant thresholds
    and judge the contract with them applied (a `candidate_threshold` column).
    """
    from ratchet.contracts import evaluate_contract

    if scored is None:
        scored = scored_table(test, candidate, baseline, baseline_thresholds)
    suggestions = None
    if threshold_policy is not None:
        from ratchet.thresholds import suggest_thresholds

        th = contract.thresholds
        suggestions = suggest_thresholds(
            scored, threshold_policy, default_threshold=th.default,
            bootstrap_block_rate=th.bootstrap_block_rate if th.candidate == "match_baseline_block_rate" else None,
            current_default=baseline_thresholds.default if baseline_thresholds else None,
            current_per_merchant=baseline_thresholds.per_merchant if baseline_thresholds else None,
            contract=contract)
        scored = suggestions.apply(scored)
    verdict = evaluate_contract(contract, scored)
    figures: dict[str, bytes] = {}
    if report_dir is not None:
        features = list(candidate.feature_names or [])
        written = write_reports(scored, verdict, contract, (train, test) if train is not None else None, features,
                                report_dir)
        figures = {"Worst slices: candidate vs production": p.read_bytes() for p in written if p.suffix == ".png"}
    failures = verdict.failures()
    if verdict.passed:
        reason = "gate passed" + (" (bootstrap: absolute bounds only)" if baseline is None else "")
    else:
        reason = "gate failed: " + "; ".join(_describe(f) for f in failures[:5])
    metrics = headline_metrics(verdict, len(scored))
    if suggestions is not None:  # per-row thresholds: the headline one is the global threshold
        metrics["threshold"] = suggestions.global_threshold
    return Evaluation(verdict.passed, verdict, metrics, reason, suggestions, figures)


def _describe(failure: Any) -> str:
    if hasattr(failure, "sentence"):
        return failure.sentence()
    get = failure.get if isinstance(failure, dict) else (lambda k, d=None: getattr(failure, k, d))
    name, slc = get("name"), get("slice")
    where = f" for {slc}" if slc and slc not in ("overall", "all") else ""
    return f"{name}{where} (baseline {_fmt(get('baseline'))}, candidate {_fmt(get('candidate'))})"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
