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
    return DecisionRow(f"r{i}", time.time(), role, 1, 0.25, 0.5, "allow", "ok", None, 0.3, 1, req(i),
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
            assert log.write_errors == 1 and log.files_written == 0 and not list(tmp_path.iterdir())
    log.close()
    files = sorted(tmp_path.glob("decisions-*.parquet"))
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in files]
    groups = [pq.ParquetFile(p).metadata.num_row_groups for p in files]
    # the first file was rewritten whole after the failure; the others went in group by group
    assert sizes == [35, 35, 30] and groups[1] >= 2 and groups[2] >= 2, (sizes, groups)
    df = pd.read_parquet(tmp_path)
    assert len(df) == 100 and df["request_id"].is_unique and log.rows_written == 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
