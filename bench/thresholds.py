"""Benchmark: per-merchant threshold suggestions on 10M scored rows, 1,000 merchants.

Times ratchet.thresholds.suggest_thresholds end to end (merchant codes, the single sorted
pass that picks every merchant's threshold and the global one, and the before/after
metrics of every merchant) on synthetic scored rows shaped like a release's test window:
label, baseline_score, per-row baseline_threshold (production's per-merchant map),
candidate_score, merchant_id. Then checks the result: no large merchant's FPR rises.

    .venv/bin/python bench/thresholds.py [--rows 10000000] [--merchants 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from ratchet.thresholds import MinSupport, ThresholdPolicy, suggest_thresholds


def make_scored(n: int, merchants: int, seed: int = 0, strings: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Zipf-like volumes, floored so every merchant has a few thousand rows at 10M
    weights = 1.0 / np.arange(1, merchants + 1) ** 0.8
    weights = 0.5 * weights / weights.sum() + 0.5 / merchants
    m = rng.choice(merchants, size=n, p=weights)
    y = (rng.random(n) < 0.01).astype(np.int8)
    shift_b, shift_c = rng.normal(0, 0.5, merchants), rng.normal(0, 0.7, merchants)
    base = (1 / (1 + np.exp(-(shift_b[m] + rng.normal(size=n) + 2.5 * y - 3)))).astype(np.float32).astype(float)
    cand = (1 / (1 + np.exp(-(shift_c[m] + rng.normal(size=n) + 3.0 * y - 3)))).astype(np.float32).astype(float)
    thr = rng.uniform(0.3, 0.7, merchants)
    names = np.array([f"m{i:05d}" for i in range(merchants)], dtype=object)
    return pd.DataFrame({"label": y, "baseline_score": base, "baseline_threshold": thr[m], "candidate_score": cand,
                         "merchant_id": names[m] if strings else pd.Categorical.from_codes(m, names)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--merchants", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    policy = ThresholdPolicy(min_support=MinSupport(rows=2000, negatives=1000))
    print(f"cores: {os.cpu_count()}, rows: {args.rows:,}, merchants: {args.merchants:,}")
    for strings in (True, False):
        t0 = time.perf_counter()
        df = make_scored(args.rows, args.merchants, strings=strings)
        kind = "object strings" if strings else "categorical"
        print(f"[{kind}] generated in {time.perf_counter() - t0:.1f}s")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            s = suggest_thresholds(df, policy)
            times.append(time.perf_counter() - t0)
        own = s.own()
        worse = [r["merchant"] for r in own if r["after_fpr"] > r["before_fpr"] + 1e-12]
        gain = np.mean([r["after_recall"] - r["before_recall"] for r in own])
        print(f"[{kind}] suggest_thresholds: best {min(times):.2f}s, median {np.median(times):.2f}s over {args.repeat} "
              f"runs; {len(own)} merchants with their own threshold, {s.fallback['merchants']} on the global one; "
              f"merchants whose FPR rose: {len(worse)}; mean recall change {gain:+.4f}")
        del df


if __name__ == "__main__":
    main()
