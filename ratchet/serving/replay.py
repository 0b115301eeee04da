"""Traffic replay: send held-out transactions to a decision service at a chosen rate.

For the demo, tests and benchmarks. Reads a frame of transactions (a release's test
window, runs/<release>/outputs/.../training_set/dataset/test.parquet, or any Parquet file
with the model's features and the slice keys), keeps only the fields the service
accepts (GET /admin/config -> request_fields), and POSTs /v1/decide at `rate` requests
per second (0: as fast as possible) over a few keep-alive connections, for `limit` rows
or `duration` seconds. Each request carries x-request-id = the row's transaction_id
(with a `.N` suffix on the N-th pass over the data), so the decision log, the rows'
labels and the replay's own report join on one key.

    $ ratchet replay --url http://127.0.0.1:8080 --data test.parquet --rate 500 --duration 60
    >>> report = replay(url, load_transactions("test.parquet", fields), rate=500, duration=60)
    >>> report.non_2xx, report.p99_ms
    (0, 4.1)

The client is the standard library's http.client on worker threads: a fraction of
httpx's CPU per request, which matters when the replay shares two cores with the service.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from ratchet.errors import RatchetError

#: Columns that may carry a row's matured label, in order of preference.
LABEL_COLUMNS = ("label", "is_fraud")
#: uvicorn closes keep-alive connections idle for 5 s; reconnect before reusing an older one.
IDLE_RECONNECT_S = 4.0
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@dataclass(frozen=True)
class Transactions:
    """Encoded request bodies, their request ids and (when known) labels, in replay order."""

    bodies: tuple[bytes, ...]
    ids: tuple[str, ...]
    labels: tuple[int, ...] | None = None
    fields: tuple[str, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)  # rows the service would reject: field -> count

    def __len__(self) -> int:
        return len(self.bodies)

    def rows(self, start: int, stop: int) -> Transactions:
        """Rows [start, stop) as their own Transactions (the demo replays in fixed-size batches)."""
        return Transactions(self.bodies[start:stop], self.ids[start:stop],
                            None if self.labels is None else self.labels[start:stop], self.fields, dict(self.skipped))

    def request_id(self, i: int) -> str:
        """The id of the i-th request sent: row i % n, with '.{pass}' after the first pass."""
        n = len(self.ids)
        cycle, row = divmod(i, n)
        return self.ids[row] if cycle == 0 else f"{self.ids[row]}.{cycle}"

    def labels_frame(self, count: int | None = None):  # noqa: ANN201 - pandas DataFrame
        """(request_id, label) for the first `count` requests (default: one pass): the matured
        labels a shadow review joins (the test window's labels are mature by construction)."""
        import pandas as pd

        if self.labels is None:
            raise RatchetError("the replayed data has no label column (label or is_fraud)")
        n = len(self.ids) if count is None else count
        return pd.DataFrame({"request_id": [self.request_id(i) for i in range(n)],
                             "label": [self.labels[i % len(self.labels)] for i in range(n)]})


def service_fields(url: str, admin_token: str | None = None, timeout: float = 10.0) -> tuple[str, ...]:
    """The request fields the service accepts now (slice keys and the loaded models' features)."""
    status, body = _get(url, "/admin/config", admin_token, timeout)
    if status != 200:
        raise RatchetError(f"GET {url}/admin/config answered {status}: {body[:300]!r}")
    cfg = json.loads(body)
    if not cfg.get("ready"):
        raise RatchetError(f"the decision service at {url} is not ready: {cfg.get('reason')}")
    return tuple(cfg["request_fields"])


def load_transactions(path: str | Path, fields: Sequence[str], *, id_column: str = "transaction_id",
                      shuffle_seed: int | None = None, order_by: str | None = None) -> Transactions:
    """Read Parquet (or CSV) rows and encode one JSON body per row with only `fields`.

    NaN becomes null (XGBoost's missing value); ids come from `id_column`, else 'replay-{i}'.
    `order_by` sorts the rows (e.g. "ts": in the order they happened, like live traffic;
    a Spark output folder is not in time order); `shuffle_seed` mixes them instead. Rows the service
    would reject (a value outside its feature's range) are validated here with the
    service's own request model and left out, counted in `skipped` by field, so every
    request sent is valid input and any non-2xx answer is the service's fault."""
    from pydantic import ValidationError

    from ratchet.serving.schema import SLICE_KEYS, request_model

    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise RatchetError(f"--data {path}: no such file or directory")
    df = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    if "card_id" not in df.columns:
        raise RatchetError(f"{path}: no card_id column; a decision request needs one (columns: "
                           f"{', '.join(map(str, df.columns[:30]))})")
    if not len(df):
        raise RatchetError(f"{path}: no rows to replay")
    if order_by is not None:
        if order_by not in df.columns:
            raise RatchetError(f"{path}: no column {order_by!r} to order the rows by")
        df = df.sort_values(order_by, kind="stable").reset_index(drop=True)
    if shuffle_seed is not None:
        df = df.sample(frac=1.0, random_state=shuffle_seed).reset_index(drop=True)
    use = [f for f in fields if f in df.columns]
    numeric = [c for c in use if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    cols: dict[str, list[Any]] = {}
    for c in use:
        s = df[c]
        if c in numeric:
            vals = s.astype("float64").tolist()
            cols[c] = [None if (v is None or not math.isfinite(v)) else v for v in vals]
        else:
            cols[c] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in s.tolist()]
    validator = request_model(tuple(f for f in fields if f not in SLICE_KEYS))
    dumps = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
    all_ids = (df[id_column].astype(str).str.slice(0, 120).tolist() if id_column in df.columns
               else [f"replay-{i}" for i in range(len(df))])
    label_col = next((c for c in LABEL_COLUMNS if c in df.columns), None)
    all_labels = df[label_col].fillna(0).astype(int).tolist() if label_col else None
    bodies, ids, labels, skipped = [], [], [], Counter()
    for i in range(len(df)):
        row = {c: cols[c][i] for c in use if cols[c][i] is not None}
        try:
            validator.model_validate(row)
        except ValidationError as exc:
            for e in exc.errors(include_url=False, include_input=False)[:1]:
                skipped[".".join(str(p) for p in e.get("loc", ())) or "(row)"] += 1
            continue
        bodies.append(dumps(row).encode())
        ids.append(all_ids[i])
        if all_labels is not None:
            labels.append(all_labels[i])
    if not bodies:
        raise RatchetError(f"{path}: every row would be rejected by the service ({dict(skipped)})")
    return Transactions(tuple(bodies), tuple(ids), tuple(labels) if all_labels is not None else None, tuple(use),
                        dict(skipped))


# ---- the report ------------------------------------------------------------------------------
@dataclass
class ReplayReport:
    """What a replay did: counts by outcome, achieved rate and client-side latency."""

    sent: int = 0
    ok: int = 0                                        # 2xx
    statuses: dict[int, int] = field(default_factory=dict)  # non-2xx status -> count
    errors: dict[str, int] = field(default_factory=dict)    # transport error kind -> count (no answer)
    seconds: float = 0.0
    target_rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    roles: dict[str, int] = field(default_factory=dict)     # served role -> count (2xx answers)
    ok_ids: set[str] | None = None                         # request ids answered 2xx (keep_ids=True)

    @property
    def non_2xx(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        """Requests without a 2xx answer: non-2xx statuses and transport errors."""
        return self.non_2xx + sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "ok": self.ok, "non_2xx": self.non_2xx,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "transport_errors": dict(sorted(self.errors.items())), "seconds": round(self.seconds, 3),
                "target_rate": self.target_rate, "rate": round(self.rate, 1),
                "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 3),
                "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
                "roles": dict(sorted(self.roles.items()))}

    @staticmethod
    def combine(reports: Sequence[ReplayReport]) -> ReplayReport:
        """One report for replays run one after another (batches): counts add up; p50 is the
        median of the batches' p50, p99 the worst batch's p99."""
        out = ReplayReport(target_rate=reports[0].target_rate if reports else 0.0, ok_ids=set())
        for r in reports:
            out.sent += r.sent
            out.ok += r.ok
            out.seconds += r.seconds
            for src, dst in ((r.statuses, out.statuses), (r.errors, out.errors), (r.roles, out.roles)):
                for k, v in src.items():
                    dst[k] = dst.get(k, 0) + v
            if r.ok_ids is not None and out.ok_ids is not None:
                out.ok_ids |= set(r.ok_ids)
            else:
                out.ok_ids = None
        p50 = [r.p50_ms for r in reports if r.p50_ms is not None]
        p99 = [r.p99_ms for r in reports if r.p99_ms is not None]
        out.p50_ms = float(sorted(p50)[len(p50) // 2]) if p50 else None
        out.p99_ms = max(p99) if p99 else None
        return out

    def summary(self) -> str:
        lat = (f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms" if self.p50_ms is not None else "no latency")
        target = "as fast as possible" if not self.target_rate else f"target {self.target_rate:g}/s"
        text = (f"replay: sent {self.sent:,} in {self.seconds:.1f}s ({self.rate:,.0f}/s, {target}); "
                f"2xx {self.ok:,}, non-2xx {self.non_2xx:,}")
        if self.statuses:
            text += " (" + ", ".join(f"{k}: {v:,}" for k, v in sorted(self.statuses.items())) + ")"
        if self.errors:
            text += ", no answer " + ", ".join(f"{k}: {v:,}" for k, v in sorted(self.errors.items()))
        if self.roles:
            text += "; served by " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.roles.items()))
        return f"{text}; {lat}"


# ---- sending ---------------------------------------------------------------------------------
def _split(url: str) -> tuple[str, int, str]:
    u = urlsplit(url if "://" in url else f"http://{url}")
    if u.scheme not in ("http", ""):
        raise RatchetError(f"--url {url}: only http:// is supported (the service runs next to the replay)")
    return u.hostname or "127.0.0.1", u.port or 80, u.path.rstrip("/")


def _get(url: str, path: str, admin_token: str | None, timeout: float) -> tuple[int, bytes]:
    host, port, base = _split(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"authorization": f"Bearer {admin_token}"} if admin_token else {}
        conn.request("GET", base + path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    except OSError as exc:
        raise RatchetError(f"no decision service answers at {url} ({exc})") from None
    finally:
        conn.close()


class _Worker:
    """One keep-alive connection, sending the requests it claims from the shared schedule."""

    def __init__(self, host: str, port: int, path: str, timeout: float) -> None:
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.conn: http.client.HTTPConnection | None = None
        self.last_used = 0.0
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.roles: Counter[str] = Counter()
        self.ok_ids: list[str] | None = None

    def send(self, body: bytes, rid: str, want_role: bool) -> None:
        now = time.perf_counter()
        if self.conn is not None and now - self.last_used > IDLE_RECONNECT_S:
            self.conn.close()
            self.conn = None
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", self.path, body=body,
                              headers={"content-type": "application/json", "x-request-id": rid})
            r = self.conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException) as exc:
            self.errors[type(exc).__name__] += 1
            self.conn.close()
            self.conn = None
            return
        self.last_used = time.perf_counter()
        self.latencies.append((self.last_used - t0) * 1000.0)
        self.statuses[r.status] += 1
        if self.ok_ids is not None and 200 <= r.status < 300:
            self.ok_ids.append(rid)
        if want_role and 200 <= r.status < 300:
            # cheap: the role sits in a small JSON object
            i = payload.find(b'"role":')
            if i >= 0:
                a = payload.find(b'"', i + 7) + 1
                b = payload.find(b'"', a)
                if 0 < a <= b:
                    self.roles[payload[a:b].decode(errors="replace")] += 1
        if r.will_close:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def replay(url: str, data: Transactions, *, rate: float = 0.0, limit: int | None = None,
           duration: float | None = None, concurrency: int = 4, loop: bool = False, timeout: float = 10.0,
           stop: threading.Event | None = None, progress: Callable[[ReplayReport], None] | None = None,
           progress_every: float = 5.0, keep_ids: bool = False) -> ReplayReport:
    """Send `data` to POST {url}/v1/decide; returns when `limit` requests were sent, `duration`
    passed, the data ran out (unless `loop`) or `stop` was set. Request i is due at
    start + i / rate, so a slow answer never makes the replay burst to catch up by more
    than the connections in flight. `keep_ids`: the report lists the ids answered 2xx."""
    if not len(data):
        raise RatchetError("nothing to replay: no rows")
    if rate < 0:
        raise RatchetError(f"--rate must be >= 0 (0: as fast as possible), got {rate:g}")
    # each transaction once unless asked to loop: evidence must never count a payment twice by accident
    total = (limit if limit is not None else None) if loop else min(limit if limit is not None else len(data), len(data))
    host, port, base = _split(url)
    workers = [_Worker(host, port, base + "/v1/decide", timeout) for _ in range(max(1, concurrency))]
    if keep_ids:
        for w in workers:
            w.ok_ids = []
    lock = threading.Lock()
    next_i = [0]
    stop = stop or threading.Event()
    started = time.perf_counter()
    deadline = None if duration is None else started + duration
    interval = 1.0 / rate if rate > 0 else 0.0

    def claim() -> int | None:
        with lock:
            i = next_i[0]
            if (total is not None and i >= total) or stop.is_set():
                return None
            next_i[0] = i + 1
            return i

    def run(w: _Worker) -> None:
        while True:
            i = claim()
            if i is None:
                return
            if interval:
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    if stop.wait(delay):
                        return
            if deadline is not None and time.perf_counter() >= deadline:
                stop.set()
                return
            w.send(data.bodies[i % len(data)], data.request_id(i), True)

    threads = [threading.Thread(target=run, args=(w,), name=f"replay-{k}", daemon=True)
               for k, w in enumerate(workers)]
    for t in threads:
        t.start()
    try:
        last = started
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(0.2)
            if progress is not None and time.perf_counter() - last >= progress_every:
                last = time.perf_counter()
                progress(_report(workers, started, rate, final=False))
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(timeout + 1)
    for w in workers:
        w.close()
    return _report(workers, started, rate, final=True)


def _report(workers: list[_Worker], started: float, rate: float, *, final: bool) -> ReplayReport:
    import numpy as np

    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    lat: list[float] = []
    for w in workers:
        statuses.update(w.statuses)
        errors.update(w.errors)
        roles.update(w.roles)
        lat.extend(w.latencies[-20_000:] if not final else w.latencies)
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    ok_ids = None
    if final and workers and workers[0].ok_ids is not None:
        ok_ids = {rid for w in workers for rid in (w.ok_ids or ())}
    arr = np.asarray(lat) if lat else None
    return ReplayReport(
        sent=sum(statuses.values()) + sum(errors.values()), ok=ok,
        statuses={s: n for s, n in statuses.items() if not 200 <= s < 300}, errors=dict(errors),
        seconds=time.perf_counter() - started, target_rate=rate,
        p50_ms=float(np.percentile(arr, 50)) if arr is not None else None,
        p99_ms=float(np.percentile(arr, 99)) if arr is not None else None, roles=dict(roles), ok_ids=ok_ids)


# ---- the command -------------------------------------------------------------------------------
def add_replay_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `ratchet replay`."""
    p.add_argument("--url", default="http://127.0.0.1:8080", help="decision service (default http://127.0.0.1:8080)")
    p.add_argument("--data", required=True,
                   help="Parquet (or CSV) of transactions: the model's features and card_id, merchant_id, "
                   "merchant_category, country, channel, transaction_id (e.g. a release's test.parquet)")
    p.add_argument("--rate", type=float, default=100.0,
                   help="requests per second, 0 = as fast as possible (default 100)")
    p.add_argument("--limit", type=int, default=None, help="send this many requests (default: every row once)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--loop", action="store_true",
                   help="start over when the rows run out (request ids get a .N suffix on pass N)")
    p.add_argument("--concurrency", type=int, default=4, help="keep-alive connections (default 4)")
    p.add_argument("--order-by", default=None, metavar="COLUMN",
                   help="send the rows sorted by this column, e.g. ts (default: file order)")
    p.add_argument("--shuffle", type=int, default=None, metavar="SEED", help="shuffle the rows with this seed")
    p.add_argument("--labels-out", default=None,
                   help="write the sent requests' labels (request_id, label) to this Parquet file, "
                   "for `ratchet controller --labels`")
    p.add_argument("--admin-token", default=None, help="bearer token for GET /admin/config (env RATCHET_ADMIN_TOKEN)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="summary format (default text)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def replay_cli(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`ratchet replay`: 0 when every request got a 2xx, 1 when any did not, 2 for unusable input."""
    import os

    out, err = out or sys.stdout, err or sys.stderr
    if args.limit is not None and args.limit < 0:
        raise RatchetError(f"--limit must be >= 0, got {args.limit}")
    if args.duration is not None and args.duration <= 0:
        raise RatchetError(f"--duration must be > 0, got {args.duration:g}")
    token = args.admin_token or os.environ.get("RATCHET_ADMIN_TOKEN")
    fields = service_fields(args.url, token)
    data = load_transactions(args.data, fields, shuffle_seed=args.shuffle, order_by=args.order_by)
    if not args.quiet:
        print(f"replay: {len(data):,} rows from {args.data}, {len(data.fields)} fields sent "
              f"({len(fields) - len(data.fields)} the service accepts are not in the data)", file=err, flush=True)
    if data.skipped:
        print(f"replay: left out {sum(data.skipped.values()):,} rows the service would reject: "
              + ", ".join(f"{k} out of range in {v:,}" for k, v in sorted(data.skipped.items())), file=err, flush=True)

    def show(r: ReplayReport) -> None:
        print(f"  sent {r.sent:,} ({r.rate:,.0f}/s), 2xx {r.ok:,}, non-2xx {r.non_2xx:,}, "
              f"no answer {sum(r.errors.values()):,}, p99 {r.p99_ms or 0:.1f} ms", file=err, flush=True)

    report = replay(args.url, data, rate=args.rate, limit=args.limit, duration=args.duration,
                    concurrency=args.concurrency, loop=args.loop, progress=None if args.quiet else show)
    if args.labels_out:
        write_labels(data.labels_frame(report.sent), args.labels_out)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        print(report.summary(), file=out)
    return EXIT_OK if report.failed == 0 and report.sent > 0 else EXIT_FAILED


def write_labels(frame, path: str | Path) -> Path:  # noqa: ANN001 - pandas DataFrame
    """Write (request_id, label) Parquet atomically (a controller may be reading it)."""
    import os

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ratchet.serving.replay` (same flags as `ratchet replay`)."""
    p = add_replay_arguments(argparse.ArgumentParser(prog="ratchet replay", description=__doc__.split("\n")[0]))
    args = p.parse_args(argv)
    try:
        return replay_cli(args)
    except RatchetError as exc:
        print(f"ratchet replay: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
