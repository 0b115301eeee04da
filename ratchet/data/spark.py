"""The one place ratchet builds a SparkSession.

Local mode by default, sized for a laptop or a 2-core CI runner; pass a cluster master
(``spark://host:7077``, ``k8s://...``) or a Spark Connect URL (``sc://host:15002``) to run
the same job elsewhere. Always UTC, so hour-of-day and window bounds never depend on the
machine's time zone.

    spark = get_spark()                      # local[2]
    spark = get_spark("sc://spark:15002")    # Spark Connect
    spark = spark_for(spec.spark)            # the training spec's spark: section

The spec's ``spark:`` section (ratchet.data.spec.SparkSpec) names the master, extra
settings and, for a ``k8s://`` master, the executor pods; RATCHET_SPARK_MASTER overrides
the master, so one spec runs on a laptop and on the cluster.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from ratchet.data.class_archive import archive_path, java_options

if TYPE_CHECKING:
    from ratchet.data.spec import SparkSpec

#: Settings every session gets: UTC, and Parquet nanosecond timestamps readable
#: (pandas writes them; Spark otherwise refuses the file; ratchet converts them itself).
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}

#: Extra settings for local mode: few shuffle partitions, no UI, modest memory.
LOCAL_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "2g",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
}


def get_spark(master: str = "local[2]", app_name: str = "ratchet", conf: dict[str, str] | None = None) -> SparkSession:
    """The active SparkSession, or a new one for `master` with ratchet's settings.

    An already active session is reused as is (tests share one; a notebook keeps its own),
    except that the session time zone is forced to UTC.

        spark = get_spark()
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active
    settings = dict(BASE_CONF)
    if master.startswith("local"):
        settings.update(LOCAL_CONF)
        # local Python workers (UDFs, xgboost.spark) must run the interpreter that has ratchet
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings.update(conf or {})
    if not master.startswith("sc://"):  # a driver this process launches maps the class-data archive
        options = java_options(settings.get("spark.driver.extraJavaOptions", ""), archive_path())
        if options:
            settings["spark.driver.extraJavaOptions"] = options
    builder = SparkSession.builder.appName(app_name)
    builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not master.startswith("sc://"):
        spark.sparkContext.setLogLevel("ERROR")
    return spark


#: Where each executor setting of the spec goes on Spark on Kubernetes.
EXECUTOR_KEYS: dict[str, str] = {
    "image": "spark.kubernetes.container.image",
    "instances": "spark.executor.instances",
    "cores": "spark.executor.cores",
    "memory": "spark.executor.memory",
}


def session_settings(spec: SparkSpec, env: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The master (RATCHET_SPARK_MASTER wins over the spec) and the extra Spark settings.

    Executor settings apply to a k8s:// master only: Spark Connect's server and a
    standalone cluster size their executors themselves. The spec's `conf` wins over them.

        master, conf = session_settings(spec.spark)
    """
    master = spec.resolved_master(env)
    conf: dict[str, str] = {}
    if master.startswith("k8s://"):
        for name, key in EXECUTOR_KEYS.items():
            value = getattr(spec.executor, name)
            if value is not None:
                conf[key] = str(value)
    conf.update(spec.conf)
    return master, conf


def spark_for(spec: SparkSpec, app_name: str = "ratchet") -> SparkSession:
    """The SparkSession a spec's spark: section asks for (an active one is reused)."""
    master, conf = session_settings(spec)
    return get_spark(master, app_name, conf)
