"""A class-data archive for the Spark driver's JVM, so each Spark start loads its classes mapped.

Every release step, test and demo run that starts Spark starts a fresh JVM, and a fresh JVM
spends seconds loading and verifying Spark's classes (measured on the 2-core box: session
start 6.3 s -> 3.7 s, a small window job 3.5 s -> 2.4 s with the archive). Java's dynamic
class-data sharing (JDK 13+) records the classes one representative run loaded into a file
that later JVMs map instead. It changes no result, only start-up time; a JVM that cannot use
the file (another Java, another classpath) ignores it (``-Xshare:auto``) and starts as before.

The archive lives in the environment that has pyspark (``sys.prefix/share/ratchet/``, one
per pyspark version); ``make venv`` builds it once:

    python -m ratchet.data.class_archive            # build (about 20 s), print where
    RATCHET_SPARK_CLASS_ARCHIVE=off ...             # start Spark without it
    RATCHET_SPARK_CLASS_ARCHIVE=/path/spark.jsa ... # use (or build) another file

get_spark (ratchet.data.spark) adds the option for a driver it launches itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHIVE_ENV = "RATCHET_SPARK_CLASS_ARCHIVE"
#: silence the JVM's notes on classes it cannot archive (signed jars, old class files)
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def default_path() -> Path:
    """Where this environment keeps the archive: one file per pyspark version."""
    import pyspark

    return Path(sys.prefix) / "share" / "ratchet" / f"spark-{pyspark.__version__}-classes.jsa"


def archive_path(env: dict[str, str] | None = None) -> Path | None:
    """The archive's path from $RATCHET_SPARK_CLASS_ARCHIVE (``off`` for none), else the default."""
    value = (os.environ if env is None else env).get(ARCHIVE_ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    return Path(value) if value else default_path()


def java_options(existing: str, archive: Path | None) -> str:
    """`existing` driver JVM options plus the archive's, when the archive exists (else unchanged).

        java_options("-XX:+UseParallelGC", Path("spark.jsa"))
        # '-XX:+UseParallelGC -XX:SharedArchiveFile=spark.jsa -Xshare:auto -Xlog:cds=off ...'
    """
    if archive is None or not archive.is_file() or "SharedArchiveFile" in existing or "ArchiveClassesAtExit" in existing:
        return existing
    return f"{existing} -XX:SharedArchiveFile={archive} -Xshare:auto {QUIET}".strip()


def record(archive: Path) -> None:
    """Start Spark writing `archive` at JVM exit, run a job like a release's training set, stop.

    The JVM writes the file when this process ends; run it as a child (see build)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from ratchet.data.spark import LOCAL_CONF, get_spark
    from ratchet.data.spec import known_features
    from ratchet.data.synth import SynthConfig, write_transactions
    from ratchet.data.trainingset import add_features

    options = f"{LOCAL_CONF['spark.driver.extraJavaOptions']} -XX:ArchiveClassesAtExit={archive} {QUIET}"
    with tempfile.TemporaryDirectory(prefix="ratchet-classes-") as tmp:
        raw = write_transactions(SynthConfig(rows=5_000, seed=1, days=60), Path(tmp) / "tx.parquet", progress=False)
        spark = get_spark("local[2]", "ratchet-class-archive", conf={"spark.driver.extraJavaOptions": options})
        df = spark.read.parquet(str(raw))
        feats = add_features(df, known_features())
        feats.write.mode("overwrite").parquet(str(Path(tmp) / "features"))
        back = spark.read.parquet(str(Path(tmp) / "features"))
        back.groupBy("merchant_category").count().toPandas()
        back.limit(100).toPandas()
        spark.stop()


def build(archive: Path | None = None) -> Path:
    """Record the archive in a child process and move it into place; returns its path.

    Raises RuntimeError naming the child's last output when the JVM wrote no archive."""
    archive = archive or default_path()
    archive.parent.mkdir(parents=True, exist_ok=True)
    part = archive.with_name(f".{archive.name}.{os.getpid()}.part")
    part.unlink(missing_ok=True)
    env = {**os.environ, ARCHIVE_ENV: "off"}
    done = subprocess.run([sys.executable, "-m", "ratchet.data.class_archive", "--record", str(part)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0 or not part.is_file():
        part.unlink(missing_ok=True)
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError("the JVM wrote no class-data archive (Spark starts without one, only slower): "
                           + " | ".join(tail))
    os.replace(part, archive)
    return archive


def main(argv: list[str] | None = None) -> int:
    """``python -m ratchet.data.class_archive [PATH]``: build the archive (a warning, exit 0, if it cannot)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--record"]:
        record(Path(args[1]))
        return 0
    target = Path(args[0]) if args else archive_path()
    if target is None:
        print(f"{ARCHIVE_ENV}=off: no Spark class-data archive built")
        return 0
    try:
        print(f"Spark class-data archive: {build(target)}")
    except RuntimeError as e:
        print(f"warning: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
