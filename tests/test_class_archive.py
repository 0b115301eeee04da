"""The Spark driver's class-data archive: which options a driver gets, and a real driver using it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ratchet.data.class_archive import ARCHIVE_ENV, QUIET, archive_path, default_path, java_options


def test_options_name_the_archive_only_when_it_exists(tmp_path):
    archive = tmp_path / "spark.jsa"
    assert java_options("-XX:+UseParallelGC", archive) == "-XX:+UseParallelGC"  # not built yet
    assert java_options("-XX:+UseParallelGC", None) == "-XX:+UseParallelGC"
    archive.write_bytes(b"x")
    assert java_options("-XX:+UseParallelGC", archive) == \
        f"-XX:+UseParallelGC -XX:SharedArchiveFile={archive} -Xshare:auto {QUIET}"
    assert java_options("", archive).startswith("-XX:SharedArchiveFile=")
    # a caller that records or names an archive itself keeps its own
    for own in (f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}", "-XX:SharedArchiveFile=/elsewhere.jsa"):
        assert java_options(own, archive) == own


def test_the_environment_variable_moves_or_turns_off_the_archive(tmp_path):
    assert archive_path({}) == default_path()
    assert default_path().parent == Path(sys.prefix) / "share" / "ratchet"
    assert archive_path({ARCHIVE_ENV: str(tmp_path / "a.jsa")}) == tmp_path / "a.jsa"
    for off in ("off", "OFF", "0", "false", "no"):
        assert archive_path({ARCHIVE_ENV: off}) is None


def test_make_venv_built_the_archive_and_a_driver_maps_it(tmp_path):
    """The environment's archive exists (make venv builds it) and get_spark's JVM is started with it,
    class sharing on; the job's answer is the same as without the archive."""
    assert default_path().is_file(), f"no {default_path()}: run `.venv/bin/python -m ratchet.data.class_archive`"
    script = tmp_path / "probe.py"
    script.write_text(
        "from ratchet.data.spark import get_spark\n"
        "from pyspark.sql import functions as F\n"
        "s = get_spark('local[1]', 'archive-probe')\n"
        "jvm = s.sparkContext._jvm\n"
        "args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())\n"
        "bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(\n"
        "    jvm.java.lang.Class.forName('com.sun.management.HotSpotDiagnosticMXBean'))\n"
        "shared = bean.getVMOption('UseSharedSpaces').getValue()\n"
        "total = s.range(1000).select(F.sum((F.col('id') % 7) * 3)).first()[0]\n"
        "print([a for a in args if 'SharedArchiveFile' in a], shared, total)\n")
    env_on = {**_env(), ARCHIVE_ENV: ""}
    env_off = {**_env(), ARCHIVE_ENV: "off"}
    on = subprocess.run([sys.executable, str(script)], env=env_on, capture_output=True, text=True, timeout=300)
    off = subprocess.run([sys.executable, str(script)], env=env_off, capture_output=True, text=True, timeout=300)
    assert on.returncode == 0 and off.returncode == 0, on.stderr[-2000:] + off.stderr[-2000:]
    on_line, off_line = on.stdout.strip().splitlines()[-1], off.stdout.strip().splitlines()[-1]
    assert on_line == f"['-XX:SharedArchiveFile={default_path()}'] true 8991", on_line
    assert off_line.startswith("[] ") and off_line.endswith(" 8991"), off_line


def _env() -> dict[str, str]:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
