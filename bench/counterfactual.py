"""Benchmark: do IPW estimates from censored logs cover a policy's true recall and FPR?

Design (issue 17). Two models are trained once, on an uncensored synthetic world (seed 0,
200,000 payments over 91 days, stable patterns, 2x fraud; the first 60 days): production,
XGBoost on four context features (amount, hour, online, cross-border), and a candidate on
ten (the card and merchant velocity features too). Each blocks at its scores' 98.5%
quantile on days 60..91 of that world. Then, per seed s, a fresh world
(SynthConfig(seed=1000 + s), 200,000 payments over 30 days, same settings) is scored by both,
and censored with production's policy at its threshold (ratchet.data.censoring.censor,
ExplorationPolicy(share=budget, seed=s)) at each exploration budget. From those logs only
(labels of allowed payments, propensities, decisions) ratchet.evaluate.counterfactual
estimates each model's recall, FPR and block rate, naive (labelled rows, unweighted) and
IPW, with 95% intervals: the design-based linearised variance (the "covered" column) and
the seeded Poisson bootstrap of the explored rows (400 replicates, the "boot" column).

Estimand: the model's recall / FPR on that seed's 30 days, every payment, from the
truth column (is_fraud_true), i.e. the finite-period value, not a population beyond it.
Coverage: the share of seeds whose IPW interval contains it. Acceptance: >= 90% for
recall and FPR of both models at the 5% budget, over >= 100 seeds.

An extra row per model (--opt-out, default on) shows positivity failing: the same 5%
budget with the category "electronics" opted out, so its blocks are never explored.

    .venv/bin/python bench/counterfactual.py [--seeds 100] [--workers 2] [--budgets 0.01,0.05,0.10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRODUCTION = ["amount", "hour_of_day", "is_online", "cross_border"]
CANDIDATE = PRODUCTION + ["card_count_1h", "card_count_24h", "card_amount_24h", "seconds_since_card_prev",
                          "amount_to_card_mean", "merchant_count_24h"]
WORLD = dict(drift_speed=0.0, new_pattern_day=-1, fraud_scale=2.0, new_country=None)
OPT_OUT = "electronics"
QUANTILE = 0.985
_MODELS: dict = {}


def train_models() -> dict:
    """Production and candidate boosters (raw bytes) and their thresholds, from world 0."""
    import pandas as pd

    from ratchet.data.synth import SynthConfig, generate
    from ratchet.monitor.features import point_in_time_features
    from ratchet.train.spec import DEFAULT_PARAMS, TrainingSpec, XGBoostSpec
    from ratchet.train.trainer import predict, train_model

    raw = generate(SynthConfig(rows=200_000, seed=0, days=91, **WORLD))
    table = point_in_time_features(raw, CANDIDATE)
    early = pd.to_datetime(table["ts"]) < pd.Timestamp("2025-01-01") + pd.Timedelta(days=60)
    out = {}
    for name, features, depth in (("production", PRODUCTION, 3), ("candidate", CANDIDATE, 5)):
        spec = TrainingSpec(name=name, label="label", features=tuple(features),
                            xgboost=XGBoostSpec(params={**DEFAULT_PARAMS, "max_depth": depth, "eta": 0.2,
                                                        "nthread": 1, "seed": 7}, num_boost_round=60))
        booster = train_model(table[early].reset_index(drop=True), spec).booster
        ref = predict(booster, table[~early])
        out[name] = (bytes(booster.save_raw("ubj")), float(np.quantile(ref, QUANTILE)))
    return out


def _init(models: dict) -> None:
    import xgboost as xgb

    for name, (raw, threshold) in models.items():
        b = xgb.Booster()
        b.load_model(bytearray(raw))
        _MODELS[name] = (b, threshold)


def run_one(args: tuple[int, tuple[float, ...], bool]) -> list[dict]:
    """One seed: a fresh world, censored by production at each budget, both models estimated."""
    from ratchet.data import columns as C
    from ratchet.data.censoring import TRUE_LABEL, censor
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.evaluate.counterfactual import estimate_frame
    from ratchet.exploration import ExplorationPolicy
    from ratchet.monitor.features import point_in_time_features
    from ratchet.train.trainer import predict

    seed, budgets, opt_out = args
    raw = generate(SynthConfig(rows=200_000, seed=1000 + seed, days=30, **WORLD))
    table = point_in_time_features(raw, CANDIDATE)
    scores = {name: predict(b, table) for name, (b, _) in _MODELS.items()}
    blocks = {name: scores[name] >= t for name, (_, t) in _MODELS.items()}
    truth = raw[C.IS_FRAUD].to_numpy().astype(bool)
    prod_threshold = _MODELS["production"][1]
    runs = [(f"{b:.0%}", ExplorationPolicy(share=b, seed=seed)) for b in budgets]
    if opt_out:
        runs.append(("5% + opt-out", ExplorationPolicy(share=0.05, seed=seed, opt_out_categories=frozenset({OPT_OUT}))))
    rows = []
    for label, policy in runs:
        logged = censor(raw, scores["production"], prod_threshold, policy)
        assert (logged[TRUE_LABEL].to_numpy() == truth).all()
        for name, block in blocks.items():
            r = estimate_frame(logged, block, confidence=0.95)
            boot = estimate_frame(logged, block, confidence=0.95, method="bootstrap", seed=seed).metrics
            true = {"recall": float(block[truth].mean()), "fpr": float(block[~truth].mean()),
                    "block_rate": float(block.mean())}
            for metric, m in r.metrics.items():
                rows.append({"seed": seed, "budget": label, "model": name, "metric": metric, "true": true[metric],
                             "naive": m.naive, "ipw": m.ipw, "snipw": m.snipw, "low": m.low, "high": m.high,
                             "covered": m.covers(true[metric]), "boot": boot[metric].covers(true[metric]),
                             "ess": m.ess, "explored": r.explored,
                             "unexplorable": r.unexplorable_blocks})
    return rows


def report(rows: list[dict], seeds: int) -> bool:
    """Print the table and coverage; True when the 5% acceptance holds."""
    import pandas as pd

    df = pd.DataFrame(rows)
    df["naive_bias"] = df["naive"] - df["true"]
    df["ipw_bias"] = df["ipw"] - df["true"]
    df["width"] = df["high"] - df["low"]
    g = df.groupby(["budget", "model", "metric"], sort=False)
    table = g.agg(true=("true", "mean"), naive=("naive", "mean"), naive_bias=("naive_bias", "mean"),
                  ipw=("ipw", "mean"), ipw_bias=("ipw_bias", "mean"), snipw=("snipw", "mean"),
                  width=("width", "median"), covered=("covered", "sum"), boot=("boot", "sum"), ess=("ess", "median"),
                  explored=("explored", "median"), unexplorable=("unexplorable", "median")).reset_index()
    print(f"{'budget':<13} {'model':<10} {'metric':<10} {'true':>7} {'naive':>7} {'n.bias':>8} {'IPW':>7} "
          f"{'IPW bias':>9} {'SNIPW':>7} {'width':>7} {'covered':>9} {'boot':>4} {'ESS':>7} {'explored':>8} {'unexpl.':>7}")
    for r in table.itertuples():
        print(f"{r.budget:<13} {r.model:<10} {r.metric:<10} {r.true:>7.4f} {r.naive:>7.4f} {r.naive_bias:>+8.4f} "
              f"{r.ipw:>7.4f} {r.ipw_bias:>+9.4f} {r.snipw:>7.4f} {r.width:>7.4f} {r.covered:>4}/{seeds:<4} {r.boot:>4} "
              f"{r.ess:>7.0f} {r.explored:>8.0f} {r.unexplorable:>7.0f}")
    gate = table[(table.budget == "5%") & table.metric.isin(["recall", "fpr"])]
    ok = bool(len(gate) == 4 and (gate.covered >= 0.9 * seeds).all() and seeds >= 100)
    print("acceptance (5% budget, recall and FPR of both models covered in >= 90% of >= 100 seeds): "
          + ", ".join(f"{r.model} {r.metric} {r.covered}/{seeds}" for r in gate.itertuples())
          + f" -> {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budgets", default="0.01,0.05,0.10", help="exploration shares, comma-separated")
    ap.add_argument("--no-opt-out", action="store_true", help="skip the positivity (opt-out) rows")
    a = ap.parse_args(argv)
    budgets = tuple(float(x) for x in a.budgets.split(","))
    t0 = time.perf_counter()
    models = train_models()
    trained = time.perf_counter() - t0
    # spawn, not fork: the parent has loaded XGBoost's OpenMP runtime, which a forked child can hang on
    with ProcessPoolExecutor(a.workers, multiprocessing.get_context("spawn"), _init, (models,)) as ex:
        parts = list(ex.map(run_one, [(s, budgets, not a.no_opt_out) for s in range(1, a.seeds + 1)]))
    rows = [r for p in parts for r in p]
    print(f"# bench/counterfactual.py: {a.seeds} seeds x 200,000 payments over 30 days; models trained in "
          f"{trained:.0f}s; {time.perf_counter() - t0:.0f}s wall on {a.workers} workers ({os.cpu_count()} cpus)")
    print(f"thresholds (98.5% score quantile of world 0's days 60..91): "
          + ", ".join(f"{n} {t:.4f}" for n, (_, t) in models.items()))
    ok = report(rows, a.seeds)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
