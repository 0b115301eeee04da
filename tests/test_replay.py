"""`ratchet replay` against a small in-process HTTP stub (fast): fields the service accepts,
invalid rows left out, rate, limit, duration, looping request ids, the summary, exit codes.
The replay against a real service process runs in tests/test_local_backend.py."""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from fakes import send_json

from ratchet.errors import RatchetError
from ratchet.serving.replay import (
    add_replay_arguments, load_transactions, replay, replay_cli, service_fields,
)

FIELDS = ["card_id", "merchant_id", "country", "transaction_id", "amount", "merchant_fraud_rate_30d"]


class Stub:
    """GET /admin/config and POST /v1/decide; answers `fail_status` for cards in `fail_cards`."""

    def __init__(self, fail_cards: set[str] = frozenset(), fail_status: int = 503) -> None:
        self.requests: list[tuple[str, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a):  # noqa: ANN002
                pass

            def do_GET(self):  # noqa: N802
                send_json(self, 200, {"ready": True, "request_fields": FIELDS + ["channel"]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                rid = self.headers["x-request-id"]
                stub.requests.append((rid, body))
                if body["card_id"] in fail_cards:
                    send_json(self, fail_status, {"detail": "no"})
                else:
                    send_json(self, 200, {"decision": "allow", "role": "production", "request_id": rid})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub():
    s = Stub(fail_cards={"c-bad"})
    yield s
    s.close()


@pytest.fixture()
def data(tmp_path):
    n = 50
    df = pd.DataFrame({"transaction_id": [f"t{i}" for i in range(n)], "card_id": [f"c{i % 7}" for i in range(n)],
                       "merchant_id": "m1", "country": ["FR", "DE"] * (n // 2), "amount": np.arange(n, dtype=float),
                       "merchant_fraud_rate_30d": 0.1, "is_fraud": [i % 10 == 0 for i in range(n)],
                       "ts": pd.date_range("2025-01-01", periods=n, freq="h")[::-1], "extra": "x"})
    df.loc[3, "amount"] = np.nan          # missing -> null, still valid
    df.loc[4, "merchant_fraud_rate_30d"] = -0.1  # out of the service's range: left out
    p = tmp_path / "tx.parquet"
    df.to_parquet(p)
    return p


def test_load_keeps_service_fields_and_leaves_out_invalid_rows(data):
    tx = load_transactions(data, FIELDS)
    assert len(tx) == 49 and tx.skipped == {"merchant_fraud_rate_30d": 1}
    assert "t4" not in tx.ids and tx.ids[0] == "t0"
    first = json.loads(tx.bodies[0])
    assert set(first) == set(FIELDS) and "extra" not in first and "ts" not in first
    assert "amount" not in json.loads(tx.bodies[3])  # NaN is sent as missing
    assert tx.labels[0] == 1 and sum(tx.labels) == 5
    assert load_transactions(data, FIELDS, order_by="ts").ids[0] == "t49"  # oldest first
    assert tx.request_id(49) == "t0.1" and tx.request_id(0) == "t0"
    assert list(tx.labels_frame(50)["request_id"][-1:]) == ["t0.1"]


def test_replay_sends_every_row_once_with_its_request_id(stub, data):
    tx = load_transactions(data, service_fields(stub.url))
    rep = replay(stub.url, tx, rate=0, concurrency=3)
    assert rep.sent == rep.ok == 49 and rep.failed == 0 and rep.roles == {"production": 49}
    assert sorted(rid for rid, _ in stub.requests) == sorted(tx.ids)
    assert rep.p50_ms is not None and rep.p99_ms >= rep.p50_ms


def test_rate_limit_duration_and_loop(stub, data):
    tx = load_transactions(data, FIELDS)
    t0 = time.perf_counter()
    rep = replay(stub.url, tx, rate=100, limit=30, concurrency=2)
    took = time.perf_counter() - t0
    assert rep.sent == 30 and 0.25 <= took < 2.0, took  # 30 requests at 100/s: ~0.3 s
    assert 40 <= rep.rate <= 130
    stub.requests.clear()
    rep = replay(stub.url, tx, rate=0, limit=120, concurrency=2)  # more than the rows: each row once, no loop
    assert rep.sent == len(tx) < 120 and sorted(rid for rid, _ in stub.requests) == sorted(tx.ids)
    stub.requests.clear()
    rep = replay(stub.url, tx, rate=0, limit=120, concurrency=2, loop=True)  # asked to loop
    ids = [rid for rid, _ in stub.requests]
    assert rep.sent == 120 and len(set(ids)) == 120 and "t0.2" in ids
    rep = replay(stub.url, tx, rate=200, duration=0.3, loop=True, concurrency=2)
    assert 20 <= rep.sent <= 80 and rep.seconds < 1.5


def test_cli_summary_json_and_exit_codes(stub, data, tmp_path):
    p = add_replay_arguments(argparse.ArgumentParser())
    out, err = io.StringIO(), io.StringIO()
    labels = tmp_path / "labels.parquet"
    args = p.parse_args(["--url", stub.url, "--data", str(data), "--rate", "0", "--format", "json",
                         "--labels-out", str(labels)])
    assert replay_cli(args, out, err) == 0
    j = json.loads(out.getvalue())
    assert j["sent"] == 49 and j["non_2xx"] == 0 and j["p99_ms"] is not None and j["rate"] > 0
    assert "left out 1 rows" in err.getvalue()
    assert len(pd.read_parquet(labels)) == 49

    bad = Stub(fail_cards={"c3"}, fail_status=500)
    try:
        out = io.StringIO()
        args = p.parse_args(["--url", bad.url, "--data", str(data), "--rate", "0", "--quiet"])
        assert replay_cli(args, out, io.StringIO()) == 1
        assert "non-2xx 7 (500: 7)" in out.getvalue()
    finally:
        bad.close()


def test_unusable_input_names_what_to_change(stub, tmp_path):
    with pytest.raises(RatchetError, match="no such file"):
        load_transactions(tmp_path / "nope.parquet", FIELDS)
    pd.DataFrame({"amount": [1.0]}).to_parquet(tmp_path / "nocard.parquet")
    with pytest.raises(RatchetError, match="no card_id column"):
        load_transactions(tmp_path / "nocard.parquet", FIELDS)
    with pytest.raises(RatchetError, match="no decision service answers"):
        service_fields("http://127.0.0.1:9")
