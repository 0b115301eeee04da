"""What the controller reasons about: the fact (deployment), the intent (registry) and
fresh observations (live decisions). Plain frozen values, no I/O.

- DeploymentState is the fact: which versions the decision service runs, the canary
  weight, plus the backend's `revision` and the fingerprint ratchet last `applied`
  (kept outside the rolled-back template, e.g. a Deployment metadata label, which
  `kubectl rollout undo` leaves alone), so a
  change made under the controller (`kubectl rollout undo`) shows as
  `fingerprint() != applied`.
- Intent is the registry: aliases, each involved version's state tag and rollout
  progress (run, stage, canary step, since), approvals, and the controller's journal
  (the action it was executing when it last stopped).
- Observations are counts over the current step's window; judging them is guards.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from ratchet.stages.wire import Cohort, fingerprint


def iso(t: datetime) -> str:
    """UTC ISO timestamp with seconds, the form every ratchet record uses."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def parse_iso(s: str | None) -> datetime | None:
    if not s:
        return None
    t = datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class DeploymentState:
    """The fact: what the decision service runs (versions, canary weight, cohort)."""

    production: int | None = None
    canary: int | None = None
    canary_weight: float = 0.0
    shadow: int | None = None
    cohort: Cohort | None = None
    revision: str | None = None          # backend's own counter (Deployment revision); opaque
    applied: str | None = None           # fingerprint of the last target ratchet applied
    restored_revision: str | None = None  # set by a backend that recognises an undo to an older revision
    generation: int | None = None        # the service's configuration generation now serving (the decision
    #                                      log's config_generation); None when the backend cannot tell
    serving_since: str | None = None     # when the service began serving that generation (its clock, ISO):
    #                                      a restarted service counts generations from 1 again

    def content(self) -> DeploymentState:
        """Only what the service runs: no revision or bookkeeping; canary-less states normalised."""
        if self.canary is None:
            return DeploymentState(self.production, None, 0.0, self.shadow, None)
        return DeploymentState(self.production, self.canary, float(self.canary_weight), self.shadow, self.cohort)

    def fingerprint(self) -> str:
        """A readable, stable summary of the content, e.g. 'production=v6 canary=v7@25% shadow=none'."""
        c = self.content()
        return fingerprint(c.production, c.canary, c.canary_weight, c.shadow, c.cohort)

    def changed_outside(self) -> bool:
        """True when what runs is not what ratchet last applied (None: never applied, nothing to compare)."""
        return self.applied is not None and self.fingerprint() != self.applied

    def with_(self, **changes: Any) -> DeploymentState:
        return replace(self, **changes).content()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cohort"] = [[k, list(v)] for k, v in self.cohort] if self.cohort else None
        return d

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> DeploymentState | None:
        if d is None:
            return None
        d = dict(d)
        if d.get("cohort"):
            d["cohort"] = tuple((k, tuple(v)) for k, v in d["cohort"])
        return DeploymentState(**d)


@dataclass(frozen=True)
class Progress:
    """The controller's progress with one version, persisted as the version tag `rollout`.

    run: incremented each time the version (re)enters the rollout, so keys and approvals
    of an earlier attempt never count for a new one. stage: shadow, canary, production,
    rolled_back (or '' when never rolled out). step: canary step index. since: when the
    current stage/step started (controller clock). paused: why the controller waits for
    a person regardless of mode (set when it adopted an outside change)."""

    run: int = 0
    stage: str = ""
    step: int = 0
    since: str | None = None
    paused: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(s: str | None) -> Progress:
        if not s:
            return Progress()
        try:
            d = json.loads(s)
            return Progress(**{k: d[k] for k in ("run", "stage", "step", "since", "paused") if k in d})
        except (ValueError, TypeError):
            return Progress()


#: Version tags that carry the offline verdict's open questions and the waivers of them.
OPEN_QUESTIONS_TAG = "open_questions"   # JSON list of "clause[slice]" keys
WAIVED_TAG = "waived"                   # JSON {key or "all": {"by", "reason", "at"}}
POLICY_WAIVER_TAG = "waived.policy"     # JSON {"by", "at", "reason", "keys": [...]} written by the controller
WAIVE_ALL = "all"


def parse_open_questions(raw: str | None) -> frozenset[str]:
    """The open-question keys of a version's `open_questions` tag (absent or unreadable: none)."""
    try:
        keys = json.loads(raw) if raw else []
    except ValueError:
        return frozenset()
    return frozenset(str(k) for k in keys) if isinstance(keys, list) else frozenset()


def parse_waived(raw: str | None, policy: str | None = None) -> dict[str, dict[str, Any]]:
    """Waivers: key -> who waived it, when and why; from the person's `waived` tag and the
    plan policy's `waived.policy` tag."""
    out: dict[str, dict[str, Any]] = {}
    try:
        d = json.loads(raw) if raw else {}
        if isinstance(d, dict):
            out.update({str(k): v for k, v in d.items()})
        pol = json.loads(policy) if policy else {}
        if isinstance(pol, dict):
            out.update({str(k): {kk: vv for kk, vv in pol.items() if kk != "keys"} for k in pol.get("keys", [])})
    except ValueError:
        pass
    return out


@dataclass(frozen=True)
class VersionInfo:
    state: str = ""
    progress: Progress = field(default_factory=Progress)
    approvals: frozenset[str] = frozenset()  # gate keys "r{run}:{gate}" a person approved
    open_questions: frozenset[str] = frozenset()  # the offline verdict's unresolved "clause[slice]" keys
    waived: frozenset[str] = frozenset()          # keys waived by a person or the plan's policy ("all": every one)

    def unresolved(self, passed: frozenset[str] = frozenset()) -> frozenset[str]:
        """Open questions neither resolved as pass on live traffic nor waived."""
        if WAIVE_ALL in self.waived:
            return frozenset()
        return self.open_questions - passed - self.waived


@dataclass(frozen=True)
class Intent:
    """The registry's side: aliases (stage -> version), involved versions, the journal."""

    aliases: dict[str, int] = field(default_factory=dict)
    versions: dict[int, VersionInfo] = field(default_factory=dict)
    pending: dict[str, Any] | None = None  # the serialized action the controller was executing
    in_production: frozenset[int] = frozenset()  # every version whose state tag is production

    def info(self, version: int | None) -> VersionInfo:
        return self.versions.get(version, VersionInfo()) if version is not None else VersionInfo()


# ---- observations ----------------------------------------------------------------------
@dataclass(frozen=True)
class RoleStats:
    """Decisions of one role (production, canary, shadow) over the window."""

    decisions: int = 0
    errors: int = 0
    p99_latency_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.decisions if self.decisions else 0.0


@dataclass(frozen=True)
class SliceCounts:
    """Blocks and decisions of one slice value (e.g. country FR) for production and a candidate role."""

    slice: str
    base_n: int
    base_blocks: int
    n: int
    blocks: int
    #: paired counts (the shadow: both decisions of the same units), else None
    pairs: int | None = None
    only_candidate: int | None = None   # units the candidate blocks and production allows
    only_base: int | None = None        # units production blocks and the candidate allows


@dataclass(frozen=True)
class ShadowReview:
    """The contract judged on shadow decisions joined with matured labels (confidence sequences).

    passed: no blocking clause failed credibly on enough labelled decisions; `passed_keys`
    are the "clause[slice]" results shown to pass (they resolve open questions),
    `below_support` the blocking ones still under their min_support."""

    status: str = "pending"  # pending | passed | failed
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    passed_keys: frozenset[str] = frozenset()
    below_support: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Observations:
    """Counts over a window (the current step), per role; compared on the same traffic."""

    roles: dict[str, RoleStats] = field(default_factory=dict)
    block_counts: dict[str, tuple[SliceCounts, ...]] = field(default_factory=dict)  # role -> per slice vs production
    shadow_review: ShadowReview | None = None
    window_start: str | None = None
    per: str = "country"
    #: role -> when the current step's configuration first decided, from the decision log (ISO time):
    #: a step's hold counts from there, not from when it was planned. None: nothing decided under it
    #: yet (hold not started). Role absent: the observer cannot tell (no generations), planned time counts.
    served_from: dict[str, str | None] = field(default_factory=dict)
    #: role -> (served decisions, {feature: decisions whose request had no value for it})
    missing: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)

    def role(self, name: str) -> RoleStats:
        return self.roles.get(name, RoleStats())
