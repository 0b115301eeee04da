"""Evaluate a candidate against @production: score, suggest thresholds, judge, report.

The release's evaluate step: it puts together the scored table (ratchet.evaluate),
per-merchant threshold suggestions (ratchet.thresholds) and the contract verdict
(ratchet.contracts). With no production model (`bootstrap`), only absolute bounds are
judged, and each blocking one must be shown to pass: an inconclusive or not-judged one
stops the release (there is no shadow phase against production to resolve it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ratchet.evaluate.policy_estimates import estimate_metrics, has_logged_decisions, release_estimates
from ratchet.evaluate.report_process import InProcess, ReportBuilder
from ratchet.evaluate.scoring import DRIFT_REPORT, Thresholds, headline_metrics, scored_table, verdict_reports


@dataclass(frozen=True)
class Evaluation:
    """The contract verdict on a candidate, with its renderings and headline metrics."""

    passed: bool
    verdict: Any  # ratchet.contracts Verdict
    metrics: dict[str, float]
    reason: str
    suggestions: Any = None  # ratchet.thresholds Suggestions the contract was judged at, if any
    figures: dict[str, bytes] = field(default_factory=dict)  # title -> PNG, embedded in verdict.html
    #: censored data only: naive and IPW estimates of both policies (ratchet.evaluate.policy_estimates)
    estimates: dict[str, Any] | None = None

    def renderings(self) -> dict[str, str]:
        """The verdict as files: JSON, Markdown, HTML and plain text (and counterfactual.json)."""
        import json

        from ratchet.evaluate.policy_estimates import estimates_markdown

        extra = estimates_markdown(self.estimates) if self.estimates else ""
        out = {
            "verdict.json": json.dumps(self.verdict.to_dict(), indent=2, default=str),
            "verdict.md": self.verdict.to_markdown() + ("\n" + extra if extra else ""),
            "verdict.html": self.verdict.to_html(self.figures),
            "verdict.txt": self.verdict.to_text(),
        }
        if self.estimates:
            out["counterfactual.json"] = json.dumps(self.estimates, indent=2, default=str)
        return out


def evaluate_candidate(test: pd.DataFrame, candidate, baseline, contract,
                       baseline_thresholds: Thresholds | None = None, *, train: pd.DataFrame | None = None,
                       report_dir: Path | None = None, scored: pd.DataFrame | None = None,
                       threshold_policy: Any = None, reports: ReportBuilder | None = None) -> Evaluation:
    """Score, judge against the contract, write Evidently reports (if report_dir), summarise.

    `scored`: the scored table when it was built elsewhere (on Spark, for a large test
    set); `test` is then only read for the drift report and may be a sample.
    `threshold_policy` (ratchet.thresholds ThresholdPolicy): suggest per-merchant thresholds
    and judge the contract with them applied (a `candidate_threshold` column).
    `reports` (ratchet.evaluate.report_process): where the reports in report_dir are built;
    in this process unless given (the release step hands them to a process of their own).
    """
    from ratchet.contracts import evaluate_contract

    if report_dir is not None:
        reports = reports or InProcess()
        if train is not None:  # asked first: it needs nothing the verdict decides
            reports.drift(train, test, list(candidate.feature_names or []), report_dir / DRIFT_REPORT)
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
    if baseline is None:  # bootstrap: no shadow phase against production, so nothing may stay open
        verdict.open_questions_block = True
    if report_dir is not None:
        verdict_reports(reports, scored, verdict, contract, report_dir)
    failures = verdict.failures()
    if verdict.passed:
        reason = "gate passed" + (" (bootstrap: absolute bounds only, each shown to pass)" if baseline is None else "")
    elif failures:
        reason = "gate failed: " + "; ".join(_describe(f) for f in failures[:5])
    else:
        reason = bootstrap_open_reason(verdict.open_questions())
    metrics = headline_metrics(verdict, len(scored))
    if suggestions is not None:  # per-row thresholds: the headline one is the global threshold
        metrics["threshold"] = suggestions.global_threshold
    estimates = None
    if has_logged_decisions(scored):  # censored data: what each policy would do on every payment
        estimates = release_estimates(scored, verdict.threshold_values)
        metrics.update(estimate_metrics(estimates))
    figures: dict[str, bytes] = {}
    if report_dir is not None:  # the reports were being built meanwhile
        written = reports.finish()
        figures = {"Worst slices: candidate vs production": p.read_bytes() for p in written if p.suffix == ".png"}
    return Evaluation(verdict.passed, verdict, metrics, reason, suggestions, figures, estimates)


def bootstrap_open_reason(open_questions: list[Any]) -> str:
    """Why a bootstrap release with no credible failure still does not go to @production."""
    shown = "; ".join(_describe(q) for q in open_questions[:5])
    more = f" (and {len(open_questions) - 5} more)" if len(open_questions) > 5 else ""
    return ("gate failed (bootstrap): a first release goes to @production only when every blocking bound is shown "
            "to pass, since no production model exists to resolve open questions against in shadow; not shown: "
            f"{shown}{more}. To release: give the test window more evidence (a longer windows.test_days, or more "
            "data) so the interval narrows, or train a model that clears the bound; lower the bound in the "
            "contract only if that is the business's decision")


def _describe(failure: Any) -> str:
    if hasattr(failure, "sentence"):
        return failure.sentence()
    get = failure.get if isinstance(failure, dict) else (lambda k, d=None: getattr(failure, k, d))
    name, slc = get("name"), get("slice")
    where = f" for {slc}" if slc and slc not in ("overall", "all") else ""
    return f"{name}{where} (baseline {_fmt(get('baseline'))}, candidate {_fmt(get('candidate'))})"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
