"""Score the test window on Spark, for test sets too large for one process.

Both boosters travel to the executors as UBJSON bytes (broadcast once), each task loads
them and scores its rows with ``inplace_predict``; only the scored table comes back to
the driver: label, candidate_score, baseline_score, baseline_threshold and the slice
columns, exactly the columns and dtypes of ``scoring.scored_table`` but without the
feature columns, which are most of the test set's bytes. Row order is Spark's read
order, which the contract ignores (it aggregates).

Which path runs is decided by the spec's ``spark:`` section: ``scoring: local`` or
``spark`` forces one; ``auto`` (the default) goes to Spark from ``scoring_min_rows``
test rows (default 5,000,000: about where the test set's feature columns no longer fit
comfortably in a 2-core, 8 GB pod's memory next to the two models).

    if use_spark_scoring(spec.spark, parquet_rows("out/test.parquet")):
        scored = spark_scored_table(spark.read.parquet("out/test.parquet"), candidate, baseline)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ratchet.data import columns as C
from ratchet.errors import MissingColumnError, RatchetError
from ratchet.evaluate.scoring import SLICE_COLUMNS, Thresholds, check_baseline_features
from ratchet.data.spec import SparkSpec
from ratchet.train.trainer import LABEL_COLUMN, feature_matrix

#: Rows of the train and test windows kept for the drift report when scoring on Spark.
DRIFT_SAMPLE_ROWS = 200_000


def use_spark_scoring(spec: SparkSpec, rows: int) -> bool:
    """True when the test set of `rows` rows is scored on Spark (see the module docstring)."""
    if spec.scoring == "auto":
        return rows >= spec.scoring_min_rows
    return spec.scoring == "spark"


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet file or folder, from its footers only (nothing is read)."""
    import pyarrow.dataset as ds

    return ds.dataset(str(path), format="parquet").count_rows()


def _ship(test: DataFrame, blob: bytes) -> Callable[[], bytes]:
    """The model bytes as executors see them: a broadcast, or the task closure on Spark Connect."""
    try:
        handle = test.sparkSession.sparkContext.broadcast(blob)
    except Exception:  # Spark Connect has no SparkContext; the bytes ride in the closure
        return lambda: blob
    return lambda: handle.value


def _load(blob: bytes) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(bytearray(blob))
    booster.set_param({"nthread": 1})  # one Spark task, one core
    return booster


def spark_scored_table(test: DataFrame, candidate: xgb.Booster, baseline: xgb.Booster | None = None,
                       baseline_thresholds: Thresholds | None = None) -> pd.DataFrame:
    """The scored table of `test` (a Spark DataFrame of the training-set job's test window),
    scored on the executors; same columns and checks as scoring.scored_table."""
    if LABEL_COLUMN not in test.columns:
        raise MissingColumnError(f"the test set has no '{LABEL_COLUMN}' column")
    if not candidate.feature_names:
        raise RatchetError("the model carries no feature names; it was not trained by ratchet")
    feature_matrix(pd.DataFrame(columns=test.columns), candidate.feature_names)  # names a missing feature
    if baseline is not None:
        check_baseline_features(baseline, test.columns)
    slices = [c for c in SLICE_COLUMNS if c in test.columns]
    features = [*candidate.feature_names, *(baseline.feature_names if baseline is not None else [])]
    fields = [T.StructField("label", T.ByteType()), T.StructField("candidate_score", T.FloatType())]
    if baseline is not None:
        fields.append(T.StructField("baseline_score", T.FloatType()))
        if baseline_thresholds is not None:
            fields.append(T.StructField("baseline_threshold", T.DoubleType()))
    fields += [test.schema[c] for c in slices]

    cand_bytes = _ship(test, bytes(candidate.save_raw("ubj")))
    base_bytes = _ship(test, bytes(baseline.save_raw("ubj"))) if baseline is not None else None
    thresholds = baseline_thresholds if baseline is not None else None

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        cand = _load(cand_bytes())
        base = _load(base_bytes()) if base_bytes is not None else None
        for pdf in batches:
            out = pd.DataFrame({"label": pdf[LABEL_COLUMN].astype("int8").to_numpy()})
            out["candidate_score"] = cand.inplace_predict(feature_matrix(pdf, cand.feature_names))
            if base is not None:
                out["baseline_score"] = base.inplace_predict(feature_matrix(pdf, base.feature_names))
                if thresholds is not None:
                    out["baseline_threshold"] = thresholds.per_row(pdf.get(C.MERCHANT_ID), len(pdf))
            for col in slices:
                out[col] = pdf[col].to_numpy()
            yield out

    needed = list(dict.fromkeys([LABEL_COLUMN, *features, *slices]))
    scored = test.select(*needed).mapInPandas(score, T.StructType(fields)).toPandas()
    for col in ("candidate_score", "baseline_score"):  # Arrow hands back float32 as is; keep it explicit
        if col in scored.columns:
            scored[col] = scored[col].astype(np.float32)
    return scored


def sample_frame(df: DataFrame, max_rows: int = DRIFT_SAMPLE_ROWS, seed: int = 7) -> pd.DataFrame:
    """At most about `max_rows` rows of `df` as pandas (a seeded sample), for the drift report."""
    rows = df.count()
    if rows > max_rows:
        df = df.sample(fraction=max_rows / rows, seed=seed)
    return df.toPandas()


def score_on_spark(test_path: str | Path, candidate: xgb.Booster, baseline: xgb.Booster | None,
                   baseline_thresholds: Thresholds | None, spec: SparkSpec,
                   train_path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(scored table, test sample, train sample or None) with the Spark session `spec` names."""
    from ratchet.data.spark import spark_for

    spark = spark_for(spec, "ratchet-evaluate")
    test = spark.read.parquet(str(test_path))
    scored = spark_scored_table(test, candidate, baseline, baseline_thresholds)
    train = sample_frame(spark.read.parquet(str(train_path))) if train_path and Path(train_path).exists() else None
    return scored, sample_frame(test), train
