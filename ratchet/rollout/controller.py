"""The controller: read intent (registry) and fact (backend), observe, plan, execute one step.

    >>> c = Controller(Registry(uri), MemoryBackend(), load_plan("contracts/rollout.yaml"), observe)
    >>> c.run_once().event
    'start canary v7 at 1%: shadow held 24h on 61,204 decisions (block rate FR +2.1% ≤ 10%)'

Crash safety. Executing an action is a fixed sequence of idempotent writes:

    1. journal   the serialized action (registered-model tag ratchet.controller.pending)
    2. ops       registry intent: alias moves, state and progress tags (skip if already so)
    3. apply     the backend target (no new revision when it already runs; it records
                 `applied` atomically with the change)
    4. records   history events, each with an idempotency key (skipped when present)
    5. clear     the journal

Killed before 1, nothing happened and the next pass plans the same action; killed after
1, the next pass resumes the journaled action verbatim (same id, same time) and every
write it repeats is a no-op. An outside change to the deployment takes precedence over
the journal (the person's decision wins; see planner._adopt).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TextIO

from ratchet.errors import RatchetError, RegistryError
from ratchet.rollout.actions import Action, Op
from ratchet.rollout.backends import Backend
from ratchet.rollout.plan import RolloutPlan
from ratchet.rollout.planner import plan_next
from ratchet.rollout.state import (
    OPEN_QUESTIONS_TAG, POLICY_WAIVER_TAG, WAIVED_TAG, DeploymentState, Intent, Observations, Progress, VersionInfo, parse_iso,
    parse_open_questions, parse_waived,
)
from ratchet.stages.model import State, approvals_from_tags

if TYPE_CHECKING:
    from ratchet.registry import Registry


Observer = Callable[[DeploymentState, dict[str, datetime | None]], Observations]
"""observe(fact, windows) -> Observations; windows maps role (canary, shadow) to the start of its current step."""

PENDING = "pending"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def read_intent(registry: Registry, fact: DeploymentState | None = None) -> Intent:
    """The registry's side for the planner: aliases, involved versions, the journal."""
    aliases = registry.aliases()
    raw = registry.controller_state(PENDING)
    pending = json.loads(raw) if raw else None
    in_production = frozenset(registry.versions_in_state(State.PRODUCTION))
    involved = set(aliases.values()) | in_production
    if fact is not None:
        involved |= {v for v in (fact.production, fact.canary, fact.shadow) if v is not None}
    versions: dict[int, VersionInfo] = {}
    for v in sorted(involved):
        try:
            tags = registry.tags(v)
        except RegistryError:
            continue  # a version deleted from the registry: nothing to read
        versions[v] = VersionInfo(state=tags.get("state", ""), progress=Progress.from_json(tags.get("rollout")),
                                  approvals=approvals_from_tags(tags),
                                  open_questions=parse_open_questions(tags.get(OPEN_QUESTIONS_TAG)),
                                  waived=frozenset(parse_waived(tags.get(WAIVED_TAG), tags.get(POLICY_WAIVER_TAG))))
    return Intent(aliases=aliases, versions=versions, pending=pending, in_production=in_production)


class Controller:
    """Reconciles the deployment with the registry, one planned step per pass."""

    def __init__(self, registry: Registry, backend: Backend, plan: RolloutPlan, observe: Observer | None = None,
                 clock: Callable[[], datetime] = utcnow, *, actor: str = "ratchet controller",
                 out: TextIO | None = None) -> None:
        self.registry = registry
        self.backend = backend
        self.plan = plan
        self.observe = observe
        self.clock = clock
        self.actor = actor
        self.out = out
        self._last_said: str | None = None

    # ---- one pass ----------------------------------------------------------------------
    def windows(self, intent: Intent) -> dict[str, datetime | None]:
        """Start of the current step for each role, for the observation window."""
        out: dict[str, datetime | None] = {}
        for role in ("canary", "shadow"):
            v = intent.aliases.get(role)
            p = intent.info(v).progress if v is not None else None
            out[role] = parse_iso(p.since) if p is not None and p.stage == role else None
        return out

    def run_once(self) -> Action:
        """Read, observe, plan and execute one action; returns it."""
        fact = self.backend.read()
        intent = read_intent(self.registry, fact)
        now = self.clock()
        obs = self.observe(fact, self.windows(intent)) if self.observe is not None else Observations()
        action = plan_next(intent, fact, obs, self.plan, now)
        self.execute(action)
        return action

    def execute(self, action: Action) -> None:
        """Apply an action's writes in the crash-safe order (see the module docstring)."""
        if not action.acts:
            self._say(action.event or action.reason, repeat=False)
            return
        reg = self.registry
        if not action.resumed:
            reg.put_controller_state(PENDING, json.dumps(action.to_dict(), default=str))
        for op in action.ops:
            self._op(op)
        if action.target is not None:
            self.backend.apply(action.target, action.change_cause)
        for rec in action.records:
            reg.record_transition_once(rec.version, rec.from_state, rec.to_state, actor=self.actor,
                                       reason=rec.reason, key=rec.key, at=action.at,
                                       evidence={**rec.evidence, "event": action.event, "action": action.kind})
        reg.put_controller_state(PENDING, None)
        self._say(action.event + (" (resumed)" if action.resumed else ""), repeat=True)

    def _op(self, op: Op) -> None:
        if op.kind == "set_alias":
            self.registry.set_alias(op.stage, op.version)
        elif op.kind == "remove_alias":
            self.registry.remove_alias(op.stage, op.version)
        elif op.kind == "set_tags":
            self.registry.set_tags(op.version, op.tags or {})
        else:  # pragma: no cover - planner and executor ship together
            raise RatchetError(f"unknown registry operation {op.kind!r}")

    def _say(self, text: str, *, repeat: bool) -> None:
        if not repeat and text == self._last_said:
            return
        self._last_said = text
        stamp = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{stamp} {text}", file=self.out or sys.stdout, flush=True)

    # ---- loop --------------------------------------------------------------------------
    def run_until_settled(self, max_passes: int = 100) -> list[Action]:
        """Run passes until the planner has nothing to do now (a wait); the actions taken."""
        taken: list[Action] = []
        for _ in range(max_passes):
            a = self.run_once()
            if not a.acts:
                return taken
            taken.append(a)
        raise RatchetError(f"the controller did not settle within {max_passes} passes; last: {taken[-1].event}")

    def run_forever(self, interval: float | None = None, *, passes: int | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> None:
        """A pass every `interval` seconds (the plan's by default); after an action, the next pass at once.

        Errors of one pass (registry or cluster unreachable) are printed and retried on the
        next; the journal makes the retry safe.
        """
        period = self.plan.interval if interval is None else interval
        n = 0
        while passes is None or n < passes:
            n += 1
            try:
                acted = self.run_once().acts
            except RatchetError as exc:
                self._say(f"pass failed: {exc}", repeat=False)
                acted = False
            except Exception as exc:  # noqa: BLE001 - keep reconciling; the journal makes retries safe
                self._say(f"pass failed: {type(exc).__name__}: {exc}", repeat=False)
                acted = False
            if not acted and (passes is None or n < passes):
                sleep(period)
