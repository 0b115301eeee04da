"""The rollout part of `ratchet demo`: a real decision service, replayed traffic, the controller.

After the gated releases (v1 @production, v2 @staging), this starts the decision service
as a local process and replays live traffic at it -- the transactions after the release's
test window, which neither model was trained or judged on -- while the controller
(LocalProcessBackend, contracts/rollout-demo.yaml, mode auto) walks v2 through shadow
(the offline verdict's open questions re-judged on the shadow's decisions and their
labels, with confidence sequences) and the canary ramp to production. Then a bad candidate
-- v2's model re-registered with a per-merchant threshold table mis-typed for the
merchants of two countries -- is put at @canary the way a person would, and the
block-rate guard rolls it back on its own. The service is stopped cleanly and its Parquet
decision log checked: every request the replay sent is logged exactly once per role.

Deterministic by construction (LockStep): transactions go out in time order, each once,
in fixed batches; the controller acts only between batches, on a decision log that holds
every decision of the batches so far; the plan counts decisions, not seconds. A slow or a
busy machine takes longer and prints the same events (rollout-events.txt).

    >>> run_rollout_demo("sqlite:///demo-out/mlflow.db", "fraud", Path("demo-out"),
    ...                  Path("demo-out/live-traffic.parquet"), candidate_version=2)
    0
"""

from __future__ import annotations

import io
import json
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO


from ratchet.rollout.observe import DecisionLogTail, live_observer
from ratchet.stages.model import LEFT_ROLLOUT, State


if TYPE_CHECKING:
    from ratchet.registry import Registry


@dataclass(frozen=True)
class LogCheck:
    """Per served/shadow role: rows, distinct request ids, ids logged more than once."""

    rows: dict[str, int] = field(default_factory=dict)
    distinct: dict[str, int] = field(default_factory=dict)
    duplicated: dict[str, int] = field(default_factory=dict)
    missing: int = 0          # 2xx answers with no served row
    unexpected: int = 0       # served rows for requests the replay did not send

    @property
    def exactly_once(self) -> bool:
        return not any(self.duplicated.values()) and self.missing == 0 and self.unexpected == 0

    def text(self) -> str:
        roles = ", ".join(f"{r} {self.rows[r]:,} rows / {self.distinct[r]:,} ids" for r in sorted(self.rows))
        verdict = "every decision logged exactly once" if self.exactly_once else (
            f"NOT exactly once: duplicated {self.duplicated}, missing {self.missing}, unexpected {self.unexpected}")
        return f"decision log: {roles}; {verdict}"


def check_decision_log(folder: str | Path, sent_ok: set[str] | None = None) -> LogCheck:
    """Count request ids per role in a (closed) decision log; with `sent_ok` (the ids answered
    2xx), every one of them must have exactly one served row (production or canary)."""
    import pandas as pd

    log = pd.read_parquet(folder, columns=["request_id", "role"])
    rows, distinct, dup = {}, {}, {}
    for role, g in log.groupby("role"):
        counts = g["request_id"].value_counts()
        rows[str(role)], distinct[str(role)], dup[str(role)] = len(g), len(counts), int((counts > 1).sum())
    served = log[log["role"].isin(["production", "canary"])]
    dup["served"] = int((served["request_id"].value_counts() > 1).sum())
    missing = unexpected = 0
    if sent_ok is not None:
        ids = set(served["request_id"])
        missing, unexpected = len(sent_ok - ids), len(ids - sent_ok)
    return LogCheck(rows, distinct, dup, missing, unexpected)


# ---- the bad candidate -----------------------------------------------------------------------
def register_mistyped_thresholds(registry: Registry, source: int, merchants: Sequence[str], threshold: float,
                                 *, why: str) -> int:
    """Re-register version `source`'s model as a new version whose `merchant_thresholds` tag
    gives `merchants` the threshold `threshold` (a mis-typed table). The release record is
    `source`'s own (spec, data snapshot, windows, metrics, verdict): offline, the model
    is the one that passed; the reason says what differs. Returns the new version."""
    from ratchet.registry import ReleaseRecord
    from ratchet.train.trainer import save_model

    tags = registry.tags(source)
    booster = registry.load_booster(source)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(booster, Path(tmp) / "model")
        record = ReleaseRecord(
            model_path=str(path), spec_yaml=f"# model of version {source}, re-registered\n",
            spec_hash=tags.get("spec_hash", "unknown"),
            snapshot={"path": tags.get("data_path", ""), "rows": tags.get("data_rows", ""),
                      "content_hash": tags.get("data_hash", "")},
            windows=json.loads(tags.get("windows") or "{}"), metrics={},
            verdict={"passed": tags.get("verdict") == "passed", "inherited_from": source},
            passed=tags.get("verdict") == "passed",
            reason=f"version {source}'s model and offline verdict, re-registered with a hand-edited "
                   f"merchant threshold table: {why}",
            code_revision=tags.get("code_revision", "unknown"),
            threshold=float(tags["threshold"]) if tags.get("threshold") else None)
        version = registry.register(record)
    registry.set_tags(version, {"merchant_thresholds": json.dumps({m: threshold for m in sorted(merchants)}),
                                "derived_from": str(source)})
    return version


# ---- the demo's service and plan --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_test_window(report_dir: str | Path) -> Path:
    """The held-out test window a release run wrote: <report_dir>/outputs/<run>/training-set/dataset/test.parquet."""
    found = sorted(Path(report_dir).glob("outputs/*/training-set/dataset/test.parquet"))
    if not found:
        from ratchet.errors import RatchetError

        raise RatchetError(f"no training-set/dataset/test.parquet under {report_dir}/outputs; "
                           "pass the release's report folder (runs/release-...)")
    return found[-1]


def _plan_path() -> str:
    from ratchet.files import project_file

    return project_file("contracts/rollout-demo.yaml")


def wait_logged(tail: DecisionLogTail, ids: Sequence[str], *, shadow: bool, timeout: float = 30.0) -> bool:
    """Wait until the decision log holds a served row (and a shadow row, when a shadow runs)
    for every request id of a batch: the controller must judge the same rows on any machine."""
    want = set(ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = tail.frame()
        recent = log[log["request_id"].isin(want)] if len(log) else log
        served = set(recent.loc[recent["role"].isin(["production", "canary"]), "request_id"]) if len(recent) else set()
        shadowed = set(recent.loc[recent["role"] == "shadow", "request_id"]) if len(recent) else set()
        if served >= want and (not shadow or shadowed >= want):
            return True
        time.sleep(0.1)
    return False


def _next_second() -> None:
    """Sleep past the next whole second: step windows start at whole seconds (the registry's
    time stamps), so every request of an earlier batch falls before the next step's window."""
    time.sleep(1.0 - (time.time() % 1.0) + 0.02)


@dataclass
class LockStep:
    """Replay in fixed batches, then let the controller act on exactly those decisions.

    Decisions, not seconds, decide what the controller sees: a batch of `batch` transactions
    is sent (each once, in time order), the driver waits until the decision log holds all of
    them, and only then runs controller passes until one waits. A slow machine takes longer
    and tells the same story."""

    url: str
    data: Any                      # ratchet.serving.replay.Transactions
    tail: DecisionLogTail
    controller: Any
    backend: Any
    batch: int = 1000
    sent: int = 0
    reports: list = field(default_factory=list)
    events: list = field(default_factory=list)   # acting events, in order (what two runs compare)
    say: Callable[[str], None] = print

    @property
    def left(self) -> int:
        return len(self.data) - self.sent

    def step(self) -> None:
        """One batch, then controller passes until it waits."""
        from ratchet.serving.replay import replay

        chunk = self.data.rows(self.sent, min(len(self.data), self.sent + self.batch))
        self.reports.append(replay(self.url, chunk, rate=0, concurrency=2, keep_ids=True))
        self.sent += len(chunk)
        if not wait_logged(self.tail, chunk.ids, shadow=self.backend.read().shadow is not None):
            self.say(f"  (the decision log did not show all {len(chunk):,} decisions of the batch within 30 s)")
        _next_second()
        for _ in range(20):
            action = self.controller.run_once()
            if not action.acts:
                break
            self.events.append(action.event)
            self.say(f"  after {self.sent:,} transactions: {action.event}")

    def run_until(self, done: Callable[[], bool]) -> bool:
        while not done() and self.left > 0:
            self.step()
        return done()


def run_rollout_demo(tracking_uri: str, model_name: str, out_dir: Path, replay_data: Path, candidate_version: int,
                     *, plan_path: str | None = None, port: int | None = None, batch: int = 1000,
                     bad_countries: int = 2, bad_threshold: float = 0.02, out: TextIO | None = None) -> int:
    """The rollout demo; 0 when the candidate reached production, the bad candidate was rolled
    back by a guard, no replayed request failed and the decision log holds each decision once.

    replay_data: the live traffic (transactions after the release's test window, with
    features and labels), replayed in time order, each transaction once, in lock-step with
    the controller (see LockStep)."""
    from ratchet.registry import Registry
    from ratchet.rollout.backends.local import LocalProcessBackend, ServeCommand
    from ratchet.app.commands.rollout import promote, render_status, status
    from ratchet.rollout.controller import Controller
    from ratchet.rollout.plan import load_plan
    from ratchet.serving.replay import ReplayReport, load_transactions, service_fields, write_labels

    out = out or sys.stdout
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[demo] {msg}", file=out, flush=True)

    out_dir = Path(out_dir).resolve()
    plan = load_plan(plan_path or _plan_path())
    reg = Registry(tracking_uri, model_name)
    production = reg.alias_version("production")
    if production is None:
        say("rollout: no version at @production; run the releases first")
        return 2
    if reg.alias_version("staging") != candidate_version:
        reg.set_stage(candidate_version, "staging", actor="ratchet demo", reason="candidate for the rollout demo")
    decisions = out_dir / "decisions"
    backend = LocalProcessBackend(
        f"http://127.0.0.1:{port or free_port()}", out_dir,
        serve=ServeCommand(reg.tracking_uri, model_name, decision_log=str(decisions),
                           extra_args=("--log-rotate-seconds", "0.5", "--log-rotate-rows", "20000",
                                       "--shadow-timeout-ms", "5000"),
                           log_file=str(out_dir / "decision-service.log")))
    say(f"rollout: starting the decision service on {backend.url} (production: @production = v{production}); "
        f"decision log {decisions}")
    promoted = caught = False
    bad: int | None = None
    drive_: LockStep | None = None
    gone = LEFT_ROLLOUT
    try:
        backend.start()
        data = load_transactions(replay_data, service_fields(backend.url), order_by="ts")
        labels = data.labels_frame()
        write_labels(labels, out_dir / "replay-labels.parquet")
        skipped = f"; {sum(data.skipped.values())} rows left out, the service would reject them " \
                  f"({', '.join(f'{k} out of range' for k in data.skipped)})" if data.skipped else ""
        say(f"rollout: live traffic = {len(data):,} transactions after the release's test window, in time order, "
            f"each sent once, {batch:,} at a time; the controller acts between batches{skipped}")
        tail = DecisionLogTail(decisions)
        ctrl = Controller(reg, backend, plan, live_observer(DecisionLogTail(decisions), plan, labels),
                          actor="ratchet controller (demo)", out=io.StringIO())
        say(f"rollout: controller, plan {Path(plan.path).name} (mode {plan.mode}): v{candidate_version} @staging -> "
            "shadow -> canary " + "/".join(f"{s.weight:g}" for s in plan.steps) + "% -> production")
        drive_ = LockStep(backend.url, data, tail, ctrl, backend, batch=batch, say=lambda m: print(m, file=out, flush=True))
        promoted = drive_.run_until(lambda: (reg.alias_version("production") == candidate_version
                                             and reg.alias_version("canary") is None)
                                    or reg.tags(candidate_version).get("state") in gone)
        promoted = promoted and reg.alias_version("production") == candidate_version
        if not promoted:
            tags = reg.tags(candidate_version)
            say(f"rollout: v{candidate_version} did not reach production "
                f"({tags.get('state')}: {tags.get('rollback.reason', 'live traffic ran out')})")
        else:
            frame = _merchant_countries(replay_data)
            top = list(frame["country"].value_counts().index[:bad_countries])
            merchants = sorted(frame.loc[frame["country"].isin(top), "merchant_id"].unique())
            bad = register_mistyped_thresholds(
                reg, candidate_version, merchants, bad_threshold,
                why=f"the {len(merchants)} merchants of {' and '.join(top)} got {bad_threshold:g} (a slipped "
                    "decimal) instead of the version's threshold")
            say(f"rollout: v{bad} = v{candidate_version}'s model with a mis-typed merchant threshold table "
                f"({bad_threshold:g} for the {len(merchants)} merchants of {'/'.join(top)}); "
                "a person puts it at @canary")
            say(promote(reg, bad, "canary", actor="demo user", reason="new merchant threshold table"))
            drive_.run_until(lambda: reg.tags(bad).get("state") in gone or reg.alias_version("production") == bad)
            tags = reg.tags(bad)
            reason = tags.get("rollback.reason", "")
            caught = (tags.get("state") == State.ROLLED_BACK and "block rate" in reason
                      and any(f"block rate {c} " in reason for c in top))  # a live guard, naming the country
            if not caught:
                say(f"rollout: v{bad} was not rolled back by the block-rate guard (state {tags.get('state')})")
        print(render_status(status(reg, backend)), file=out)
        print("local deployment history (revision, what ran, why):", file=out)
        for line in backend.history():
            print(f"  {line}", file=out)
    finally:
        code = backend.stop()
        if code is not None:
            say(f"rollout: decision service stopped (exit {code}), decision log flushed")
    if drive_ is None or not drive_.reports:
        say("rollout: the replay did not run")
        return 1
    rep = ReplayReport.combine(drive_.reports)
    say(rep.summary())
    check = check_decision_log(decisions, rep.ok_ids)
    say(check.text())
    (out_dir / "rollout-events.txt").write_text("\n".join(drive_.events) + "\n", encoding="utf-8")
    say(f"rollout: {len(drive_.events)} controller events in {out_dir / 'rollout-events.txt'} "
        f"(after {drive_.sent:,} of {len(drive_.data):,} transactions)")
    ok = promoted and caught and rep.failed == 0 and check.exactly_once
    say(f"rollout: {'as expected' if ok else 'NOT as expected'}: v{candidate_version} "
        f"{'promoted' if promoted else 'not promoted'}, "
        + (f"v{bad} {'rolled back by the guard' if caught else 'not caught'}, " if bad else "")
        + f"{rep.failed} requests without a 2xx answer, done in {time.perf_counter() - started:.0f}s")
    return 0 if ok else 1


def _merchant_countries(path: Path):  # noqa: ANN202 - pandas DataFrame
    import pandas as pd

    return pd.read_parquet(path, columns=["merchant_id", "country"]).drop_duplicates()
