"""Distributed XGBoost on Spark (xgboost.spark), for training sets beyond one machine.

Chosen by the spec (``xgboost.distributed: true``; ``spark.xgboost_workers`` workers).
The estimator is only the transport: the native Booster it trains is taken out, given
the spec's feature names and saved as UBJSON like the single-process path, so the
registry, serving and scoring never know how a model was trained.

    spark = spark_for(spec.spark)
    result = train_distributed(spark.read.parquet("out/train.parquet"), spec)
    save_model(result.booster, "out/model.ubj")
"""

from __future__ import annotations

import re
import time
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ratchet.errors import MissingColumnError, RatchetError
from ratchet.train.spec import TrainingSpec
from ratchet.train.trainer import LABEL_COLUMN, TrainResult

#: Parameters xgboost.spark refuses or sets itself: threads come from spark.task.cpus,
#: the objective from the label (binary:logistic for two classes).
_SPARK_OWNED = ("nthread", "n_jobs", "objective")


def estimator_params(spec: TrainingSpec) -> dict[str, Any]:
    """The spec's XGBoost parameters as SparkXGBClassifier keyword arguments."""
    params = dict(spec.xgboost.params)
    objective = params.get("objective", "binary:logistic")
    if objective != "binary:logistic":
        raise RatchetError(f"distributed training fits binary:logistic only; the spec asks for {objective!r}: "
                           "drop xgboost.params.objective or set xgboost.distributed: false")
    out = {k: v for k, v in params.items() if k not in _SPARK_OWNED}
    out["n_estimators"] = spec.xgboost.num_boost_round
    return out


def _local_slots(master: str) -> int | None:
    """Task slots of a local[N] master (None when not local or not countable here)."""
    import os

    m = re.match(r"^local(?:\[(\d+|\*)(?:,\d+)?\])?$", master)
    if not m:
        return None
    n = m.group(1)
    if n == "*":
        return os.cpu_count() or 1
    return int(n or 1)


def train_distributed(train: DataFrame, spec: TrainingSpec, num_workers: int | None = None) -> TrainResult:
    """Fit XGBoost (hist) with xgboost.spark on `num_workers` Spark tasks (default: the spec's).

    `train` is the training-set job's train window (label and feature columns). Rows are
    ordered by transaction_id first, so the split across workers does not depend on how
    Spark happened to read the files. Raises like train_model: a missing column is named,
    a window without both labels is refused.
    """
    from xgboost.spark import SparkXGBClassifier

    workers = num_workers or spec.spark.xgboost_workers
    features = list(spec.features)
    missing = [c for c in [LABEL_COLUMN, *features] if c not in train.columns]
    if missing:
        raise MissingColumnError(f"the training set lacks column(s) {', '.join(missing)}; "
                                 "it must come from the training-set job with the same spec features")
    slots = _local_slots(train.sparkSession.conf.get("spark.master", "") or "")
    if slots is not None and workers > slots:
        raise RatchetError(f"spark.xgboost_workers is {workers} but the local Spark master has {slots} task slots; "
                           "lower xgboost_workers or raise local[N] (each worker needs its own slot)")
    started = time.perf_counter()
    counts = train.agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col(LABEL_COLUMN).cast("long")).alias("pos")).first()
    rows, positives = int(counts["rows"]), int(counts["pos"] or 0)
    if rows == 0 or positives in (0, rows):
        raise RatchetError(
            f"cannot train on {rows} rows with {positives} positives: the training window "
            "needs both labels; widen windows.train_days or check the data"
        )
    if "transaction_id" in train.columns:  # Spark's read order varies; training must not
        train = train.orderBy("transaction_id")
    data = train.select(F.col(LABEL_COLUMN).cast("int").alias(LABEL_COLUMN),
                        *[F.col(f).cast("double").alias(f) for f in features])
    estimator = SparkXGBClassifier(features_col=features, label_col=LABEL_COLUMN, num_workers=workers,
                                   force_repartition=True, verbose=False, **estimator_params(spec))
    booster = estimator.fit(data).get_booster()
    # exactly what the single-process path saves: names from the spec, no feature types
    booster.feature_names = features
    booster.feature_types = None
    return TrainResult(booster, tuple(features), rows, positives, time.perf_counter() - started)
