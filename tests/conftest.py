"""Shared fixtures. One SparkSession for the whole test run: starting Spark costs seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


#: The modules that take longest (whole kfp releases, a Spark cluster, crash loops), longest
#: first: `make test` runs the suite on two workers a module at a time (pytest -n 2 --dist
#: loadfile), and a long module that starts last ends the run alone. Measured with
#: --durations=0; a stale list only costs balance, never a test.
LONGEST_FIRST = ("test_release_e2e.py", "test_bad_data.py", "test_spark_cluster.py", "test_release_handbook.py",
                 "test_controller_crash.py", "test_trainingset.py", "test_registry.py", "test_serving.py",
                 "test_mlflow_server.py", "test_service_crash.py", "test_local_backend.py", "test_scale_out.py",
                 "test_monitor_pipeline.py", "test_controller.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (LONGEST_FIRST), the rest in their usual order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
