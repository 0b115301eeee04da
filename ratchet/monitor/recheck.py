"""Re-check a past promotion once its labels have landed.

A shadow or canary is promoted on estimates and early labels; weeks later the
chargebacks are in. This judges the same contract on the decisions the promoted
version made while it was under review, with the matured labels. If the realised
figures would have failed the contract, the promotion is flagged (pure decision here;
the CLI writes the event and the MLflow tag).

    window = review_window(registry.history(7), "production")
    result = recheck_promotion(log, labels, "contracts/fraud.yaml", 7, since=window[0], until=window[1])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ratchet.errors import RatchetError


@dataclass(frozen=True)
class Recheck:
    """The contract on realised labels: passed, failed, or pending (labels not there yet)."""

    version: int
    status: str                 # passed | failed | pending
    summary: str
    rows: int = 0
    since: str | None = None
    until: str | None = None
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def event(self, stage: str = "production") -> str:
        if self.status == "failed":
            return (f"RECHECK FAILED: v{self.version} ({stage}) would have failed its contract on "
                    f"{self.rows:,} matured decisions from {self.since} to {self.until}: {self.summary}")
        return f"recheck {self.status}: v{self.version}: {self.summary}"


def review_window(history: list[dict[str, Any]], stage: str = "production") -> tuple[str | None, str | None]:
    """(start of review, promotion time) from a version's history: from its first move to
    shadow or canary up to its (last) move to `stage`."""
    until = None
    for ev in history:
        if ev.get("to") == stage:
            until = ev.get("at")
    since = None
    for ev in history:
        if ev.get("to") in ("shadow", "canary") and (until is None or str(ev.get("at")) <= str(until)):
            since = ev.get("at")
            break
    return since, until


def _ok(log: pd.DataFrame) -> pd.Series:
    return log["status"].astype(str).eq("ok") if "status" in log.columns else pd.Series(True, index=log.index)


def recheck_promotion(log: pd.DataFrame, labels: pd.DataFrame, contract_path: str, version: int, *,
                      since: str | None = None, until: str | None = None, min_labelled: int = 100) -> Recheck:
    """Judge `contract_path` on version's decisions in [since, until) joined with matured labels.

    Production rows of other versions on the same requests are the baseline (a shadow
    saw every request); without them (a canary's own requests) clauses that need a
    baseline are "not judged".
    """
    from ratchet.contracts import evaluate_contract, load_contract
    from ratchet.monitor.drift import window

    for col in ("request_id", "version", "score", "threshold"):
        if col not in log.columns:
            raise RatchetError(f"the decision log lacks column '{col}'")
    if "request_id" not in labels.columns or "label" not in labels.columns:
        raise RatchetError("labels need columns request_id and label (0/1)")
    w = window(log, since=since, until=until)
    w = w[_ok(w)]
    cand = w[w["version"] == version].drop_duplicates("request_id")
    role = w["role"].astype(str) if "role" in w.columns else pd.Series("production", index=w.index)
    base = w[(role == "production") & (w["version"] != version)].drop_duplicates("request_id")
    keep = [c for c in cand.columns if c not in ("role", "version", "score", "threshold", "decision", "latency_ms",
                                                  "status", "error", "ts", "features", "config_generation")]
    joined = cand[keep + ["score", "threshold"]].rename(columns={"score": "candidate_score",
                                                                 "threshold": "candidate_threshold"})
    paired = joined.merge(base[["request_id", "score", "threshold"]].rename(
        columns={"score": "baseline_score", "threshold": "baseline_threshold"}), on="request_id", how="inner")
    if len(paired) >= 0.5 * len(joined) and len(paired):
        joined = paired
    joined = joined.merge(labels[["request_id", "label"]], on="request_id")
    common = dict(version=version, rows=len(joined), since=since, until=until)
    if len(joined) < min_labelled:
        return Recheck(status="pending", summary=f"{len(joined)} decisions with matured labels (< {min_labelled})",
                       **common)
    verdict = evaluate_contract(load_contract(contract_path), joined, sequential=True)  # re-run as labels land: anytime-valid
    fails = verdict.failures()
    if fails:
        return Recheck(status="failed", summary="; ".join(r.sentence() for r in fails[:2]),
                       failures=[r.sentence() for r in fails[:10]], **common)
    return Recheck(status="passed", summary=f"contract {contract_path} holds on {len(joined):,} matured decisions",
                   **common)
