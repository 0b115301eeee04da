"""Shared fixtures. One SparkSession for the whole test run: starting Spark costs seconds."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from ratchet.data.spark import get_spark

    session = get_spark("local[2]", "ratchet-tests", conf={"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()
