"""SIGKILL of the rollout controller at its crash points, under replayed load (issue 14, acceptance).

Two real rollouts of v2 (staging -> shadow -> canary 25/50/100% -> production) run side by
side, each on its own MLflow SQLite store, decision service (`python -m ratchet.serving`,
changed by hot reload through the local backend) and replayed traffic (~250 req/s). Each
controller is the `ratchet controller` CLI (ratchet.app.cli.main) as an OS process; a restart
releases a process prepared beforehand with its imports done (crash_helpers.ControllerProcess),
so the test, not the box's load, decides how long the controller stays down. One run is left
alone. In the other, the controller is killed with SIGKILL and restarted at each of:

- right after it journals an action (the ratchet.controller.pending tag appears),
- mid-reload (the backend's state file has `pending` set: POST /admin/reload under way),
- after the reload, before the history write (state file committed, no history event yet),
- random times.

A controller killed right after journaling stays down 4 s, like a normal restart, before its
successor resumes the action; the other kills are followed by an immediate restart.

The kill points are watched from outside (the SQLite file, the state file) and each kill
is classified afterwards from what the dead controller left behind, so the test knows
which points it really hit. Then:

- both runs end in the same aliases, version states, progress, transitions (history keys),
  revision history and service fingerprint, with no journal left;
- no request got a non-2xx answer, and every answered request id is in the decision log
  exactly once;
- every step's real hold, from the decision log (config_generation per row, the service's
  "serving <fingerprint> (generation N)" lines): each canary weight and the shadow served
  at least the plan's hold and decisions before the next configuration replaced it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.crash_helpers import (
    PLAN, ControllerProcess, Load, build_store, db_path, final_state, history_keys,
    hold_shortfalls, local_state, pending_action, served_generations, table, wait_for, write_data,
)
from tests.test_serving import ServiceProcess

pytestmark = pytest.mark.slow

SEED = 14


class Rollout:
    """One run: store, service, replay, controller."""

    def __init__(self, tmp: Path, name: str, template: Path, plan: Path, data: Path) -> None:
        import shutil

        self.dir = tmp / name
        self.dir.mkdir()
        shutil.copy(template / "mlflow.db", self.dir / "mlflow.db")   # model artifacts stay in the template
        self.uri = f"sqlite:///{self.dir / 'mlflow.db'}"
        self.db = db_path(self.uri)
        self.log_dir = self.dir / "decisions"
        self.env = {"MLFLOW_TRACKING_URI": self.uri}
        self.service = ServiceProcess(self.dir, "service", [], self.env, log_dir=self.log_dir)
        self.ctl = ControllerProcess(self.uri, self.service.url, self.dir, plan, self.log_dir, self.dir / "controller.out")
        self.data = data
        self.load: Load | None = None

    def go(self) -> None:
        self.ctl.standby()          # its imports overlap with the service's start-up
        self.service.wait_ready()
        self.load = Load(self.service.url, self.data)
        self.ctl.start()

    def done(self) -> bool:
        from ratchet.registry import Registry

        reg = Registry(self.uri, "fraud")
        a = reg.aliases()
        return (a.get("production") == 2 and "canary" not in a and "shadow" not in a
                and pending_action(self.db) is None and not local_state(self.dir).get("pending"))

    def finish(self) -> dict:
        self.ctl.stop()
        state = final_state(self.uri, self.service.url, self.dir)
        report = self.load.stop()
        assert self.service.stop() in (0, -15)
        return {"state": state, "report": report}


# ---- kill points, seen from outside -------------------------------------------------------------
def _target_fp(action: dict) -> str | None:
    from ratchet.rollout.state import DeploymentState

    t = DeploymentState.from_dict(action.get("target"))
    return None if t is None else t.fingerprint()


def classify(run: Rollout) -> tuple[str, str | None]:
    """Where the dead controller stopped, from what it left: (point, the journaled action id)."""
    action = pending_action(run.db)
    if action is None:
        return "between actions", None
    st = local_state(run.dir)
    if st.get("pending"):
        return "mid-reload", action["id"]
    keys = [r["key"] for r in action.get("records", [])]
    written = history_keys(run.db)
    if keys and all(k in written for k in keys):
        return "after history, before clearing the journal", action["id"]
    if st.get("applied") == _target_fp(action):
        return ("after reload, before history" if not any(k in written for k in keys) else "mid-history"), action["id"]
    return "after journal, before reload", action["id"]


def _mtime(path: Path) -> tuple:
    """(mtime, inode, size) of the SQLite file (changes with every commit) or of the state file in a
    folder (replaced by os.replace: a new inode each write)."""
    try:
        files = sorted(path.glob("ratchet-local-*.json")) if path.is_dir() else [path]
        return tuple((st.st_mtime_ns, st.st_ino, st.st_size) for st in (f.stat() for f in files))
    except FileNotFoundError:
        return ()


def kill_at(run: Rollout, point: str, outage: float, rng: random.Random, timeout: float = 180.0) -> dict:
    """Wait for `point` (seen from outside), SIGKILL the controller there, classify, restart it
    `outage` seconds later."""
    ctl = run.ctl
    ctl.standby()
    already = pending_action(run.db)
    stale = {already["id"]} if already else set()   # a resumed action is not a fresh journal entry
    deadline = time.monotonic() + timeout
    fire_at = None
    seen = None
    while True:
        assert time.monotonic() < deadline, f"{point}: not reached in {timeout:g}s\n{ctl.tail()}"
        assert ctl.proc.poll() is None, f"the controller exited {ctl.proc.returncode}:\n{ctl.tail()}"
        if point == "random":
            if fire_at is None and ctl.lines_since_start():        # it has finished a pass
                fire_at = time.monotonic() + rng.uniform(0.2, 3.0)
            if fire_at is not None and time.monotonic() >= fire_at:
                break
            time.sleep(0.02)
            continue
        stamp = (_mtime(run.db), _mtime(run.dir))
        if stamp == seen:   # nothing written since the last look: no query (and no lock) on the store
            time.sleep(0.001)
            continue
        seen = stamp
        action = pending_action(run.db)
        if action is not None and action["id"] not in stale:
            st = local_state(run.dir)
            if point == "after journal" and not st.get("pending") and st.get("applied") != _target_fp(action):
                break
            if point == "mid-reload" and st.get("pending"):
                break
            if point == "after reload" and st.get("applied") == _target_fp(action) and not st.get("pending"):
                break
        elif point == "mid-reload" and local_state(run.dir).get("pending"):
            break       # a resumed action's reload is a reload too
    ctl.kill()
    where, aid = classify(run)
    hit = {"asked": point, "hit": where, "action": aid, "after_start_s": round(time.monotonic() - ctl.started_at, 2),
           "state_file_pending": local_state(run.dir).get("pending"), "journal": pending_action(run.db)}
    print(f"kill {ctl.starts}: asked {point!r}, hit {where!r} ({aid}) {hit['after_start_s']}s after start; "
          f"restart in {outage:g}s")
    time.sleep(outage)
    ctl.start()
    return hit


def test_controller_killed_at_every_crash_point_ends_like_an_uninterrupted_rollout(tmp_path):
    from ratchet.app.demo.rollout import check_decision_log
    from ratchet.registry import Registry
    from ratchet.rollout import plan_from_text

    template = tmp_path / "template"
    build_store(template)
    reg = Registry(f"sqlite:///{template / 'mlflow.db'}", "fraud")
    reg.set_stage(2, "staging", actor="test", reason="candidate")
    plan_path = tmp_path / "rollout.yaml"
    plan_path.write_text(PLAN)
    plan = plan_from_text(PLAN)
    data = write_data(tmp_path / "tx.parquet")

    calm = Rollout(tmp_path, "uninterrupted", template, plan_path, data)
    crash = Rollout(tmp_path, "killed", template, plan_path, data)
    runs = (calm, crash)
    t0 = time.monotonic()
    try:
        for r in runs:
            r.go()
        rng = random.Random(SEED)
        hits = []
        # in rollout order: "start shadow" is killed mid-reload, "start canary 25%" after its
        # reload, then a random time, then "advance to 50%" (most likely) right after it is
        # journaled, a controller that stays down 4 s like a normal restart (the step must
        # still hold in full once it really serves), then a random time again
        for point, outage in (("mid-reload", 0.0), ("after reload", 0.0), ("random", 0.0), ("after journal", 4.0),
                              ("random", 0.0)):
            for _ in range(3):      # a point missed by a few ms is tried again on the next action
                hits.append(kill_at(crash, point, outage, rng))
                if point == "random" or hits[-1]["hit"].startswith(point) or crash.done():
                    break
            if crash.done():
                break
        for r in runs:
            wait_for(r.done, 90, f"{r.dir.name}: v2 promoted and the journal cleared", explain=r.ctl.tail)
        print(f"both rollouts done after {time.monotonic() - t0:.0f}s; controller restarts: {crash.ctl.starts - 1}")
        results = {r.dir.name: r.finish() for r in runs}
    finally:
        for r in runs:
            r.ctl.stop()
            if r.load is not None and r.load.thread.is_alive():
                r.load.stop_event.set()
            r.service.stop()

    # every crash point was really hit (what the killed controller left behind says where it stopped)
    got = [h["hit"] for h in hits]
    print("\n".join(f"  {h}" for h in hits))
    for point in ("after journal, before reload", "mid-reload", "after reload, before history"):
        assert point in got, f"never killed {point}: {got}"
    assert all(h["journal"] is not None for h in hits if h["hit"] != "between actions")
    assert any(h["state_file_pending"] for h in hits if h["hit"] == "mid-reload")
    assert sum(h["asked"] == "random" for h in hits) >= 2 and len(hits) >= 5, hits

    # the same end as the uninterrupted run
    a, b = results["uninterrupted"]["state"], results["killed"]["state"]
    assert a["aliases"] == {"production": 2}, a
    assert a["service"] == "production=v2 canary=none shadow=none", a
    assert a["versions"][2]["state"] == "production" and a["versions"][1]["state"] == "retired", a
    assert not a["journal"] and not b["journal"], (a["journal"], b["journal"])   # no journal or parts left
    assert b == a

    # traffic: nothing refused, everything answered logged exactly once
    for name, r in results.items():
        rep = r["report"]
        print(f"{name}: {rep.summary()}")
        assert rep.failed == 0 and rep.ok == rep.sent > 2000, rep.summary()
        check = check_decision_log(tmp_path / name / "decisions", rep.ok_ids)
        assert check.exactly_once, (name, check.text())

    # every step's real hold, from the decision log's generations
    problems = []
    for r in runs:
        rows = served_generations(r.log_dir, r.service.out)
        print(f"{r.dir.name}:\n{table(rows)}")
        steps = [row["fingerprint"] for row in rows]
        # each configuration of the plan served in one generation: no step reloaded twice
        assert len(steps) == len(set(steps)) == 6, steps
        problems += [f"{r.dir.name}: {p}" for p in hold_shortfalls(rows, plan)]
    assert not problems, "\n".join(problems)
