"""The planner: (intent, fact, observations, plan, now) -> the next action. Pure, no I/O.

    >>> action = plan_next(intent, fact, observations, plan, now)
    >>> action.event
    'advance v7 canary to 25%: guards held (block rate FR +2.1% ≤ 10%)'

Order of concerns, first match wins:
1. The deployment changed under the controller (fact != what it applied): a person
   decided (`kubectl rollout undo`); adopt it into the registry, never re-apply.
2. A journaled action was interrupted: resume exactly that action.
3. Roles, in order production, canary, shadow, staging: the first role whose action
   changes something wins; otherwise an approval request; otherwise a wait.

Idempotent: planning again from the state an action produced never returns the same
action (its progress tag moved, its alias moved or the deployment now matches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ratchet.rollout.actions import (
    Action, Advance, AdoptOutsideChange, AwaitApproval, Deploy, Op, Promote, Record, Rollback,
    StartCanary, StartShadow, Wait, Waive,
)
from ratchet.rollout.guards import GuardVerdict, judge
from ratchet.rollout.plan import RolloutPlan, format_duration
from ratchet.rollout.state import (
    POLICY_WAIVER_TAG, WAIVE_ALL, DeploymentState, Intent, Observations, Progress, VersionInfo, iso, parse_iso,
)
from ratchet.stages.model import LEFT_ROLLOUT, Stage, StageChange, State, approval_tag
from ratchet.stages.model import approval_key as gate_key  # approvals: 'r{run}:{gate}'

UNDO = "kubectl rollout undo"
OUTSIDE = "deployment changed outside ratchet"


@dataclass(frozen=True)
class _Ctx:
    intent: Intent
    fact: DeploymentState
    obs: Observations
    plan: RolloutPlan
    now: datetime
    at: str

    def alias(self, stage: str) -> int | None:
        return self.intent.aliases.get(stage)

    def info(self, v: int | None) -> VersionInfo:
        return self.intent.info(v)


def next_gate(info: VersionInfo, plan: RolloutPlan) -> tuple[int, str]:
    """The (run, gate) a person approves next for a version, from its progress."""
    p = info.progress
    if p.stage == "shadow":
        return p.run, "canary:0"
    if p.stage == "canary":
        return p.run, ("production" if p.step + 1 >= len(plan.steps) else f"canary:{p.step + 1}")
    return p.run + 1, "shadow"


def approval_change(intent: Intent, version: int, plan: RolloutPlan, *, actor: str, at: str) -> StageChange:
    """A person's approval of the version's next gate (suggest mode, or after an undo), as a change of intent."""
    info = intent.info(version)
    run, gate = next_gate(info, plan)
    if intent.aliases.get(Stage.CANARY) == version and info.progress.stage != Stage.CANARY:
        run, gate = info.progress.run + 1, ("canary:1" if len(plan.steps) > 1 else "production")  # not started yet
    elif intent.aliases.get(Stage.SHADOW) == version and info.progress.stage != Stage.SHADOW:
        run, gate = info.progress.run + 1, "canary:0"
    return StageChange(f"approved v{version} for {gate} (run {run}) by {actor}",
                       tags=((version, {approval_tag(run, gate): json.dumps({"by": actor, "at": at})}),))


def _w(x: float) -> str:
    return f"{x:g}%"


def _keys(action_id: str, records: list[tuple[int, str | None, str, str, dict[str, Any]]]) -> tuple[Record, ...]:
    return tuple(Record(version=v, from_state=f, to_state=t, reason=r, key=f"{action_id}#{i}", evidence=e)
                 for i, (v, f, t, r, e) in enumerate(records))


def _tags(**kw: Any) -> dict[str, str]:
    return {k.replace("__", "."): (v.to_json() if isinstance(v, Progress) else str(v)) for k, v in kw.items()}


def _elapsed(ctx: _Ctx, p: Progress, role: str) -> float:
    """Seconds the role's current step has really served: from its first decision under the
    configuration now serving (Observations.served_from), else from when it was planned."""
    served = ctx.obs.served_from
    if role in served:
        since = parse_iso(served[role])
        if since is None:
            return 0.0      # nothing decided under this step's configuration yet
        planned = parse_iso(p.since)
        since = max(since, planned) if planned else since
    else:
        since = parse_iso(p.since)
    return max(0.0, (ctx.now - since).total_seconds()) if since else 0.0


def _served(ctx: _Ctx) -> dict[str, Any]:
    """Which configuration the held step's evidence came from, for the recorded event."""
    if "canary" not in ctx.obs.served_from:
        return {}
    return {"held_from": ctx.obs.served_from["canary"], "generation": ctx.fact.generation}


# ---- entry point -------------------------------------------------------------------------
def plan_next(intent: Intent, fact: DeploymentState, observations: Observations, plan: RolloutPlan,
              now: datetime) -> Action:
    """The next action and its reason. Pure: reads only its arguments."""
    ctx = _Ctx(intent, fact, observations, plan, now, iso(now))
    if fact.changed_outside():
        return _adopt(ctx)
    if intent.pending:
        return replace(Action.from_dict(intent.pending), resumed=True)
    results = [r for r in (_production(ctx), _canary(ctx), _shadow(ctx), _staging(ctx)) if r is not None]
    for r in results:
        if r.acts:
            return r
    for r in results:
        if isinstance(r, AwaitApproval):
            return r
    if results:
        return results[0]
    text = f"in sync: {fact.fingerprint()}"
    return Wait(reason=text, event=text, at=ctx.at, settled=True)


# ---- outside changes ---------------------------------------------------------------------
def _adopt(ctx: _Ctx) -> Action:
    """Follow a deployment someone changed: aliases to match, lost versions rolled back."""
    f, plan = ctx.fact.content(), ctx.plan
    cause = UNDO if ctx.fact.restored_revision is not None else OUTSIDE
    P, C, S = ctx.alias("production"), ctx.alias("canary"), ctx.alias("shadow")
    new_p, new_c, new_s = f.production, f.canary, f.shadow
    rolled: list[int] = []
    if P is not None and P != new_p:
        rolled.append(P)
        # a version rolled back from production must not keep serving as canary or shadow
        new_c = None if new_c == P else new_c
        new_s = None if new_s == P else new_s
    for v in (C, S):
        if v is not None and v not in (new_p, new_c, new_s) and v not in rolled:
            rolled.append(v)
    target = f.with_(canary=new_c, shadow=new_s)
    evidence = {"deployment": f.fingerprint(), "applied": ctx.fact.applied, "revision": ctx.fact.revision,
                "restored_revision": ctx.fact.restored_revision}
    aid = f"adopt:rev{ctx.fact.revision}:{f.fingerprint()}"
    ops: list[Op] = []
    recs: list[tuple[int, str | None, str, str, dict[str, Any]]] = []
    parts: list[str] = []
    for stage, old, new in (("production", P, new_p), ("canary", C, new_c), ("shadow", S, new_s)):
        if old != new:
            ops.append(Op("set_alias", stage, new) if new is not None else Op("remove_alias", stage, old))
    if new_p is not None and new_p != P:
        i = ctx.info(new_p)
        ops.append(Op("set_tags", version=new_p, tags=_tags(state="production",
                                                            rollout=Progress(i.progress.run + 1, "production", 0, ctx.at))))
        recs.append((new_p, i.state or None, "production", f"{cause}: restored to production", evidence))
        parts.append(f"production v{new_p} (was {'v%s' % P if P is not None else 'none'})")
    if new_c is not None:
        i = ctx.info(new_c)
        steps = [k for k, s in enumerate(plan.steps) if s.weight <= f.canary_weight] or [0]
        step = steps[-1]
        same = new_c == C and i.progress.stage == "canary" and i.progress.step == step
        if not same or f.canary_weight != plan.steps[step].weight:
            pr = Progress(i.progress.run + 1, "canary", step, ctx.at, paused=cause)
            ops.append(Op("set_tags", version=new_c, tags=_tags(state="canary", rollout=pr)))
            recs.append((new_c, i.state or None, "canary",
                         f"{cause}: canary at {_w(f.canary_weight)}, paused until `ratchet approve {new_c}`", evidence))
            parts.append(f"canary v{new_c} at {_w(f.canary_weight)}, paused")
    if new_s is not None and new_s != S:
        i = ctx.info(new_s)
        pr = Progress(i.progress.run + 1, "shadow", 0, ctx.at, paused=cause)
        ops.append(Op("set_tags", version=new_s, tags=_tags(state="shadow", rollout=pr)))
        recs.append((new_s, i.state or None, "shadow", f"{cause}: shadow again, paused until `ratchet approve {new_s}`",
                     evidence))
        parts.append(f"shadow v{new_s}, paused")
    for v in rolled:
        i = ctx.info(v)
        pr = replace(i.progress, stage=State.ROLLED_BACK, since=ctx.at, paused=None)
        ops.append(Op("set_tags", version=v, tags=_tags(state=State.ROLLED_BACK, rollout=pr, rollback__reason=cause)))
        recs.append((v, i.state or None, State.ROLLED_BACK, cause, evidence))
        parts.append(f"v{v} rolled back")
    if target != f:
        parts.append(f"deployment now {target.fingerprint()}")
    text = f"adopt {cause}: " + (", ".join(parts) or f"deployment is {f.fingerprint()}")
    return AdoptOutsideChange(reason=cause, event=text, id=aid, at=ctx.at, ops=tuple(ops), target=target,
                              change_cause=f"ratchet: adopt {cause}", records=_keys(aid, recs))


# ---- production --------------------------------------------------------------------------
def _production(ctx: _Ctx) -> Action | None:
    P, fact = ctx.alias("production"), ctx.fact
    if P is None:
        if fact.production is None:
            return None
        text = f"no version holds @production; v{fact.production} keeps serving (ratchet promote VERSION --to production)"
        return Wait(reason=text, event=text, at=ctx.at, settled=True)
    if fact.production == P:
        return None
    info = ctx.info(P)
    run = info.progress.run + 1
    aid = f"v{P}:r{run}:production"
    prev = fact.production
    ops = [Op("set_tags", version=P, tags=_tags(state="production", rollout=Progress(run, "production", 0, ctx.at)))]
    for stage in ("canary", "shadow"):
        if ctx.alias(stage) == P:
            ops.append(Op("remove_alias", stage, P))
    why = "first deployment" if prev is None else f"@production moved to v{P} (deployment ran v{prev})"
    recs = [(P, info.state or None, "production", why, {"deployment": fact.fingerprint()})]
    _retire_others(ctx, P, prev, ops, recs)
    target = fact.with_(production=P, canary=None if fact.canary == P else fact.canary,
                        shadow=None if fact.shadow == P else fact.shadow)
    return Deploy(reason=why, event=f"deploy v{P} to production: {why}", version=P, id=aid, at=ctx.at,
                  ops=tuple(ops), target=target, change_cause=f"ratchet: v{P} to production ({why})",
                  records=_keys(aid, recs))


def _retire_others(ctx: _Ctx, P: int, prev: int | None, ops: list[Op], recs: list) -> None:
    """Retire every other version in state production (the one that ran, and any a person's
    alias edit left behind): exactly one version is in production."""
    others = {v for v in ctx.intent.in_production | ({prev} if prev is not None else set())
              if v != P and ctx.info(v).state == State.PRODUCTION}
    for v in sorted(others):
        ops.append(Op("set_tags", version=v, tags=_tags(state=State.RETIRED)))
        recs.append((v, State.PRODUCTION, State.RETIRED, f"replaced by version {P}", {}))


# ---- canary ------------------------------------------------------------------------------
def _canary(ctx: _Ctx) -> Action | None:
    C, P, fact, plan = ctx.alias("canary"), ctx.alias("production"), ctx.fact, ctx.plan
    if C is not None and C == P:
        return Deploy(reason="stale alias", event=f"remove stale @canary: v{C} is production", version=C,
                      id=f"tidy:canary:v{C}", at=ctx.at, ops=(Op("remove_alias", "canary", C),))
    if C is None:
        if fact.canary is None:
            return None
        return _withdraw(ctx, fact.canary, "canary")
    info = ctx.info(C)
    p = info.progress
    if p.stage != "canary":
        return _start_canary(ctx, C, p.run + 1, from_shadow=False, why=f"@canary set to v{C}")
    steps = plan.steps
    step = min(p.step, len(steps) - 1)
    w = steps[step].weight
    want = fact.with_(canary=C, canary_weight=w, cohort=plan.canary.cohort)
    if fact.content() != want:
        aid = f"v{C}:r{p.run}:repair:{step}:{fact.fingerprint()}"
        text = f"re-apply v{C} canary at {_w(w)}: deployment shows {fact.fingerprint()}"
        return Deploy(reason="deployment differs from the registry", event=text, version=C, id=aid, at=ctx.at,
                      target=want, change_cause=f"ratchet: v{C} canary {_w(w)} (repair)")
    verdict = judge(ctx.obs, "canary", plan.guards)
    if verdict.breached:
        return _rollback(ctx, C, "canary", verdict.headline, verdict.evidence(), p)
    st = steps[step]
    elapsed = _elapsed(ctx, p, "canary")
    d = verdict.decisions
    if elapsed < st.hold or d < st.min_decisions:
        text = (f"v{C} canary at {_w(w)}: holding {format_duration(elapsed)} of {format_duration(st.hold)}, "
                f"{d:,} of {st.min_decisions:,} decisions ({verdict.headline})")
        return Wait(reason=text, event=text, version=C, at=ctx.at)
    last = step + 1 >= len(steps)
    gate = "production" if last else f"canary:{step + 1}"
    if (plan.mode == "suggest" or p.paused) and gate_key(p.run, gate) not in info.approvals:
        nxt = "production" if last else _w(steps[step + 1].weight)
        text = (f"v{C} canary at {_w(w)} ready for {nxt}: guards held ({verdict.headline}); "
                f"waiting for `ratchet approve {C}`" + (f" ({p.paused})" if p.paused else ""))
        return AwaitApproval(reason=text, event=text, version=C, at=ctx.at, gate=gate)
    if last:
        return _promote(ctx, C, p, verdict, elapsed)
    return _advance(ctx, C, p, step + 1, verdict, elapsed)


def _advance(ctx: _Ctx, C: int, p: Progress, step: int, verdict: GuardVerdict, elapsed: float) -> Action:
    w = ctx.plan.steps[step].weight
    aid = f"v{C}:r{p.run}:canary:{step}"
    why = f"guards held ({verdict.headline})"
    ev = {"weight": w, "step": step, "held_s": round(elapsed), **_served(ctx), "guards": verdict.evidence()}
    return Advance(reason=why, event=f"advance v{C} canary to {_w(w)}: {why}", version=C, id=aid, at=ctx.at,
                   ops=(Op("set_tags", version=C, tags=_tags(rollout=Progress(p.run, "canary", step, ctx.at))),),
                   target=ctx.fact.with_(canary=C, canary_weight=w, cohort=ctx.plan.canary.cohort),
                   change_cause=f"ratchet: v{C} canary {_w(w)} (guards held)",
                   records=_keys(aid, [(C, "canary", "canary", why, ev)]), weight=w, step=step)


def _promote(ctx: _Ctx, C: int, p: Progress, verdict: GuardVerdict, elapsed: float) -> Action:
    fact = ctx.fact
    aid = f"v{C}:r{p.run}:production"
    n = len(ctx.plan.steps)
    why = f"all {n} canary steps held ({verdict.headline})"
    ops = [Op("set_alias", "production", C), Op("remove_alias", "canary", C),
           Op("set_tags", version=C, tags=_tags(state="production", rollout=Progress(p.run, "production", 0, ctx.at)))]
    recs = [(C, "canary", "production", why, {"held_s": round(elapsed), **_served(ctx), "guards": verdict.evidence()})]
    prev = fact.production
    _retire_others(ctx, C, prev, ops, recs)
    return Promote(reason=why, event=f"promote v{C} to production: {why}", version=C, id=aid, at=ctx.at,
                   ops=tuple(ops), target=fact.with_(production=C, canary=None),
                   change_cause=f"ratchet: v{C} to production", records=_keys(aid, recs))


def _rollback(ctx: _Ctx, V: int, role: str, headline: str, evidence: dict[str, Any], p: Progress) -> Action:
    aid = f"v{V}:r{p.run}:rollback"
    state = ctx.info(V).state or role
    pr = replace(p, stage=State.ROLLED_BACK, since=ctx.at, paused=None)
    ops = (Op("remove_alias", role, V),
           Op("set_tags", version=V, tags=_tags(state=State.ROLLED_BACK, rollout=pr, rollback__reason=headline[:500])))
    target = ctx.fact.with_(canary=None) if role == "canary" else ctx.fact.with_(shadow=None)
    return Rollback(reason=headline, event=f"rollback v{V}: {headline}", version=V, id=aid, at=ctx.at, ops=ops,
                    target=target, change_cause=f"ratchet: rollback v{V} ({headline})"[:250],
                    records=_keys(aid, [(V, state, State.ROLLED_BACK, headline, evidence)]), evidence=evidence)


def _withdraw(ctx: _Ctx, V: int, role: str) -> Action:
    """The alias was removed by a person (ratchet rollback, MLflow UI): take the version off the service."""
    info = ctx.info(V)
    to = info.state if info.state in LEFT_ROLLOUT else State.ROLLED_BACK
    why = f"@{role} no longer names v{V}"
    aid = f"v{V}:r{info.progress.run}:withdraw-{role}"
    pr = replace(info.progress, stage=State.ROLLED_BACK, since=ctx.at, paused=None)
    target = ctx.fact.with_(canary=None) if role == "canary" else ctx.fact.with_(shadow=None)
    return Deploy(reason=why, event=f"withdraw {role} v{V}: {why}", version=V, id=aid, at=ctx.at,
                  ops=(Op("set_tags", version=V, tags=_tags(state=to, rollout=pr)),), target=target,
                  change_cause=f"ratchet: withdraw {role} v{V}",
                  records=_keys(aid, [(V, info.state or None, to, why, {})]))


def _start_canary(ctx: _Ctx, V: int, run: int, *, from_shadow: bool, why: str) -> Action:
    plan, fact = ctx.plan, ctx.fact
    w = plan.steps[0].weight
    aid = f"v{V}:r{run}:canary:0"
    info = ctx.info(V)
    ops = [Op("set_alias", "canary", V)]
    if from_shadow:
        ops.append(Op("remove_alias", "shadow", V))
    ops.append(Op("set_tags", version=V, tags=_tags(state="canary", rollout=Progress(run, "canary", 0, ctx.at))))
    recs = [(V, info.state or None, "canary", why, {"weight": w, "cohort": plan.canary.cohort_text()})]
    old = fact.canary
    if old is not None and old != V:
        oi = ctx.info(old)
        ops.append(Op("set_tags", version=old, tags=_tags(
            state=State.ROLLED_BACK, rollout=replace(oi.progress, stage=State.ROLLED_BACK, since=ctx.at, paused=None))))
        recs.append((old, oi.state or None, State.ROLLED_BACK, f"canary slot given to v{V}", {}))
    target = fact.with_(canary=V, canary_weight=w, cohort=plan.canary.cohort,
                        shadow=None if fact.shadow == V else fact.shadow)
    cohort = "" if not plan.canary.cohort else f" ({plan.canary.cohort_text()})"
    return StartCanary(reason=why, event=f"start canary v{V} at {_w(w)}{cohort}: {why}", version=V, id=aid,
                       at=ctx.at, ops=tuple(ops), target=target, change_cause=f"ratchet: v{V} canary {_w(w)}",
                       records=_keys(aid, recs), weight=w)


# ---- shadow ------------------------------------------------------------------------------
def _shadow(ctx: _Ctx) -> Action | None:
    S, C, P, fact, plan = ctx.alias("shadow"), ctx.alias("canary"), ctx.alias("production"), ctx.fact, ctx.plan
    if S is not None and S in (P, C):
        target = fact.with_(shadow=None) if fact.shadow == S else None
        return Deploy(reason="stale alias", event=f"remove stale @shadow: v{S} is {'production' if S == P else 'canary'}",
                      version=S, id=f"tidy:shadow:v{S}", at=ctx.at, ops=(Op("remove_alias", "shadow", S),),
                      target=target, change_cause="ratchet: tidy shadow")
    if S is None:
        if fact.shadow is None or fact.shadow in (fact.production, fact.canary):
            return None
        return _withdraw(ctx, fact.shadow, "shadow")
    info = ctx.info(S)
    p = info.progress
    if p.stage != "shadow":
        return _start_shadow(ctx, S, p.run + 1, from_staging=False, why=f"@shadow set to v{S}")
    if fact.shadow != S:
        aid = f"v{S}:r{p.run}:repair-shadow:{fact.fingerprint()}"
        return Deploy(reason="deployment differs from the registry", version=S, id=aid, at=ctx.at,
                      event=f"re-apply v{S} as shadow: deployment shows {fact.fingerprint()}",
                      target=fact.with_(shadow=S), change_cause=f"ratchet: v{S} shadow (repair)")
    verdict = judge(ctx.obs, "shadow", plan.guards, plan.shadow.guards)
    if verdict.breached:
        return _rollback(ctx, S, "shadow", verdict.headline, verdict.evidence(), p)
    review = ctx.obs.shadow_review
    if review is not None and review.status == "failed":
        return _rollback(ctx, S, "shadow", f"shadow contract failed: {review.summary}",
                         {"review": review.evidence, "guards": verdict.evidence()}, p)
    elapsed = _elapsed(ctx, p, "shadow")
    d = verdict.decisions
    sh = plan.shadow
    if elapsed < sh.min_duration or d < sh.min_decisions:
        held = f"{format_duration(elapsed)} of {format_duration(sh.min_duration)}, " if sh.min_duration else ""
        text = f"v{S} shadow: {held}{d:,} of {sh.min_decisions:,} decisions ({verdict.headline})"
        return Wait(reason=text, event=text, version=S, at=ctx.at)
    passed = review.passed_keys if review is not None else frozenset()
    open_ = info.unresolved(passed)
    waived_all = WAIVE_ALL in info.waived
    review_ok = not sh.contract or waived_all or (review is not None and review.status == "passed")
    if open_ or not review_ok:
        what = _open_text(info, open_, passed, review, review_ok)
        if sh.max_decisions is None or d < sh.max_decisions:
            limit = f" of at most {sh.max_decisions:,}" if sh.max_decisions else ""
            text = f"v{S} shadow: {what}; {d:,}{limit} decisions"
            return Wait(reason=text, event=text, version=S, at=ctx.at)
        below = review.below_support if review is not None else frozenset()
        if sh.at_max == "waive" or (sh.at_max == "waive_below_support" and review_ok and open_ <= below):
            return _waive(ctx, S, p, open_, d, what)
        text = (f"v{S} shadow reached {d:,} decisions with {what}; waiting for a person: "
                f"`ratchet approve {S} --waive KEY|all --reason ...` (or `ratchet rollback --stage shadow`)")
        return AwaitApproval(reason=text, event=text, version=S, at=ctx.at, gate="waive")
    if C is not None:
        text = f"v{S} shadow done; the canary slot is busy with v{C}"
        return Wait(reason=text, event=text, version=S, at=ctx.at)
    if (plan.mode == "suggest" or p.paused) and gate_key(p.run, "canary:0") not in info.approvals:
        text = (f"v{S} shadow ready for canary {_w(plan.steps[0].weight)}: {verdict.headline}; "
                f"waiting for `ratchet approve {S}`" + (f" ({p.paused})" if p.paused else ""))
        return AwaitApproval(reason=text, event=text, version=S, at=ctx.at, gate="canary:0")
    held = f"{format_duration(elapsed)} " if sh.min_duration else ""
    why = f"shadow held {held}on {d:,} decisions ({verdict.headline})"
    if info.open_questions:
        why += (f"; open questions: {len(info.open_questions & passed)} resolved as pass, "
                f"{len(info.open_questions - passed)} waived")
    elif review is not None and review.summary:
        why += f"; {review.summary}"
    return _start_canary(ctx, S, p.run, from_shadow=True, why=why)


def _open_text(info: VersionInfo, open_: frozenset[str], passed: frozenset[str], review: Any, review_ok: bool) -> str:
    """'3 of 204 open questions unresolved (country_block_rate_stable[country=DE], ...)', and the review's state."""
    parts = []
    if open_:
        first = ", ".join(sorted(open_)[:3]) + (", ..." if len(open_) > 3 else "")
        parts.append(f"{len(open_)} of {len(info.open_questions)} open questions unresolved "
                     f"({len(info.open_questions & passed)} resolved as pass; {first})")
    if not review_ok:
        parts.append(f"waiting for the contract on matured labels ({review.summary if review is not None else 'no review yet'})")
    return "; ".join(parts)


def _waive(ctx: _Ctx, S: int, p: Progress, open_: frozenset[str], d: int, what: str) -> Action:
    """The plan's declared policy waives the open questions still unresolved at max_decisions (recorded)."""
    sh = ctx.plan.shadow
    keys = [WAIVE_ALL] if sh.at_max == "waive" else sorted(open_)
    aid = f"v{S}:r{p.run}:waive"
    why = (f"plan policy at_max={sh.at_max} at {d:,} shadow decisions (max_decisions {sh.max_decisions:,}): "
           f"waived {what}")
    entry = {"by": f"plan {ctx.plan.name} (at_max: {sh.at_max})", "at": ctx.at, "reason": why, "keys": keys}
    ops = (Op("set_tags", version=S, tags={POLICY_WAIVER_TAG: json.dumps(entry)}),)
    return Waive(reason=why, event=f"waive open questions of v{S}: {why}", version=S, id=aid, at=ctx.at, ops=ops,
                 records=_keys(aid, [(S, "shadow", "shadow", why, {"waived": keys[:50], "count": len(open_),
                                                                     "decisions": d})]))


def _start_shadow(ctx: _Ctx, V: int, run: int, *, from_staging: bool, why: str) -> Action:
    fact = ctx.fact
    info = ctx.info(V)
    aid = f"v{V}:r{run}:shadow"
    ops: list[Op] = []
    if from_staging:
        ops += [Op("set_alias", "shadow", V), Op("remove_alias", "staging", V)]
    ops.append(Op("set_tags", version=V, tags=_tags(state="shadow", rollout=Progress(run, "shadow", 0, ctx.at))))
    recs = [(V, info.state or None, "shadow", why, {})]
    old = fact.shadow
    if old is not None and old != V and old not in (fact.production, fact.canary):
        oi = ctx.info(old)
        if oi.state == "shadow":
            ops.append(Op("set_tags", version=old, tags=_tags(
                state=State.ROLLED_BACK, rollout=replace(oi.progress, stage=State.ROLLED_BACK, since=ctx.at, paused=None))))
            recs.append((old, "shadow", State.ROLLED_BACK, f"shadow slot given to v{V}", {}))
    return StartShadow(reason=why, event=f"start shadow v{V}: {why}", version=V, id=aid, at=ctx.at,
                       ops=tuple(ops), target=fact.with_(shadow=V), change_cause=f"ratchet: v{V} shadow",
                       records=_keys(aid, recs))


def _staging(ctx: _Ctx) -> Action | None:
    G, P, C, S = ctx.alias("staging"), ctx.alias("production"), ctx.alias("canary"), ctx.alias("shadow")
    plan = ctx.plan
    if G is None or not plan.shadow.from_staging or G in (P, C, S) or S is not None or C is not None:
        return None
    if P is not None and G < P:
        return None  # an older build than production: superseded
    info = ctx.info(G)
    if info.state in LEFT_ROLLOUT:
        return None
    run = info.progress.run + 1
    if plan.mode == "suggest" and gate_key(run, "shadow") not in info.approvals:
        text = (f"v{G} at @staging ready for shadow: waiting for `ratchet approve {G}` "
                f"(or `ratchet promote {G} --to shadow`)")
        return AwaitApproval(reason=text, event=text, version=G, at=ctx.at, gate="shadow")
    return _start_shadow(ctx, G, run, from_staging=True, why=f"v{G} at @staging and the shadow slot is free")
