"""Decision log and shadow worker in-process: rotation, flush, schema, failures, shedding."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from ratchet.serving.decision_log import SCHEMA, DecisionLog
from ratchet.serving.log_schema import DecisionRow
from ratchet.serving.metrics import Metrics
from ratchet.serving.models import LoadedModel, parse_thresholds, with_fault
from ratchet.serving.service import Service
from ratchet.serving.shadow import ShadowItem, ShadowScorer
from ratchet.errors import RegistryError

FEATURES = ("amount", "card_count_1h")


def req(i: int, **kw) -> SimpleNamespace:  # noqa: ANN003
    base = {"card_id": f"c{i}", "merchant_id": f"m{i % 3}", "country": "FR", "transaction_id": f"t{i}",
            "merchant_category": None, "card_country": None, "channel": "web", "amount": float(i), "card_count_1h": None}
    base.update(kw)
    return SimpleNamespace(**base)


def row(i: int, role: str = "production") -> DecisionRow:
    return DecisionRow(f"r{i}", time.time(), role, 1, 0.25, 0.5, "allow", "ok", None, 0.3, 1, 1.0, False, req(i),
            FEATURES if role != "shadow" else None)


def test_rotates_by_rows_and_flushes_on_close(tmp_path):
    log = DecisionLog(str(tmp_path / "d"), Metrics(), rotate_rows=100, rotate_seconds=3600, drain_every=0.01).start()
    for i in range(250):
        log.append(row(i))
    time.sleep(0.3)
    assert log.files_written == 2  # 2 full files; 50 rows wait for rotation
    log.close()
    files = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert len(files) == 3 and all(f.startswith("decisions-") and f.endswith(".parquet") for f in files), files
    df = pd.read_parquet(tmp_path / "d")
    assert len(df) == 250 and df["request_id"].is_unique
    assert pq.read_schema(tmp_path / "d" / files[0]) == SCHEMA
    first = df.sort_values("request_id").iloc[0]
    assert dict(first["features"])["amount"] == 0.0 and np.isnan(dict(first["features"])["card_count_1h"])
    assert str(df["ts"].dtype) == "datetime64[us, UTC]" and set(df["country"]) == {"FR"}


def test_rotates_by_time(tmp_path):
    log = DecisionLog(str(tmp_path), rotate_rows=10**6, rotate_seconds=0.1, drain_every=0.02).start()
    log.append(row(1))
    time.sleep(0.4)
    log.append(row(2))
    log.close()
    assert log.files_written == 2 and len(pd.read_parquet(tmp_path)) == 2


def test_object_store_style_uri(tmp_path):
    log = DecisionLog(f"file://{tmp_path}/uri", rotate_rows=5).start()
    for i in range(7):
        log.append(row(i))
    log.close()
    assert len(pd.read_parquet(tmp_path / "uri")) == 7


def test_write_failure_keeps_rows_and_retries(tmp_path, monkeypatch):
    import pyarrow.parquet

    log = DecisionLog(str(tmp_path), rotate_rows=10, drain_every=10)
    real = pyarrow.parquet.ParquetWriter.write_table
    calls = {"n": 0}

    def flaky(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pyarrow.parquet.ParquetWriter, "write_table", flaky)
    log.append(row(1))
    log.flush()
    assert log.write_errors == 1 and log.files_written == 0
    log.append(row(2))
    log.flush()
    assert log.files_written == 1 and sorted(pd.read_parquet(tmp_path)["request_id"]) == ["r1", "r2"]
    assert not list(tmp_path.glob("*.tmp"))   # the half file is gone; the journal stays until close
    log.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_append_sheds_instead_of_blocking(tmp_path):
    log = DecisionLog(str(tmp_path), max_buffered_rows=10)
    t0 = time.perf_counter()
    for i in range(1000):
        log.append(row(i))
    assert time.perf_counter() - t0 < 0.05
    assert log.dropped == 990
    log.close()
    assert len(pd.read_parquet(tmp_path)) == 10


def test_thresholds_from_tags():
    assert parse_thresholds(1, {}) == (0.5, {})
    assert parse_thresholds(1, {"threshold": "0.7", "merchant_thresholds": '{"m1": 0.9}'}) == (0.7, {"m1": 0.9})
    with pytest.raises(RegistryError, match="merchant_thresholds"):
        parse_thresholds(3, {"merchant_thresholds": "[1]"})
    with pytest.raises(RegistryError, match="threshold"):
        parse_thresholds(3, {"threshold": "2"})


# ---- shadow worker and service core, in-process ------------------------------------------
@pytest.fixture(scope="module")
def model() -> LoadedModel:
    rng = np.random.default_rng(0)
    x = rng.random((500, 2)).astype(np.float32) * [1000, 10]
    b = xgb.train({"objective": "binary:logistic", "tree_method": "hist"},
                  xgb.DMatrix(x, label=(x[:, 0] > 500).astype(int), feature_names=list(FEATURES)), 5)
    b.set_param({"nthread": 1})
    return LoadedModel(1, b, FEATURES, 0.5, {"m1": 0.99})


class FakeLoader:
    def __init__(self, models: dict[int, LoadedModel]) -> None:
        self.models = models

    def resolve(self, ref):  # noqa: ANN001, ANN201
        return 1 if ref == "production" else ref

    def load(self, v: int) -> LoadedModel:
        return self.models[v]


@pytest.mark.parametrize("fault,status,counter", [("", "ok", "shadow_scored"), ("raise", "error", "shadow_errors"),
                                                  ("sleep:0.05", "timeout", "shadow_timeouts")])
def test_shadow_outcomes_are_logged_and_counted(tmp_path, model, fault, status, counter):
    m = Metrics()
    log = DecisionLog(str(tmp_path), m)
    sh = ShadowScorer(m, log, timeout_s=0.02).start()
    shadow = with_fault(LoadedModel(2, model.booster, FEATURES), fault)
    for i in range(20):
        sh.submit(ShadowItem(shadow, f"r{i}", time.monotonic(), req(i, amount=900.0), "production", "allow", 1))
    sh.close()
    log.close()
    df = pd.read_parquet(tmp_path)
    assert len(df) == 20 and set(df["status"]) == {status} and set(df["role"]) == {"shadow"}
    assert getattr(m, counter) == 20
    if status == "ok":
        assert set(df["decision"]) == {"block"} and m.shadow_disagreements["production"] == 20
    else:
        assert df["score"].isna().all()


def test_shadow_queue_full_drops_and_counts(model):
    m = Metrics()
    sh = ShadowScorer(m, None, queue_size=5)  # not started: nothing drains
    for i in range(12):
        sh.submit(ShadowItem(model, f"r{i}", time.monotonic(), req(i), "production", "allow", 1))
    assert m.shadow_dropped["queue_full"] == 7


def test_service_decides_logs_once_and_shadows(tmp_path, model):
    m = Metrics()
    log = DecisionLog(str(tmp_path), m)
    sh = ShadowScorer(m, log).start()
    svc = Service(FakeLoader({1: model, 2: LoadedModel(2, model.booster, FEATURES, 0.1)}), m, log, sh, fault_env={})
    assert svc.decide(b'{"card_id": "c"}')[0] == 503
    svc.reload(svc.merge({"production": 1, "shadow": 2}))
    st, out = svc.decide(b'{"card_id": "c", "amount": 900, "merchant_id": "m1"}')
    assert st == 200 and out["threshold"] == 0.99 and out["role"] == "production"
    st, out2 = svc.decide(b'{"card_id": "c", "amount": 10}', request_id="given-id")
    assert out2["request_id"] == "given-id" and out2["decision"] == "allow"
    st, bad = svc.decide(b'{"card_id": "c", "amount": -1}')
    assert st == 422 and bad["detail"][0]["field"] == "amount"
    svc.close()
    df = pd.read_parquet(tmp_path)
    assert sorted(df[df.role == "production"]["request_id"]) == sorted([out["request_id"], "given-id"])
    assert len(df[df.role == "shadow"]) == 2


def test_files_are_written_a_row_group_at_a_time_and_a_failed_file_is_rewritten(tmp_path, monkeypatch):
    import pyarrow.parquet

    log = DecisionLog(str(tmp_path), rotate_rows=35, rotate_seconds=3600, row_group_rows=10, drain_every=10)
    real = pyarrow.parquet.ParquetWriter.write_table
    calls = {"n": 0}

    def flaky(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 3:   # the first file's third group: the half-written file is dropped
            raise OSError("connection reset")
        return real(self, *a, **k)

    monkeypatch.setattr(pyarrow.parquet.ParquetWriter, "write_table", flaky)
    for i in range(100):
        log.append(row(i))
        if i % 10 == 9:
            log._step(final=False)   # what the writer thread does every drain_every
        if i == 29:
            assert log.write_errors == 1 and log.files_written == 0 \
                and not [p for p in tmp_path.iterdir() if not p.name.startswith(".journal-")]
    log.close()
    files = sorted(tmp_path.glob("decisions-*.parquet"))
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in files]
    groups = [pq.ParquetFile(p).metadata.num_row_groups for p in files]
    # the first file was rewritten whole after the failure; the others went in group by group
    assert sizes == [35, 35, 30] and groups[1] >= 2 and groups[2] >= 2, (sizes, groups)
    df = pd.read_parquet(tmp_path)
    assert len(df) == 100 and df["request_id"].is_unique and log.rows_written == 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- the journal: kill -9 and recovery, with real processes ---------------------------------
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from ratchet.serving.decision_log import JOURNAL_KEY, read_journal  # noqa: E402

_CHILD = r"""
import os, signal, sys, threading, time
from types import SimpleNamespace
from ratchet.serving.decision_log import DecisionLog
from ratchet.serving.log_schema import DecisionRow

folder, served, shadowed, rotate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
FEATURES = ("amount", "card_count_1h")
def req(i):
    return SimpleNamespace(card_id=f"c{i}", merchant_id=f"m{i % 3}", country="FR", transaction_id=f"t{i}",
                           merchant_category=None, card_country=None, channel="web", amount=float(i),
                           card_count_1h=None if i % 2 else 2.0)
log = DecisionLog(folder, rotate_rows=rotate, rotate_seconds=3600, row_group_rows=16, drain_every=0.005).start()
def shadow():   # a second appending thread, as the shadow worker is
    for i in range(shadowed):
        log.append(DecisionRow(f"r{i}", time.time(), "shadow", 2, 0.5, 0.4, "block", "ok", None, 0.1, 1, 1.0, False, req(i),
                               None))
        if i % 50 == 0:
            time.sleep(0.002)
t = threading.Thread(target=shadow)
t.start()
for i in range(served):
    log.append(DecisionRow(f"r{i}", time.time(), "production", 1, i / served, 0.5, "allow", "ok", None, 0.3, 1, 1.0, False,
                           req(i), FEATURES), journal_now=True)   # as the service does before it answers
    if i == served // 2:   # some files committed, then the rest appended at once: killed with both
        deadline = time.time() + 30
        while log.files_written < 1 and time.time() < deadline:
            time.sleep(0.01)
t.join()
while log._queue:   # shadow rows are journaled by the writer when it drains them
    time.sleep(0.005)
with log._lock:     # (the drain in progress, if any, is over)
    pass
print("appended", log.files_written, flush=True)
os.kill(os.getpid(), signal.SIGKILL)   # the rows not yet in a committed file live on in the journal only
"""


def _killed_writer(folder: Path, served: int, shadowed: int, rotate: int) -> None:
    """A real process appends rows (production from its main thread, shadow from another) and is
    killed with SIGKILL right after its last append."""
    p = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(served), str(shadowed), str(rotate)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL and "appended" in p.stdout, p.stderr[-3000:]


def _journal(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".journal-"))


def _assert_each_row_once(folder: Path, served: int, shadowed: int) -> pd.DataFrame:
    df = pd.read_parquet(folder)
    counts = df.groupby(["request_id", "role"]).size()
    assert counts.max() == 1, counts[counts > 1].head()
    assert len(df[df.role == "production"]) == served and len(df[df.role == "shadow"]) == shadowed
    assert set(df[df.role == "production"]["request_id"]) == {f"r{i}" for i in range(served)}
    return df


def test_append_writes_the_journal_before_it_returns(tmp_path):
    log = DecisionLog(str(tmp_path), rotate_rows=10, journal_segment_bytes=1000)   # not started: no writer
    for i in range(30):
        log.append(row(i), journal_now=True)
    segments = [p for p in _journal(tmp_path) if not p.name.endswith(".lock")]
    assert len(segments) >= 3 and not list(tmp_path.glob("*.parquet"))   # rotated by size; nothing committed yet
    records = [r for p in segments for r in read_journal(str(p))[0]]
    rows = [r for r in records if r[0] >= 0]
    assert [r[0] for r in rows] == list(range(30))   # one lane, its sequence numbers in order
    assert rows[7][1][:4] == ["r7", rows[7][1][1], "production", 1] and rows[7][4] == [7.0, None]
    assert [r[2] for r in records if r[0] < 0] == [list(FEATURES)] * len(segments)   # names once per segment
    log.append(row(30, "shadow"))   # journaled by the writer when it drains, in its own lane
    assert log._queue[-1][1] == -2
    log.flush()   # three files committed: the segments whose rows are all in them are deleted
    shadow = [r for p in _journal(tmp_path) if p.name.startswith(f".journal-{log.instance}-1-")
              for r in read_journal(str(p))[0]]
    assert [(r[0], r[1][0], r[1][2], r[4]) for r in shadow] == [(0, "r30", "shadow", None)]
    assert log.files_written == 4 and len([p for p in _journal(tmp_path) if not p.name.endswith(".lock")]) < 3
    marks = pq.read_metadata(sorted(tmp_path.glob("decisions-*.parquet"))[-1]).metadata[JOURNAL_KEY]
    assert json.loads(marks) == {"0": 29, "1": 0}
    log.close()
    assert not _journal(tmp_path) and len(pd.read_parquet(tmp_path)) == 31


def test_kill_9_loses_nothing_and_the_next_start_recovers_each_row_once(tmp_path):
    folder = tmp_path / "d"
    _killed_writer(folder, served=3000, shadowed=700, rotate=400)
    committed = len(pd.read_parquet(folder)) if list(folder.glob("*.parquet")) else 0
    assert _journal(folder) and 0 < committed < 3700   # died with rows only in the journal
    log = DecisionLog(str(folder), rotate_rows=1000).start()   # the next start recovers in its writer thread
    deadline = time.time() + 30
    while _journal(folder) and time.time() < deadline:
        time.sleep(0.05)
    assert log.recovered_rows == 3700 - committed and not _journal(folder)
    log.append(row(10**6))
    log.close()
    df = pd.read_parquet(folder)
    assert len(df) == 3701 and not [p for p in folder.iterdir() if p.name.startswith(".")]
    own = list(folder.glob(f"decisions-*-{log.instance}-*.parquet"))
    assert len(own) == 1
    own[0].unlink()   # the new instance's own row; the rest is the killed one's
    df = _assert_each_row_once(folder, 3000, 700)
    # the recovered rows are the rows appended, field by field
    r = df[(df.role == "production") & (df.request_id == "r2999")].iloc[0]
    assert abs(r["ts"] - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=5) and r["score"] == 2999 / 3000
    assert dict(r["features"])["amount"] == 2999.0 and np.isnan(dict(r["features"])["card_count_1h"])
    assert r["merchant_id"] == "m2" and r["card_country"] is None and r["config_generation"] == 1
    s = df[(df.role == "shadow") & (df.request_id == "r699")].iloc[0]
    assert s["features"] is None and s["decision"] == "block" and s["version"] == 2


def test_an_interrupted_recovery_resumes_without_writing_a_row_twice(tmp_path):
    folder = tmp_path / "d"
    _killed_writer(folder, served=2000, shadowed=500, rotate=1000)
    saved = {p.name: p.read_bytes() for p in _journal(folder)}
    before = {p.name for p in folder.glob("decisions-*.parquet")}
    first = DecisionLog(str(folder), rotate_rows=150)
    n = first.recover()
    recovered = sorted(p for p in folder.glob("decisions-*.parquet") if p.name not in before)
    assert n > 300 and len(recovered) >= 3 and not _journal(folder)
    _assert_each_row_once(folder, 2000, 500)

    def crash_state(keep_files: int) -> None:
        """What a recovery killed after committing `keep_files` of its files leaves: those files, the
        whole journal (segments go only after the last file), its lock file."""
        for p in recovered[keep_files:]:
            p.unlink(missing_ok=True)
        for name, data in saved.items():
            (folder / name).write_bytes(data)
        (folder / f".{recovered[-1].name}.tmp").write_bytes(b"PAR1 half")   # the file it was writing

    crash_state(len(recovered))   # killed after its last file, before deleting the journal
    assert DecisionLog(str(folder)).recover() == 0
    _assert_each_row_once(folder, 2000, 500)
    crash_state(1)                # killed after its first file
    again = DecisionLog(str(folder), rotate_rows=150)
    assert again.recover() == n - pq.read_metadata(recovered[0]).num_rows
    _assert_each_row_once(folder, 2000, 500)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_live_instance_is_not_recovered_and_a_torn_tail_is_skipped(tmp_path):
    live = DecisionLog(str(tmp_path))
    for i in range(5):
        live.append(row(i), journal_now=True)
    other = DecisionLog(str(tmp_path))
    assert other.recover() == 0 and len(_journal(tmp_path)) == 2   # its lock is held: not touched
    # the process dies in the middle of a write: the cut record and what follows are skipped
    segment = next(p for p in _journal(tmp_path) if not p.name.endswith(".lock"))
    os.close(live._lock_fd)   # as the kernel does when the process dies
    live.journaling = False
    with segment.open("ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02\x03")
    assert read_journal(str(segment))[1] == 7
    assert other.recover() == 5 and not _journal(tmp_path)
    assert sorted(pd.read_parquet(tmp_path)["request_id"]) == [f"r{i}" for i in range(5)]


def test_object_store_logs_are_not_journaled(tmp_path):
    log = DecisionLog(str(tmp_path), journal=False)
    log.append(row(1))
    assert not _journal(tmp_path) and not log.journaling
    log.close()
    assert len(pd.read_parquet(tmp_path)) == 1
