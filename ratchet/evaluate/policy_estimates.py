"""Counterfactual estimates of the release's two policies on a censored test window.

When the release's data logs the production policy of its time (columns decision and
propensity, ratchet.data.logged), the test window holds only the payments that policy let
through: the ones its model allowed and the would-be blocks exploration allowed. Judged on
them as they are, production's recall looks like the recall on the frauds it missed, and a
candidate that blocks other payments is judged on the old model's leftovers. Weighting each
row by 1 / propensity (ratchet.evaluate.counterfactual) estimates what each policy would
catch and block on all payments, blocked ones included.

    estimates = release_estimates(scored, verdict.threshold_values)
    estimates["candidate"]["metrics"]["recall"]["ipw"], estimates["production"][...]

On these rows every logged decision is an allow, so the block rate is the self-normalised
one (normalised by the weights' sum, which stands for every explorable payment); blocks that
could never be explored (opted-out merchants, capped days) are not in the test window and no
weight stands for them: the training-set job counts them (rows_censored).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.evaluate.counterfactual import estimate

def has_logged_decisions(scored: pd.DataFrame) -> bool:
    """Whether the test window carries the logging policy's propensities."""
    return C.PROPENSITY in scored.columns and bool(scored[C.PROPENSITY].notna().any())


def release_estimates(scored: pd.DataFrame, thresholds: dict[str, Any], confidence: float = 0.95,
                      seed: int = 0) -> dict[str, Any]:
    """Naive and IPW recall / FPR / block rate of the candidate and of production (when the
    scored table has a baseline) at the thresholds the verdict judged them at."""
    label = scored["label"].to_numpy(dtype=np.float64)
    prop = scored[C.PROPENSITY].fillna(1.0).to_numpy(dtype=np.float64)
    allow = np.full(len(scored), "allow", dtype=object)   # every labelled row was let through
    out: dict[str, Any] = {"rows": len(scored), "explored": int((prop < 1).sum()),
                           "confidence": confidence}
    for name, score, key in (("candidate", "candidate_score", "candidate"), ("production", "baseline_score", "baseline")):
        if score not in scored.columns or key not in thresholds:
            continue
        block = scored[score].to_numpy(dtype=np.float64) >= np.asarray(thresholds[key], dtype=np.float64)
        r = estimate(label, prop, allow, block, confidence=confidence, seed=seed)
        out[name] = {"metrics": {m: e.to_dict() for m, e in r.metrics.items()}, "labelled": r.labelled}
    return out


def _ipw(metric: str, e: dict[str, Any]) -> tuple[float, float, float]:
    """(estimate, low, high) that stands for the metric on every payment: the self-normalised
    one for block rate (no N of censored rows here), IPW (= SNIPW) for recall and FPR."""
    if metric == "block_rate":
        return e["snipw"], e["snipw_low"], e["snipw_high"]
    return e["ipw"], e["low"], e["high"]


def estimate_metrics(estimates: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: naive_recall, ipw_recall, ... and baseline_ naive/ipw ones."""
    out: dict[str, float] = {}
    for name, prefix in (("candidate", ""), ("production", "baseline_")):
        for metric, e in (estimates.get(name) or {}).get("metrics", {}).items():
            for est, value in (("naive", e["naive"]), ("ipw", _ipw(metric, e)[0])):
                if value is not None and np.isfinite(value):
                    out[f"{prefix}{est}_{metric}"] = float(value)
    return out


def estimates_markdown(estimates: dict[str, Any]) -> str:
    """A Markdown section: each policy's naive and IPW estimates with intervals."""
    lines = ["#### Counterfactual estimates (censored test window)", "",
             f"{estimates['rows']:,} labelled rows, {estimates['explored']:,} of them explored; IPW weighs each by "
             "1 / propensity, so the estimates stand for every payment, blocked ones included "
             f"({estimates['confidence']:.0%} intervals).", "",
             "| model | metric | naive (labelled rows as they are) | IPW |", "|---|---|---|---|"]
    for name in ("production", "candidate"):
        for metric, e in (estimates.get(name) or {}).get("metrics", {}).items():
            ipw, lo, hi = _ipw(metric, e)
            lines.append(f"| {name} | {metric} | {e['naive']:.4f} [{e['naive_low']:.4f}, {e['naive_high']:.4f}] | "
                         f"{ipw:.4f} [{lo:.4f}, {hi:.4f}] |")
    return "\n".join(lines) + "\n"
