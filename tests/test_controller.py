"""Controller on a real MLflow SQLite store and the memory backend: full rollouts, breaches,
alias edits, kubectl undo, and kill points (kill after any write, restart, same final state)."""

from __future__ import annotations

import io
import json
import re
import shutil

import pytest

from ratchet.registry import Registry
from ratchet.rollout import Controller, MemoryBackend, plan_from_text
from ratchet.rollout.actions import AdoptOutsideChange, Rollback
from ratchet.rollout.state import DeploymentState, Observations, RoleStats, ShadowReview, SliceCounts
from rollout_helpers import PLAN, Clock, drive, make_template_db

WRITES = ("set_registered_model_alias", "delete_registered_model_alias", "set_model_version_tag",
          "set_registered_model_tag", "delete_registered_model_tag")


class Killed(BaseException):
    """The controller process dies (not an Exception: nothing may catch it)."""


class Switch:
    def __init__(self, kill_at: int | None = None) -> None:
        self.n, self.kill_at, self.log = 0, kill_at, []

    def tick(self, name: str = "") -> None:
        self.n += 1
        self.log.append(name)
        if self.kill_at is not None and self.n == self.kill_at:
            raise Killed(self.n)


class Counting:
    """Proxy that counts (and may kill after) each write of the wrapped object."""

    def __init__(self, inner, switch: Switch, writes: tuple[str, ...]) -> None:
        self._inner, self._switch, self._writes = inner, switch, writes

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in self._writes:
            return attr

        def write(*a, **k):
            out = attr(*a, **k)
            kind = a[2] if name == "set_registered_model_tag" and len(a) > 2 and a[2].startswith("{") else ""
            self._switch.tick(f"{name}:{json.loads(kind)['kind']}" if kind else name)
            return out
        return write


def healthy(breach_country: str | None = None, breach_role: str = "canary"):
    def observe(fact: DeploymentState, windows) -> Observations:
        counts = {}
        for role in ("canary", "shadow"):
            rows = [SliceCounts("FR", 20000, 400, 20000, 408), SliceCounts("DE", 20000, 300, 20000, 297),
                    SliceCounts("BR", 20000, 400, 20000, 600 if (breach_country == "BR" and role == breach_role) else 404),
                    SliceCounts("LU", 50, 1, 50, 3)]
            counts[role] = tuple(rows)
        roles = {r: RoleStats(45100, 3, 12.0) for r in ("production", "canary", "shadow")}
        return Observations(roles=roles, block_counts=counts,
                            shadow_review=ShadowReview("passed", "contract held on 40,000 labelled shadow decisions"))
    return observe


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    return make_template_db(tmp_path_factory.mktemp("tpl"))


@pytest.fixture()
def store(template_db, tmp_path):
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def controller(uri, backend, clock, switch=None, observe=None, plan=PLAN):
    reg = Registry(uri, "fraud")
    be = backend
    if switch is not None:
        reg.client = Counting(reg.client, switch, WRITES)
        be = Counting(backend, switch, ("apply",))
    return Controller(reg, be, plan_from_text(plan), observe or healthy(), clock, out=io.StringIO())


def start(uri):
    reg = Registry(uri, "fraud")
    reg.set_stage(1, "production", actor="test", reason="bootstrap")
    reg.set_stage(2, "staging", actor="release pipeline", reason="gate passed")
    return reg


def snapshot(uri, backend):
    reg = Registry(uri, "fraud")
    return {
        "aliases": reg.aliases(),
        "tags": {v: {k: _timeless(k, t) for k, t in reg.tags(v).items()} for v in reg.versions()},
        "deployment": backend.read().content(),
        "revisions": backend.history(),
        "controller": reg.controller_state("pending"),
    }


def _timeless(key, value):
    """A tag without times: a restarted controller may act an interval later than an uninterrupted
    one (a kill right after a pass's last write), which moves timestamps and held-for texts only."""
    def mask(text):
        return re.sub(r"\b\d+(h|m|s)(\d+(m|s))*\b", "<duration>", text)
    if key.startswith("history."):
        e = json.loads(value)
        e.pop("at", None)
        e["reason"] = mask(e["reason"])
        ev = e.get("evidence") or {}
        ev.pop("held_s", None)
        if "event" in ev:
            ev["event"] = mask(ev["event"])
        return e
    if key == "rollout":
        r = json.loads(value)
        r.pop("since", None)
        return r
    return value


def test_full_rollout_shadow_canary_production(store):
    start(store)
    backend, clock = MemoryBackend(), Clock()
    ctrl = controller(store, backend, clock)
    actions = drive(ctrl, clock)
    kinds = [a.kind for a in actions if a.acts]
    assert kinds == ["Deploy", "StartShadow", "StartCanary", "Advance", "Advance", "Advance", "Advance", "Promote"]
    assert [a.weight for a in actions if a.kind == "Advance"] == [5, 25, 50, 100]
    reg = Registry(store, "fraud")
    assert reg.aliases() == {"production": 2}
    assert reg.tags(2)["state"] == "production" and reg.tags(1)["state"] == "retired"
    assert backend.read().content() == DeploymentState(production=2)
    events = [e for e in reg.history(2) if e.get("key")]
    assert [e["to"] for e in events] == ["shadow", "canary", "canary", "canary", "canary", "canary", "production"]
    adv = next(a for a in actions if a.kind == "Advance")
    assert adv.event.startswith("advance v2 canary to 5%: guards held (block rate")
    assert "≤" in adv.event
    assert [r.split("\t")[1] for r in backend.history()] == [
        "production=v1 canary=none shadow=none", "production=v1 canary=none shadow=v2",
        *[f"production=v1 canary=v2@{w}% shadow=none" for w in (1, 5, 25, 50, 100)],
        "production=v2 canary=none shadow=none"]
    # settled: planning again changes nothing
    assert ctrl.run_once().settled and len(backend.history()) == 8


def test_breach_at_25_percent_rolls_back(store):
    start(store)
    backend, clock = MemoryBackend(), Clock()
    ctrl = controller(store, backend, clock)
    for _ in range(5):  # deploy, shadow, canary 1%, 5%, 25%
        ctrl.run_once()
        clock.tick()
    assert backend.read().canary_weight == 25
    ctrl.observe = healthy(breach_country="BR")
    a = ctrl.run_once()
    assert isinstance(a, Rollback)
    assert a.event == "rollback v2: block rate BR +50% > 10%"
    reg = Registry(store, "fraud")
    st = backend.read()
    assert st.canary is None and st.canary_weight == 0 and st.production == 1
    assert "canary" not in reg.aliases() and reg.aliases()["production"] == 1
    tags = reg.tags(2)
    assert tags["state"] == "rolled_back" and tags["rollback.reason"].startswith("block rate BR +50%")
    last = reg.history(2)[-1]
    assert last["to"] == "rolled_back" and last["from"] == "canary"
    br = last["evidence"]["checks"][0]
    assert br["name"] == "block_rate[BR]" and br["status"] == "fail" and br["canary"] == [600, 20000]
    # nothing more to do; the rolled-back version is not retried
    assert drive(ctrl, clock)[-1].settled
    assert Registry(store, "fraud").aliases() == {"production": 1}


def test_alias_edited_in_the_ui_is_followed(store):
    reg = start(store)
    backend, clock = MemoryBackend(), Clock()
    plan = PLAN.replace("mode: auto", "mode: suggest")
    ctrl = controller(store, backend, clock, plan=plan)
    ctrl.run_once()  # first deployment of v1
    a = ctrl.run_once()
    assert a.kind == "AwaitApproval" and a.gate == "shadow" and "ratchet approve 2" in a.event
    # a person sets @canary to v3 in the MLflow UI (a raw alias edit, no tags, no history)
    reg.client.set_registered_model_alias("fraud", "canary", "3")
    a = ctrl.run_once()
    assert a.kind == "StartCanary" and a.version == 3 and a.event.startswith("start canary v3 at 1%: @canary set to v3")
    assert backend.read().canary == 3 and reg.tags(3)["state"] == "canary"
    # and moves @production back and forth in the UI
    reg.client.set_registered_model_alias("fraud", "production", "2")
    a = ctrl.run_once()
    assert a.kind == "Deploy" and backend.read().production == 2
    assert reg.tags(1)["state"] == "retired" and reg.tags(2)["state"] == "production"
    # removing @canary in the UI withdraws it from the service
    reg.client.delete_registered_model_alias("fraud", "canary")
    a = ctrl.run_once()
    assert a.event == "withdraw canary v3: @canary no longer names v3"
    assert backend.read().canary is None and reg.tags(3)["state"] == "rolled_back"


def test_exactly_one_version_is_in_production_after_an_alias_edit(store):
    reg = start(store)
    backend, clock = MemoryBackend(), Clock()
    ctrl = controller(store, backend, clock, plan=PLAN.replace("mode: auto", "mode: suggest"))
    ctrl.run_once()  # first deployment of v1
    reg.set_tags(3, {"state": "production"})  # a stale state tag that no alias or deployment names
    reg.client.set_registered_model_alias("fraud", "production", "2")  # the MLflow UI / REST edit
    a = ctrl.run_once()
    assert a.kind == "Deploy" and backend.read().production == 2
    assert reg.versions_in_state("production") == [2]
    assert reg.tags(1)["state"] == reg.tags(3)["state"] == "retired"
    assert reg.history(3)[-1]["reason"] == "replaced by version 2"


def test_kubectl_rollout_undo_is_adopted_not_fought(store):
    start(store)
    backend, clock = MemoryBackend(), Clock()
    ctrl = controller(store, backend, clock)
    drive(ctrl, clock)
    assert backend.read().production == 2
    revisions = len(backend.history())
    # the on-call engineer: kubectl rollout undo (back to the template before the promotion)
    backend.undo()
    a = ctrl.run_once()
    assert isinstance(a, AdoptOutsideChange)
    assert a.event.startswith("adopt kubectl rollout undo: production v1 (was v2), v2 rolled back")
    reg = Registry(store, "fraud")
    assert reg.aliases() == {"production": 1}
    assert reg.tags(2)["state"] == "rolled_back" and reg.tags(2)["rollback.reason"] == "kubectl rollout undo"
    assert reg.history(2)[-1]["reason"] == "kubectl rollout undo" and reg.history(2)[-1]["to"] == "rolled_back"
    assert reg.tags(1)["state"] == "production"
    # v2 must not keep serving as the 100% canary the old template had
    assert backend.read().content() == DeploymentState(production=1)
    n = len(backend.history())
    assert n <= revisions + 2
    # not fought: the controller settles and applies nothing more
    assert drive(ctrl, clock)[-1].settled and len(backend.history()) == n


def test_undo_of_one_canary_step_pauses_at_the_restored_weight(store):
    start(store)
    backend, clock = MemoryBackend(), Clock()
    ctrl = controller(store, backend, clock)
    for _ in range(5):  # canary at 25%
        ctrl.run_once()
        clock.tick()
    backend.undo()  # back to 5%
    a = ctrl.run_once()
    assert a.kind == "AdoptOutsideChange" and "canary v2 at 5%, paused" in a.event
    assert backend.read().canary_weight == 5
    clock.tick()
    a = ctrl.run_once()
    assert a.kind == "AwaitApproval" and "kubectl rollout undo" in a.event
    assert backend.read().canary_weight == 5  # not fought
    from ratchet.app.commands.rollout import approve
    approve(Registry(store, "fraud"), 2, plan_from_text(PLAN), actor="alice")
    assert ctrl.run_once().kind == "Advance" and backend.read().canary_weight == 25


def _run_with_kills(uri, kill_points):
    """Run the scenario, killing the controller after the given write numbers (cumulative)."""
    start(uri)
    backend, clock = MemoryBackend(), Clock()
    switch = Switch()
    kills = sorted(kill_points)
    restarts = 0
    while True:
        switch.kill_at = kills[0] if kills else None
        ctrl = controller(uri, backend, clock, switch)
        try:
            drive(ctrl, clock)
            return backend, restarts, switch.log
        except Killed:
            kills.pop(0)
            restarts += 1


def test_kill_points_end_in_the_same_state(template_db, tmp_path):
    def fresh(name):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(template_db, d / "mlflow.db")
        return f"sqlite:///{d / 'mlflow.db'}"

    ref_uri = fresh("ref")
    backend, _, log = _run_with_kills(ref_uri, [])
    reference = snapshot(ref_uri, backend)
    journals = {name.split(":")[1]: i + 1 for i, name in reversed(list(enumerate(log))) if ":" in name}
    assert set(journals) == {"Deploy", "StartShadow", "StartCanary", "Advance", "Promote"}
    applies = [i + 1 for i, name in enumerate(log) if name == "apply"]
    # Kill right after each write of the first action (journal, tag, apply, record, clear),
    # between two alias moves, right after an apply, after each write of the promotion,
    # and twice in one run.
    points = {1, 2, 3, 4, 5, journals["StartShadow"] + 1, journals["StartCanary"] + 2,
              next(a for a in applies if a > journals["StartCanary"]) + 1}
    promote_apply = next(a for a in applies if a > journals["Promote"])
    points |= {journals["Promote"], journals["Promote"] + 1, promote_apply, promote_apply + 1}
    scenarios = [[k] for k in sorted(points)] + [[journals["StartShadow"] + 2, journals["StartShadow"] + 4],
                                                  [journals["Advance"], journals["Advance"] + 1, journals["Advance"] + 2]]
    for i, kills in enumerate(scenarios):
        uri = fresh(f"k{i}")
        b, restarts, _ = _run_with_kills(uri, kills)
        assert restarts == len(kills)
        got = snapshot(uri, b)
        assert got == reference, f"kill after write(s) {kills}: {json.dumps(_diff(got, reference), default=str)[:2000]}"


def _diff(a, b):
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def test_people_commands_promote_rollback_status(store):
    from ratchet.app.commands.rollout import promote, render_status, rollback, status

    start(store)
    reg = Registry(store, "fraud")
    backend, clock = MemoryBackend(), Clock()
    ctrl = controller(store, backend, clock)
    ctrl.run_once()
    promote(reg, 3, "canary", actor="alice")
    assert ctrl.run_once().event.startswith("start canary v3 at 1%")
    st = status(reg, backend)
    assert [(r["stage"], r["version"], r["weight"]) for r in st["rows"]][:2] == [("production", 1, None), ("canary", 3, 1)]
    assert "start canary v3 at 1%" in render_status(st)
    assert rollback(reg, actor="alice") == "@canary removed from v3 (rolled back: manual rollback by alice)"
    assert ctrl.run_once().event == "withdraw canary v3: @canary no longer names v3"
    assert backend.read().canary is None and reg.history(3)[-2]["reason"] == "manual rollback by alice"
    promote(reg, 2, "production", actor="alice")
    ctrl.run_once()
    assert backend.read().production == 2
    assert rollback(reg, actor="bob", stage="production").startswith("@production -> v1 (v2 rolled back")
    ctrl.run_once()
    assert backend.read().production == 1 and reg.tags(2)["state"] == "rolled_back"
