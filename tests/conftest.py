"""Shared fixtures. One SparkSession for the whole test run: starting Spark costs seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from ratchet.data.spark import get_spark

    session = get_spark("local[2]", "ratchet-tests", conf={"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


def _handbook_dir() -> Path:
    """The third-party dataset: $RATCHET_HANDBOOK_DATA, ../shared/data next to the checkout,
    or the workplace's /work/shared/data (a clean clone may live elsewhere)."""
    import os

    candidates = [os.environ.get("RATCHET_HANDBOOK_DATA", ""),
                  Path(__file__).resolve().parents[2] / "shared" / "data" / "fraud-handbook" / "parquet",
                  "/work/shared/data/fraud-handbook/parquet"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return Path(candidates[1])


#: the Fraud Detection Handbook's Parquet folder (see ../shared/data/fraud-handbook/SOURCE.md)
HANDBOOK = _handbook_dir()
