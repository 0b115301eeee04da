"""Prometheus metrics, written by hand (text exposition format 0.0.4): no dependency,
and each counter has one writer thread, so plain ints suffice under the GIL.

    >>> m = Metrics(); m.observe_request("/v1/decide", 200, 0.0012); print(m.render())
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PATHS = frozenset({"/v1/decide", "/healthz", "/readyz", "/metrics", "/admin/config", "/admin/reload"})


def _labels(**kv: object) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in kv.items())
    return "{" + inner + "}" if inner else ""


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, **labels: object) -> list[str]:
        out, acc = [], 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f"{name}_bucket{_labels(**labels, le=f'{b:g}')} {acc}")
        out.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {self.count}")
        out.append(f"{name}_sum{_labels(**labels)} {self.sum:.6f}")
        out.append(f"{name}_count{_labels(**labels)} {self.count}")
        return out


class Metrics:
    """Counters of the decision service; render() gives the /metrics page."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.decisions: dict[tuple[str, int, str], int] = defaultdict(int)  # (role, version, decision)
        self.missing_features: dict[str, int] = defaultdict(int)            # feature -> requests without it
        self.shadow_disagreements: dict[str, int] = defaultdict(int)        # against served role
        self.shadow_scored = 0
        self.shadow_errors = 0
        self.shadow_timeouts = 0
        self.shadow_dropped: dict[str, int] = defaultdict(int)              # reason
        self.shadow_latency = Histogram()
        self.reloads: dict[str, int] = defaultdict(int)                     # ok | failed
        self.gauges: dict[str, Callable[[], float]] = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        if path not in PATHS:
            path = "other"
        self.requests[(path, status)] += 1
        h = self.latency.get(path)
        if h is None:
            h = self.latency[path] = Histogram()
        h.observe(seconds)

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")

        family("ratchet_requests_total", "counter", "HTTP requests by path and status code.")
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f"ratchet_requests_total{_labels(path=path, status=status)} {n}")
        family("ratchet_request_duration_seconds", "histogram", "HTTP request latency by path (server side).")
        for path, h in sorted(self.latency.items()):
            lines.extend(h.render("ratchet_request_duration_seconds", path=path))
        family("ratchet_decisions_total", "counter", "Decisions by role, version and decision.")
        for (role, version, decision), n in sorted(self.decisions.items()):
            lines.append(f"ratchet_decisions_total{_labels(role=role, version=version, decision=decision)} {n}")
        family("ratchet_missing_features_total", "counter",
               "Decision requests that left out a feature their model allows to be missing (absent or null), "
               "by feature.")
        for feature, n in sorted(self.missing_features.items()):
            lines.append(f"ratchet_missing_features_total{_labels(feature=feature)} {n}")
        family("ratchet_block_rate", "gauge", "Share of decisions that blocked, by role, since start.")
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (role, _v, decision), n in list(self.decisions.items()):
            totals[role][1] += n
            if decision == "block":
                totals[role][0] += n
        for role, (blocked, total) in sorted(totals.items()):
            lines.append(f"ratchet_block_rate{_labels(role=role)} {blocked / total if total else 0.0:.6f}")
        family("ratchet_shadow_scored_total", "counter", "Requests the shadow model scored.")
        lines.append(f"ratchet_shadow_scored_total {self.shadow_scored}")
        family("ratchet_shadow_disagreements_total", "counter",
               "Shadow decisions that differ from the served decision, by served role.")
        for role in ("production", "canary"):
            lines.append(f"ratchet_shadow_disagreements_total{_labels(against=role)} {self.shadow_disagreements[role]}")
        family("ratchet_shadow_errors_total", "counter", "Shadow scorings that raised.")
        lines.append(f"ratchet_shadow_errors_total {self.shadow_errors}")
        family("ratchet_shadow_timeouts_total", "counter", "Shadow scorings slower than the shadow timeout.")
        lines.append(f"ratchet_shadow_timeouts_total {self.shadow_timeouts}")
        family("ratchet_shadow_dropped_total", "counter", "Shadow requests dropped (queue full or stale).")
        for reason in ("queue_full", "stale"):
            lines.append(f"ratchet_shadow_dropped_total{_labels(reason=reason)} {self.shadow_dropped[reason]}")
        family("ratchet_shadow_duration_seconds", "histogram", "Shadow scoring time per batch.")
        lines.extend(self.shadow_latency.render("ratchet_shadow_duration_seconds"))
        family("ratchet_reloads_total", "counter", "Configuration reloads by outcome.")
        for outcome in ("ok", "failed"):
            lines.append(f"ratchet_reloads_total{_labels(outcome=outcome)} {self.reloads[outcome]}")
        for name, fn in sorted(self.gauges.items()):
            family(name, "gauge", name.replace("_", " "))
            try:
                lines.append(f"{name} {float(fn()):g}")
            except Exception:  # noqa: BLE001 - a broken gauge must not break the page
                lines.append(f"{name} NaN")
        family("ratchet_uptime_seconds", "gauge", "Seconds since the service started.")
        lines.append(f"ratchet_uptime_seconds {time.time() - self.started:.1f}")
        return "\n".join(lines) + "\n"
