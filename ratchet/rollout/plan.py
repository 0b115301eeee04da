"""The rollout plan: how a version walks from @shadow through canary steps to @production.

Declared as data next to the contracts, like a progressive-delivery spec (Flagger's
Canary resource): a shadow phase, canary steps with hold times, guards per step, and
the mode (`suggest` waits for a person at every gate, `auto` proceeds).

    >>> plan = load_plan("contracts/rollout.yaml")
    >>> [s.weight for s in plan.canary.steps], plan.mode
    ([1.0, 5.0, 25.0, 50.0, 100.0], 'suggest')

Every validation error names the file, the line and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ratchet.yamlfile import KeyPath, YamlDoc, load_yaml, parse_yaml

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


# ---- loading ---------------------------------------------------------------------------
def _get(doc: YamlDoc, kp: KeyPath, raw: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for k in raw:
        if k not in allowed:
            raise doc.error(kp + (k,), f"unknown key; expected one of {', '.join(allowed)}")


def _mapping(doc: YamlDoc, kp: KeyPath, value: Any, *, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise doc.error(kp, "is required")
        return {}
    if not isinstance(value, dict):
        raise doc.error(kp, f"expected a mapping, got {type(value).__name__}")
    return value


def _number(doc: YamlDoc, kp: KeyPath, value: Any, *, lo: float | None = None, hi: float | None = None,
            integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise doc.error(kp, f"expected a number, got {value!r}")
    if integer and int(value) != value:
        raise doc.error(kp, f"expected a whole number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else (
            f">= {lo:g}" if lo is not None else f"<= {hi:g}")
        raise doc.error(kp, f"must be {rng}, got {value!r}")
    return float(value)


def _duration(doc: YamlDoc, kp: KeyPath, value: Any, scale: float) -> float:
    try:
        return parse_duration(value) * scale
    except ValueError as exc:
        raise doc.error(kp, str(exc)) from None


def _guards(doc: YamlDoc, raw: Any) -> Guards:
    kp: KeyPath = ("guards",)
    g = _mapping(doc, kp, raw)
    _get(doc, kp, g, GUARD_NAMES + ("confidence",))
    confidence = _number(doc, kp + ("confidence",), g.get("confidence", 0.95), lo=0.5, hi=0.9999)
    block: BlockRateGuard | None = None
    if g.get("block_rate", {}) is not False:
        b = _mapping(doc, kp + ("block_rate",), g.get("block_rate"))
        bkp = kp + ("block_rate",)
        _get(doc, bkp, b, ("per", "tolerance", "min_support", "confidence"))
        tol = _mapping(doc, bkp + ("tolerance",), b.get("tolerance", {"relative": 0.10, "absolute": 0.0005}))
        _get(doc, bkp + ("tolerance",), tol, ("relative", "absolute"))
        if not tol:
            raise doc.error(bkp + ("tolerance",), "give relative and/or absolute")
        rel = tol.get("relative")
        ab = tol.get("absolute")
        per = b.get("per", "country")
        if not isinstance(per, str) or not per:
            raise doc.error(bkp + ("per",), f"expected a column name such as country, got {per!r}")
        block = BlockRateGuard(
            per=per,
            relative=None if rel is None else _number(doc, bkp + ("tolerance", "relative"), rel, lo=0),
            absolute=None if ab is None else _number(doc, bkp + ("tolerance", "absolute"), ab, lo=0),
            min_support=int(_number(doc, bkp + ("min_support",), b.get("min_support", 500), lo=1, integer=True)),
            confidence=_number(doc, bkp + ("confidence",), b.get("confidence", confidence), lo=0.5, hi=0.9999),
        )
    max_err = None
    if g.get("error_rate") is not None:
        e = _mapping(doc, kp + ("error_rate",), g["error_rate"])
        _get(doc, kp + ("error_rate",), e, ("max",))
        max_err = _number(doc, kp + ("error_rate", "max"), e.get("max", 0.01), lo=0, hi=1)
    max_p99, lat_min = None, 200
    if g.get("p99_latency_ms") is not None:
        lat = _mapping(doc, kp + ("p99_latency_ms",), g["p99_latency_ms"])
        _get(doc, kp + ("p99_latency_ms",), lat, ("max", "min_decisions"))
        if "max" not in lat:
            raise doc.error(kp + ("p99_latency_ms",), "needs max (milliseconds)")
        max_p99 = _number(doc, kp + ("p99_latency_ms", "max"), lat["max"], lo=0)
        lat_min = int(_number(doc, kp + ("p99_latency_ms", "min_decisions"), lat.get("min_decisions", 200),
                              lo=1, integer=True))
    return Guards(block_rate=block, max_error_rate=max_err, max_p99_latency_ms=max_p99,
                  latency_min_decisions=lat_min, confidence=confidence)


def _cohort(doc: YamlDoc, kp: KeyPath, raw: Any) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    if raw is None:
        return None
    c = _mapping(doc, kp, raw)
    _get(doc, kp, c, COHORT_KEYS)
    if len(c) != 1:
        raise doc.error(kp, "name exactly one column, e.g. {country: [FR]} or {merchant_id: [m1, m2]}")
    out = []
    for k, v in c.items():
        vals = v if isinstance(v, list) else [v]
        if not vals or any(isinstance(x, dict | list) or x is None for x in vals):
            raise doc.error(kp + (k,), "expected a value or a non-empty list of values")
        out.append((k, tuple(sorted(str(x) for x in vals))))
    return tuple(out)


def _build(doc: YamlDoc) -> RolloutPlan:
    d = doc.data
    _get(doc, (), d, ("version", "name", "description", "mode", "interval", "time_scale", "shadow", "canary", "guards"))
    if d.get("version", 1) != 1:
        raise doc.error(("version",), f"unsupported plan version {d.get('version')!r}; expected 1")
    mode = d.get("mode", "suggest")
    if mode not in MODES:
        raise doc.error(("mode",), f"expected one of {', '.join(MODES)}, got {mode!r}")
    scale = _number(doc, ("time_scale",), d.get("time_scale", 1.0), lo=0)
    interval = _duration(doc, ("interval",), d.get("interval", "30s"), 1.0)
    if interval <= 0:
        raise doc.error(("interval",), "must be positive")

    s = _mapping(doc, ("shadow",), d.get("shadow"))
    _get(doc, ("shadow",), s, ("min_duration", "min_decisions", "contract", "guards", "from_staging",
                               "max_decisions", "at_max"))
    contract = s.get("contract")
    if contract is not None:
        if not isinstance(contract, str):
            raise doc.error(("shadow", "contract"), f"expected a path, got {contract!r}")
        p = Path(contract)
        if not p.is_absolute() and doc.path not in ("<string>", ""):
            p = Path(doc.path).parent / p
        if doc.path not in ("<string>", "") and not p.exists():
            raise doc.error(("shadow", "contract"), f"contract file {p} not found")
        contract = str(p)
    sg = s.get("guards", ["block_rate", "error_rate"])
    if not isinstance(sg, list) or any(x not in GUARD_NAMES for x in sg):
        raise doc.error(("shadow", "guards"), f"expected a list of guard names from {', '.join(GUARD_NAMES)}")
    fs = s.get("from_staging", True)
    if not isinstance(fs, bool):
        raise doc.error(("shadow", "from_staging"), "expected true or false")
    min_dec = int(_number(doc, ("shadow", "min_decisions"), s.get("min_decisions", 0), lo=0, integer=True))
    max_dec = None
    if s.get("max_decisions") is not None:
        max_dec = int(_number(doc, ("shadow", "max_decisions"), s["max_decisions"], lo=1, integer=True))
        if max_dec < min_dec:
            raise doc.error(("shadow", "max_decisions"), f"must be at least min_decisions ({min_dec}), got {max_dec}")
    at_max = s.get("at_max", "hold")
    if at_max not in AT_MAX:
        raise doc.error(("shadow", "at_max"), f"expected one of {', '.join(AT_MAX)}, got {at_max!r}")
    if at_max != "hold" and d.get("mode", "suggest") != "auto":
        raise doc.error(("shadow", "at_max"), f"'{at_max}' decides without a person, so it needs mode: auto; "
                        "in suggest mode open questions wait for `ratchet approve VERSION --waive ... --reason ...`")
    if at_max != "hold" and max_dec is None:
        raise doc.error(("shadow", "at_max"), "needs shadow.max_decisions: when to apply it")
    shadow = ShadowPhase(
        min_duration=_duration(doc, ("shadow", "min_duration"), s.get("min_duration", 0), scale),
        min_decisions=min_dec, contract=contract, guards=tuple(sg), from_staging=fs,
        max_decisions=max_dec, at_max=at_max,
    )

    c = _mapping(doc, ("canary",), d.get("canary"), required=True)
    _get(doc, ("canary",), c, ("steps", "cohort"))
    raw_steps = c.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise doc.error(("canary", "steps"), "expected a non-empty list of {weight, hold, min_decisions}")
    steps = []
    last = 0.0
    for i, st in enumerate(raw_steps):
        kp: KeyPath = ("canary", "steps", i)
        st = _mapping(doc, kp, st, required=True)
        _get(doc, kp, st, ("weight", "hold", "min_decisions"))
        if "weight" not in st:
            raise doc.error(kp, "needs weight (percent of traffic)")
        w = _number(doc, kp + ("weight",), st["weight"], lo=0, hi=100)
        if w <= last:
            raise doc.error(kp + ("weight",), f"weights must increase and be > 0; {w:g} follows {last:g}")
        last = w
        steps.append(CanaryStep(weight=w, hold=_duration(doc, kp + ("hold",), st.get("hold", 0), scale),
                                min_decisions=int(_number(doc, kp + ("min_decisions",), st.get("min_decisions", 0),
                                                          lo=0, integer=True))))
    canary = CanaryPhase(steps=tuple(steps), cohort=_cohort(doc, ("canary", "cohort"), c.get("cohort")))
    name = d.get("name", "rollout")
    return RolloutPlan(mode=mode, interval=interval, shadow=shadow, canary=canary,
                       guards=_guards(doc, d.get("guards")), name=str(name), path=doc.path)


def load_plan(path: str | Path) -> RolloutPlan:
    """Read and validate a rollout plan YAML; errors are SpecError naming file:line: key."""
    return _build(load_yaml(path))


def plan_from_text(text: str, path: str = "<string>") -> RolloutPlan:
    """Parse a rollout plan from YAML text (tests, embedded defaults)."""
    return _build(parse_yaml(text, path))
