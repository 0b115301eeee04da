"""The planner's answer: one action with its reason, as data the executor applies verbatim.

An action that changes something carries everything the executor needs, decided in
advance by the pure planner, so executing it is thin and replayable:

  ops      registry writes (alias moves, tag writes), idempotent, done first (the intent)
  target   the DeploymentState to apply (None: leave the deployment alone)
  records  history events to append, each with an idempotency key

The controller journals the serialized action before its first side effect and clears
the journal after the last, so a controller killed half-way resumes *this* action
(same id, same time) instead of planning a different one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ratchet.rollout.state import DeploymentState


@dataclass(frozen=True)
class Op:
    """One registry write: set_alias(stage, version), remove_alias(stage), set_tags(version, tags)."""

    kind: str
    stage: str | None = None
    version: int | None = None
    tags: dict[str, str] | None = None


@dataclass(frozen=True)
class Record:
    """One history event on a version; `key` makes appending it idempotent."""

    version: int
    from_state: str | None
    to_state: str
    reason: str
    key: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    reason: str = ""
    event: str = ""              # the one-line human text, with the number that decided it
    version: int | None = None
    id: str = ""
    at: str = ""                 # controller clock when planned (replays keep it)
    ops: tuple[Op, ...] = ()
    target: DeploymentState | None = None
    change_cause: str = ""
    records: tuple[Record, ...] = ()
    resumed: bool = False

    @property
    def kind(self) -> str:
        return type(self).__name__

    @property
    def acts(self) -> bool:
        """True when executing it writes something (False for Wait / AwaitApproval)."""
        return bool(self.ops or self.records or self.target is not None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "target":
                v = v.to_dict() if v is not None else None
            elif f.name in ("ops", "records"):
                v = [dataclasses.asdict(x) for x in v]
            d[f.name] = v
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Action:
        cls = KINDS[d["kind"]]
        kw = {k: v for k, v in d.items() if k != "kind" and k in {f.name for f in dataclasses.fields(cls)}}
        kw["target"] = DeploymentState.from_dict(kw.get("target"))
        kw["ops"] = tuple(Op(**o) for o in kw.get("ops", ()))
        kw["records"] = tuple(Record(**r) for r in kw.get("records", ()))
        return cls(**kw)


@dataclass(frozen=True)
class Wait(Action):
    """Nothing to do yet (holding, not enough decisions, labels not matured). settled: nothing pending at all."""

    settled: bool = False


@dataclass(frozen=True)
class AwaitApproval(Action):
    """Suggest mode (or a paused version): the next gate needs `ratchet approve VERSION`."""

    gate: str = ""


@dataclass(frozen=True)
class Deploy(Action):
    """Make the deployment follow the registry (alias moved by a person, first deployment, repair, tidy)."""


@dataclass(frozen=True)
class StartShadow(Action):
    pass


@dataclass(frozen=True)
class StartCanary(Action):
    weight: float = 0.0


@dataclass(frozen=True)
class Advance(Action):
    weight: float = 0.0
    step: int = 0


@dataclass(frozen=True)
class Promote(Action):
    pass


@dataclass(frozen=True)
class Rollback(Action):
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Waive(Action):
    """The plan's declared policy waives open questions still unresolved at the shadow's max_decisions."""


@dataclass(frozen=True)
class AdoptOutsideChange(Action):
    """The deployment changed under the controller (kubectl rollout undo): a human decision to follow."""


KINDS: dict[str, type[Action]] = {c.__name__: c for c in (
    Wait, AwaitApproval, Deploy, StartShadow, StartCanary, Advance, Promote, Rollback, Waive, AdoptOutsideChange)}
