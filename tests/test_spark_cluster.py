"""A real Spark standalone cluster (issue 16, item 4): master and worker started from pyspark's
own `bin/spark-class` on 127.0.0.1; the training-set job and xgboost.spark training run on it
through the spec's master (RATCHET_SPARK_MASTER), and give what local mode gives.

Each run is its own Python process (a process holds one SparkContext; the suite's session is
local[2]): the same script, once with local[2], once with spark://127.0.0.1:PORT. The
training sets must be identical row for row; the two distributed models (one XGBoost worker
each, on the same rows) must score the test window the same within float noise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name: cluster
label: is_fraud
windows: {maturity_days: 90, train_days: 60, gap_days: 0, test_days: 30}
filters:
  - {column: amount, op: ">", value: 0}
features: [amount, hour_of_day, is_online, cross_border, seconds_since_card_prev, amount_to_card_mean,
           card_count_24h, card_amount_24h, merchant_count_24h, merchant_fraud_rate_30d]
xgboost:
  num_boost_round: 30
  distributed: true
  params: {max_depth: 4, eta: 0.2, subsample: 1.0, colsample_bytree: 1.0}
spark:
  xgboost_workers: 1
checks:
  min_rows: 1000
  label_rate_min: 0.0005
  label_rate_max: 0.2
seed: 7
"""

SCRIPT = """
import json, sys
from ratchet.app.steps.release import train_step, training_set_step
from ratchet.train.trainer import load_model, predict
import pandas as pd
data, spec_yaml, uri, out = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3], sys.argv[4]
ts = training_set_step(data, spec_yaml, "cluster.yaml", "", uri, "fraud", out, out + "/reports")
from pyspark.sql import SparkSession
master = SparkSession.getActiveSession().sparkContext.master
info = train_step(ts["train_path"], spec_yaml, "cluster.yaml", out + "/model.ubj", out + "/reports")
test = pd.read_parquet(ts["test_path"]).sort_values("transaction_id", ignore_index=True)
test.assign(score=predict(load_model(info["model_path"]), test))[["transaction_id", "score"]].to_parquet(out + "/scores.parquet")
json.dump({"master": master, "train_path": ts["train_path"], "test_path": ts["test_path"],
           "rows": info["rows"]}, open(out + "/run.json", "w"))
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[1]} exited {proc.returncode}:\n{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"no {text!r} after {timeout:.0f}s in {path}:\n{path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """spark://127.0.0.1:PORT: one master, one worker (1 core, 1 GiB), from the venv's pyspark."""
    import pyspark

    tmp = tmp_path_factory.mktemp("spark-cluster")
    home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOG_DIR": str(tmp / "logs"), "SPARK_WORKER_DIR": str(tmp / "work"), "SPARK_NO_DAEMONIZE": "1"}
    port = _port()
    url = f"spark://127.0.0.1:{port}"
    procs = []
    try:
        master_log = tmp / "master.log"
        master = subprocess.Popen([str(home / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                                   "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(_port())],
                                  env=env, stdout=master_log.open("wb"), stderr=subprocess.STDOUT)
        procs.append(master)
        _wait_for(master_log, "I have been elected leader", master)
        worker_log = tmp / "worker.log"
        worker = subprocess.Popen([str(home / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker", url,
                                   "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                                   "--webui-port", str(_port()), "--work-dir", str(tmp / "work")],
                                  env=env, stdout=worker_log.open("wb"), stderr=subprocess.STDOUT)
        procs.append(worker)
        _wait_for(worker_log, "Successfully registered with master", worker)
        yield {"url": url, "tmp": tmp, "env": env, "worker_log": worker_log}
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _run(cluster: dict, master: str, data: Path, name: str) -> dict:
    tmp = cluster["tmp"]
    out = tmp / name
    (tmp / "spec.yaml").write_text(SPEC)
    (tmp / "run.py").write_text(SCRIPT)
    env = {**cluster["env"], "RATCHET_SPARK_MASTER": master}
    r = subprocess.run([sys.executable, str(tmp / "run.py"), str(data), str(tmp / "spec.yaml"),
                        f"sqlite:///{tmp / f'{name}.db'}", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{name} run failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return json.loads((out / "run.json").read_text()) | {"out": out}


def test_training_set_and_xgboost_on_a_standalone_cluster_match_local_mode(cluster):
    from ratchet.data.synth import SynthConfig, write_transactions

    data = write_transactions(SynthConfig(rows=40_000, days=200, seed=3, new_country=None, new_pattern_day=-1),
                              cluster["tmp"] / "tx.parquet")
    local = _run(cluster, "local[2]", data, "local")
    remote = _run(cluster, cluster["url"], data, "cluster")
    assert local["master"] == "local[2]" and remote["master"] == cluster["url"]
    # the cluster really ran tasks: the worker launched an executor for the job
    assert "Asked to launch executor app-" in cluster["worker_log"].read_text(errors="replace")

    for key in ("train_path", "test_path"):
        a = pd.read_parquet(local[key]).sort_values("transaction_id", ignore_index=True)
        b = pd.read_parquet(remote[key]).sort_values("transaction_id", ignore_index=True)
        assert len(a) > 1000
        pd.testing.assert_frame_equal(a, b[a.columns], check_exact=False, rtol=1e-9)

    assert local["rows"] == remote["rows"]
    sa = pd.read_parquet(local["out"] / "scores.parquet")
    sb = pd.read_parquet(remote["out"] / "scores.parquet")
    assert (sa["transaction_id"].to_numpy() == sb["transaction_id"].to_numpy()).all()
    diff = np.abs(sa["score"].to_numpy() - sb["score"].to_numpy())
    print(f"\nlocal[2] vs {cluster['url']}: {len(sa):,} test rows, max |score diff| {diff.max():.2e}")
    assert diff.max() < 1e-3, diff.max()
