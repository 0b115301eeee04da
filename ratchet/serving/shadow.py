"""The shadow: scores every request off the request path, logged, never acted on.

The request path only appends to a bounded deque (full -> dropped and counted); one
worker thread drains it in batches (one inplace_predict for many rows, so the shadow
costs a fraction of a single-row predict per request), compares with the served
decision and writes shadow rows to the decision log. A shadow that raises is counted
(status "error"); one slower than the timeout is counted (status "timeout") and its
late scores discarded; requests that waited too long are dropped as stale. Nothing
here can reach the production answer: no locks are shared with the request path.

    >>> sh = ShadowScorer(metrics, decision_log, queue_size=10_000, timeout_s=0.05).start()
    >>> sh.submit(ShadowItem(model, request_id, time.monotonic(), req, "production", "allow", generation))
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from typing import Any, NamedTuple

import numpy as np

from ratchet.serving.log_schema import DecisionRow
from ratchet.serving.schema import attribute_reader

log = logging.getLogger("ratchet.serving")

class ShadowItem(NamedTuple):
    """One request queued for the shadow (built on the request path: a NamedTuple, tuple-cheap)."""

    model: Any                # the shadow's LoadedModel (items are grouped by it)
    request_id: str
    enqueued: float           # time.monotonic() when queued; older than stale_after_s -> dropped
    request: Any              # the validated request (features read by attribute)
    served_role: str          # production | canary: the role that answered
    served_decision: str      # its model's decision, to count disagreements between models (an
                              # exploration's allow is not the model disagreeing)
    config_generation: int    # the configuration that served it, logged with the shadow row


class ShadowScorer:
    def __init__(self, metrics, decision_log=None, *, queue_size: int = 10_000, timeout_s: float = 0.05,  # noqa: ANN001
                 stale_after_s: float = 2.0, batch: int = 512, poll_s: float = 0.01) -> None:
        self.metrics = metrics
        self.log = decision_log
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s
        self.batch = batch
        self.poll_s = poll_s
        self._queue: collections.deque[ShadowItem] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.gauges["ratchet_shadow_queue_length"] = lambda: len(self._queue)

    def submit(self, item: ShadowItem) -> None:
        """Request path: O(1), never blocks, never raises."""
        if len(self._queue) >= self.queue_size:
            self.metrics.shadow_dropped["queue_full"] += 1
            return
        self._queue.append(item)

    def start(self) -> ShadowScorer:
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # Wakes every poll_s (10 ms) and scores what arrived meanwhile as one batch: a few GIL
        # acquisitions a second instead of one per request, so the request thread rarely waits
        # for the GIL; the scoring itself (compiled trees, nogil) does not hold it. Niced like
        # the log writer: on a busy machine the request thread gets the CPU first.
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            if self._stop.is_set():
                if not self._queue:
                    return
            elif len(self._queue) < self.batch:
                time.sleep(self.poll_s)
            if not self._queue:
                continue
            try:
                self._score_some()
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("shadow worker failed")

    def _score_some(self) -> None:
        q = self._queue
        items = [q.popleft() for _ in range(min(len(q), self.batch))]
        now = time.monotonic()
        fresh = [it for it in items if now - it.enqueued <= self.stale_after_s]
        if len(fresh) < len(items):
            self.metrics.shadow_dropped["stale"] += len(items) - len(fresh)
        by_model: dict[int, list[ShadowItem]] = {}
        for it in fresh:
            by_model.setdefault(id(it.model), []).append(it)
        for group in by_model.values():
            self._score_group(group)

    def _score_group(self, group: list[ShadowItem]) -> None:
        model = group[0].model
        names = model.features
        m = self.metrics
        status, error, scores = "ok", None, None
        started = time.perf_counter()
        try:
            read = attribute_reader(names)
            x = np.array([read(it.request) for it in group], dtype=np.float32)  # None -> NaN
            scores = model.predict(x)
        except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never raised
            status, error = "error", f"{type(exc).__name__}: {exc}"[:500]
            m.shadow_errors += len(group)
        elapsed = time.perf_counter() - started
        m.shadow_latency.observe(elapsed)
        if status == "ok" and elapsed > self.timeout_s:
            status, error, scores = "timeout", f"shadow scoring took {elapsed * 1000:.0f} ms > {self.timeout_s * 1000:.0f} ms", None
            m.shadow_timeouts += len(group)
        now = time.time()
        per_row_ms = elapsed * 1000 / len(group)
        for i, it in enumerate(group):
            if scores is not None:
                score = float(scores[i])
                thr = model.threshold_for(it.request.merchant_id)
                decision = "block" if score >= thr else "allow"
                m.decisions[("shadow", model.version, decision)] += 1
                if decision != it.served_decision:
                    m.shadow_disagreements[it.served_role] += 1
            else:
                score, thr, decision = None, model.threshold_for(it.request.merchant_id), None
            if self.log is not None:
                self.log.append(DecisionRow(it.request_id, now, "shadow", model.version, score, thr, decision, status,
                                            error, per_row_ms, it.config_generation, 1.0, False, it.request,
                                            None))   # a shadow decides nothing: never explored
        if status == "ok":
            m.shadow_scored += len(group)

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued (up to `timeout`), then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
