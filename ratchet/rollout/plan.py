"""The rollout plan: how a version walks from @shadow through canary steps to @production.

Declared as data next to the contracts, like a progressive-delivery spec (Flagger's
Canary resource): a shadow phase, canary steps with hold times, guards per step, and
the mode (`suggest` waits for a person at every gate, `auto` proceeds).

    >>> plan = load_plan("contracts/rollout.yaml")
    >>> [s.weight for s in plan.canary.steps], plan.mode
    ([1.0, 5.0, 25.0, 50.0, 100.0], 'suggest')

The file is declared as pydantic models (PlanFile) checked by ratchet.yamlfile.validate;
every validation error names the file, the line and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator, model_validator

from ratchet.yamlfile import FileModel, Problem, YamlDoc, fail, load_yaml, parse_yaml, validate

MODES = ("suggest", "auto")
GUARD_NAMES = ("block_rate", "error_rate", "p99_latency_ms")
COHORT_KEYS = ("country", "merchant_id", "merchant_category", "channel")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """'10m' -> 600.0 seconds; '30s', '2h', '1d', '250ms'; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '10m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative ({value})")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration such as '30s', '10m', '2h', got {value!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def format_duration(seconds: float) -> str:
    """600 -> '10m', 90 -> '1m30s', 0.5 -> '0.5s' (for events and status)."""
    if seconds < 60:
        return f"{seconds:g}s"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v) or "0s"


@dataclass(frozen=True)
class BlockRateGuard:
    """The block rate of every slice value (e.g. every country) may not move by more than
    the tolerance against production on the same traffic window. Fails only when the
    Newcombe interval on the difference lies entirely beyond the allowance."""

    per: str = "country"
    relative: float | None = 0.10
    absolute: float | None = 0.0005
    min_support: int = 500
    confidence: float = 0.95

    def allowance(self, base_rate: float) -> float:
        parts = [x for x in (self.absolute, None if self.relative is None else self.relative * abs(base_rate))
                 if x is not None]
        return max(parts) if parts else 0.0


@dataclass(frozen=True)
class Guards:
    """Label-free checks on live decisions; None disables a check."""

    block_rate: BlockRateGuard | None = field(default_factory=BlockRateGuard)
    max_error_rate: float | None = 0.01
    max_p99_latency_ms: float | None = None
    latency_min_decisions: int = 200
    confidence: float = 0.95
    #: features whose share of decisions without a value (absent or null in the request) may not
    #: credibly exceed max_missing_rate on the canary's decisions; () disables the check
    missing_features: tuple[str, ...] = ()
    max_missing_rate: float = 0.05
    missing_min_decisions: int = 200


@dataclass(frozen=True)
class CanaryStep:
    weight: float        # percent of (cohort) traffic, 0 < weight <= 100
    hold: float          # seconds at this weight before the next gate
    min_decisions: int   # canary decisions at this weight before the next gate


#: What happens to open questions still unresolved when the shadow reaches max_decisions:
#: hold for a person (`ratchet approve V --waive ...`), or (auto mode only) waive the ones
#: that stayed below their min_support, or waive every one; a waiver is always recorded.
AT_MAX = ("hold", "waive_below_support", "waive")


@dataclass(frozen=True)
class ShadowPhase:
    min_duration: float = 0.0
    min_decisions: int = 0
    contract: str | None = None          # resolved path of the contract judged on matured labels
    guards: tuple[str, ...] = ("block_rate", "error_rate")  # label-free checks on shadow decisions
    from_staging: bool = True            # in auto mode, @staging enters shadow when the slots are free
    max_decisions: int | None = None     # shadow decisions after which open questions go to `at_max`
    at_max: str = "hold"                 # one of AT_MAX


@dataclass(frozen=True)
class CanaryPhase:
    steps: tuple[CanaryStep, ...]
    cohort: tuple[tuple[str, tuple[str, ...]], ...] | None = None  # e.g. (("country", ("FR",)),)

    def cohort_text(self) -> str:
        if not self.cohort:
            return "all traffic"
        return ", ".join(f"{k} in {'/'.join(v)}" for k, v in self.cohort)


@dataclass(frozen=True)
class RolloutPlan:
    mode: str
    interval: float
    shadow: ShadowPhase
    canary: CanaryPhase
    guards: Guards
    name: str = "rollout"
    path: str = "<string>"

    @property
    def steps(self) -> tuple[CanaryStep, ...]:
        return self.canary.steps


# ---- the file ------------------------------------------------------------------------
def _number(lo: float | None = None, hi: float | None = None, *, whole: bool = False) -> Any:
    """A number in [lo, hi] (a whole number when `whole`), with the plan's wording."""

    def check(value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(f"expected a number, got {value!r}")
        if whole and int(value) != value:
            raise fail(f"expected a whole number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else (
                f">= {lo:g}" if lo is not None else f"<= {hi:g}")
            raise fail(f"must be {rng}, got {value!r}")
        return int(value) if whole else float(value)

    schema: dict[str, Any] = {"type": "integer" if whole else "number"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return Annotated[float, PlainValidator(check), WithJsonSchema(schema)]


def _seconds(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise fail(str(exc)) from None


#: '10m', '30s', '2h', '1d', '250ms' or a number of seconds; validated to seconds (unscaled).
Duration = Annotated[float, PlainValidator(_seconds), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": _DURATION.pattern}, {"type": "number", "minimum": 0}],
    "description": "a duration: 30s, 10m, 2h, 1d, 250ms, or seconds"})]


def _cohort_values(value: Any) -> tuple[str, ...]:
    vals = value if isinstance(value, list) else [value]
    if not vals or any(isinstance(x, dict | list) or x is None for x in vals):
        raise fail("expected a value or a non-empty list of values")
    return tuple(sorted(str(x) for x in vals))


_SCALAR = {"type": ["string", "number", "boolean"]}
CohortValues = Annotated[tuple[str, ...], PlainValidator(_cohort_values), WithJsonSchema(
    {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR, "minItems": 1}]})]


class ToleranceFile(FileModel):
    relative: _number(lo=0) | None = None
    absolute: _number(lo=0) | None = None

    @model_validator(mode="after")
    def _some(self) -> "ToleranceFile":
        if not self.model_fields_set:
            raise fail("give relative and/or absolute")
        return self


class BlockRateFile(FileModel):
    per: str = "country"
    tolerance: ToleranceFile = ToleranceFile(relative=0.10, absolute=0.0005)
    min_support: _number(lo=1, whole=True) = 500
    confidence: _number(lo=0.5, hi=0.9999) | None = None  # None: the guards' confidence

    @field_validator("tolerance", mode="before")
    @classmethod
    def _null_tolerance(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("per", mode="before")
    @classmethod
    def _per(cls, v: Any) -> Any:
        if not isinstance(v, str) or not v:
            raise fail(f"expected a column name such as country, got {v!r}")
        return v


class ErrorRateFile(FileModel):
    max: _number(lo=0, hi=1) = 0.01


class LatencyFile(FileModel):
    max: _number(lo=0) | None = None
    min_decisions: _number(lo=1, whole=True) = 200

    @model_validator(mode="after")
    def _needs_max(self) -> "LatencyFile":
        if self.max is None:
            raise fail("needs max (milliseconds)")
        return self


class MissingFeaturesFile(FileModel):
    features: list[str]
    max_rate: _number(lo=0, hi=1) = 0.05
    min_decisions: _number(lo=1, whole=True) = 200

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise fail(f"expected a non-empty list of feature names, got {v!r}")
        return v


class GuardsFile(FileModel):
    """Label-free checks on live decisions; `block_rate: false` turns that one off, a
    missing error_rate or p99_latency_ms leaves it off."""

    none_is_default = True
    block_rate: BlockRateFile | Literal[False] = BlockRateFile()
    error_rate: ErrorRateFile | None = None
    p99_latency_ms: LatencyFile | None = None
    missing_features: MissingFeaturesFile | None = None
    confidence: _number(lo=0.5, hi=0.9999) = 0.95

    @field_validator("block_rate", mode="before")
    @classmethod
    def _null_block(cls, v: Any) -> Any:
        return {} if v is None else v


class ShadowFile(FileModel):
    none_is_default = True
    min_duration: Duration = 0.0
    min_decisions: _number(lo=0, whole=True) = 0
    contract: str | None = None
    guards: list[Literal[GUARD_NAMES]] = ["block_rate", "error_rate"]
    from_staging: bool = True
    max_decisions: _number(lo=1, whole=True) | None = None
    at_max: Literal[AT_MAX] = "hold"

    @field_validator("contract", mode="before")
    @classmethod
    def _contract(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            raise fail(f"expected a path, got {v!r}")
        return v

    @field_validator("guards", mode="before")
    @classmethod
    def _guards(cls, v: Any) -> Any:
        if not isinstance(v, list) or any(x not in GUARD_NAMES for x in v):
            raise fail(f"expected a list of guard names from {', '.join(GUARD_NAMES)}")
        return v

    @model_validator(mode="after")
    def _max(self) -> "ShadowFile":
        if self.max_decisions is not None and self.max_decisions < self.min_decisions:
            raise fail(f"must be at least min_decisions ({self.min_decisions}), got {self.max_decisions}",
                       "max_decisions")
        return self


class StepFile(FileModel):
    weight: _number(lo=0, hi=100) | None = None  # required; None gives the plan's own message
    hold: Duration = 0.0
    min_decisions: _number(lo=0, whole=True) = 0

    @model_validator(mode="after")
    def _needs_weight(self) -> "StepFile":
        if self.weight is None:
            raise fail("needs weight (percent of traffic)")
        return self


class CohortFile(FileModel):
    """Exactly one column and its value(s), e.g. {country: [FR]}."""

    country: CohortValues | None = None
    merchant_id: CohortValues | None = None
    merchant_category: CohortValues | None = None
    channel: CohortValues | None = None

    @model_validator(mode="after")
    def _one(self) -> "CohortFile":
        if len(self.model_fields_set) != 1:
            raise fail("name exactly one column, e.g. {country: [FR]} or {merchant_id: [m1, m2]}")
        return self


class CanaryFile(FileModel):
    steps: list[StepFile] = Field(min_length=1)
    cohort: CohortFile | None = None

    @model_validator(mode="after")
    def _increasing(self) -> "CanaryFile":
        last = 0.0
        for i, st in enumerate(self.steps):
            assert st.weight is not None
            if st.weight <= last:
                raise fail(f"weights must increase and be > 0; {st.weight:g} follows {last:g}", "steps", i, "weight")
            last = st.weight
        return self


class PlanFile(FileModel):
    """A rollout plan file (contracts/rollout.yaml)."""

    model_config = ConfigDict(title="ratchet rollout plan")
    none_is_default = True
    version: Literal[1] = 1
    name: Any = Field(default="rollout", json_schema_extra={"type": "string"})
    description: Any = Field(default=None, json_schema_extra={"type": "string"})
    mode: Literal[MODES] = "suggest"
    interval: Duration = 30.0
    time_scale: _number(lo=0) = 1.0
    shadow: ShadowFile = ShadowFile()
    canary: CanaryFile
    guards: GuardsFile = GuardsFile()

    @field_validator("interval")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise fail("must be positive")
        return v

    @model_validator(mode="after")
    def _at_max(self) -> "PlanFile":
        at_max = self.shadow.at_max
        if at_max != "hold" and self.mode != "auto":
            raise fail(f"'{at_max}' decides without a person, so it needs mode: auto; in suggest mode open "
                       "questions wait for `ratchet approve VERSION --waive ... --reason ...`", "shadow", "at_max")
        if at_max != "hold" and self.shadow.max_decisions is None:
            raise fail("needs shadow.max_decisions: when to apply it", "shadow", "at_max")
        return self


def _messages(p: Problem) -> str | None:
    if p.kind == "unknown_key":
        return f"unknown key; expected one of {', '.join(p.ctx['allowed'])}"
    if p.kind == "literal_error" and p.keypath == ("version",):
        return f"unsupported plan version {p.value!r}; expected 1"
    if p.kind in ("model_type", "model_attributes_type") and p.value is None:
        return "is required"
    if p.keypath == ("canary", "steps") and p.kind in ("missing", "list_type", "too_short"):
        return "expected a non-empty list of {weight, hold, min_decisions}"
    if p.kind == "bool_type":
        return "expected true or false"
    return None


def _missing_guard(m: MissingFeaturesFile | None) -> dict[str, Any]:
    if m is None:
        return {}
    return {"missing_features": tuple(dict.fromkeys(m.features)), "max_missing_rate": float(m.max_rate),
            "missing_min_decisions": int(m.min_decisions)}


def _build(doc: YamlDoc) -> RolloutPlan:
    f = validate(doc, PlanFile, _messages)
    scale = f.time_scale
    contract = f.shadow.contract
    if contract is not None:
        p = Path(contract)
        if not p.is_absolute() and doc.path not in ("<string>", ""):
            p = Path(doc.path).parent / p
        if doc.path not in ("<string>", "") and not p.exists():
            raise doc.error(("shadow", "contract"), f"contract file {p} not found")
        contract = str(p)
    s = f.shadow
    shadow = ShadowPhase(min_duration=s.min_duration * scale, min_decisions=s.min_decisions, contract=contract,
                         guards=tuple(s.guards), from_staging=s.from_staging, max_decisions=s.max_decisions,
                         at_max=s.at_max)
    steps = tuple(CanaryStep(weight=st.weight, hold=st.hold * scale, min_decisions=st.min_decisions)
                  for st in f.canary.steps)
    cohort = None
    if f.canary.cohort is not None:
        cohort = tuple((k, getattr(f.canary.cohort, k)) for k in COHORT_KEYS if k in f.canary.cohort.model_fields_set)
    g = f.guards
    block = None
    if g.block_rate is not False:
        b = g.block_rate
        block = BlockRateGuard(per=b.per, relative=b.tolerance.relative, absolute=b.tolerance.absolute,
                               min_support=b.min_support,
                               confidence=g.confidence if b.confidence is None else b.confidence)
    guards = Guards(block_rate=block, max_error_rate=None if g.error_rate is None else g.error_rate.max,
                    max_p99_latency_ms=None if g.p99_latency_ms is None else g.p99_latency_ms.max,
                    latency_min_decisions=200 if g.p99_latency_ms is None else g.p99_latency_ms.min_decisions,
                    confidence=g.confidence, **_missing_guard(g.missing_features))
    return RolloutPlan(mode=f.mode, interval=f.interval, shadow=shadow, canary=CanaryPhase(steps=steps, cohort=cohort),
                       guards=guards, name=str(f.name), path=doc.path)


def load_plan(path: str | Path) -> RolloutPlan:
    """Read and validate a rollout plan YAML; errors are SpecError naming file:line: key."""
    return _build(load_yaml(path))


def plan_from_text(text: str, path: str = "<string>") -> RolloutPlan:
    """Parse a rollout plan from YAML text (tests, embedded defaults)."""
    return _build(parse_yaml(text, path))
