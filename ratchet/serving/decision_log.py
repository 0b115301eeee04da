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

The journal (local folders only): append(row, journal_now=True) first writes the row, as
one framed msgpack record (length, crc32, payload; ~5-10 us), with one os.write into the
calling thread's journal segment `.journal-<instance>-<lane>-<n>` in the log folder, then
queues it. The service does so for each decision before it answers, so once an answer is
sent its row is in the OS's page cache, which outlives the process: a kill -9 leaves every
answered decision in a committed file or in the journal. Rows appended without journal_now
(shadow rows: nobody waits for them) are journaled by the writer at its next drain, in one
write per drain. Each appending thread has its own lane (no lock is shared between the
request thread and the others), the writer one more, each with its own sequence numbers;
rows of one lane reach the files in sequence order, so each committed file records in its
Parquet footer (`ratchet.journal`) the highest sequence committed so far per lane, which
makes the file's rename the commit point of its journal records too. Segments whose
records are all committed are deleted; close() deletes the rest. Nothing is fsynced: a
machine crash or power loss may lose what the kernel had not yet written back.

Recovery: start() (in the writer thread, before its first write) and recover() look for
journals of other instances. An instance holds an flock on `.journal-<instance>.lock`
while it lives (the kernel drops it when the process dies), so only dead instances are
recovered. Their records above the newest committed file's footer marks are written into
Parquet files under the dead instance's name, each again carrying the marks, and the
segments are deleted: a recovery killed half-way resumes where it stopped, and no row is
written twice.

    >>> log = DecisionLog("decisions/", metrics); log.start()
    >>> log.append(DecisionRow(request_id, time.time(), "production", 6, 0.91, 0.8, "block", "ok", None, 0.4, 1,
    ...                        0.95, False, req, names), journal_now=True)   # in the journal when it returns
    >>> log.close()   # flushes
    >>> pandas.read_parquet("decisions/")
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import heapq
import json
import logging
import os
import re
import secrets
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from ratchet.serving.log_schema import LATER_COLUMNS, SCALAR_COLUMNS, SCHEMA, DecisionRow
from ratchet.serving.schema import SLICE_KEYS, attribute_reader

__all__ = ["SCHEMA", "DecisionLog", "DecisionRow"]

log = logging.getLogger("ratchet.serving")

#: rows turned into one Arrow batch at a time by the writer (~5 us of Python each)
_DRAIN_CHUNK = 128

#: the writer's batches: the schema plus each row's journal lane (-1: not journaled) and sequence
_INTERNAL = SCHEMA.append(pa.field("_lane", pa.int32())).append(pa.field("_seq", pa.int64()))
_MARKS = ("_lane", "_seq")
#: Parquet footer key: {lane: highest sequence committed so far} of the instance that wrote the file
JOURNAL_KEY = b"ratchet.journal"
#: a journal record's frame: payload length, crc32 of the payload
_FRAME = struct.Struct("<II")
_LATER = -2   # a queued row's lane until the writer journals it (append without journal_now)
_NSCALAR = len(SCALAR_COLUMNS)
_SEGMENT = re.compile(r"^\.journal-([0-9a-f]+)-(\d+)-(\d+)$")
_LOCK = re.compile(r"^\.journal-([0-9a-f]+)\.lock$")
_FILE = re.compile(r"^decisions-[0-9TZ]+-([0-9a-f]+)-(\d+)\.parquet$")


_slice_keys = attribute_reader(SLICE_KEYS)
_encode = msgspec.msgpack.Encoder().encode


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


def _frame(seq: int, row: DecisionRow, nid: int, values: tuple | None) -> bytes:
    """One journal record: [seq, scalars, slice keys, feature-name id, feature values], framed."""
    payload = _encode((seq, row[:_NSCALAR], _slice_keys(row.request), nid, values))
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _marked(batch: pa.RecordBatch, lanes: Any, seqs: Any) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([*batch.columns, pa.array(lanes, pa.int32()), pa.array(seqs, pa.int64())],
                                      schema=_INTERNAL)


def _lane_maxima(table: pa.Table) -> dict[int, int]:
    """{lane: highest sequence} of the journaled rows in `table` (an _INTERNAL table)."""
    lanes = table.column("_lane").to_numpy()
    seqs = table.column("_seq").to_numpy()
    return {int(lane): int(seqs[lanes == lane].max()) for lane in np.unique(lanes) if lane >= 0}


def _filesystem(where: str):  # noqa: ANN202 -> (pyarrow.fs.FileSystem, path, is_local)
    from pyarrow import fs

    if "://" in where and not where.startswith("file://"):
        filesystem, path = fs.FileSystem.from_uri(where)
        return filesystem, path.rstrip("/"), isinstance(filesystem, fs.LocalFileSystem)
    path = where[len("file://"):] if where.startswith("file://") else where
    return fs.LocalFileSystem(), os.path.abspath(path), True


def _file_name(started_ts: float, instance: str, seq: int) -> str:
    started = datetime.fromtimestamp(started_ts, timezone.utc)
    return (f"decisions-{started.strftime('%Y%m%dT%H%M%S')}{started.microsecond // 1000:03d}Z-"
            f"{instance}-{seq:06d}.parquet")


def _journal_marks(path: str) -> dict[str, int]:
    """The journal marks in a committed file's footer ({} for a file written without a journal)."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path).metadata or {}
    raw = meta.get(JOURNAL_KEY)
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}


def read_journal(path: str) -> tuple[list[tuple], int]:
    """(records, bytes skipped) of one journal segment, in order. Reading stops at the first
    frame that is cut short or fails its crc (a write the process died in, or, after a machine
    crash, pages never written back); what follows it is skipped."""
    with open(path, "rb") as fh:
        data = fh.read()
    out: list[tuple] = []
    at, n, size = 0, len(data), _FRAME.size
    while at + size <= n:
        length, crc = _FRAME.unpack_from(data, at)
        payload = data[at + size:at + size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        out.append(msgspec.msgpack.decode(payload))
        at += size + length
    return out, n - at


@dataclass
class _OpenFile:
    """The file being written: row groups go in as rows arrive; visible once committed."""

    writer: Any            # pyarrow.parquet.ParquetWriter
    target: str            # where it is written (a dot-name for local folders)
    final: str             # its name once committed
    started: float         # time of its first row (names the file; rotate_seconds counts from it)
    rows: int = 0
    batches: list = field(default_factory=list)  # what it holds, kept until committed (a failed file is rewritten)
    marks: dict = field(default_factory=dict)    # {lane: highest journal sequence} of the rows it holds


class _Lane:
    """One appending thread's journal: its current segment, sequence numbers and feature-name ids."""

    __slots__ = ("index", "fd", "path", "seq", "segno", "bytes", "names")

    def __init__(self, index: int) -> None:
        self.index = index
        self.fd = -1          # the open segment (-1: none; the next append opens one)
        self.path = ""
        self.seq = -1         # the last sequence number given out
        self.segno = 0
        self.bytes = 0
        self.names: dict[int, tuple] = {}  # id(feature_names) -> (id, reader, names) defined in this segment


class DecisionLog:
    """Buffered, rotating Parquet writer of decisions with a write-ahead journal; append() never blocks."""

    def __init__(self, where: str, metrics=None, *, rotate_rows: int = 100_000,  # noqa: ANN001
                 rotate_seconds: float = 60.0, max_buffered_rows: int = 1_000_000, drain_every: float = 0.02,
                 row_group_rows: int = 4096, journal: bool = True,
                 journal_segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.where = where
        self.fs, self.path, self.local = _filesystem(where)
        self.fs.create_dir(self.path, recursive=True)
        self.rotate_rows = max(1, rotate_rows)
        self.rotate_seconds = rotate_seconds
        self.max_buffered_rows = max_buffered_rows
        self.drain_every = drain_every
        self.row_group_rows = max(1, row_group_rows)
        self.instance = secrets.token_hex(3)
        self._queue: collections.deque[tuple[DecisionRow, int, int]] = collections.deque()
        self._batches: list[pa.RecordBatch] = []
        self._pending = 0
        self._file_started: float | None = None   # time of the oldest row not yet in a file
        self._open: _OpenFile | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # serialises drain/write between the thread and close()
        # the journal: local folders only (an object store's log is not journaled)
        self.journaling = journal and self.local
        self.journal_segment_bytes = max(1, journal_segment_bytes)
        self._tls = threading.local()
        self._lanes: list[_Lane] = []
        self._drain_lane: _Lane | None = None   # the writer's lane: rows appended without journal_now
        self._lanes_lock = threading.Lock()   # taken only when a thread appends for the first time
        self._lock_fd = -1                    # flock held on .journal-<instance>.lock while alive
        self._closed_segments: collections.deque[tuple[int, int, str]] = collections.deque()  # (lane, last seq, path)
        self._committed: dict[int, int] = {}  # {lane: highest sequence in a committed file}
        self.rows_written = 0
        self.files_written = 0
        self.dropped = 0
        self.write_errors = 0
        self.journal_errors = 0
        self.recovered_rows = 0
        if metrics is not None:
            metrics.gauges.update({
                "ratchet_decision_log_rows_written": lambda: self.rows_written,
                "ratchet_decision_log_files_written": lambda: self.files_written,
                "ratchet_decision_log_dropped": lambda: self.dropped,
                "ratchet_decision_log_write_errors": lambda: self.write_errors,
                "ratchet_decision_log_journal_errors": lambda: self.journal_errors,
                "ratchet_decision_log_recovered_rows": lambda: self.recovered_rows,
                "ratchet_decision_log_buffered_rows": lambda: len(self._queue) + self._pending + (
                    self._open.rows if self._open is not None else 0),
            })

    # ---- request path ----------------------------------------------------------------
    def append(self, row: DecisionRow, *, journal_now: bool = False) -> None:
        """Queue the row for the writer; with `journal_now`, write it to the journal first.

        journal_now=True (the service, for each decision it answers): one os.write into the
        calling thread's lane, so append() returns once the row is in the OS's page cache and
        an answer sent after it can no longer be lost by the process dying. Otherwise (shadow
        rows, which nobody waits for) the writer journals the row at its next drain, in one
        write with the others. A journal write that fails is counted (journal_errors) and the
        row is still queued: the decision is answered, logged in memory only."""
        if len(self._queue) >= self.max_buffered_rows:
            self.dropped += 1  # the writer is far behind (storage down): shed, count, never block
            return
        if not self.journaling:
            self._queue.append((row, -1, 0))
            return
        if not journal_now:
            self._queue.append((row, _LATER, 0))
            return
        lane = getattr(self._tls, "lane", None)
        if lane is None:
            lane = self._new_lane()
        if lane.fd < 0 and not self._open_segment(lane):
            self._queue.append((row, -1, 0))
            return
        names = row.feature_names
        if names is None:
            nid, values = -1, None
        else:
            known = lane.names.get(id(names))
            if known is None and (known := self._define_names(lane, names)) is None:
                self._queue.append((row, -1, 0))
                return
            nid, values = known[0], known[1](row.request)
        seq = lane.seq + 1
        if not self._write(lane, _frame(seq, row, nid, values)):
            self._queue.append((row, -1, 0))
            return
        lane.seq = seq
        self._queue.append((row, lane.index, seq))
        if lane.bytes >= self.journal_segment_bytes:
            self._close_segment(lane)

    def _write(self, lane: _Lane, buf: bytes) -> bool:
        try:
            if os.write(lane.fd, buf) != len(buf):
                raise OSError("short write")
        except OSError as exc:
            # what was cut short ends the segment (its reader stops there): go on in a new one
            self.journal_errors += 1
            log.error("decision log journal: could not write %s: %s", lane.path, exc)
            self._close_segment(lane)
            return False
        lane.bytes += len(buf)
        return True

    def _new_lane(self, mine: bool = True) -> _Lane:
        with self._lanes_lock:
            if self._lock_fd < 0:
                self._take_instance_lock()
            lane = _Lane(len(self._lanes))
            self._lanes.append(lane)
        if mine:
            self._tls.lane = lane
        return lane

    def _journal_later_rows(self, items: list[tuple[DecisionRow, int, int]]) -> list[tuple[DecisionRow, int, int]]:
        """The drain's part of the journal: rows queued without journal_now go into the writer's
        own lane (used under self._lock only, so its sequence follows the queue's order), in one write."""
        later = [i for i, it in enumerate(items) if it[1] == _LATER]
        if not later:
            return items
        items = list(items)
        lane = self._drain_lane
        if lane is None and self.journaling:
            lane = self._drain_lane = self._new_lane(mine=False)
        if lane is None or (lane.fd < 0 and not self._open_segment(lane)):
            for i in later:
                items[i] = (items[i][0], -1, 0)
            return items
        frames, seq = [], lane.seq
        for i in later:
            row = items[i][0]
            names = row.feature_names
            nid, values = -1, None
            if names is not None:
                known = lane.names.get(id(names)) or self._define_names(lane, names)
                if known is None:   # the segment failed: these rows stay in memory only
                    seq = lane.seq
                    break
                nid, values = known[0], known[1](row.request)
            seq += 1
            frames.append(_frame(seq, row, nid, values))
        ok = len(frames) == len(later) and self._write(lane, b"".join(frames))
        for k, i in enumerate(later):
            items[i] = (items[i][0], lane.index, lane.seq + 1 + k) if ok else (items[i][0], -1, 0)
        if ok:
            lane.seq = seq
            if lane.bytes >= self.journal_segment_bytes:
                self._close_segment(lane)
        return items

    def _take_instance_lock(self) -> None:
        """Lock .journal-<instance>.lock for this process's life. Locked under a temporary name
        first and renamed, so a lock file that can be seen is always held while its owner lives."""
        final = f"{self.path}/.journal-{self.instance}.lock"
        tmp = f"{final}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, final)
        except OSError as exc:
            self.journal_errors += 1
            log.error("decision log journal: could not create %s: %s; not journaling", final, exc)
            self.journaling = False
            return
        self._lock_fd = fd

    def _open_segment(self, lane: _Lane) -> bool:
        if not self.journaling:
            return False
        lane.segno += 1
        path = f"{self.path}/.journal-{self.instance}-{lane.index}-{lane.segno:06d}"
        try:
            lane.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        except OSError as exc:
            self.journal_errors += 1
            log.error("decision log journal: could not open %s: %s", path, exc)
            return False
        lane.path, lane.bytes, lane.names = path, 0, {}
        return True

    def _define_names(self, lane: _Lane, names: tuple[str, ...]) -> tuple | None:
        """A feature-name list gets an id per segment: one record [-1, id, names], then rows carry the id."""
        known = (len(lane.names), attribute_reader(names), names)  # holds `names`: its id() stays unique
        payload = _encode((-1, known[0], names))
        if not self._write(lane, _FRAME.pack(len(payload), zlib.crc32(payload)) + payload):
            return None
        lane.names[id(names)] = known
        return known

    def _close_segment(self, lane: _Lane) -> None:
        """End the lane's segment; it is deleted once its last record (lane.seq at most) is committed."""
        fd, lane.fd = lane.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
            self._closed_segments.append((lane.index, lane.seq, lane.path))

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
        try:
            self.recover()
        except Exception:  # noqa: BLE001 - a failed recovery keeps its journal for the next start
            log.exception("decision log: journal recovery failed")
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
        items = self._journal_later_rows([q.popleft() for _ in range(n)])
        if self._file_started is None:
            self._file_started = items[0][0].ts
        # small batches with a GIL hand-over between them: the request thread waits at most one
        # batch (~1 ms of Python), not the whole drain, when it needs the GIL back
        for i in range(0, n, _DRAIN_CHUNK):
            if i:
                time.sleep(0)
            rows, lanes, seqs = zip(*items[i:i + _DRAIN_CHUNK])
            self._batches.append(_marked(_batch(list(rows)), lanes, seqs))
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
                table = pa.Table.from_batches(self._batches, schema=_INTERNAL)
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
            # numbered by committed files: a file that failed is written again under its number
            name = _file_name(self._file_started or time.time(), self.instance, self._seq + 1)
            final = f"{self.path}/{name}"
            target = f"{self.path}/.{name}.tmp" if self.local else final  # object stores: visible on close
            try:
                writer = pq.ParquetWriter(target, SCHEMA, filesystem=self.fs)
            except Exception as exc:  # noqa: BLE001 - keep the rows, retry next pass
                return self._failed(final, exc)
            self._open = _OpenFile(writer, target, final, self._file_started or time.time())
        f = self._open
        table = pa.Table.from_batches(self._batches, schema=_INTERNAL)
        take = min(table.num_rows, self.rotate_rows - f.rows)
        group = table.slice(0, take)
        try:
            f.writer.write_table(group.drop_columns(list(_MARKS)))
        except Exception as exc:  # noqa: BLE001
            return self._failed(f.final, exc)
        f.batches.extend(group.to_batches())
        f.rows += take
        for lane, top in _lane_maxima(group).items():
            f.marks[lane] = max(top, f.marks.get(lane, -1))
        rest = table.slice(take)
        self._batches = rest.to_batches() if rest.num_rows else []
        self._pending = rest.num_rows
        self._file_started = time.time() if rest.num_rows else None
        return True

    def _commit(self) -> bool:
        """Close the open file and make it visible under its final name.

        The footer carries the journal marks: every lane's highest sequence committed up to and
        including this file, so the rename commits the file's journal records as well."""
        f = self._open
        committed = {**self._committed, **{k: max(v, self._committed.get(k, -1)) for k, v in f.marks.items()}}
        try:
            if self.journaling or committed:
                f.writer.add_key_value_metadata({JOURNAL_KEY: json.dumps({str(k): v for k, v in committed.items()})})
            f.writer.close()
            if self.local:
                self.fs.move(f.target, f.final)
        except Exception as exc:  # noqa: BLE001
            return self._failed(f.final, exc)
        self._open = None
        self._seq += 1
        self.rows_written += f.rows
        self.files_written += 1
        self._committed = committed
        self._forget_committed_segments()
        return True

    def _forget_committed_segments(self) -> None:
        """Delete the closed journal segments whose every record is in a committed file."""
        keep = []
        while self._closed_segments:
            lane, last, path = self._closed_segments.popleft()
            if last <= self._committed.get(lane, -1):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            else:
                keep.append((lane, last, path))
        self._closed_segments.extendleft(reversed(keep))

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
        """Stop the writer thread and write what is left; then delete the journal, if all of it
        is committed (else it stays for the next start to recover)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()
        if not self._lanes and self._lock_fd < 0:
            return
        journaled, self.journaling = self.journaling, False
        with self._lock:
            done = journaled and not self._queue and not self._pending and self._open is None
            for lane in self._lanes:
                self._close_segment(lane)
            if done:
                while self._closed_segments:
                    with contextlib.suppress(OSError):
                        os.unlink(self._closed_segments.popleft()[2])
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}/.journal-{self.instance}.lock")
            if self._lock_fd >= 0:
                os.close(self._lock_fd)   # the lock goes with it
                self._lock_fd = -1

    # ---- recovery ----------------------------------------------------------------------
    def recover(self) -> int:
        """Write the journals of dead instances in this folder into Parquet; the rows written.

        An instance is dead when its lock is free. Only its records not yet in a committed
        file are written (by the footer marks of its newest file), then its journal is deleted."""
        if not self.local:
            return 0
        try:
            names = os.listdir(self.path)
        except OSError:
            return 0
        instances = {m.group(1) for n in names if (m := _SEGMENT.match(n) or _LOCK.match(n))} - {self.instance}
        total = 0
        for inst in sorted(instances):
            try:
                total += self._recover_instance(inst)
            except Exception:  # noqa: BLE001 - keep its journal: the next start tries again
                self.write_errors += 1
                log.exception("decision log: could not recover the journal of instance %s", inst)
        return total

    def _recover_instance(self, inst: str) -> int:
        import pyarrow.parquet as pq

        lock_path = f"{self.path}/.journal-{inst}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0   # alive (or another process is recovering it)
            names = os.listdir(self.path)
            segments = sorted((int(m.group(2)), int(m.group(3)), n) for n in names
                              if (m := _SEGMENT.match(n)) and m.group(1) == inst)
            files = sorted((int(m.group(2)), n) for n in names if (m := _FILE.match(n)) and m.group(1) == inst)
            marks = _journal_marks(f"{self.path}/{files[-1][1]}") if files else {}
            next_seq = files[-1][0] + 1 if files else 1
            for n in names:   # the file it was writing when it died: its rows are in the journal
                if n.startswith(".decisions-") and n.endswith(".parquet.tmp") and f"-{inst}-" in n:
                    with contextlib.suppress(OSError):
                        os.unlink(f"{self.path}/{n}")
            per_lane: dict[str, list[tuple[float, int, DecisionRow]]] = {}
            for lane_no, _segno, n in segments:
                records, skipped = read_journal(f"{self.path}/{n}")
                if skipped:
                    log.warning("decision log journal %s: %d bytes at its end cut short, skipped", n, skipped)
                lane = str(lane_no)
                done = marks.get(lane, -1)
                defined: dict[int, tuple] = {}
                rows = per_lane.setdefault(lane, [])
                for rec in records:
                    if rec[0] < 0:
                        defined[rec[1]] = tuple(rec[2])
                    elif rec[0] > done:
                        rows.append((rec[1][1], rec[0], _row(rec, defined)))
            # one lane's rows stay in sequence order (the marks rely on it); lanes merged by time
            merged = list(heapq.merge(*[[(ts, lane, seq, r) for ts, seq, r in rows] for lane, rows in per_lane.items()],
                                      key=lambda x: x[0]))
            for start in range(0, len(merged), self.rotate_rows):
                part = merged[start:start + self.rotate_rows]
                for _ts, lane, seq, _r in part:
                    marks[lane] = max(seq, marks.get(lane, -1))
                name = _file_name(part[0][0], inst, next_seq)
                target, final = f"{self.path}/.{name}.tmp", f"{self.path}/{name}"
                rows = [r for *_, r in part]
                table = pa.Table.from_batches([_batch(rows[i:i + _DRAIN_CHUNK])
                                               for i in range(0, len(rows), _DRAIN_CHUNK)], schema=SCHEMA)
                with pq.ParquetWriter(target, SCHEMA) as writer:
                    writer.write_table(table, row_group_size=self.row_group_rows)
                    writer.add_key_value_metadata({JOURNAL_KEY: json.dumps(marks)})
                os.replace(target, final)   # the commit: rows and their marks at once
                next_seq += 1
                self.recovered_rows += len(part)
            for *_, n in segments:
                os.unlink(f"{self.path}/{n}")
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            if merged or segments:
                log.info("decision log: recovered %d rows from the journal of instance %s (%d segments)",
                         len(merged), inst, len(segments))
            return len(merged)
        finally:
            os.close(fd)


def _row(rec: list, names_by_id: dict[int, tuple]) -> DecisionRow:
    """A journal record -> the DecisionRow it was made from (the request as a namespace of its fields)."""
    _seq, scalars, keys, nid, values = rec
    if len(scalars) < _NSCALAR:   # journaled by a ratchet before the later columns: their defaults
        scalars = (*scalars, *tuple(LATER_COLUMNS.values())[len(scalars) - _NSCALAR:])
    names = names_by_id[nid] if nid >= 0 else None
    request = SimpleNamespace(**dict(zip(SLICE_KEYS, keys)), **(dict(zip(names, values)) if names else {}))
    return DecisionRow(*scalars, request, names)
