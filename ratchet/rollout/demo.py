"""The rollout part of `ratchet demo`: a real decision service, replayed traffic, the controller.

After the gated releases (v1 @production, v2 @staging), this starts the decision service
as a local process, replays the release's held-out test window at it, and lets the
controller (LocalProcessBackend, contracts/rollout-demo.yaml, mode auto) walk v2 through
shadow (reviewed against the contract on the replayed rows' matured labels) and the
canary ramp to production. Then a bad candidate -- v2's model re-registered with a
per-merchant threshold table mis-typed for the merchants of two countries -- is put at
@canary the way a person would, and the block-rate guard rolls it back on its own.
The service is stopped cleanly and its Parquet decision log checked: every request the
replay sent is logged exactly once per role.

The rows are replayed in time order, as live traffic would arrive, looping when they run
out. Block-rate guards count cards, not decisions (see per_card). On two busy cores the
replay reaches ~550 requests/s and the whole part takes ~2.5-3 minutes; with the demo
plan's min_support of 300 per country the bad candidate is caught at the 25% or 50% step.

    >>> run_rollout_demo("sqlite:///demo-out/mlflow.db", "fraud", Path("demo-out"),
    ...                  Path("runs/<release>/.../training_set/dataset/test.parquet"), candidate_version=2)
    0
"""

from __future__ import annotations

import io
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ratchet.rollout.plan import RolloutPlan
from ratchet.rollout.state import DeploymentState, Observations

#: Decision-log columns the guards and the shadow review read (the `features` map is not
#: loaded: only the features a contract slices on are pulled out of it).
LOG_COLUMNS = ("request_id", "ts", "role", "version", "score", "threshold", "decision", "status", "error",
               "latency_ms", "config_generation")


# ---- reading the live decision log -----------------------------------------------------------
class DecisionLogTail:
    """The decision log folder as one DataFrame, reading each Parquet file once.

    The service writes a file per rotation under a dot-name and renames it, so a listed
    file is complete and never changes: files already read are kept in memory and only
    new ones are read on each call. `features` names values pulled out of the log's
    `features` map into columns (e.g. amount, which the contract's amount bands need).
    """

    def __init__(self, folder: str | Path, features: Sequence[str] = ("amount",)) -> None:
        self.folder = Path(folder)
        self.features = tuple(features)
        self._parts: dict[str, Any] = {}
        self._frame = None

    def frame(self):  # noqa: ANN201 - pandas DataFrame
        import pandas as pd
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from ratchet.serving.schema import SLICE_KEYS

        new = sorted(p for p in self.folder.glob("decisions-*.parquet") if p.name not in self._parts) \
            if self.folder.exists() else []
        for p in new:
            t = pq.read_table(p, columns=[*LOG_COLUMNS, *SLICE_KEYS, "features"])
            for name in self.features:
                t = t.append_column(name, pc.map_lookup(t["features"], name, "first"))
            self._parts[p.name] = t.drop_columns(["features"]).to_pandas()
        if new or self._frame is None:
            parts = [self._parts[k] for k in sorted(self._parts)]
            self._frame = (pd.concat(parts, ignore_index=True) if parts else
                           pd.DataFrame(columns=[*LOG_COLUMNS, *SLICE_KEYS, *self.features]))
        return self._frame


def per_card(log, keys: Sequence[str]):  # noqa: ANN001, ANN201 - pandas DataFrame in and out
    """One row per (role, card): blocked when any of the card's answered decisions was.

    The canary is assigned by card and fraud comes in bursts on one card, so decisions
    of one card are not independent: a single compromised card in the canary can move a
    country's transaction block rate by several times within a step window, and an
    interval that counts its ten blocks as ten pieces of evidence calls that credible.
    Counting cards -- the unit the canary randomises -- keeps the block-rate guard's
    interval honest. Error rate and latency stay per decision."""
    import numpy as np
    import pandas as pd

    ok = log[(log["status"].astype(str) == "ok") & log["card_id"].notna()]
    if not len(ok):
        return ok
    ok = ok.assign(_blk=(ok["decision"].astype(str) == "block").to_numpy())
    agg = {"_blk": ("_blk", "max"), "ts": ("ts", "max"), **{k: (k, "first") for k in keys if k in ok.columns}}
    g = ok.groupby(["role", "card_id"], sort=False, observed=True).agg(**agg).reset_index()
    g["decision"] = np.where(g["_blk"].to_numpy(), "block", "allow")
    g["status"] = "ok"
    return pd.DataFrame(g.drop(columns=["_blk"]))


def live_observer(tail: DecisionLogTail, plan: RolloutPlan, labels=None):  # noqa: ANN001, ANN201
    """observe(fact, windows) for the Controller from a live decision log: guards per role
    from the start of its current step (block rates counted per card, see per_card), and
    the shadow review on matured `labels` (request_id, label) when the plan names a
    contract, pending until the labelled shadow decisions can judge the whole population."""
    import pandas as pd

    from ratchet.rollout.guards import observe_decisions, review_shadow

    per = plan.guards.block_rate.per if plan.guards.block_rate is not None else "country"
    cohort = plan.canary.cohort
    keys = [per, *(k for k, _ in cohort or ())]
    needs = review_needs(plan.shadow.contract) if plan.shadow.contract else (0, 0, 0)

    def since(log, t: datetime | None):  # noqa: ANN001, ANN202
        return log if t is None else log[(pd.to_datetime(log["ts"], utc=True) >= pd.Timestamp(t)).to_numpy()]

    def observe(fact: DeploymentState, windows: dict[str, datetime | None]) -> Observations:
        log = tail.frame()
        if not len(log):
            return Observations(per=per)
        cw, sw = since(log, windows.get("canary")), since(log, windows.get("shadow"))
        canary = observe_decisions(cw, per=per, cohort=cohort)
        shadow = observe_decisions(sw, per=per)
        canary_cards = observe_decisions(per_card(cw, keys), per=per, cohort=cohort)
        shadow_cards = observe_decisions(per_card(sw, keys), per=per)
        review = None
        if fact.shadow is not None and plan.shadow.contract and labels is not None:
            lab = labels() if callable(labels) else labels
            # a shadow scoring that timed out or failed has no score: judge the scored ones
            scored = sw[(sw["status"].astype(str) == "ok").to_numpy()]
            review = _enough_labels(scored, lab, needs) or review_shadow(scored, lab, plan.shadow.contract)
        roles = {"production": canary.role("production"), "canary": canary.role("canary"),
                 "shadow": shadow.role("shadow")}
        blocks = {k: v for k, v in (("canary", canary_cards.block_counts.get("canary")),
                                    ("shadow", shadow_cards.block_counts.get("shadow"))) if v}
        return Observations(roles=roles, block_counts=blocks, shadow_review=review,
                            window_start=windows["canary"].isoformat() if windows.get("canary") else None, per=per)

    return observe


_POSITIVES = frozenset({"recall", "recall_at_fpr", "auc", "average_precision"})
_NEGATIVES = frozenset({"fpr"})


def review_needs(contract_path: str) -> tuple[int, int, int]:
    """(frauds, non-frauds, rows) the contract's whole-population blocking clauses need.

    A gate fails such a clause below its min_support (never pass without evidence); a
    live review has not failed then, it has not seen enough yet, so it stays pending."""
    from ratchet.contracts import load_contract

    pos = neg = rows = 0
    for c in load_contract(contract_path).clauses:
        if c.per is not None or not c.blocking:
            continue
        if c.metric in _POSITIVES:
            pos = max(pos, c.min_support)
        elif c.metric in _NEGATIVES:
            neg = max(neg, c.min_support)
        else:
            rows = max(rows, c.min_support)
    return pos, neg, rows


def _enough_labels(window, labels, needs: tuple[int, int, int]):  # noqa: ANN001, ANN202
    """A pending ShadowReview while the labelled shadow decisions are too few, else None."""
    from ratchet.rollout.state import ShadowReview

    ids = window.loc[window["role"] == "shadow", "request_id"]
    lab = labels.loc[labels["request_id"].isin(ids), "label"]
    n, pos = len(lab), int(lab.sum())
    need_pos, need_neg, need_rows = needs
    if pos >= need_pos and n - pos >= need_neg and n >= need_rows:
        return None
    return ShadowReview("pending", f"{n:,} labelled shadow decisions with {pos} frauds; the contract judges the "
                                   f"whole population from {need_pos} frauds, {need_neg} non-frauds")


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
def register_mistyped_thresholds(registry, source: int, merchants: Sequence[str], threshold: float,  # noqa: ANN001
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


# ---- driving the controller -------------------------------------------------------------------
def drive(controller, until: Callable[[], bool], *, timeout: float, every: float = 2.0,  # noqa: ANN001
          say: Callable[[str], None] = print, quiet_waits: float = 15.0) -> bool:
    """Run controller passes until `until()` holds (True) or `timeout` seconds pass (False).

    Each action's one-line event is said; waits (holding, counting decisions) at most
    every `quiet_waits` seconds so the log stays readable. A failed pass is said and retried."""
    from ratchet.errors import RatchetError

    deadline = time.monotonic() + timeout
    last_wait = 0.0
    while time.monotonic() < deadline:
        try:
            action = controller.run_once()
        except RatchetError as exc:
            say(f"pass failed: {exc}")
            time.sleep(every)
            continue
        stamp = controller.clock().strftime("%H:%M:%S")
        if action.acts:
            say(f"{stamp} {action.event}")
        elif time.monotonic() - last_wait >= quiet_waits:
            last_wait = time.monotonic()
            say(f"{stamp} {action.event}")
        if until():
            return True
        if not action.acts:
            time.sleep(every)
    return until()


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


def run_rollout_demo(tracking_uri: str, model_name: str, out_dir: Path, replay_data: Path, candidate_version: int,
                     *, plan_path: str | None = None, port: int | None = None, rate: float = 0.0,
                     concurrency: int = 2, bad_countries: int = 2, bad_threshold: float = 0.02,
                     out: TextIO | None = None, phase_timeout: float = 180.0) -> int:
    """The rollout demo; 0 when the candidate reached production, the bad candidate was rolled
    back by a guard, no replayed request failed and the decision log holds each decision once."""
    from ratchet.registry import Registry
    from ratchet.rollout.backends.local import LocalProcessBackend, ServeCommand
    from ratchet.rollout.cli import promote, render_status, status
    from ratchet.rollout.controller import Controller
    from ratchet.rollout.plan import load_plan
    from ratchet.serving.replay import ReplayReport, load_transactions, replay, service_fields, write_labels

    out = out or sys.stdout
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[demo] {msg}", file=out, flush=True)

    def event(msg: str) -> None:
        print(f"  {msg}", file=out, flush=True)

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
                           extra_args=("--log-rotate-seconds", "1", "--log-rotate-rows", "20000"),
                           log_file=str(out_dir / "decision-service.log")))
    say(f"rollout: starting the decision service on {backend.url} (production: @production = v{production}); "
        f"decision log {decisions}")
    stop = threading.Event()
    report: list[ReplayReport] = []
    replayer: threading.Thread | None = None
    promoted = caught = False
    bad: int | None = None
    try:
        backend.start()
        # in the order they happened, like live traffic (and no peeking at a lucky shuffle)
        data = load_transactions(replay_data, service_fields(backend.url), order_by="ts")
        # the test window ends `maturity_days` before the release date: its labels are mature
        labels = data.labels_frame(len(data) * 4)
        write_labels(labels, out_dir / "replay-labels.parquet")
        skipped = f"; {sum(data.skipped.values())} rows left out, the service would reject them " \
                  f"({', '.join(f'{k} out of range' for k in data.skipped)})" if data.skipped else ""
        say(f"rollout: replaying {len(data):,} held-out transactions (the release's test window, in time order) "
            f"{'as fast as the service answers' if not rate else f'at {rate:g}/s'}{skipped}")
        replayer = threading.Thread(target=lambda: report.append(
            replay(backend.url, data, rate=rate, loop=True, concurrency=concurrency, stop=stop, keep_ids=True)),
            name="replay", daemon=True)
        replayer.start()

        ctrl = Controller(reg, backend, plan, live_observer(DecisionLogTail(decisions), plan, labels),
                          actor="ratchet controller (demo)", out=io.StringIO())
        say(f"rollout: controller, plan {Path(plan.path).name} (mode {plan.mode}): v{candidate_version} @staging -> "
            "shadow -> canary " + "/".join(f"{s.weight:g}" for s in plan.steps) + "% -> production")
        every = min(plan.interval, 2.0)
        gone = ("rolled_back", "retired", "rejected")
        drive(ctrl, lambda: (reg.alias_version("production") == candidate_version
                             and reg.alias_version("canary") is None)
              or reg.tags(candidate_version).get("state") in gone, timeout=phase_timeout, every=every, say=event)
        promoted = reg.alias_version("production") == candidate_version
        if not promoted:
            tags = reg.tags(candidate_version)
            say(f"rollout: v{candidate_version} did not reach production "
                f"({tags.get('state')}: {tags.get('rollback.reason', 'timed out')})")
        else:
            # the bad candidate: the right model with a wrong threshold table for two countries' merchants
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
            drive(ctrl, lambda: reg.tags(bad).get("state") in gone or reg.alias_version("production") == bad,
                  timeout=phase_timeout, every=every, say=event)
            tags = reg.tags(bad)
            caught = tags.get("state") == "rolled_back" and "block rate" in tags.get("rollback.reason", "")
            if not caught:
                say(f"rollout: v{bad} was not rolled back by the block-rate guard (state {tags.get('state')})")
            time.sleep(1.0)  # a little traffic on the restored configuration
        stop.set()
        replayer.join(30)
        print(render_status(status(reg, backend)), file=out)
        print("local deployment history (revision, what ran, why):", file=out)
        for line in backend.history():
            print(f"  {line}", file=out)
    finally:
        stop.set()
        if replayer is not None:
            replayer.join(30)
        code = backend.stop()
        if code is not None:
            say(f"rollout: decision service stopped (exit {code}), decision log flushed")
    if not report:
        say("rollout: the replay did not finish")
        return 1
    rep = report[0]
    say(rep.summary())
    check = check_decision_log(decisions, rep.ok_ids)
    say(check.text())
    ok = promoted and caught and rep.failed == 0 and check.exactly_once
    say(f"rollout: {'as expected' if ok else 'NOT as expected'}: v{candidate_version} "
        f"{'promoted' if promoted else 'not promoted'}, "
        + (f"v{bad} {'rolled back by the guard' if caught else 'not caught'}, " if bad else "")
        + f"{rep.failed} requests without a 2xx answer, done in {time.perf_counter() - started:.0f}s")
    return 0 if ok else 1


def _merchant_countries(path: Path):  # noqa: ANN202 - pandas DataFrame
    import pandas as pd

    return pd.read_parquet(path, columns=["merchant_id", "country"]).drop_duplicates()
