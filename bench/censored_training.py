"""Benchmark: what the spec's `censoring:` options do to the next model trained on censored data.

Design (issue 17, item 4). Per seed s, one synthetic world (SynthConfig(seed=s), --rows
payments over 150 days, stable patterns, 2x fraud, as bench/counterfactual.py) and
specs/fraud.yaml's recipe throughout, built by ratchet's own Spark training-set job
(build_training_set) and trained by its trainer (train_model):

- production (v1): trained on days 0..45 of the full labels, its threshold blocks
  --block-rate of its test window (days 45..60; contracts/fraud.yaml's bootstrap rule);
- from day 60 on production decides every payment (its score on point-in-time features,
  build_recent_traffic): ratchet.data.censoring.censor at its threshold with
  ExplorationPolicy(share, seed=s), apply_logged: blocked payments lose their labels,
  columns decision / propensity are logged;
- the next model (v2) is built from days 60..110 (train) and 110..125 (its release's
  test window) under each variant's `censoring:` section; its threshold is the release's
  own rule on that test window: production's block rate matched with each labelled row
  weighted by 1 / propensity (unweighted on full labels);
- the reference "truth" builds the same windows from the uncensored world.

Every model (production too) is judged on the same held-out days 125..150: every payment,
true labels, features from the full-label world. Figures: AUC, average precision,
recall at production's block rate on that window (each model's own score quantile: ranking
at the operating point), and block rate and recall at the threshold its release set.
A second table scores each next model on the held-out features its own world computes (the
censored world's merchant_fraud_rate_30d never counts production's blocked frauds): what
its feature store would serve it.

    .venv/bin/python bench/censored_training.py [--rows 300000] [--seeds 1,2,3,4,5] [--share 0.05]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORLD = dict(drift_speed=0.0, new_pattern_day=-1, fraud_scale=2.0, new_country=None)
DAYS = 150
START = date(2025, 1, 1)
#: (first day, end day) of each window, days from START.
PROD_TRAIN, PROD_TEST, NEXT_TRAIN, NEXT_TEST, HELD_OUT = (0, 45), (45, 60), (60, 110), (110, 125), (125, 150)
#: The next model's variants: name -> the spec's censoring section (None: the uncensored truth).
VARIANTS: dict[str, dict[str, Any] | None] = {
    "truth (full labels)": None,
    "none / drop": {"explored": "none", "censored": "drop"},
    "IPW / drop": {"explored": "inverse_propensity", "censored": "drop"},
    "none / genuine": {"explored": "none", "censored": "genuine"},
    "IPW / genuine w=1": {"explored": "inverse_propensity", "censored": "genuine"},
    "IPW / genuine w=0.1": {"explored": "inverse_propensity", "censored": "genuine", "censored_weight": 0.1},
}
#: The variant the others are compared with, seed by seed: the spec's default censoring section.
BASE = "none / drop"
CLOCK = datetime(2100, 1, 1)


def _day(n: int) -> str:
    return (START + timedelta(days=n)).isoformat()


def spec_for(train: tuple[int, int], test: tuple[int, int], censoring: dict[str, Any] | None) -> Any:
    """specs/fraud.yaml with explicit windows and a `censoring:` section, parsed as a spec file is."""
    import yaml

    from ratchet.train.spec import parse_spec

    doc = yaml.safe_load((ROOT / "specs/fraud.yaml").read_text())
    # as_of after every label (synthetic delays are at most 90 days): no window row is immature
    doc["windows"] = {"train_start": _day(train[0]), "train_end": _day(train[1]), "test_start": _day(test[0]),
                      "test_end": _day(test[1]), "as_of": _day(DAYS + 91)}
    if censoring is not None:
        doc["censoring"] = censoring
    return parse_spec(yaml.safe_dump(doc, sort_keys=False), path="specs/fraud.yaml (bench copy)")


def release_threshold(prod: Any, booster: Any, test: Any, prod_threshold: float) -> float:
    """The release's match_baseline_block_rate threshold on its test window (ratchet.contracts.evaluate):
    production's block rate there, both weighted by 1 / propensity on censored data."""
    from ratchet.data import columns as C
    from ratchet.evaluate.metrics import threshold_for_block_rate
    from ratchet.train.trainer import predict

    w = 1.0 / test[C.PROPENSITY].to_numpy(float) if C.PROPENSITY in test.columns else None
    blocked = predict(prod, test) >= prod_threshold
    rate = float(blocked.mean() if w is None else np.sum(w * blocked) / np.sum(w))
    return threshold_for_block_rate(predict(booster, test), rate, w)


def figures(y: np.ndarray, score: np.ndarray, block_rate: float, threshold: float) -> dict[str, float]:
    """AUC, AP, recall at `block_rate` (own quantile), block rate and recall at `threshold`."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from ratchet.evaluate.metrics import threshold_for_block_rate

    fraud = y == 1
    at_rate = score >= threshold_for_block_rate(score, block_rate)
    at_t = score >= threshold
    return {"auc": float(roc_auc_score(y, score)), "ap": float(average_precision_score(y, score)),
            "recall_at_br": float(at_rate[fraud].mean()), "block_rate": float(at_t.mean()),
            "recall": float(at_t[fraud].mean())}


def run_seed(spark: Any, seed: int, rows: int, share: float, block_rate: float, tmp: Path) -> list[dict[str, Any]]:
    """One world: production, its censored logs, every variant of the next model, all judged on the held-out days."""
    import pandas as pd

    from ratchet.data import columns as C
    from ratchet.data.censoring import apply_logged, censor
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.data.trainingset import build_recent_traffic, build_training_set
    from ratchet.evaluate.metrics import threshold_for_block_rate
    from ratchet.exploration import ExplorationPolicy
    from ratchet.train.trainer import predict, train_model

    out = tmp / f"seed{seed}"
    out.mkdir()
    raw = generate(SynthConfig(rows=rows, seed=seed, days=DAYS, start=START.isoformat(), **WORLD))
    truth_path = out / "truth.parquet"
    raw.to_parquet(truth_path, index=False)

    spec = spec_for(PROD_TRAIN, PROD_TEST, None)
    ts = build_training_set(truth_path, spec, out / "v1", spark=spark, clock=CLOCK)
    prod = train_model(pd.read_parquet(ts.train_path), spec).booster
    prod_threshold = threshold_for_block_rate(predict(prod, pd.read_parquet(ts.test_path)), block_rate)

    # production decides every later payment, on features from the full-label world (as the demo's v1 does)
    since = datetime.fromisoformat(_day(NEXT_TRAIN[0]))
    traffic = pd.read_parquet(build_recent_traffic(truth_path, spec, out / "traffic.parquet", start=since,
                                                   end=datetime.fromisoformat(_day(DAYS + 1)), spark=spark))
    decided = raw.set_index(raw[C.TRANSACTION_ID].astype(str)).loc[traffic[C.TRANSACTION_ID].astype(str)]
    logged = censor(decided.reset_index(drop=True), predict(prod, traffic), prod_threshold,
                    ExplorationPolicy(share=share, seed=seed))
    censored_path = out / "censored.parquet"
    apply_logged(raw, logged).to_parquet(censored_path, index=False)

    held = traffic[pd.to_datetime(traffic[C.TS]) >= pd.Timestamp(_day(HELD_OUT[0]))].reset_index(drop=True)
    y = held["label"].to_numpy(dtype=int)
    # the same payments as v2's feature store would see them: no chargeback of production's blocks
    held_seen = pd.read_parquet(build_recent_traffic(censored_path, spec, out / "held-seen.parquet", spark=spark,
                                                     start=datetime.fromisoformat(_day(HELD_OUT[0])),
                                                     end=datetime.fromisoformat(_day(DAYS + 1))))
    assert (held_seen[C.TRANSACTION_ID].to_numpy() == held[C.TRANSACTION_ID].to_numpy()).all()
    prod_scores = predict(prod, held)
    held_rate = float((prod_scores >= prod_threshold).mean())  # production's block rate on the held-out days
    common = {"seed": seed, "held_rows": len(held), "held_frauds": int(y.sum()), "prod_block_rate": held_rate}
    results = [{**common, "variant": "production (v1)", "train_rows": ts.rows_train,
                "train_frauds": int(pd.read_parquet(ts.train_path)["label"].sum()),
                **figures(y, prod_scores, held_rate, prod_threshold)}]

    builds: dict[tuple[str, str], Any] = {}  # the job's output depends on censoring.censored only
    for name, section in VARIANTS.items():
        vspec = spec_for(NEXT_TRAIN, NEXT_TEST, section)
        data = truth_path if section is None else censored_path
        key = ("truth" if section is None else "censored", vspec.censoring.censored)
        if key not in builds:
            built = build_training_set(data, vspec, out / f"v2-{key[0]}-{key[1]}", spark=spark, clock=CLOCK)
            builds[key] = (built, pd.read_parquet(built.train_path), pd.read_parquet(built.test_path))
        built, train, test = builds[key]
        model = train_model(train, vspec)
        t = release_threshold(prod, model.booster, test, prod_threshold)
        seen = figures(y, predict(model.booster, held if section is None else held_seen), held_rate, t)
        results.append({**common, "variant": name, "train_rows": len(train), "train_frauds": model.positives,
                        "rows_censored": built.rows_censored, "rows_explored": built.rows_explored,
                        "max_weight": model.training.get("sample_weight", {}).get("max_weight", 1.0),
                        **figures(y, predict(model.booster, held), held_rate, t),
                        **{f"seen_{k}": v for k, v in seen.items()}})
    return results


def report(rows: list[dict[str, Any]]) -> None:
    """Mean and standard deviation over seeds, one line per model."""
    import pandas as pd

    df = pd.DataFrame(rows)
    seeds = df["seed"].nunique()
    first = df[df.variant == "production (v1)"]
    print(f"held-out days {HELD_OUT[0]}..{HELD_OUT[1]}: {first.held_rows.mean():,.0f} payments, "
          f"{first.held_frauds.mean():,.0f} frauds (means over {seeds} seeds); production blocks "
          f"{first.prod_block_rate.mean():.4f} of them")
    cens = df[df.variant == BASE]
    if len(cens):
        print(f"next train window (days {NEXT_TRAIN[0]}..{NEXT_TRAIN[1]}) of the censored world: "
              f"{cens.rows_censored.mean():,.0f} censored rows, {cens.rows_explored.mean():,.0f} explored "
              "(train + test windows)")
    cols = ("auc", "ap", "recall_at_br", "block_rate", "recall")
    head = f"{'model':<22} {'train rows':>10} {'frauds':>7} " + " ".join(
        f"{h:>15}" for h in ("AUC", "AP", "recall@prod BR", "BR at its thr", "recall at thr"))
    print(head)
    for name, g in df.groupby("variant", sort=False):
        cells = " ".join(f"{g[c].mean():>8.4f} ±{g[c].std(ddof=1) if len(g) > 1 else 0:.4f}" for c in cols)
        print(f"{name:<22} {g.train_rows.mean():>10,.0f} {g.train_frauds.mean():>7,.0f} {cells}")
    print("the same, each model on the held-out features its own world computes (censored variants: "
          "merchant_fraud_rate_30d without production's blocked frauds):")
    print(head)
    for name, g in df[df.variant != "production (v1)"].groupby("variant", sort=False):
        cells = " ".join(f"{g['seen_' + c].mean():>8.4f} ±{g['seen_' + c].std(ddof=1) if len(g) > 1 else 0:.4f}"
                         for c in cols)
        print(f"{name:<22} {g.train_rows.mean():>10,.0f} {g.train_frauds.mean():>7,.0f} {cells}")
    base = df[df.variant == BASE].set_index("seed")
    print(f"paired by seed, minus {BASE!r} (the spec's default), held-out features of the full-label world: "
          "mean ±sd [seeds better]")
    for name, g in df[~df.variant.isin(["production (v1)", BASE])].groupby("variant", sort=False):
        d = g.set_index("seed")[["auc", "ap", "recall_at_br"]] - base[["auc", "ap", "recall_at_br"]]
        print(f"  {name:<22} " + "  ".join(
            f"{c} {d[c].mean():+.4f} ±{d[c].std(ddof=1) if len(d) > 1 else 0:.4f} [{int((d[c] > 0).sum())}/{len(d)}]"
            for c in d.columns))
    print("per seed, AUC / AP / recall@prod BR:")
    for name, g in df.groupby("variant", sort=False):
        print(f"  {name:<22} " + "  ".join(f"s{r.seed}: {r.auc:.4f} / {r.ap:.4f} / {r.recall_at_br:.4f}"
                                            for r in g.itertuples()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000, help="payments per world (150 days)")
    ap.add_argument("--seeds", default="1,2,3,4,5", help="world and exploration seeds, comma-separated")
    ap.add_argument("--share", type=float, default=0.05, help="exploration budget: share of would-be blocks allowed")
    ap.add_argument("--block-rate", type=float, default=0.01, help="production's block rate on its test window")
    a = ap.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from ratchet.data.spark import get_spark

    seeds = [int(s) for s in a.seeds.split(",")]
    t0 = time.perf_counter()
    spark = get_spark()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ratchet-censored-training-") as tmp:
        for s in seeds:
            started = time.perf_counter()
            rows += run_seed(spark, s, a.rows, a.share, a.block_rate, Path(tmp))
            print(f"[bench] seed {s}: {time.perf_counter() - started:.0f}s", flush=True)
    print(f"# bench/censored_training.py: {len(seeds)} seeds x {a.rows:,} payments over {DAYS} days, share "
          f"{a.share:.0%}, production blocks {a.block_rate:.1%}; {time.perf_counter() - t0:.0f}s wall "
          f"({platform.machine()}, {os.cpu_count()} cpus)")
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
