"""Shared pieces of the crash tests (test_controller_crash.py, test_service_crash.py).

Real processes only: the decision service (tests.test_serving.ServiceProcess), the
controller as the `ratchet controller` CLI (ControllerProcess), traffic from the replay
module. What the tests observe from outside while they kill things: the controller's
journal (the registered-model tag ratchet.controller.pending, read straight from the
MLflow SQLite file, a few ms per look), the local backend's state file
(ratchet-local-<host>-<port>.json), the service's stdout ("serving <fingerprint>
(generation N)" per load) and its decision log (config_generation per row).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tests.test_local_backend import transactions
from tests.test_serving import REPO, ServiceProcess, _train

PENDING_TAG = "ratchet.controller.pending"

#: The plan of the controller crash test: a short shadow, three canary steps. Holds of a few
#: seconds and a few hundred decisions at ~250 req/s. v2 is v1's model re-released, so a guard
#: could only roll it back by chance: no block-rate guard, and none on the shadow (whose scoring
#: times out now and then on a busy 2-core box: an "error" of the shadow only); the canary keeps
#: the error-rate guard (a served decision is never an error, so it always holds).
PLAN = """
mode: auto
interval: 0.3s
shadow: {min_duration: 2s, min_decisions: 300, guards: []}
canary:
  steps:
    - {weight: 25, hold: 2s, min_decisions: 200}
    - {weight: 50, hold: 2s, min_decisions: 300}
    - {weight: 100, hold: 2s, min_decisions: 300}
guards:
  error_rate: {max: 0.01}
"""


# ---- the store and the data -------------------------------------------------------------------
def build_store(folder: Path) -> str:
    """An MLflow SQLite store in `folder`: v1 @production, v2 the same model re-released (no alias)."""
    from ratchet.registry import Registry, ReleaseRecord
    from ratchet.train.trainer import save_model

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    reg = Registry(uri, "fraud")
    path = save_model(_train(0, 15), folder / "model")
    for reason in ("bootstrap", "re-release of the same model"):
        reg.register(ReleaseRecord(model_path=str(path), spec_yaml="name: t\n", spec_hash="h" * 64,
                                   snapshot={"rows": 3000}, windows={}, metrics={}, verdict={"passed": True},
                                   passed=True, reason=reason))
    reg.set_stage(1, "production", actor="test", reason="bootstrap")
    return uri


def write_data(path: Path, n: int = 40_000) -> Path:
    """Distinct transactions for the replay (enough that a test's traffic never repeats one:
    the guards count each payment once)."""
    transactions(n).to_parquet(path)
    return path


# ---- processes ----------------------------------------------------------------------------------
#: A controller process that imports what `ratchet controller` needs, then waits for a line on
#: stdin before it calls the CLI's entry point (ratchet.app.cli.main, what the `ratchet` console
#: script runs) with its flags: a restart then costs milliseconds instead of a cold start's
#: imports (6 s on an idle 2-core box, 30-50 s on a busy one), and the test chooses how long an
#: outage lasts. Nothing is read or written before the line arrives.
_STANDBY = """
import sys
import httpx, mlflow, pandas, pyarrow.parquet
import ratchet.app.cli, ratchet.app.commands.rollout, ratchet.registry, ratchet.rollout.controller
import ratchet.rollout.observe, ratchet.rollout.backends.local
sys.stdin.readline()
sys.exit(ratchet.app.cli.main(sys.argv[1:]))
"""


class ControllerProcess:
    """`ratchet controller --backend local` as an OS process; killed and restarted at will.

    Every start appends to the same output file, after a '### start N' line. `standby()`
    prepares the next process (imports done, waiting); `start()` releases it, or starts one
    cold when none waits."""

    def __init__(self, uri: str, url: str, state_dir: Path, plan: Path, log_dir: Path, out: Path,
                 interval: float = 0.3) -> None:
        self.args = ["controller", "--backend", "local", "--service-url", url, "--state-dir", str(state_dir),
                     "--tracking-uri", uri, "--plan", str(plan), "--decision-log", str(log_dir),
                     "--interval", str(interval)]
        self.out = out
        self.proc: subprocess.Popen | None = None
        self.next: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = 0.0

    def _spawn(self, standby: bool) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = ([sys.executable, "-c", _STANDBY, *self.args] if standby
                else [sys.executable, "-m", "ratchet.app.cli", *self.args])
        with open(self.out, "ab") as f:
            return subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.PIPE if standby else subprocess.DEVNULL)

    def standby(self) -> None:
        if self.next is None:
            self.next = self._spawn(standby=True)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with open(self.out, "ab") as f:
            f.write(f"### start {self.starts}\n".encode())
        if self.next is not None and self.next.poll() is None:
            self.proc, self.next = self.next, None
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()
        else:
            self.proc = self._spawn(standby=False)
        self.started_at = time.monotonic()

    def kill(self) -> None:
        """SIGKILL, no clean-up of any kind."""
        assert self.proc is not None and self.proc.poll() is None, f"controller not running:\n{self.tail()}"
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def lines_since_start(self) -> list[str]:
        text = self.out.read_text(errors="replace")
        return text.rsplit(f"### start {self.starts}\n", 1)[-1].splitlines()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.out.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        for p in (self.proc, self.next):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.next = None


def restart_with_original_command(svc: ServiceProcess, env: dict[str, str]) -> None:
    """Start `svc` again with exactly the argv it was first started with (same port, same
    decision-log folder, same stage flags); output appended to its log."""
    argv = list(svc.proc.args)
    with open(svc.out, "ab") as f:
        svc.proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                                    stdout=f, stderr=subprocess.STDOUT)


class Load:
    """The replay module (`ratchet replay`'s engine) in a thread: looped, ids answered 2xx kept."""

    def __init__(self, url: str, data: Path, rate: float = 250, seed: int = 3) -> None:
        from ratchet.serving.replay import load_transactions, replay, service_fields

        rows = load_transactions(data, service_fields(url), shuffle_seed=seed)
        self.stop_event = threading.Event()
        self.reports: list = []
        self.thread = threading.Thread(target=lambda: self.reports.append(
            replay(url, rows, rate=rate, loop=True, concurrency=3, stop=self.stop_event, keep_ids=True)), daemon=True)
        self.thread.start()

    def stop(self):  # noqa: ANN201 - ReplayReport
        self.stop_event.set()
        self.thread.join(60)
        assert self.reports, "the replay thread died"
        return self.reports[0]


# ---- looking from outside -----------------------------------------------------------------------
def db_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def pending_action(db: Path) -> dict[str, Any] | None:
    """The controller's journal entry (the action it is executing), read from the SQLite file."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = dict(con.execute("SELECT key, value FROM registered_model_tags WHERE name = 'fraud' AND key LIKE ?",
                                (PENDING_TAG + "%",)).fetchall())
    finally:
        con.close()
    value = rows.get(PENDING_TAG)
    if value is not None and value.startswith("parts:"):
        _, n, digest = value.split(":")
        parts = [rows.get(f"{PENDING_TAG}.{digest}.part{i}") for i in range(int(n))]
        value = None if any(p is None for p in parts) else "".join(parts)  # type: ignore[arg-type]
    return json.loads(value) if value else None


def controller_tags(db: Path) -> dict[str, str]:
    """Every ratchet.controller.* registered-model tag (header and parts)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return dict(con.execute("SELECT key, value FROM registered_model_tags WHERE name = 'fraud' AND key LIKE ?",
                                ("ratchet.controller.%",)).fetchall())
    finally:
        con.close()


def history_keys(db: Path) -> set[str]:
    """Idempotency keys of every version's history events."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        values = [v for (v,) in con.execute("SELECT value FROM model_version_tags WHERE name = 'fraud' AND key LIKE "
                                            "'history.%'").fetchall()]
    finally:
        con.close()
    return {json.loads(v).get("key") for v in values} - {None}


def local_state(state_dir: Path) -> dict[str, Any]:
    """The local backend's state file (revision, applied, pending, history)."""
    files = list(state_dir.glob("ratchet-local-*.json"))
    if not files:
        return {"revision": 0, "applied": None, "pending": None, "history": []}
    assert len(files) == 1, files
    for _ in range(20):  # replaced by os.replace: a reader sees the old or the new file, never half of one
        try:
            return json.loads(files[0].read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.01)
    raise AssertionError(f"unreadable {files[0]}")


def final_state(uri: str, url: str, state_dir: Path) -> dict[str, Any]:
    """What an uninterrupted run and an interrupted one must agree on."""
    import httpx

    from ratchet.registry import Registry

    reg = Registry(uri, "fraud")
    versions = {}
    for v in reg.versions():
        tags = reg.tags(v)
        progress = json.loads(tags.get("rollout") or "{}")
        versions[v] = {"state": tags.get("state"), "rollback.reason": tags.get("rollback.reason"),
                       "progress": {k: progress.get(k) for k in ("run", "stage", "step", "paused")},
                       "transitions": [(e.get("key"), e.get("from"), e.get("to")) for e in reg.history(v)]}
    return {"aliases": reg.aliases(), "versions": versions,
            "service": httpx.get(f"{url}/admin/config", timeout=10).json()["fingerprint"],
            "revisions": [h["fingerprint"] for h in local_state(state_dir)["history"]],
            "journal": controller_tags(db_path(uri))}


# ---- what really served -----------------------------------------------------------------------
_SERVING = re.compile(r"\bserving (production=.+?) \(generation (\d+)\)(?:: (.*))?$")
_STARTED = "decision service on http"


def generations(service_out: Path) -> list[dict[int, tuple[str, str]]]:
    """Per service process started (in order), generation -> (fingerprint, reason), from its
    'serving <fingerprint> (generation N): reason' lines. A restarted process counts from 1 again."""
    procs: list[dict[int, tuple[str, str]]] = []
    for line in service_out.read_text(errors="replace").splitlines():
        if _STARTED in line:
            procs.append({})
        m = _SERVING.search(line)
        if m:
            procs[-1][int(m.group(2))] = (m.group(1), m.group(3) or "")
    return procs


def served_generations(log_dir: Path, service_out: Path, restarts: tuple[float, ...] = ()) -> list[dict[str, Any]]:
    """Per configuration generation that decided (per service process: `restarts` are the epoch
    times a process was killed and the next one started), its fingerprint, how long it really
    served (its first answered row to the first answered row of the next generation of the same
    process, or to its own last row), and its decisions per role (each payment once)."""
    log = pd.read_parquet(log_dir, columns=["request_id", "ts", "role", "version", "config_generation",
                                            "transaction_id"])
    procs = generations(service_out)
    assert len(procs) == len(restarts) + 1, (len(procs), restarts)
    ts = pd.to_datetime(log["ts"], utc=True)
    cuts = [pd.Timestamp(t, unit="s", tz="UTC") for t in restarts]
    log = log.assign(proc=sum((ts >= t).astype(int) for t in cuts) if cuts else 0)
    served = log[log["role"].isin(["production", "canary"])]
    first = served.groupby(["proc", "config_generation"])["ts"].min().sort_index()
    last_row = served.groupby(["proc", "config_generation"])["ts"].max()
    order = list(first.index)
    rows = []
    for i, (proc, g) in enumerate(order):
        mine = log[(log["proc"] == proc) & (log["config_generation"] == g)]
        nxt = order[i + 1] if i + 1 < len(order) else None
        until = first[nxt] if nxt is not None and nxt[0] == proc else last_row[(proc, g)]
        counts = mine.drop_duplicates(["role", "transaction_id"])["role"].value_counts()
        fp, reason = procs[proc].get(int(g), ("?", "?"))
        rows.append({"process": int(proc), "generation": int(g), "fingerprint": fp, "reason": reason,
                     "from": first[(proc, g)], "until": until, "served_s": (until - first[(proc, g)]).total_seconds(),
                     "last": nxt is None,
                     **{role: int(counts.get(role, 0)) for role in ("production", "canary", "shadow")}})
    return rows


def step_of(fingerprint: str) -> tuple[str, float] | None:
    """('canary', 25.0) for 'production=v1 canary=v2@25% shadow=none', ('shadow', 0) for a shadow, else None."""
    m = re.search(r"canary=v\d+@([\d.]+)%", fingerprint)
    if m:
        return "canary", float(m.group(1))
    if "shadow=none" not in fingerprint:
        return "shadow", 0.0
    return None


def hold_shortfalls(rows: list[dict[str, Any]], plan) -> list[str]:  # noqa: ANN001 - RolloutPlan
    """Each step whose configuration served less time, or fewer decisions of its role, than the
    plan holds it for (steps of the rollout only: not the last generation, which still serves)."""
    holds = {("canary", s.weight): (s.hold, s.min_decisions, "canary") for s in plan.steps}
    holds[("shadow", 0.0)] = (plan.shadow.min_duration, plan.shadow.min_decisions, "shadow")
    bad = []
    for r in rows:
        step = step_of(r["fingerprint"])
        if step is None or r["last"]:
            continue
        hold, need, role = holds[step]
        if r["served_s"] < hold or r[role] < need:
            bad.append(f"generation {r['generation']} ({r['fingerprint']}) served {r['served_s']:.2f}s with "
                       f"{r[role]} {role} decisions; the plan holds it {hold:g}s and {need} decisions")
    return bad


def table(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"  process {r['process']} gen {r['generation']:>2} {r['fingerprint']:<42} {r['served_s']:6.2f}s  "
                     f"production {r['production']:>5}  canary {r['canary']:>5}  shadow {r['shadow']:>5}  "
                     f"({r['reason'][:60]})" for r in rows)


def wait_for(cond, timeout: float, what: str, every: float = 0.2, explain=lambda: ""):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{explain()}")
