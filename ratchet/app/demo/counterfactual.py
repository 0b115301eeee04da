"""The demo's counterfactual line: v2's recall as censored logs would show it.

The synthetic world labels every payment, so the demo's own releases are not censored.
This line shows what censoring does: the rollout's live traffic is replayed through the
production policy of its time (v1 at its thresholds, exploring 5% of its would-be blocks,
ratchet.exploration), its blocked payments lose their labels (ratchet.data.censoring), and
v2's recall is estimated from what is left: naively on the labelled rows, and by inverse
propensity weighting (ratchet.evaluate.counterfactual), next to the truth the world knows.
Every step is seeded: the same line on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.data.censoring import censor
from ratchet.evaluate.counterfactual import estimate_frame
from ratchet.evaluate.scoring import Thresholds
from ratchet.exploration import ExplorationPolicy
from ratchet.registry import Registry
from ratchet.train.trainer import predict

#: The demo's exploration budget: 5% of the payments v1 would block are allowed.
DEMO_SHARE = 0.05


def _thresholds(registry: Registry, version: int, frame: pd.DataFrame) -> np.ndarray:
    default, per_merchant = registry.thresholds(version)
    return Thresholds(0.5 if default is None else default, per_merchant or {}).per_row(
        frame.get(C.MERCHANT_ID), len(frame))


def censored_recall(registry: Registry, live: Path, production: int, candidate: int,
                    share: float = DEMO_SHARE, seed: int = 7) -> dict[str, float]:
    """Truth, naive and IPW (with interval) of `candidate`'s recall on `live` censored by `production`."""
    frame = pd.read_parquet(live).rename(columns={"label": C.IS_FRAUD})
    prod_t = _thresholds(registry, production, frame)
    prod_score = predict(registry.load_booster(production), frame)
    logged = censor(frame, prod_score, prod_t, ExplorationPolicy(share=share, seed=seed))
    cand_block = predict(registry.load_booster(candidate), frame) >= _thresholds(registry, candidate, frame)
    truth = frame[C.IS_FRAUD].to_numpy() == 1
    r = estimate_frame(logged, cand_block).metrics["recall"]
    return {"truth": float(cand_block[truth].mean()), "naive": r.naive, "ipw": r.ipw, "low": r.low, "high": r.high,
            "explored": int((logged["propensity"] < 1).sum()), "rows": len(frame)}


def censored_recall_line(registry: Registry, live: Path, production: int, candidate: int) -> str:
    r = censored_recall(registry, live, production, candidate)
    return (f"censored labels: on the live traffic ({r['rows']:,} payments) with v{production}'s blocks unlabelled "
            f"and {DEMO_SHARE:.0%} of them explored ({r['explored']:,}), v{candidate}'s recall is "
            f"{r['truth']:.3f} (truth); naive on the labelled rows {r['naive']:.3f}; "
            f"IPW {r['ipw']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
