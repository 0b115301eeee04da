"""Prometheus metrics of the decision service, exposed through prometheus_client.

The request path only bumps plain ints in dicts (each counter has one writer thread, so
the GIL suffices, no lock per request); a custom collector turns them into metric
families when /metrics is scraped, and prometheus_client writes the text format.

    >>> m = Metrics(); m.observe_request("/v1/decide", 200, 0.0012); print(m.render())
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE  # what render() writes
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PATHS = frozenset({"/v1/decide", "/healthz", "/readyz", "/metrics", "/admin/config", "/admin/reload"})


class Histogram:
    """Non-cumulative bucket counts; one writer thread."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs ending with +Inf; le written `:g` (le="1", not "1.0")."""
        out, acc = [], 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append((f"{b:g}", acc))
        # +Inf is the total: a value observed between the two reads lands in it, never in a bucket
        out.append(("+Inf", max(acc, self.count)))
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
        # exploration, per production version (ratchet.exploration): would-be blocks that had a
        # chance to be let through, those let through, their amount and expected loss (score x amount)
        self.exploration_eligible: dict[int, int] = defaultdict(int)
        self.explored: dict[int, int] = defaultdict(int)
        self.exploration_amount: dict[int, float] = defaultdict(float)
        self.exploration_expected_loss: dict[int, float] = defaultdict(float)
        self.gauges: dict[str, Callable[[], float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MetricsCollector(self))

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        if path not in PATHS:
            path = "other"
        self.requests[(path, status)] += 1
        h = self.latency.get(path)
        if h is None:
            h = self.latency[path] = Histogram()
        h.observe(seconds)

    def observe_exploration(self, version: int, explored: bool, amount: float, score: float) -> None:
        """One production would-be block that exploration could let through (request path: a few adds)."""
        self.exploration_eligible[version] += 1
        if explored:
            self.explored[version] += 1
            self.exploration_amount[version] += amount
            self.exploration_expected_loss[version] += score * amount

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class MetricsCollector(Collector):
    """Reads a Metrics' counters at scrape time (copies first: other threads keep counting)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the gauges' sources may not exist yet

    def collect(self) -> Iterator[Metric]:
        m = self.m
        requests = CounterMetricFamily("ratchet_requests_total", "HTTP requests by path and status code.",
                                       labels=["path", "status"])
        for (path, status), n in sorted(m.requests.copy().items()):
            requests.add_metric([path, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("ratchet_request_duration_seconds",
                                        "HTTP request latency by path (server side).", labels=["path"])
        for path, h in sorted(m.latency.copy().items()):
            latency.add_metric([path], h.cumulative(), h.sum)
        yield latency
        decisions_now = sorted(m.decisions.copy().items())
        decisions = CounterMetricFamily("ratchet_decisions_total", "Decisions by role, version and decision.",
                                        labels=["role", "version", "decision"])
        for (role, version, decision), n in decisions_now:
            decisions.add_metric([role, str(version), decision], n)
        yield decisions
        missing = CounterMetricFamily(
            "ratchet_missing_features_total",
            "Decision requests that left out a feature their model allows to be missing (absent or null), by feature.",
            labels=["feature"])
        for feature, n in sorted(m.missing_features.copy().items()):
            missing.add_metric([feature], n)
        yield missing
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (role, _v, decision), n in decisions_now:
            totals[role][1] += n
            if decision == "block":
                totals[role][0] += n
        block_rate = GaugeMetricFamily("ratchet_block_rate", "Share of decisions that blocked, by role, since start.",
                                       labels=["role"])
        for role, (blocked, total) in sorted(totals.items()):
            block_rate.add_metric([role], blocked / total if total else 0.0)
        yield block_rate
        yield CounterMetricFamily("ratchet_shadow_scored_total", "Requests the shadow model scored.",
                                  value=m.shadow_scored)
        disagreements = CounterMetricFamily("ratchet_shadow_disagreements_total",
                                            "Shadow decisions that differ from the served decision, by served role.",
                                            labels=["against"])
        for role in ("production", "canary"):
            disagreements.add_metric([role], m.shadow_disagreements.get(role, 0))
        yield disagreements
        yield CounterMetricFamily("ratchet_shadow_errors_total", "Shadow scorings that raised.", value=m.shadow_errors)
        yield CounterMetricFamily("ratchet_shadow_timeouts_total", "Shadow scorings slower than the shadow timeout.",
                                  value=m.shadow_timeouts)
        dropped = CounterMetricFamily("ratchet_shadow_dropped_total", "Shadow requests dropped (queue full or stale).",
                                      labels=["reason"])
        for reason in ("queue_full", "stale"):
            dropped.add_metric([reason], m.shadow_dropped.get(reason, 0))
        yield dropped
        shadow = HistogramMetricFamily("ratchet_shadow_duration_seconds", "Shadow scoring time per batch.", labels=[])
        shadow.add_metric([], m.shadow_latency.cumulative(), m.shadow_latency.sum)
        yield shadow
        yield from _exploration_families(m)
        reloads = CounterMetricFamily("ratchet_reloads_total", "Configuration reloads by outcome.", labels=["outcome"])
        for outcome in ("ok", "failed"):
            reloads.add_metric([outcome], m.reloads.get(outcome, 0))
        yield reloads
        for name, fn in sorted(m.gauges.copy().items()):
            try:
                value = float(fn())
            except Exception:  # noqa: BLE001 - a broken gauge must not break the page
                value = float("nan")
            yield GaugeMetricFamily(name, name.replace("_", " "), value=value)
        yield GaugeMetricFamily("ratchet_uptime_seconds", "Seconds since the service started.",
                                value=time.time() - m.started)


#: (name, help, Metrics attribute) of the exploration counters, each by production version
_EXPLORATION = (
    ("ratchet_exploration_eligible_total", "Production would-be blocks that exploration could let through "
     "(not opted out, under the day's loss cap), by version.", "exploration_eligible"),
    ("ratchet_explored_total", "Production would-be blocks let through by exploration, by version; "
     "the exploration rate is explored / eligible.", "explored"),
    ("ratchet_exploration_amount_total", "Sum of the amounts of the explored payments, by version.",
     "exploration_amount"),
    ("ratchet_exploration_expected_loss_total", "Sum of score x amount of the explored payments: the fraud loss "
     "exploration is expected to let through, by version.", "exploration_expected_loss"),
)


def _exploration_families(m: Metrics) -> Iterator[Metric]:
    # copied in the reverse order of observe_exploration's adds, eligible last: a scrape never
    # shows more explored than eligible decisions
    counts = {attr: getattr(m, attr).copy() for _n, _t, attr in reversed(_EXPLORATION)}
    versions = sorted(counts["exploration_eligible"])
    for name, text, attr in _EXPLORATION:
        family = CounterMetricFamily(name, text, labels=["version"])
        for version in versions:   # every version with an eligible block, zeros included
            family.add_metric([str(version)], counts[attr].get(version, 0))
        yield family
