"""Benchmark: do `ratchet estimate`'s label-free intervals cover the matured-label values?

Per seed, a new synthetic world (ratchet/data/synth.py: 200,000 transactions over 182 days,
stable patterns, 2x fraud): a model trained before 2025-02-15, calibrated (isotonic, 200
bootstrap refits, label overdispersion from daily counts) on its scores of 2025-02-15 ..
2025-04-01 with matured labels, then estimated week by week on the rest without labels at
a block threshold at its reference scores' 98.5% quantile (ratchet.monitor.estimation, the
code behind `ratchet estimate`). Each week's 95% interval is compared with the realised
recall and FPR once the labels are in. Same setup as tests/test_estimation.py, over seeds.

Acceptance (issue 19): the intervals cover the realised values in >= 90% of weekly windows.

    .venv/bin/python bench/estimation.py [--seeds 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "card_count_1h", "card_count_24h",
            "card_amount_24h", "seconds_since_card_prev", "amount_to_card_mean", "merchant_count_24h"]


def run_one(seed: int) -> dict:
    import pandas as pd

    from ratchet.data.synth import SynthConfig, generate
    from ratchet.monitor.estimation import fit_calibration, weekly_estimates
    from ratchet.monitor.features import point_in_time_features
    from ratchet.train.spec import DEFAULT_PARAMS, TrainingSpec, XGBoostSpec
    from ratchet.train.trainer import predict, train_model

    raw = generate(SynthConfig(rows=200_000, seed=seed, days=182, drift_speed=0.0, new_pattern_day=-1,
                               fraud_scale=2.0, new_country=None))
    table = point_in_time_features(raw, FEATURES)
    ts = pd.to_datetime(table["ts"])
    spec = TrainingSpec(name="b", label="label", features=tuple(FEATURES),
                        xgboost=XGBoostSpec(params={**DEFAULT_PARAMS, "max_depth": 4, "eta": 0.2, "nthread": 1,
                                                    "seed": 7}, num_boost_round=40))
    model = train_model(table[ts < "2025-02-15"].reset_index(drop=True), spec).booster
    ref = table[(ts >= "2025-02-15") & (ts < "2025-04-01")]
    ref_score = predict(model, ref)
    threshold = float(np.quantile(ref_score, 0.985))
    cal = fit_calibration(ref_score, ref["label"].to_numpy(), "isotonic", replicates=200, seed=1,
                          groups=pd.to_datetime(ref["ts"]).dt.floor("D").to_numpy())
    live = table[ts >= "2025-04-01"]
    score = predict(model, live)
    frame = pd.DataFrame({"ts": live["ts"].to_numpy(), "score": score, "blocked": score >= threshold,
                          "label": live["label"].to_numpy()})
    out = weekly_estimates(cal, frame, confidence=0.95)
    return {"seed": seed, "weeks": len(out), "recall": int(out["recall_covered"].sum()),
            "fpr": int(out["fpr_covered"].sum()), "dispersion": cal.dispersion,
            "recall_width": float((out["recall_high"] - out["recall_low"]).median()),
            "fpr_width": float((out["fpr_high"] - out["fpr_low"]).median())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as ex:
        rs = list(ex.map(run_one, range(1, a.seeds + 1)))
    weeks = sum(r["weeks"] for r in rs)
    rec, fpr = sum(r["recall"] for r in rs) / weeks, sum(r["fpr"] for r in rs) / weeks
    print(f"# bench/estimation.py: {a.seeds} worlds, {weeks} weekly windows, "
          f"{time.perf_counter() - t0:.0f}s wall on {a.workers} workers ({os.cpu_count()} cpus)")
    for r in rs:
        print(f"seed {r['seed']:>2}: recall covered {r['recall']}/{r['weeks']}, FPR covered {r['fpr']}/{r['weeks']}, "
              f"dispersion {r['dispersion']:.2f}, median width recall {r['recall_width']:.3f} "
              f"FPR {r['fpr_width']:.4f}")
    worst = min(min(r["recall"], r["fpr"]) / r["weeks"] for r in rs)
    ok = rec >= 0.9 and fpr >= 0.9
    print(f"coverage over all windows: recall {rec:.1%}, FPR {fpr:.1%} (worst world {worst:.0%}); "
          f"acceptance >= 90%: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
