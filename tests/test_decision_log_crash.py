"""kill -9 of the real decision service under load: no answered decision is missing from the log.

One MLflow SQLite store (version 1 @production, version 2 as canary at 30% and as shadow).
A `python -m ratchet.serving` process is loaded by three client threads; it is killed with
SIGKILL mid-load, and a new process is started on the same decision-log folder. The new
process recovers the dead one's journal. Then every request id answered 2xx (by either
process) must be in the decision log exactly once for the role that answered it, and no
(request id, role) may be logged twice, shadow rows included.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pandas as pd
import pytest

from tests.test_serving import ServiceProcess, _train, tx


pytestmark = pytest.mark.slow


def _load(url: str, answered: list[tuple[str, str]], stop: threading.Event, seed: int) -> None:
    """Send decisions until stopped or the service is gone; record (request id, role) of each 200."""
    i = 0
    with httpx.Client(base_url=url, timeout=5) as c:
        while not stop.is_set():
            i += 1
            try:
                r = c.post("/v1/decide", json=tx(f"card-{seed}-{i % 3000}", amount=float(i % 1000)))
            except httpx.HTTPError:
                return   # killed
            if r.status_code == 200:
                answered.append((r.json()["request_id"], r.json()["role"]))


def _run_load(url: str, answered: list, seconds: float, then=None) -> None:  # noqa: ANN001
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(url, answered, stop, k)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    if then is not None:
        then()      # e.g. the kill, while requests are in flight
    stop.set()
    for t in threads:
        t.join(30)


def test_kill_9_under_load_then_restart_logs_every_answered_decision_once(tmp_path):
    from ratchet.registry import Registry, ReleaseRecord
    from ratchet.train.trainer import save_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reg = Registry(uri, "fraud")
    for i in range(2):
        path = save_model(_train(i, 15), tmp_path / f"m{i}")
        reg.register(ReleaseRecord(model_path=str(path), spec_yaml="name: t\n", spec_hash="h" * 64,
                                   snapshot={"rows": 3000}, windows={}, metrics={}, verdict={"passed": True},
                                   passed=True, reason="test"))
    reg.set_stage(1, "production", actor="test", reason="bootstrap")
    log_dir = tmp_path / "decisions"

    args = ["--production", "1", "--canary", "2", "--canary-weight", "30", "--shadow", "2"]
    first = ServiceProcess(tmp_path, "first", args, {"MLFLOW_TRACKING_URI": uri}, log_dir=log_dir)
    first.wait_ready()
    answered_first: list[tuple[str, str]] = []
    _run_load(first.url, answered_first, 2.5, then=lambda: os.kill(first.proc.pid, signal.SIGKILL))
    assert first.proc.wait(10) == -signal.SIGKILL
    assert len(answered_first) > 300, len(answered_first)
    assert {role for _, role in answered_first} == {"production", "canary"}

    # what the killed process left: committed files, its journal, maybe a half-written file
    committed = pd.read_parquet(log_dir) if list(log_dir.glob("decisions-*.parquet")) else pd.DataFrame(
        columns=["request_id", "role"])
    in_files = set(zip(committed["request_id"], committed["role"]))
    lost_without_journal = set(answered_first) - in_files
    journal = [p.name for p in log_dir.iterdir() if p.name.startswith(".journal-")]
    print(f"\nkilled after {len(answered_first)} answers; {len(in_files)} rows committed, "
          f"{len(lost_without_journal)} answered only in the journal; left {sorted(journal)}")
    assert lost_without_journal, "the kill found everything committed: nothing was tested"
    assert journal

    second = ServiceProcess(tmp_path, "second", args, {"MLFLOW_TRACKING_URI": uri}, log_dir=log_dir)
    second.wait_ready()
    answered_second: list[tuple[str, str]] = []
    _run_load(second.url, answered_second, 1.0)
    deadline = time.time() + 60
    while time.time() < deadline and second.metric("ratchet_decision_log_recovered_rows") == 0:
        time.sleep(0.2)
    recovered = second.metric("ratchet_decision_log_recovered_rows")
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(30) in (0, -signal.SIGTERM)
    assert "decision log flushed" in second.out.read_text()

    log = pd.read_parquet(log_dir)
    counts = log.groupby(["request_id", "role"]).size()
    assert counts.max() == 1, counts[counts > 1].head()   # nothing written twice, shadow rows included
    logged = set(zip(log["request_id"], log["role"]))
    missing = (set(answered_first) | set(answered_second)) - logged
    assert not missing, f"{len(missing)} answered decisions not logged, e.g. {sorted(missing)[:5]}"
    assert lost_without_journal <= logged and recovered >= len(lost_without_journal)
    assert len(log[log.role == "shadow"]) > 0
    # the folder holds the log only: the journal and half files are gone
    assert not [p.name for p in log_dir.iterdir() if p.name.startswith(".")]
    print(f"after recovery: {len(log)} rows, {int(recovered)} recovered, "
          f"{len(answered_first) + len(answered_second)} answered, 0 missing, 0 duplicated")
