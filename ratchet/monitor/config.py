"""contracts/monitor.yaml: what drift means, how staleness is measured, how estimates are made.

    cfg = load_monitor_config("contracts/monitor.yaml")
    cfg.drift.rule.max_drifted_share, cfg.staleness.tolerance, cfg.estimation.confidence

The file is declared as pydantic models (MonitorFile); every error names the file, the line
and the key (ratchet.yamlfile.validate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, PlainValidator, WithJsonSchema, field_validator

from ratchet.monitor.drift import DriftRule, DriftSettings
from ratchet.monitor.estimation import METHODS
from ratchet.monitor.staleness import METRICS as STALENESS_METRICS
from ratchet.monitor.staleness import StalenessSettings
from ratchet.yamlfile import FileModel, Problem, YamlDoc, fail, load_yaml, parse_yaml, validate


@dataclass(frozen=True)
class EstimationSettings:
    calibration: str = "isotonic"
    confidence: float = 0.95
    replicates: int = 200
    window_days: int = 7
    recheck_contract: str | None = None


@dataclass(frozen=True)
class MonitorConfig:
    drift: DriftSettings = field(default_factory=DriftSettings)
    drift_features: tuple[str, ...] = ()
    staleness: StalenessSettings = field(default_factory=StalenessSettings)
    estimation: EstimationSettings = field(default_factory=EstimationSettings)
    path: str = ""


# ---- the file ------------------------------------------------------------------------
def _num(*, integer: bool = False, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Any:
    """An integer or a number, optionally bounded, with the monitor config's wording."""

    def check(v: Any) -> Any:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise fail(f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            rng = f"{'>' if lo_open else '>='} {lo}" if hi is None else f"between {lo} and {hi}"
            raise fail(f"expected a number {rng}, got {v!r}")
        return float(v) if not integer else int(v)

    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    if lo is not None:
        schema["exclusiveMinimum" if lo_open else "minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return Annotated[float, PlainValidator(check), WithJsonSchema(schema)]


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise fail(f"expected a list of names, got {v!r}")
    return tuple(v)


#: A list of names, validated to a tuple.
Names = Annotated[Any, PlainValidator(_names),
                  WithJsonSchema({"type": "array", "items": {"type": "string", "minLength": 1}})]


def _choice(choices: tuple[str, ...] | None) -> Any:
    def check(v: Any) -> str:
        if not isinstance(v, str) or (choices and v not in choices):
            want = f"one of {', '.join(choices)}" if choices else "a string"
            raise fail(f"expected {want}, got {v!r}")
        return v

    return Annotated[str, PlainValidator(check), WithJsonSchema({"enum": list(choices)} if choices else {"type": "string"})]


class _Section(FileModel):
    none_is_default = True


class SlicesFile(_Section):
    columns: Names = ("country", "merchant_category")
    top: _num(integer=True, lo=0) = 3
    min_rows: _num(integer=True, lo=1) = 1_000


class RuleFile(_Section):
    max_drifted_share: _num(lo=0, hi=1, lo_open=True) = 0.3
    key_features: Names = ()
    slice_key_features: bool = True
    min_severity: _num(lo=0, lo_open=True) = 1.0


class DriftFile(_Section):
    features: Names = ()
    method: _choice(None) | None = None
    threshold: _num(lo=0, lo_open=True) | None = None
    sample_rows: _num(integer=True, lo=100) = 50_000
    slices: SlicesFile = SlicesFile()
    rule: RuleFile = RuleFile()


class StalenessFile(_Section):
    cutoffs: Names = ()
    n_cutoffs: _num(integer=True, lo=1) = 3
    horizon_weeks: _num(integer=True, lo=2) = 8
    train_days: _num(integer=True, lo=1) = 60
    fpr: _num(lo=0, hi=1, lo_open=True) = 0.01
    tolerance: _num(lo=0, lo_open=True) = 0.10
    loss: _choice(("relative", "absolute")) = "relative"
    min_positives: _num(integer=True, lo=1) = 20
    num_boost_round: _num(integer=True, lo=1) = 100
    metric: _choice(STALENESS_METRICS) = "recall_at_fpr"
    age_bin_weeks: _num(integer=True, lo=1) = 1
    confidence: _num(lo=0.5, hi=0.999) = 0.95
    replicates: _num(integer=True, lo=20) = 400

    @field_validator("cutoffs")
    @classmethod
    def _dates(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, c in enumerate(v):
            try:
                date.fromisoformat(c)
            except ValueError:
                raise fail(f"expected an ISO date like 2025-05-01, got {c!r}", i) from None
        return v


class EstimationFile(_Section):
    calibration: _choice(METHODS) = "isotonic"
    confidence: _num(lo=0.5, hi=0.999) = 0.95
    replicates: _num(integer=True, lo=20) = 200
    window_days: _num(integer=True, lo=1) = 7
    recheck_contract: _choice(None) | None = None


class MonitorFile(_Section):
    """A monitor config file (contracts/monitor.yaml)."""

    model_config = ConfigDict(title="ratchet monitor config")
    version: Literal[1] = 1
    drift: DriftFile = DriftFile()
    staleness: StalenessFile = StalenessFile()
    estimation: EstimationFile = EstimationFile()


def _messages(p: Problem) -> str | None:
    if p.kind == "literal_error" and p.keypath == ("version",):
        return f"unsupported version {p.value!r}; this ratchet reads version 1"
    if p.kind == "bool_type":
        return f"expected true or false, got {p.value!r}"
    return None


def config_from_doc(doc: YamlDoc) -> MonitorConfig:
    f = validate(doc, MonitorFile, _messages)
    dr, st, es = f.drift, f.staleness, f.estimation
    ru = dr.rule
    rule = DriftRule(max_drifted_share=ru.max_drifted_share, key_features=ru.key_features,
                     slice_key_features=ru.slice_key_features, min_severity=ru.min_severity)
    drift = DriftSettings(method=dr.method, threshold=dr.threshold, sample_rows=dr.sample_rows,
                          slice_columns=dr.slices.columns, slice_top=dr.slices.top,
                          min_slice_rows=dr.slices.min_rows, rule=rule)
    staleness = StalenessSettings(**st.model_dump())
    contract = es.recheck_contract
    if contract and not Path(contract).is_absolute() and doc.path not in ("<string>",):
        # relative to the repository root the config lives in (contracts/..), like the CLI's defaults
        root = Path(doc.path).resolve().parent.parent
        contract = str(root / contract) if (root / contract).exists() else contract
    estimation = EstimationSettings(calibration=es.calibration, confidence=es.confidence, replicates=es.replicates,
                                    window_days=es.window_days, recheck_contract=contract)
    return MonitorConfig(drift=drift, drift_features=dr.features, staleness=staleness, estimation=estimation,
                         path=doc.path)


def load_monitor_config(path: str | Path) -> MonitorConfig:
    """Load and validate contracts/monitor.yaml (SpecError naming file, line and key)."""
    return config_from_doc(load_yaml(path))


def monitor_config_from_text(text: str, path: str = "<string>") -> MonitorConfig:
    return config_from_doc(parse_yaml(text, path))
