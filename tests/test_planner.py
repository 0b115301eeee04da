"""The pure planner: a table of (intent, fact, observations) -> action, and idempotence
checked by replaying actions on an in-memory model of the registry (no I/O at all)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from ratchet.rollout.actions import Action
from ratchet.rollout.plan import plan_from_text
from ratchet.rollout.planner import gate_key, next_gate, plan_next
from ratchet.rollout.state import (
    DeploymentState, Intent, Observations, Progress, RoleStats, ShadowReview, SliceCounts, VersionInfo, iso,
)

PLAN = plan_from_text("""
mode: auto
shadow: {min_duration: 1h, min_decisions: 1000, contract: fraud.yaml}
canary:
  steps:
    - {weight: 1, hold: 10m, min_decisions: 100}
    - {weight: 5, hold: 10m, min_decisions: 100}
    - {weight: 25, hold: 10m, min_decisions: 100}
guards:
  block_rate: {per: country, tolerance: {relative: 0.10, absolute: 0.0005}, min_support: 500}
  error_rate: {max: 0.01}
  p99_latency_ms: {max: 50, min_decisions: 100}
""")
SUGGEST = replace(PLAN, mode="suggest")
NOW = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
LONG_AGO = iso(NOW - timedelta(hours=3))
JUST_NOW = iso(NOW - timedelta(minutes=2))


def obs(br_canary=404, fr=408, decisions=45_000, errors=3, p99=12.0, review="passed"):
    rows = lambda br: (SliceCounts("FR", 20000, 400, 20000, fr), SliceCounts("BR", 20000, 400, 20000, br),  # noqa: E731
                       SliceCounts("LU", 40, 1, 40, 4))
    return Observations(roles={r: RoleStats(decisions, errors, p99) for r in ("production", "canary", "shadow")},
                        block_counts={"canary": rows(br_canary), "shadow": rows(404)},
                        shadow_review=ShadowReview(review, f"contract {review}") if review else None)


def fact(**kw):
    st = DeploymentState(**kw).content()
    return replace(st, revision="3", applied=st.fingerprint())


def vi(state, stage="", run=1, step=0, since=LONG_AGO, paused=None, approvals=()):
    return VersionInfo(state, Progress(run, stage, step, since, paused), frozenset(approvals))


def intent(aliases, **versions):
    return Intent(aliases=aliases, versions={int(k[1:]): v for k, v in versions.items()})


HEALTHY = obs()
CASES = [
    # (name, intent, fact, observations, plan, kind, event prefix)
    ("in sync", intent({"production": 6}, v6=vi("production", "production")), fact(production=6), HEALTHY, PLAN,
     "Wait", "in sync: production=v6 canary=none shadow=none"),
    ("first deployment", intent({"production": 1}, v1=vi("production")), DeploymentState(), HEALTHY, PLAN,
     "Deploy", "deploy v1 to production: first deployment"),
    ("production alias moved in the UI", intent({"production": 5}, v5=vi("retired", "production"),
                                                  v6=vi("production", "production")),
     fact(production=6), HEALTHY, PLAN, "Deploy", "deploy v5 to production: @production moved to v5"),
    ("staging enters shadow (auto)", intent({"production": 6, "staging": 7}, v6=vi("production", "production"),
                                            v7=vi("staging", run=0)),
     fact(production=6), HEALTHY, PLAN, "StartShadow", "start shadow v7: v7 at @staging"),
    ("staging waits for a person (suggest)", intent({"production": 6, "staging": 7}, v6=vi("production", "production"),
                                                    v7=vi("staging", run=0)),
     fact(production=6), HEALTHY, SUGGEST, "AwaitApproval", "v7 at @staging ready for shadow"),
    ("staging approved (suggest)", intent({"production": 6, "staging": 7}, v6=vi("production", "production"),
                                          v7=vi("staging", run=0, approvals=["r1:shadow"])),
     fact(production=6), HEALTHY, SUGGEST, "StartShadow", "start shadow v7"),
    ("older staging than production is ignored", intent({"production": 6, "staging": 4},
                                                        v6=vi("production", "production"), v4=vi("staging")),
     fact(production=6), HEALTHY, PLAN, "Wait", "in sync"),
    ("shadow set directly", intent({"production": 6, "shadow": 7}, v6=vi("production", "production"),
                                   v7=vi("staging", run=0)),
     fact(production=6), HEALTHY, PLAN, "StartShadow", "start shadow v7: @shadow set to v7"),
    ("shadow too young", intent({"production": 6, "shadow": 7}, v6=vi("production", "production"),
                                v7=vi("shadow", "shadow", since=JUST_NOW)),
     fact(production=6, shadow=7), HEALTHY, PLAN, "Wait", "v7 shadow: 2m of 1h, 45,000 of 1,000 decisions"),
    ("shadow labels not matured", intent({"production": 6, "shadow": 7}, v6=vi("production", "production"),
                                         v7=vi("shadow", "shadow")),
     fact(production=6, shadow=7), obs(review="pending"), PLAN, "Wait", "v7 shadow: waiting for the contract"),
    ("shadow contract failed", intent({"production": 6, "shadow": 7}, v6=vi("production", "production"),
                                      v7=vi("shadow", "shadow")),
     fact(production=6, shadow=7), obs(review="failed"), PLAN, "Rollback", "rollback v7: shadow contract failed"),
    ("shadow done -> canary 1%", intent({"production": 6, "shadow": 7}, v6=vi("production", "production"),
                                        v7=vi("shadow", "shadow")),
     fact(production=6, shadow=7), HEALTHY, PLAN, "StartCanary", "start canary v7 at 1%: shadow held 3h"),
    ("shadow done, canary slot busy", intent({"production": 6, "shadow": 8, "canary": 7},
                                             v6=vi("production", "production"), v7=vi("canary", "canary", since=JUST_NOW),
                                             v8=vi("shadow", "shadow")),
     fact(production=6, canary=7, canary_weight=1, shadow=8), HEALTHY, PLAN, "Wait", "v7 canary at 1%: holding"),
    ("canary holding", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                              v7=vi("canary", "canary", step=1, since=JUST_NOW)),
     fact(production=6, canary=7, canary_weight=5), HEALTHY, PLAN, "Wait",
     "v7 canary at 5%: holding 2m of 10m, 45,000 of 100 decisions (block rate"),
    ("canary too few decisions", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                        v7=vi("canary", "canary", step=1)),
     fact(production=6, canary=7, canary_weight=5), obs(decisions=50, errors=0), PLAN, "Wait", "v7 canary at 5%: holding 3h"),
    ("canary advances", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                               v7=vi("canary", "canary", step=1)),
     fact(production=6, canary=7, canary_weight=5), HEALTHY, PLAN, "Advance",
     "advance v7 canary to 25%: guards held (block rate FR +2.0% ≤ 10%"),
    ("canary waits for approval (suggest)", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                                   v7=vi("canary", "canary", step=1)),
     fact(production=6, canary=7, canary_weight=5), HEALTHY, SUGGEST, "AwaitApproval",
     "v7 canary at 5% ready for 25%: guards held"),
    ("canary approved (suggest)", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                         v7=vi("canary", "canary", step=1, approvals=["r1:canary:2"])),
     fact(production=6, canary=7, canary_weight=5), HEALTHY, SUGGEST, "Advance", "advance v7 canary to 25%"),
    ("approval of an earlier run does not count", intent({"production": 6, "canary": 7},
                                                          v6=vi("production", "production"),
                                                          v7=vi("canary", "canary", run=2, step=1,
                                                                approvals=["r1:canary:2"])),
     fact(production=6, canary=7, canary_weight=5), HEALTHY, SUGGEST, "AwaitApproval", "v7 canary at 5%"),
    ("paused canary waits even in auto", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                                v7=vi("canary", "canary", step=1, paused="kubectl rollout undo")),
     fact(production=6, canary=7, canary_weight=5), HEALTHY, PLAN, "AwaitApproval", "v7 canary at 5% ready"),
    ("last step promotes", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                  v7=vi("canary", "canary", step=2)),
     fact(production=6, canary=7, canary_weight=25), HEALTHY, PLAN, "Promote",
     "promote v7 to production: all 3 canary steps held"),
    ("block-rate breach rolls back", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                            v7=vi("canary", "canary", step=2, since=JUST_NOW)),
     fact(production=6, canary=7, canary_weight=25), obs(br_canary=600), PLAN, "Rollback",
     "rollback v7: block rate BR +50% > 10%"),
    ("not credible: no rollback", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                         v7=vi("canary", "canary", step=2, since=JUST_NOW)),
     fact(production=6, canary=7, canary_weight=25), obs(br_canary=445), PLAN, "Wait", "v7 canary at 25%: holding"),
    ("error-rate breach rolls back", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                            v7=vi("canary", "canary")),
     fact(production=6, canary=7, canary_weight=1), obs(errors=2000), PLAN, "Rollback",
     "rollback v7: error rate 4.44% > 1.00%"),
    ("latency breach rolls back", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                         v7=vi("canary", "canary")),
     fact(production=6, canary=7, canary_weight=1), obs(p99=180.0), PLAN, "Rollback",
     "rollback v7: p99 latency 180 ms > 50 ms"),
    ("canary set directly", intent({"production": 6, "canary": 9}, v6=vi("production", "production"),
                                   v9=vi("candidate", run=0)),
     fact(production=6), HEALTHY, PLAN, "StartCanary", "start canary v9 at 1%: @canary set to v9"),
    ("canary alias removed", intent({"production": 6}, v6=vi("production", "production"),
                                    v7=vi("rolled_back", "canary")),
     fact(production=6, canary=7, canary_weight=5), HEALTHY, PLAN, "Deploy", "withdraw canary v7"),
    ("stale canary alias on production", intent({"production": 7, "canary": 7}, v7=vi("production", "production")),
     fact(production=7), HEALTHY, PLAN, "Deploy", "remove stale @canary: v7 is production"),
    ("deployment drifted without an outside marker", intent({"production": 6, "canary": 7},
                                                            v6=vi("production", "production"),
                                                            v7=vi("canary", "canary", step=1)),
     DeploymentState(production=6, canary=7, canary_weight=1), HEALTHY, PLAN, "Deploy", "re-apply v7 canary at 5%"),
    ("kubectl rollout undo after a promotion", intent({"production": 7}, v6=vi("retired", "production"),
                                                      v7=vi("production", "production")),
     replace(DeploymentState(production=6, canary=7, canary_weight=25), revision="9", restored_revision="7",
             applied="production=v7 canary=none shadow=none"),
     HEALTHY, PLAN, "AdoptOutsideChange", "adopt kubectl rollout undo: production v6 (was v7), v7 rolled back"),
    ("someone edited the deployment", intent({"production": 6, "canary": 7}, v6=vi("production", "production"),
                                             v7=vi("canary", "canary", step=2)),
     replace(DeploymentState(production=6), revision="9", applied="production=v6 canary=v7@25% shadow=none"),
     HEALTHY, PLAN, "AdoptOutsideChange", "adopt deployment changed outside ratchet: v7 rolled back"),
]


@pytest.mark.parametrize("name, i, f, o, plan, kind, event", CASES, ids=[c[0] for c in CASES])
def test_table(name, i, f, o, plan, kind, event):
    a = plan_next(i, f, o, plan, NOW)
    assert a.kind == kind, a.event
    assert a.event.startswith(event), a.event
    assert a.acts == (kind not in ("Wait", "AwaitApproval"))
    if a.acts:
        assert a.id and a.at == iso(NOW)
        json.dumps(a.to_dict())  # journal-able
        assert Action.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_rollback_carries_evidence_and_targets():
    i = intent({"production": 6, "canary": 7}, v6=vi("production", "production"), v7=vi("canary", "canary", step=2))
    a = plan_next(i, fact(production=6, canary=7, canary_weight=25), obs(br_canary=600), PLAN, NOW)
    assert a.target == DeploymentState(production=6)
    rec = a.records[0]
    assert (rec.version, rec.from_state, rec.to_state) == (7, "canary", "rolled_back")
    check = rec.evidence["checks"][0]
    assert check["name"] == "block_rate[BR]" and check["canary"] == [600, 20000] and check["production"] == [400, 20000]
    assert ("remove_alias", "canary", 7) in [(o.kind, o.stage, o.version) for o in a.ops]


def test_pending_journal_is_resumed_verbatim():
    i = intent({"production": 6, "canary": 7}, v6=vi("production", "production"), v7=vi("canary", "canary", step=1))
    a = plan_next(i, fact(production=6, canary=7, canary_weight=5), HEALTHY, PLAN, NOW)
    later = NOW + timedelta(hours=5)
    resumed = plan_next(replace(i, pending=a.to_dict()), fact(production=6, canary=7, canary_weight=25),
                        obs(br_canary=600), PLAN, later)
    assert resumed.resumed and resumed.id == a.id and resumed.at == a.at and resumed.event == a.event


def test_outside_change_beats_the_journal():
    i = intent({"production": 6, "canary": 7}, v6=vi("production", "production"), v7=vi("canary", "canary", step=1))
    a = plan_next(i, fact(production=6, canary=7, canary_weight=5), HEALTHY, PLAN, NOW)
    undone = replace(DeploymentState(production=6), revision="8", restored_revision="2",
                     applied="production=v6 canary=v7@5% shadow=none")
    assert plan_next(replace(i, pending=a.to_dict()), undone, HEALTHY, PLAN, NOW).kind == "AdoptOutsideChange"


def test_next_gate():
    assert next_gate(vi("staging", run=0), PLAN) == (1, "shadow")
    assert next_gate(vi("shadow", "shadow", run=2), PLAN) == (2, "canary:0")
    assert next_gate(vi("canary", "canary", step=1), PLAN) == (1, "canary:2")
    assert next_gate(vi("canary", "canary", step=2), PLAN) == (1, "production")
    assert gate_key(1, "canary:2") == "r1:canary:2"


# ---- idempotence: replay actions on a model of the registry and the deployment ---------
def apply_action(i: Intent, f: DeploymentState, a: Action) -> tuple[Intent, DeploymentState]:
    """What the executor does, in memory."""
    aliases = dict(i.aliases)
    versions = dict(i.versions)
    for op in a.ops:
        if op.kind == "set_alias":
            aliases[op.stage] = op.version
        elif op.kind == "remove_alias" and aliases.get(op.stage) == op.version:
            del aliases[op.stage]
        elif op.kind == "set_tags":
            v = versions.get(op.version, VersionInfo())
            t = op.tags or {}
            versions[op.version] = replace(v, state=t.get("state", v.state),
                                           progress=Progress.from_json(t["rollout"]) if "rollout" in t else v.progress)
    if a.target is not None:
        t = a.target.content()
        f = replace(t, revision=str(int(f.revision or 0) + (t != f.content())), applied=t.fingerprint())
    return Intent(aliases, versions), f


@pytest.mark.parametrize("plan", [PLAN, SUGGEST], ids=["auto", "suggest"])
def test_replaying_actions_never_repeats_one_and_reaches_production(plan):
    i = intent({"production": 6, "staging": 7}, v6=vi("production", "production"), v7=vi("staging", run=0))
    f = fact(production=6)
    now = NOW
    seen: list[str] = []
    for _ in range(40):
        a = plan_next(i, f, HEALTHY, plan, now)
        if a.kind == "AwaitApproval":  # a person approves the gate the planner names
            run, gate = next_gate(i.info(a.version), plan)
            assert gate == a.gate
            v = i.versions[a.version]
            i = replace(i, versions={**i.versions, a.version: replace(v, approvals=v.approvals | {gate_key(run, gate)})})
            continue
        if not a.acts:
            if a.settled:
                break
            now += timedelta(hours=1)
            continue
        assert a.id not in seen, f"repeated {a.id}"
        seen.append(a.id)
        i, f = apply_action(i, f, a)
        # planning again at once never repeats the action just applied
        assert plan_next(i, f, HEALTHY, plan, now).id != a.id
    assert [s.split(":", 2)[2] for s in seen] == ["shadow", "canary:0", "canary:1", "canary:2", "production"]
    assert i.aliases == {"production": 7} and f.content() == DeploymentState(production=7)
    assert i.versions[6].state == "retired" and i.versions[7].state == "production"


# ---- guards on a decision log (pandas, no I/O) ------------------------------------------
def decision_log(n=8000, canary_share=0.5, br_boost=0.0, seed=0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    t0 = NOW - timedelta(hours=1)
    for i in range(n):
        country = ("FR", "BR", "DE")[i % 3]
        role = "canary" if rng.random() < canary_share else "production"
        p = 0.05 + (br_boost if (role == "canary" and country == "BR") else 0.0)
        rows.append({"request_id": f"r{i}", "ts": t0 + timedelta(seconds=i / 4), "role": role,
                     "version": 7 if role == "canary" else 6, "score": 0.1, "threshold": 0.5,
                     "decision": "block" if rng.random() < p else "allow", "latency_ms": 5 + rng.random() * 10,
                     "status": "ok", "merchant_id": "m1", "merchant_category": "food", "country": country,
                     "channel": "web", "card_id": f"c{i % 500}"})
    return pd.DataFrame(rows)


def test_guards_on_a_decision_log():
    from ratchet.rollout.guards import judge, observe_decisions

    healthy = observe_decisions(decision_log(), since=NOW - timedelta(hours=2))
    v = judge(healthy, "canary", PLAN.guards)
    assert not v.breached and v.decisions > 3000
    assert {c.name for c in v.checks} >= {"block_rate[BR]", "block_rate[FR]", "error_rate", "p99_latency_ms"}
    bad = observe_decisions(decision_log(br_boost=0.10), since=NOW - timedelta(hours=2))
    v = judge(bad, "canary", PLAN.guards)
    assert v.breached and v.headline.startswith("block rate BR +") and "> 10%" in v.headline
    # a cohort limits both sides to the same traffic; the window start drops older rows
    fr = observe_decisions(decision_log(br_boost=0.10), per="country", cohort=(("country", ("FR",)),))
    assert [c.slice for c in fr.block_counts["canary"]] == ["FR"] and not judge(fr, "canary", PLAN.guards).breached
    late = observe_decisions(decision_log(), since=NOW)
    assert late.role("canary").decisions == 0
    assert judge(late, "canary", PLAN.guards).checks[0].status == "not_judged"
