"""The one place ratchet builds a SparkSession.

Local mode by default, sized for a laptop or a 2-core CI runner; pass a cluster master
(``spark://host:7077``, ``k8s://...``) or a Spark Connect URL (``sc://host:15002``) to run
the same job elsewhere. Always UTC, so hour-of-day and window bounds never depend on the
machine's time zone.

    spark = get_spark()                      # local[2]
    spark = get_spark("sc://spark:15002")    # Spark Connect
"""

from __future__ import annotations

from pyspark.sql import SparkSession

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
    settings.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not master.startswith("sc://"):
        spark.sparkContext.setLogLevel("ERROR")
    return spark
