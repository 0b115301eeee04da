"""The decision log: every decision of every role, in Parquet files Spark and pandas read.

Requests only append a DecisionRow (ratchet.serving.log_schema: the row record and the
one Arrow schema) to a deque (thread-safe, never blocks); a writer thread
drains it into Arrow batches and writes them into the current file one row group at a
time (every `row_group_rows` rows), so the Parquet encoding is spread thinly rather than
done for a whole file at rotation, which stalled requests for up to a second. A file is
committed every `rotate_rows` rows or `rotate_seconds` seconds, named
decisions-<first row time>-<instance>-<seq>.parquet. A local file is written under a
dot-name and renamed, so readers never see half a file (Spark and pandas skip names
starting with '.' or '_'). Rows stay in memory until their file is committed: a failed
write loses nothing and is retried. close() writes what is left.

    >>> log = DecisionLog("decisions/", metrics); log.start()
    >>> log.append(DecisionRow(request_id, time.time(), "production", 6, 0.91, 0.8, "block", "ok", None, 0.4, 1,
    ...                        req, names))
    >>> log.close()   # flushes
    >>> pandas.read_parquet("decisions/")
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from ratchet.serving.log_schema import SCALAR_COLUMNS, SCHEMA, DecisionRow
from ratchet.serving.schema import SLICE_KEYS, attribute_reader

__all__ = ["SCHEMA", "DecisionLog", "DecisionRow"]

log = logging.getLogger("ratchet.serving")

#: rows turned into one Arrow batch at a time by the writer (~5 us of Python each)
_DRAIN_CHUNK = 128


_slice_keys = attribute_reader(SLICE_KEYS)


def _batch(rows: list[DecisionRow]) -> pa.RecordBatch:
    """Rows -> one Arrow batch. Per row only a few C-level calls (the writer thread holds the
    GIL while it runs Python, so this is kept short); the columns are built by Arrow/numpy."""
    n = len(rows)
    col = dict(zip(DecisionRow._fields, zip(*rows)))  # field name -> that field of every row
    keys = list(zip(*[_slice_keys(r) for r in col["request"]]))
    offsets: list[int | None] = [0] * (n + 1)
    flat_values: list[Any] = []
    flat_names: list[str] = []
    at = 0
    for i, row in enumerate(rows):
        names = row.feature_names
        if names is None:
            offsets[i] = None  # a null map (shadow rows); its end offset is the next entry
            offsets[i + 1] = at
            continue
        offsets[i] = at
        flat_values.extend(attribute_reader(names)(row.request))
        flat_names.extend(names)
        at += len(names)
        offsets[i + 1] = at
    # None (a missing feature) -> NaN, as XGBoost saw it
    values = pa.array(np.array(flat_values, dtype=np.float64) if flat_values else np.empty(0, np.float64))
    features = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat_names, pa.string()), values,
                                       type=SCHEMA.field("features").type)
    ts = pa.array((np.array(col["ts"], dtype=np.float64) * 1_000_000).astype(np.int64)).cast(
        SCHEMA.field("ts").type)
    arrays = [ts if name == "ts" else pa.array(col[name], SCHEMA.field(name).type) for name in SCALAR_COLUMNS] \
        + [pa.array(k, pa.string()) for k in keys] + [features]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def _filesystem(where: str):  # noqa: ANN202 -> (pyarrow.fs.FileSystem, path, is_local)
    from pyarrow import fs

    if "://" in where and not where.startswith("file://"):
        filesystem, path = fs.FileSystem.from_uri(where)
        return filesystem, path.rstrip("/"), isinstance(filesystem, fs.LocalFileSystem)
    path = where[len("file://"):] if where.startswith("file://") else where
    return fs.LocalFileSystem(), os.path.abspath(path), True


@dataclass
class _OpenFile:
    """The file being written: row groups go in as rows arrive; visible once committed."""

    writer: Any            # pyarrow.parquet.ParquetWriter
    target: str            # where it is written (a dot-name for local folders)
    final: str             # its name once committed
    started: float         # time of its first row (names the file; rotate_seconds counts from it)
    rows: int = 0
    batches: list = field(default_factory=list)  # what it holds, kept until committed (a failed file is rewritten)


class DecisionLog:
    """Buffered, rotating Parquet writer of decisions; append() never blocks."""

    def __init__(self, where: str, metrics=None, *, rotate_rows: int = 100_000,  # noqa: ANN001
                 rotate_seconds: float = 60.0, max_buffered_rows: int = 1_000_000, drain_every: float = 0.02,
                 row_group_rows: int = 4096) -> None:
        self.where = where
        self.fs, self.path, self.local = _filesystem(where)
        self.fs.create_dir(self.path, recursive=True)
        self.rotate_rows = max(1, rotate_rows)
        self.rotate_seconds = rotate_seconds
        self.max_buffered_rows = max_buffered_rows
        self.drain_every = drain_every
        self.row_group_rows = max(1, row_group_rows)
        self.instance = secrets.token_hex(3)
        self._queue: collections.deque[DecisionRow] = collections.deque()
        self._batches: list[pa.RecordBatch] = []
        self._pending = 0
        self._file_started: float | None = None   # time of the oldest row not yet in a file
        self._open: _OpenFile | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # serialises drain/write between the thread and close()
        self.rows_written = 0
        self.files_written = 0
        self.dropped = 0
        self.write_errors = 0
        if metrics is not None:
            metrics.gauges.update({
                "ratchet_decision_log_rows_written": lambda: self.rows_written,
                "ratchet_decision_log_files_written": lambda: self.files_written,
                "ratchet_decision_log_dropped": lambda: self.dropped,
                "ratchet_decision_log_write_errors": lambda: self.write_errors,
                "ratchet_decision_log_buffered_rows": lambda: len(self._queue) + self._pending + (
                    self._open.rows if self._open is not None else 0),
            })

    # ---- request path ----------------------------------------------------------------
    def append(self, row: DecisionRow) -> None:
        if len(self._queue) >= self.max_buffered_rows:
            self.dropped += 1  # the writer is far behind (storage down): shed, count, never block
            return
        self._queue.append(row)

    # ---- writer ------------------------------------------------------------------------
    def start(self) -> DecisionLog:
        self._thread = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # Writing a rotated file (Parquet encoding of up to rotate_rows rows) takes a core for a
        # while; niced, the writer thread gets the CPU when the request thread does not want it
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while not self._stop.wait(self.drain_every):
            try:
                self._step(final=False)
            except Exception:  # noqa: BLE001 - the writer must survive anything
                log.exception("decision log writer failed")

    def _drain(self) -> None:
        q = self._queue
        n = len(q)
        if not n:
            return
        rows = [q.popleft() for _ in range(n)]
        if self._file_started is None:
            self._file_started = rows[0].ts
        # small batches with a GIL hand-over between them: the request thread waits at most one
        # batch (~1 ms of Python), not the whole drain, when it needs the GIL back
        for i in range(0, n, _DRAIN_CHUNK):
            if i:
                time.sleep(0)
            self._batches.append(_batch(rows[i:i + _DRAIN_CHUNK]))
        self._pending += n

    def _step(self, final: bool) -> None:
        with self._lock:
            self._drain()
            now = time.time()
            while True:
                f = self._open
                age = now - (f.started if f is not None else (self._file_started or now))
                due = final or age >= self.rotate_seconds
                if f is not None and (f.rows >= self.rotate_rows or (due and not self._pending)):
                    if not self._commit():
                        break
                    continue
                room = self.rotate_rows - (f.rows if f is not None else 0)   # >= 1 here
                if self._pending and (due or self._pending >= min(self.row_group_rows, room)):
                    if not self._write_group():
                        break
                    continue
                break
            if self._pending > self.max_buffered_rows:  # storage keeps failing: shed the oldest
                table = pa.Table.from_batches(self._batches, schema=SCHEMA)
                over = self._pending - self.max_buffered_rows
                self.dropped += over
                rest = table.slice(over)
                self._batches, self._pending = rest.combine_chunks().to_batches(), rest.num_rows

    def _write_group(self) -> bool:
        """Write pending rows (up to the file's room) as one row group of the open file.

        Each group is encoded as it comes (a few ms, the GIL released), not a whole rotated
        file at once: the encoding cost is spread thinly instead of stalling requests."""
        import pyarrow.parquet as pq

        if self._open is None:
            started = datetime.fromtimestamp(self._file_started or time.time(), timezone.utc)
            # numbered by committed files: a file that failed is written again under its number
            name = (f"decisions-{started.strftime('%Y%m%dT%H%M%S')}{started.microsecond // 1000:03d}Z-"
                    f"{self.instance}-{self._seq + 1:06d}.parquet")
            final = f"{self.path}/{name}"
            target = f"{self.path}/.{name}.tmp" if self.local else final  # object stores: visible on close
            try:
                writer = pq.ParquetWriter(target, SCHEMA, filesystem=self.fs)
            except Exception as exc:  # noqa: BLE001 - keep the rows, retry next pass
                return self._failed(final, exc)
            self._open = _OpenFile(writer, target, final, self._file_started or time.time())
        f = self._open
        table = pa.Table.from_batches(self._batches, schema=SCHEMA)
        take = min(table.num_rows, self.rotate_rows - f.rows)
        group = table.slice(0, take)
        try:
            f.writer.write_table(group)
        except Exception as exc:  # noqa: BLE001
            return self._failed(f.final, exc)
        f.batches.extend(group.to_batches())
        f.rows += take
        rest = table.slice(take)
        self._batches = rest.to_batches() if rest.num_rows else []
        self._pending = rest.num_rows
        self._file_started = time.time() if rest.num_rows else None
        return True

    def _commit(self) -> bool:
        """Close the open file and make it visible under its final name."""
        f = self._open
        try:
            f.writer.close()
            if self.local:
                self.fs.move(f.target, f.final)
        except Exception as exc:  # noqa: BLE001
            return self._failed(f.final, exc)
        self._open = None
        self._seq += 1
        self.rows_written += f.rows
        self.files_written += 1
        return True

    def _failed(self, final: str, exc: Exception) -> bool:
        """A write failed: drop the half file, keep every row (the open file's first) for a retry."""
        self.write_errors += 1
        log.error("decision log: could not write %s: %s", final, exc)
        f, self._open = self._open, None
        if f is None:
            return False
        with contextlib.suppress(Exception):
            f.writer.close()
        if self.local:
            with contextlib.suppress(Exception):
                self.fs.delete_file(f.target)
        self._batches = f.batches + self._batches
        self._pending += f.rows
        self._file_started = f.started
        return False

    def flush(self) -> None:
        """Write everything appended so far into a file now (also used by tests)."""
        self._step(final=True)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()
