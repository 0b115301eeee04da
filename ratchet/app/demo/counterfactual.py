"""The demo's censored world: every release after the first sees what production let through.

A blocked payment never gets a chargeback. Once v1 is in production, the demo plays its
policy over every later payment: point-in-time features (Spark, ratchet.data.trainingset),
v1's score at its thresholds, 5% of its would-be blocks explored (ratchet.exploration, the
service's own decider); blocked payments lose their labels (ratchet.data.censoring), and the
data the next releases read carries the logged `decision` and `propensity` columns. Their
training sets drop the censored rows, their test windows hold the let-through payments, and
their verdicts carry naive and IPW estimates (release/counterfactual.json). The truth stays
in `is_fraud_true`, which no release reads: the demo's line sets v2's estimated recall
beside it.

v1 scores every payment on features built from the world's full labels; a sequential replay
would build them from the censored labels of the time (only merchant_fraud_rate_30d reads
labels). Every step is seeded: the same world on every machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.data.censoring import apply_logged, censor
from ratchet.evaluate.scoring import Thresholds
from ratchet.exploration import ExplorationPolicy
from ratchet.registry import Registry
from ratchet.train.trainer import predict

#: The demo's exploration budget: 5% of the payments production would block are allowed.
DEMO_SHARE = 0.05
#: The decided payments' features (Parquet), kept so the demo can read the truth of a window.
FEATURES_FILE = "decided-features.parquet"


@dataclass(frozen=True)
class CensoredWorld:
    """The censored data for later releases and what it took to make it."""

    data: Path            # raw payments with decision / propensity, censored labels, is_fraud_true
    features: Path        # the decided payments' point-in-time features and true labels
    production: int
    decided: int
    blocked: int
    explored: int


def _thresholds(registry: Registry, version: int, frame: pd.DataFrame) -> np.ndarray:
    default, per_merchant = registry.thresholds(version)
    return Thresholds(0.5 if default is None else default, per_merchant or {}).per_row(
        frame.get(C.MERCHANT_ID), len(frame))


def censor_world(data: Path, features: Path, since: datetime, registry: Registry, production: int, out: Path,
                 share: float = DEMO_SHARE, seed: int = 7) -> CensoredWorld:
    """Write `out`: the raw payments of `data` with the payments in `features` (built by
    ratchet.data.trainingset.build_recent_traffic) from `since` on decided by `production`
    at its thresholds, exploring `share` of its would-be blocks."""
    feat = pd.read_parquet(features)
    feat = feat[pd.to_datetime(feat[C.TS]) >= pd.Timestamp(since).tz_localize(None)].reset_index(drop=True)
    raw = pd.read_parquet(data)
    decided = raw.set_index(raw[C.TRANSACTION_ID].astype(str)).loc[feat[C.TRANSACTION_ID].astype(str)]
    decided = decided.reset_index(drop=True)
    logged = censor(decided, predict(registry.load_booster(production), feat), _thresholds(registry, production, feat),
                    ExplorationPolicy(share=share, seed=seed))
    world = apply_logged(raw, logged)
    out.parent.mkdir(parents=True, exist_ok=True)
    world.to_parquet(out, index=False)
    blocked = logged[C.DECISION] == "block"
    return CensoredWorld(out, features, production, len(logged), int(blocked.sum()),
                         int((~blocked & (logged[C.PROPENSITY] < 1)).sum()))


def _day(value: Any) -> pd.Timestamp:
    return pd.Timestamp(datetime.fromisoformat(str(value).replace("Z", "+00:00"))).tz_localize(None)


def release_recall(world: CensoredWorld, registry: Registry, report_dir: str, windows: dict[str, Any],
                   threshold: float, candidate: int) -> dict[str, float]:
    """The release's own naive and IPW recall of its candidate (counterfactual.json) and the
    truth: the candidate at the verdict's threshold on every payment of the test window."""
    files = sorted(Path(report_dir).glob("outputs/*/evaluate/evaluation/counterfactual.json"))
    if not files:
        raise FileNotFoundError(f"no counterfactual.json under {report_dir}: was the release's data censored?")
    est = json.loads(files[-1].read_text())
    r = est["candidate"]["metrics"]["recall"]
    feat = pd.read_parquet(world.features)
    ts = pd.to_datetime(feat[C.TS])
    window = feat[(ts >= _day(windows["test_start"])) & (ts < _day(windows["test_end"]))]
    fraud = window["label"].to_numpy() == 1
    block = predict(registry.load_booster(candidate), window) >= threshold
    return {"truth": float(block[fraud].mean()), "naive": r["naive"], "ipw": r["ipw"], "low": r["low"],
            "high": r["high"], "explored": int(est["explored"]), "rows": int(est["rows"]), "payments": len(window)}


def release_recall_line(world: CensoredWorld, registry: Registry, report_dir: str, windows: dict[str, Any],
                        threshold: float, candidate: int) -> str:
    """One line: v<candidate>'s recall on its censored test window, truth vs naive vs IPW."""
    r = release_recall(world, registry, report_dir, windows, threshold, candidate)
    return (f"censored labels: v{candidate} was judged on v{world.production}'s logs ({r['payments']:,} payments in "
            f"its test window, {r['rows']:,} let through and labelled, {r['explored']} of them explored at "
            f"{DEMO_SHARE:.0%}); its recall is {r['truth']:.3f} (truth); naive on the labelled rows {r['naive']:.3f}; "
            f"IPW {r['ipw']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
