"""The contract: slices and clauses, loaded from YAML and validated with file and line.

    >>> contract = load_contract("contracts/fraud.yaml")
    >>> [c.name for c in contract.clauses]

A contract is validated twice on load: as the pydantic model ContractFile (structure; the
JSON Schema editors use, ratchet/contracts/schema.json, is generated from it) and by semantic checks (a clause's metric fits its kind, its
slice exists, tolerances make sense, slice columns are known, `k` goes with
card_precision_at_k and only with it, `estimator: ipw` goes with recall, fpr or block_rate on
the whole population). Every error is a
SpecError of the form ``contracts/fraud.yaml:31: clauses[2].metric: ...``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ratchet.data import columns as C
from ratchet.evaluate.metrics import CARD_METRICS, CONTRACT_METRICS, DIRECTION, LABEL_FREE
from ratchet.evaluate.slices import SliceFamily
from ratchet.yamlfile import FileModel, KeyPath, Problem, YamlDoc, fail, load_yaml, parse_yaml, validate

SCHEMA_PATH = Path(__file__).with_name("schema.json")
KINDS = ("bound", "no_regression", "must_improve", "rate_stability")
COMPARISONS = frozenset({"no_regression", "must_improve", "rate_stability"})
#: What a metric's support counts (its denominator; cards: those in the daily top-k lists).
SUPPORT_OF: dict[str, str] = {
    "auc": "positives", "average_precision": "positives", "recall_at_fpr": "positives",
    "recall": "positives", "fpr": "negatives", "precision": "blocked", "block_rate": "rows",
    "approval_rate": "rows", "card_precision_at_k": "cards",
}
CANDIDATE_POLICIES = ("column", "default", "match_baseline_block_rate")
#: How a clause's metric is estimated: "plain" on the scored rows as they are, "ipw" weighting
#: each by 1 / propensity (censored data: ratchet.evaluate.counterfactual).
ESTIMATORS = ("plain", "ipw")
#: The metrics an IPW clause can judge (ratios of inverse-propensity-weighted totals).
IPW_METRICS = ("recall", "fpr", "block_rate")


@dataclass(frozen=True)
class Amount:
    """A tolerance or margin: absolute (metric units) and/or relative (share of the baseline).
    When both are given the larger allowance applies."""

    absolute: float | None = None
    relative: float | None = None

    def allowance(self, baseline: Any) -> Any:
        """Allowed amount in metric units, per slice (baseline: array of baseline values)."""
        import numpy as np

        b = np.abs(np.asarray(baseline, dtype=float))
        parts = []
        if self.absolute is not None:
            parts.append(np.full_like(b, self.absolute))
        if self.relative is not None:
            parts.append(self.relative * b)
        return np.maximum.reduce(parts) if len(parts) > 1 else parts[0]

    def describe(self) -> str:
        parts = []
        if self.absolute is not None:
            parts.append(f"{self.absolute:g}")
        if self.relative is not None:
            parts.append(f"{self.relative:.0%} relative")
        return parts[0] if len(parts) == 1 else f"the larger of {parts[0]} and {parts[1]}"


@dataclass(frozen=True)
class Clause:
    """One expectation. `per` is a slice name, or None for the whole population."""

    name: str
    kind: str
    metric: str
    per: str | None = None
    severity: str = "block"
    min: float | None = None
    max: float | None = None
    tolerance: Amount | None = None
    margin: Amount | None = None
    min_support: int = 1
    confidence: float = 0.95
    description: str = ""
    source: str = ""  # "file:line"
    k: int | None = None  # cards checked per day (card_precision_at_k only)
    estimator: str = "plain"  # "ipw": inverse-propensity-weighted estimates (recall, fpr, block_rate)

    @property
    def blocking(self) -> bool:
        return self.severity == "block"

    @property
    def metric_name(self) -> str:
        """The metric as the verdict words it: 'card_precision_at_k (k=100)' carries its k,
        'recall (IPW)' its estimator."""
        if self.k is not None:
            return f"{self.metric} (k={self.k})"
        return f"{self.metric} (IPW)" if self.estimator == "ipw" else self.metric

    @property
    def needs_baseline(self) -> bool:
        return self.kind in COMPARISONS

    def rule(self) -> str:
        """The clause in words, e.g. 'fpr may rise by at most 0.0005'."""
        if self.kind == "bound":
            lims = [f">= {self.min:g}" if self.min is not None else "", f"<= {self.max:g}" if self.max is not None else ""]
            return f"{self.metric_name} " + " and ".join(x for x in lims if x)
        if self.kind == "no_regression":
            verb = "rise" if DIRECTION[self.metric] < 0 else "drop"
            return f"{self.metric_name} may {verb} by at most {self.tolerance.describe() if self.tolerance else 0}"
        if self.kind == "must_improve":
            m = self.margin.describe() if self.margin else "0"
            return f"{self.metric_name} must improve by at least {m}" + (" (or hold)" if m in ("0", "0 or 0% relative") else "")
        return f"{self.metric_name} may move by at most {self.tolerance.describe() if self.tolerance else 0}"


@dataclass(frozen=True)
class Thresholds:
    """How rows become decisions (blocked when score >= threshold).

    A `baseline_threshold` / `candidate_threshold` column in the scores always wins (per-row
    thresholds, e.g. per merchant). Otherwise the baseline uses `default`, and the candidate
    follows `candidate`: "default" (same scalar), "match_baseline_block_rate" (the scalar
    that gives the candidate the baseline's overall block rate; with no baseline, the one
    that blocks `bootstrap_block_rate` of rows, else `default`), or "column" (the column is
    required).
    """

    candidate: str = "match_baseline_block_rate"
    default: float = 0.5
    bootstrap_block_rate: float | None = None


@dataclass(frozen=True)
class Contract:
    """Slices and clauses. `path` is where it was loaded from (for error messages)."""

    path: str
    name: str
    slices: dict[str, SliceFamily]
    clauses: tuple[Clause, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)
    reference_fpr: str | float = "baseline"
    bootstrap_fpr: float | None = None
    confidence: float = 0.95
    min_support: int = 100
    slice_sources: dict[str, str] = field(default_factory=dict)

    def families(self) -> list[SliceFamily]:
        """Slice families clauses use, in contract order."""
        used = {c.per for c in self.clauses if c.per}
        return [f for n, f in self.slices.items() if n in used]


@lru_cache(maxsize=1)
def contract_schema() -> dict[str, Any]:
    """The JSON Schema of contract files (generated from ContractFile, see ratchet.app.schemas)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# ---- the file's structure (pydantic models; the semantic checks are in _build) ----------
Rate = Annotated[float, Field(gt=0, lt=1)]
Confidence = Annotated[float, Field(gt=0.5, lt=1, description="Two-sided confidence level of every interval.")]


class AmountFile(FileModel):
    absolute: Annotated[float, Field(ge=0)] | None = None
    relative: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _some(self) -> "AmountFile":
        if not self.model_fields_set:
            raise fail("{} should be non-empty")
        return self


class SignificanceFile(FileModel):
    confidence: Confidence = 0.95
    min_support: Annotated[int, Field(ge=1)] = 100


class ThresholdsFile(FileModel):
    candidate: Literal[CANDIDATE_POLICIES] = "match_baseline_block_rate"
    default: float = 0.5
    bootstrap_block_rate: Rate | None = None


class RecallAtFprFile(FileModel):
    reference: Rate | Literal["baseline"] = "baseline"
    bootstrap_fpr: Rate | None = None


class SliceFile(FileModel):
    column: str | None = None
    cross: Annotated[list[str], Field(min_length=2)] | None = None
    top: Annotated[int, Field(ge=1)] | None = None
    bands: Annotated[list[float], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "SliceFile":
        given = [k for k in ("column", "cross") if k in self.model_fields_set]
        if not given:
            raise fail(f"{self.model_dump(exclude_unset=True)} is not valid under any of the given schemas")
        if len(given) == 2:
            raise fail(f"{self.model_dump(exclude_unset=True)} is valid under each of {{'required': ['cross']}}, "
                       "{'required': ['column']}")
        return self


class ClauseFile(FileModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")]
    description: str = ""
    kind: Literal[KINDS]
    metric: Literal["auc", "average_precision", "recall_at_fpr", "fpr", "recall", "precision", "block_rate",
                    "approval_rate", "card_precision_at_k"]
    k: Annotated[int, Field(ge=1, description="Cards investigators check per day (card_precision_at_k only): "
                                              "the day's k highest-scored distinct cards.")] | None = None
    estimator: Literal[ESTIMATORS] | None = Field(
        default=None, description="plain (default): the metric on the scored rows as they are; ipw: on censored "
                                  "data (columns decision and propensity), each labelled row weighted by "
                                  "1 / propensity, so the estimate stands for every payment, blocked ones "
                                  "included (recall, fpr and block_rate on the whole population only).")
    per: str | None = Field(default=None, description="Slice name; absent = the whole population.")
    severity: Literal["block", "warn"] = "block"
    min: float | None = None
    max: float | None = None
    tolerance: AmountFile | None = None
    margin: AmountFile | None = None
    min_support: Annotated[int, Field(ge=1)] | None = None
    confidence: Confidence | None = None


class ContractFile(FileModel):
    """A contract file (contracts/fraud.yaml): business expectations a release must meet, slice by slice."""

    model_config = ConfigDict(title="ratchet contract")
    version: Literal[1]
    name: str | None = None
    description: str | None = None
    extra_columns: list[str] = Field(default=[], description="Slice columns beyond ratchet's canonical columns "
                                                             "that the scored data will carry.")
    significance: SignificanceFile = SignificanceFile()
    thresholds: ThresholdsFile = ThresholdsFile()
    recall_at_fpr: RecallAtFprFile = RecallAtFprFile()
    slices: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], SliceFile]
    clauses: Annotated[list[ClauseFile], Field(min_length=1)]


_JSON_TYPES = {"float_type": "number", "int_type": "integer", "int_from_float": "integer", "string_type": "string",
               "list_type": "array", "dict_type": "object", "model_type": "object", "bool_type": "boolean"}


def _messages(p: Problem) -> str | tuple[str, KeyPath] | None:
    """JSON Schema's wording (the contract was checked with jsonschema before)."""
    v, ctx = p.value, {k: (int(x) if isinstance(x, float) and x.is_integer() else x) for k, x in p.ctx.items()}
    if p.kind == "unknown_key":
        return (f"Additional properties are not allowed ({ctx['key']!r} was unexpected); check the spelling",
                p.keypath[:-1])
    if p.kind == "missing":
        return f"{p.keypath[-1]!r} is a required property", p.keypath[:-1]
    if p.kind in _JSON_TYPES:
        return f"{v!r} is not of type {_JSON_TYPES[p.kind]!r}"
    if p.kind == "literal_error":
        if p.keypath == ("version",):
            return "1 was expected"
        return f"{v!r} is not one of {', '.join(p.choices)}"
    if p.kind == "greater_than_equal":
        return f"{v!r} is less than the minimum of {ctx['ge']}"
    if p.kind == "greater_than":
        return f"{v!r} is less than or equal to the minimum of {ctx['gt']}"
    if p.kind == "less_than":
        return f"{v!r} is greater than or equal to the maximum of {ctx['lt']}"
    if p.kind == "too_short":
        return f"{v!r} should be non-empty" if ctx.get("min_length") == 1 else f"{v!r} is too short"
    if p.kind == "string_pattern_mismatch":
        at = p.keypath[:-1] if p.keypath and p.keypath[-1] == v else p.keypath  # a mapping's key: its mapping
        return f"{v!r} does not match {ctx['pattern']!r}", at
    return None


def _schema_errors(doc: YamlDoc) -> None:
    validate(doc, ContractFile, _messages, by_line=True, count_more=True)


def _amount(raw: dict[str, Any] | None) -> Amount | None:
    if raw is None:
        return None
    return Amount(absolute=raw.get("absolute"), relative=raw.get("relative"))


def _check_k(doc: YamlDoc, kp: KeyPath, raw: dict[str, Any]) -> None:
    """k goes with card_precision_at_k, always, and with no other metric; CP@k has no slices."""
    metric = raw["metric"]
    if metric in CARD_METRICS:
        if raw.get("k") is None:
            raise doc.error(kp + ("metric",), f"{metric} needs k, the number of cards investigators check per day; "
                            "add e.g. k: 100 to the clause")
        if raw.get("per") is not None:
            raise doc.error(kp + ("per",), f"{metric} is judged on the whole test population only (a day's top k "
                            "cards are the investigators' whole queue, not a slice's); remove per")
    elif "k" in raw:
        raise doc.error(kp + ("k",), f"k belongs to card_precision_at_k; metric '{metric}' takes no k, remove it")


def _check_estimator(doc: YamlDoc, kp: KeyPath, raw: dict[str, Any]) -> None:
    """estimator: ipw goes with recall, fpr or block_rate, on the whole population only."""
    if raw.get("estimator", "plain") != "ipw":
        return
    metric = raw["metric"]
    if metric not in IPW_METRICS:
        raise doc.error(kp + ("estimator",), f"estimator ipw estimates {', '.join(IPW_METRICS)} from censored data, "
                        f"not '{metric}'; remove estimator or use one of those metrics")
    if raw.get("per") is not None:
        raise doc.error(kp + ("per",), "estimator ipw is judged on the whole test population only (a slice holds "
                        "too few explored rows for its weights); remove per, or estimator for a per-slice clause")


def _build(doc: YamlDoc) -> Contract:
    d = doc.data
    known_columns = set(C.CANONICAL) | set(d.get("extra_columns", []))
    slices: dict[str, SliceFamily] = {}
    slice_sources: dict[str, str] = {}
    for name, raw in d["slices"].items():
        cols = tuple(raw["cross"]) if "cross" in raw else (raw["column"],)
        for i, col in enumerate(cols):
            if col not in known_columns:
                kp = ("slices", name, "cross", i) if "cross" in raw else ("slices", name, "column")
                raise doc.error(kp, f"unknown slice column '{col}'; known columns: "
                                f"{', '.join(sorted(known_columns))} (declare others under extra_columns)")
        bands = raw.get("bands")
        if bands is not None:
            if "cross" in raw:
                raise doc.error(("slices", name, "bands"), "bands apply to one numeric column, not a crossing")
            if any(b2 <= b1 for b1, b2 in zip(bands[:-1], bands[1:])):
                raise doc.error(("slices", name, "bands"), f"band edges must be strictly increasing, got {bands}")
        if raw.get("top") is not None and bands is not None:
            raise doc.error(("slices", name, "top"), "use either top or bands, not both")
        slices[name] = SliceFamily(name=name, columns=cols, top=raw.get("top"),
                                   bands=tuple(float(b) for b in bands) if bands else None)
        slice_sources[name] = f"{doc.path}:{doc.line(('slices', name))}"

    sig = d.get("significance", {})
    confidence = float(sig.get("confidence", 0.95))
    min_support = int(sig.get("min_support", 100))
    th = d.get("thresholds", {})
    thresholds = Thresholds(candidate=th.get("candidate", "match_baseline_block_rate"),
                            default=float(th.get("default", 0.5)),
                            bootstrap_block_rate=th.get("bootstrap_block_rate"))
    raf = d.get("recall_at_fpr", {})

    clauses: list[Clause] = []
    seen: set[str] = set()
    for i, raw in enumerate(d["clauses"]):
        kp = ("clauses", i)
        name, kind, metric = raw["name"], raw["kind"], raw["metric"]
        if name in seen:
            raise doc.error(kp + ("name",), f"duplicate clause name '{name}'")
        seen.add(name)
        if metric not in CONTRACT_METRICS:
            raise doc.error(kp + ("metric",), f"unknown metric '{metric}'; known: {', '.join(CONTRACT_METRICS)}")
        per = raw.get("per")
        if per is not None and per not in slices:
            raise doc.error(kp + ("per",), f"unknown slice '{per}'; defined slices: {', '.join(slices) or 'none'}")
        _check_k(doc, kp, raw)
        _check_estimator(doc, kp, raw)
        tol, margin = _amount(raw.get("tolerance")), _amount(raw.get("margin"))
        if kind == "bound":
            if raw.get("min") is None and raw.get("max") is None:
                raise doc.error(kp, "a bound clause needs min and/or max")
            if raw.get("min") is not None and raw.get("max") is not None and raw["min"] > raw["max"]:
                raise doc.error(kp + ("min",), f"min {raw['min']} is above max {raw['max']}")
            for extra in ("tolerance", "margin"):
                if extra in raw:
                    raise doc.error(kp + (extra,), f"a bound clause takes min/max, not {extra}")
        else:
            for extra in ("min", "max"):
                if extra in raw:
                    raise doc.error(kp + (extra,), f"{extra} belongs to bound clauses; a {kind} clause compares with the baseline")
        if kind in ("no_regression", "rate_stability"):
            if tol is None:
                raise doc.error(kp, f"a {kind} clause needs a tolerance: {{absolute: X}} and/or {{relative: Y}}")
            if "margin" in raw:
                raise doc.error(kp + ("margin",), f"a {kind} clause takes a tolerance, not a margin")
        if kind == "must_improve" and "tolerance" in raw:
            raise doc.error(kp + ("tolerance",), "a must_improve clause takes a margin (the least improvement), not a tolerance")
        for amt, key in ((tol, "tolerance"), (margin, "margin")):
            if amt is None:
                continue
            if amt.relative is not None and amt.relative >= 1 and kind != "rate_stability":
                raise doc.error(kp + (key, "relative"), f"relative {key} {amt.relative} is 100% or more; write 0.1 for 10%")
            if amt.absolute is not None and metric != "auc" and amt.absolute >= 1:
                raise doc.error(kp + (key, "absolute"), f"absolute {key} {amt.absolute} is >= 1 for a rate in [0, 1]")
        if kind == "rate_stability" and metric not in LABEL_FREE:
            raise doc.error(kp + ("metric",), f"rate_stability watches a label-free rate ({', '.join(sorted(LABEL_FREE))}), "
                            f"not '{metric}'; use no_regression for it")
        clauses.append(Clause(
            name=name, kind=kind, metric=metric, per=per, severity=raw.get("severity", "block"),
            min=raw.get("min"), max=raw.get("max"), tolerance=tol, margin=margin,
            min_support=int(raw.get("min_support", min_support)),
            confidence=float(raw.get("confidence", confidence)),
            description=raw.get("description", ""), source=f"{doc.path}:{doc.line(kp)}", k=raw.get("k"),
            estimator=raw.get("estimator") or "plain",
        ))
    return Contract(
        path=doc.path, name=d.get("name", Path(doc.path).stem), slices=slices, clauses=tuple(clauses),
        thresholds=thresholds, reference_fpr=raf.get("reference", "baseline"),
        bootstrap_fpr=raf.get("bootstrap_fpr"), confidence=confidence, min_support=min_support,
        slice_sources=slice_sources,
    )


def parse_contract(doc: YamlDoc) -> Contract:
    """Validate a parsed YAML document and build the Contract (SpecError with file:line)."""
    _schema_errors(doc)
    return _build(doc)


def load_contract(path: str | Path) -> Contract:
    """Load and validate a contract file; raises SpecError naming the file, line and key."""
    return parse_contract(load_yaml(path))


def contract_from_text(text: str, path: str = "<string>") -> Contract:
    """Same as load_contract, from YAML text (tests, generated contracts)."""
    return parse_contract(parse_yaml(text, path))
