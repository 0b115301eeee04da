"""Benchmark: model quality on data ratchet did not generate, next to the published baselines.

    .venv/bin/python bench/quality.py                       # handbook protocol + synthetic release
    .venv/bin/python bench/quality.py --only handbook

Handbook: the Fraud Detection Handbook's simulated transactions
(../shared/data/fraud-handbook, Le Borgne et al., *Reproducible Machine Learning for
Credit Card Fraud Detection*, ch. 3.4) on the book's protocol: train on 7 days
(2018-07-25 .. 07-31), a 7-day delay period, test on the next 7 days (08-08 .. 08-14),
and drop from each test day the cards already known to be compromised (frauds in the
training week and in the delay period up to that day minus 7 days, as the book's
get_train_test_set does). The model is what specs/handbook.yaml declares (a column
mapping and feature names) and ratchet's own Spark job and trainer build. Two rows on the
same test set: the windows set to the book's 7-day training week, and the spec's own
windows (28 training days before the same delay period and test week). Printed next to
the book's table.

Synthetic: the demo's data (300k transactions, seed 7) and its second release's
windows (as_of = the end of the data), specs/fraud.yaml, scored on its test window.

Figures: AUC (ROC), average precision, card precision@100 (per day, distinct cards;
ratchet.evaluate.metrics.card_precision_at_k).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HANDBOOK = ROOT.parent / "shared" / "data" / "fraud-handbook" / "parquet"
#: The book's table (ch. 3.4, same data and protocol): AUC, AP, CP@100.
BOOK = {"logistic regression": (0.871, 0.606, 0.291), "random forest": (0.867, 0.658, 0.287),
        "XGBoost (book)": (0.862, 0.639, 0.273)}
TRAIN_START, DAYS, DELAY = date(2018, 7, 25), 7, 7


def figures(frame, score) -> tuple[float, float, float]:
    """AUC, AP and CP@100 of `score` on a scored test frame (ts, card_id, label)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from ratchet.evaluate.metrics import card_precision_at_k

    y = frame["label"].to_numpy()
    cp = card_precision_at_k(frame["ts"].to_numpy(), frame["card_id"].to_numpy(), y, score, k=100).value
    return float(roc_auc_score(y, score)), float(average_precision_score(y, score)), float(cp)


def known_compromised_filter(test, raw_frauds):
    """The book's test set: each test day without the cards whose fraud was known by then.

    Known at test day d (0..6): the frauds from the training week's first day to day
    TRAIN_START + DAYS + d - 1 (the delay period's days up to d - 1), by calendar day."""
    import pandas as pd

    day = pd.to_datetime(test["ts"]).dt.normalize()
    fraud_day = pd.to_datetime(raw_frauds["ts"]).dt.normalize()
    keep = pd.Series(True, index=test.index)
    for d in range(DAYS):
        test_day = pd.Timestamp(TRAIN_START + timedelta(days=DAYS + DELAY + d))
        known_until = pd.Timestamp(TRAIN_START + timedelta(days=DAYS + d - 1))
        known = set(raw_frauds.loc[(fraud_day >= pd.Timestamp(TRAIN_START)) & (fraud_day <= known_until), "card_id"]
                    .astype(str))
        on_day = day == test_day
        keep &= ~(on_day & test["card_id"].astype(str).isin(known))
    return test[keep]


def handbook(spark, tmp: Path, book_windows: bool) -> dict:
    """Train and score on the book's test week; returns figures and sizes.

    book_windows: train on the book's 7 days; otherwise on the spec's own windows (28 days
    before the same delay period and test week). The test set is the same either way."""
    import pandas as pd

    from ratchet.data import columns as C
    from ratchet.data.spec import Windows
    from ratchet.data.trainingset import build_training_set
    from ratchet.train.spec import load_spec
    from ratchet.train.trainer import predict, train_model

    spec = load_spec(ROOT / "specs/handbook.yaml")
    d = lambda n: (TRAIN_START + timedelta(days=n)).isoformat()  # noqa: E731
    book = Windows(train_start=d(0), train_end=d(DAYS), test_start=d(DAYS + DELAY),
                   test_end=d(2 * DAYS + DELAY), as_of=d(2 * DAYS + 2 * DELAY))
    if book_windows:
        spec = replace(spec, windows=book)
    elif (str(spec.windows.test_start)[:10], str(spec.windows.test_end)[:10]) != (book.test_start, book.test_end):
        raise SystemExit(f"specs/handbook.yaml tests {spec.windows.test_start} .. {spec.windows.test_end}, "
                         f"not the book's test week {book.test_start} .. {book.test_end}")
    started = time.perf_counter()
    ts = build_training_set(HANDBOOK, spec, tmp / ("book" if book_windows else "spec"), spark=spark,
                            clock=datetime(2018, 12, 31))
    built = time.perf_counter() - started
    train, test = pd.read_parquet(ts.train_path), pd.read_parquet(ts.test_path)
    started = time.perf_counter()
    model = train_model(train, spec)
    trained = time.perf_counter() - started
    raw = pd.read_parquet(HANDBOOK, columns=[spec.dataset.source(c) for c in (C.TS, C.CARD_ID, C.IS_FRAUD)])
    raw.columns = [C.TS, C.CARD_ID, C.IS_FRAUD]
    frauds = raw[raw[C.IS_FRAUD] == 1]
    test = known_compromised_filter(test, frauds)
    score = predict(model.booster, test)
    auc, ap, cp = figures(test, score)
    return {"auc": auc, "ap": ap, "cp100": cp, "train_rows": len(train), "test_rows": len(test),
            "test_frauds": int(test["label"].sum()), "features": len(spec.features),
            "train": f"{spec.windows.train_start} .. {spec.windows.train_end}",
            "build_s": built, "train_s": trained}


def synthetic(spark, tmp: Path) -> dict:
    """The demo's second release (as_of = end of the data) on its own test window."""
    import pandas as pd

    from ratchet.data.synth import SynthConfig, write_transactions
    from ratchet.data.trainingset import build_training_set
    from ratchet.train.spec import load_spec
    from ratchet.train.trainer import predict, train_model

    config = SynthConfig(rows=300_000, seed=7, new_country_day=300, new_pattern_day=int(365 * 0.4))
    data = write_transactions(config, tmp / "synth.parquet", progress=False)
    as_of = (date.fromisoformat(config.start) + timedelta(days=config.days)).isoformat()
    spec = load_spec(ROOT / "specs/fraud.yaml")
    ts = build_training_set(data, spec, tmp / "synth", spark=spark, as_of=as_of, clock=datetime(2100, 1, 1))
    train, test = pd.read_parquet(ts.train_path), pd.read_parquet(ts.test_path)
    model = train_model(train, spec)
    auc, ap, cp = figures(test, predict(model.booster, test))
    return {"auc": auc, "ap": ap, "cp100": cp, "train_rows": len(train), "test_rows": len(test),
            "test_frauds": int(test["label"].sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("handbook", "synthetic"), help="run one part")
    args = p.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from ratchet.data.spark import get_spark

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    spark = get_spark()
    with tempfile.TemporaryDirectory(prefix="ratchet-quality-") as tmp:
        if args.only in (None, "handbook"):
            if not HANDBOOK.exists():
                raise SystemExit(f"no handbook data at {HANDBOOK}")
            rows = {"ratchet, 7-day train": handbook(spark, Path(tmp), book_windows=True),
                    "ratchet, 28-day train": handbook(spark, Path(tmp), book_windows=False)}
            first = next(iter(rows.values()))
            print(f"\nhandbook, book protocol: test {first['test_rows']:,} rows with {first['test_frauds']} frauds "
                  f"(known compromised cards dropped), {first['features']} features of specs/handbook.yaml")
            for name, r in rows.items():
                print(f"  {name}: train {r['train']} ({r['train_rows']:,} rows), test {r['test_rows']:,} rows; "
                      f"training set {r['build_s']:.1f}s, training {r['train_s']:.1f}s")
            print(f"{'model':<22} {'AUC':>6} {'AP':>6} {'CP@100':>7}")
            for name, (auc, ap, cp) in BOOK.items():
                print(f"{name:<22} {auc:>6.3f} {ap:>6.3f} {cp:>7.3f}")
            for name, r in rows.items():
                print(f"{name:<22} {r['auc']:>6.3f} {r['ap']:>6.3f} {r['cp100']:>7.3f}", flush=True)
        if args.only in (None, "synthetic"):
            r = synthetic(spark, Path(tmp))
            print(f"\nsynthetic, the demo's second release (300k rows, seed 7, specs/fraud.yaml): test "
                  f"{r['test_rows']:,} rows with {r['test_frauds']} frauds")
            print(f"{'ratchet':<22} {r['auc']:>6.3f} {r['ap']:>6.3f} {r['cp100']:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
