"""Stages, states, transitions and approval keys; the pure deciders of a person's moves.

MLflow aliases are the stages (`Stage`); a version's `state` tag is one of `State`. A
person moves a version (promote), undoes the latest step (rollback) or approves a gate;
each decider here returns a `StageChange`: the alias moves, the version tags and the
history records to write, with a one-line summary. The registry adapter applies it; the
controller's planner composes its own changes from the same names.

    >>> change = move_to_stage(2, "production", state="canary", holder=1, reason="ramp done")
    >>> [(t.version, t.from_state, t.to_state) for t in change.transitions]
    [(2, 'canary', 'production'), (1, 'production', 'retired')]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ratchet.errors import RegistryError


class Stage(StrEnum):
    """The MLflow aliases: where a version runs (staging runs nowhere yet)."""

    STAGING = "staging"
    SHADOW = "shadow"
    CANARY = "canary"
    PRODUCTION = "production"


class State(StrEnum):
    """A version's `state` tag: its stage while it holds one, else how it left or never entered."""

    CANDIDATE = "candidate"
    REJECTED = "rejected"
    STAGING = "staging"
    SHADOW = "shadow"
    CANARY = "canary"
    PRODUCTION = "production"
    RETIRED = "retired"
    ROLLED_BACK = "rolled_back"


STAGES: tuple[str, ...] = tuple(s.value for s in Stage)
STATES: tuple[str, ...] = tuple(s.value for s in State)

#: States of a version that has left the rollout (or never may enter it): it takes no
#: stage again without a person.
LEFT_ROLLOUT: frozenset[str] = frozenset({State.ROLLED_BACK, State.RETIRED, State.REJECTED})

_STAGE_STATES = frozenset({State.STAGING, State.SHADOW, State.CANARY, State.PRODUCTION})

#: The allowed transitions (from state, or None for a new version -> to state). A
#: rejected version is final: the gate's word stands. Only production retires.
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: _STAGE_STATES | {State.CANDIDATE, State.REJECTED, State.ROLLED_BACK},  # a version with no state tag
    State.CANDIDATE: _STAGE_STATES | {State.REJECTED},
    State.REJECTED: frozenset(),
    **{s: _STAGE_STATES | {State.ROLLED_BACK} for s in (State.STAGING, State.SHADOW, State.CANARY)},
    State.PRODUCTION: _STAGE_STATES | {State.RETIRED, State.ROLLED_BACK},
    State.RETIRED: _STAGE_STATES | {State.ROLLED_BACK},
    State.ROLLED_BACK: _STAGE_STATES | {State.ROLLED_BACK},
}


class StageError(RegistryError):
    """A move the stage model does not allow (unknown stage, a rejected version, nothing to undo)."""


def allowed(from_state: str | None, to_state: str) -> bool:
    """True when a version in `from_state` may move to `to_state` (unknown states: never)."""
    key = from_state or None
    return key in TRANSITIONS and to_state in TRANSITIONS[key]


def check_stage(stage: str) -> Stage:
    """The Stage named `stage`, or a StageError listing the stages."""
    try:
        return Stage(stage)
    except ValueError:
        raise StageError(f"unknown stage '{stage}'; stages are {', '.join(STAGES)}") from None


# ---- approvals ---------------------------------------------------------------------------------
# Gates a person approves: "shadow", "canary:N" (the N-th canary step), "production".
def approval_key(run: int, gate: str) -> str:
    """How an approval is named in the planner: 'r{run}:{gate}'."""
    return f"r{run}:{gate}"


def approval_tag(run: int, gate: str) -> str:
    """The version tag a person's approval is stored under (MLflow tag keys allow no ':')."""
    return f"approval.r{run}.{gate.replace(':', '-')}"


def approvals_from_tags(tags: Mapping[str, str]) -> frozenset[str]:
    """The approval keys ('r{run}:{gate}') of a version's tags."""
    out = set()
    for k in tags:
        if k.startswith("approval.r"):
            _, run, gate = k.split(".", 2)
            out.add(f"{run}:{gate.replace('-', ':')}")
    return frozenset(out)


# ---- changes of intent ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Transition:
    """One history event of a version: from -> to, and why."""

    version: int
    from_state: str | None
    to_state: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AliasMove:
    """Point alias `stage` at `version`; with remove, delete it if it still names `version`."""

    stage: str
    version: int
    remove: bool = False


@dataclass(frozen=True)
class StageChange:
    """An explained change of intent: alias moves, then version tags, then history records."""

    summary: str
    aliases: tuple[AliasMove, ...] = ()
    tags: tuple[tuple[int, dict[str, str]], ...] = ()
    transitions: tuple[Transition, ...] = ()

    def then(self, other: StageChange, summary: str | None = None) -> StageChange:
        """This change followed by `other`."""
        return StageChange(summary or other.summary, self.aliases + other.aliases, self.tags + other.tags,
                           self.transitions + other.transitions)


def move_to_stage(version: int, stage: str, *, state: str | None, holder: int | None, reason: str,
                  evidence: dict[str, Any] | None = None, gate_reason: str = "") -> StageChange | None:
    """Point `stage` at `version` (in `state`; `holder` holds the stage now). None when it is
    there already. Moving production retires the version that held it; a rejected version
    never takes a stage."""
    st = check_stage(stage)
    if state == State.REJECTED:
        raise StageError(f"version {version} was rejected by its gate ({gate_reason}); it cannot take a stage")
    if not allowed(state, st):
        raise StageError(f"version {version} is {state}: it cannot move to {st}")
    if holder == version and state == st:
        return None
    change = StageChange(f"@{st} -> v{version}", aliases=(AliasMove(st, version),),
                         tags=((version, {"state": str(st)}),),
                         transitions=(Transition(version, state, str(st), reason, evidence or {}),))
    if st == Stage.PRODUCTION and holder is not None and holder != version:
        change = change.then(StageChange(change.summary, tags=((holder, {"state": str(State.RETIRED)}),),
                                         transitions=(Transition(holder, str(State.PRODUCTION), str(State.RETIRED),
                                                                 f"replaced by version {version}"),)))
    return change


def previous_production(current: int, retired_at: Mapping[int, str]) -> int | None:
    """The retired version that most recently left production (`retired_at`: retired
    version -> when it last became retired, '' when unknown); never `current`."""
    best = max(((at, v) for v, at in retired_at.items() if v != current), default=None)
    return best[1] if best else None


def rollback_change(aliases: Mapping[str, int], states: Mapping[int, str], *, reason: str,
                    stage: str | None = None, previous: int | None = None) -> StageChange:
    """Undo the latest step: withdraw the canary, else the shadow, else move production back
    to `previous` (the version it replaced). The withdrawn version becomes rolled_back."""
    order = [str(check_stage(stage))] if stage else [Stage.CANARY, Stage.SHADOW, Stage.PRODUCTION]
    for st in order:
        v = aliases.get(st)
        if v is None:
            continue
        gone = (v, {"state": str(State.ROLLED_BACK), "rollback.reason": reason})
        if st == Stage.PRODUCTION:
            if previous is None:
                raise StageError(f"no retired version to roll production v{v} back to")
            back = move_to_stage(previous, Stage.PRODUCTION, state=states.get(previous), holder=v,
                                 reason=f"{reason} (rollback from v{v})")
            assert back is not None  # previous != v: production moves
            # moving production retired v; say what really happened
            return back.then(StageChange(
                f"@production -> v{previous} (v{v} rolled back: {reason})", tags=(gone,),
                transitions=(Transition(v, str(State.RETIRED), str(State.ROLLED_BACK), reason),)))
        if not allowed(states.get(v), State.ROLLED_BACK):
            raise StageError(f"v{v} at @{st} is {states.get(v)}: it cannot be rolled back")
        return StageChange(f"@{st} removed from v{v} (rolled back: {reason})",
                           aliases=(AliasMove(st, v, remove=True),), tags=(gone,),
                           transitions=(Transition(v, states.get(v), str(State.ROLLED_BACK), reason),))
    raise StageError(f"nothing to roll back: no version holds {' or '.join('@' + s for s in order)}")
