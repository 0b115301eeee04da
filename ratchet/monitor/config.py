"""contracts/monitor.yaml: what drift means, how staleness is measured, how estimates are made.

    cfg = load_monitor_config("contracts/monitor.yaml")
    cfg.drift.rule.max_drifted_share, cfg.staleness.tolerance, cfg.estimation.confidence

Every error names the file, the line and the key (ratchet.yamlfile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ratchet.monitor.drift import DriftRule, DriftSettings
from ratchet.monitor.estimation import METHODS
from ratchet.monitor.staleness import StalenessSettings
from ratchet.yamlfile import YamlDoc, load_yaml, parse_yaml


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


class _R:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc

    def section(self, d: dict[str, Any], path: tuple[str, ...], allowed: set[str]) -> dict[str, Any]:
        v = d.get(path[-1]) if d is not None else None
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.doc.error(path, f"expected a mapping, got {type(v).__name__}")
        for k in v:
            if k not in allowed:
                raise self.doc.error(path + (k,), f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return v

    def num(self, d: dict[str, Any], path: tuple[str, ...], default: Any, *, integer: bool = False,
            lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Any:
        key = path[-1]
        if key not in d or d[key] is None:
            return default
        v = d[key]
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise self.doc.error(path, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            rng = f"{'>' if lo_open else '>='} {lo}" if hi is None else f"between {lo} and {hi}"
            raise self.doc.error(path, f"expected a number {rng}, got {v!r}")
        return float(v) if not integer else int(v)

    def strs(self, d: dict[str, Any], path: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
        key = path[-1]
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.doc.error(path, f"expected a list of names, got {v!r}")
        return tuple(v)

    def choice(self, d: dict[str, Any], path: tuple[str, ...], default: str | None, choices: tuple[str, ...] | None):
        key = path[-1]
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, str) or (choices and v not in choices):
            want = f"one of {', '.join(choices)}" if choices else "a string"
            raise self.doc.error(path, f"expected {want}, got {v!r}")
        return v

    def boolean(self, d: dict[str, Any], path: tuple[str, ...], default: bool) -> bool:
        key = path[-1]
        if key not in d or d[key] is None:
            return default
        if not isinstance(d[key], bool):
            raise self.doc.error(path, f"expected true or false, got {d[key]!r}")
        return d[key]


def config_from_doc(doc: YamlDoc) -> MonitorConfig:
    r, d = _R(doc), doc.data
    for k in d:
        if k not in {"version", "drift", "staleness", "estimation"}:
            raise doc.error((k,), "unknown key; allowed: drift, estimation, staleness, version")
    if d.get("version", 1) != 1:
        raise doc.error(("version",), f"unsupported version {d.get('version')!r}; this ratchet reads version 1")

    dr = r.section(d, ("drift",), {"features", "method", "threshold", "sample_rows", "slices", "rule"})
    sl = r.section(dr, ("drift", "slices"), {"columns", "top", "min_rows"})
    ru = r.section(dr, ("drift", "rule"), {"max_drifted_share", "key_features", "slice_key_features", "min_severity"})
    rule = DriftRule(
        max_drifted_share=r.num(ru, ("drift", "rule", "max_drifted_share"), 0.3, lo=0, hi=1, lo_open=True),
        key_features=r.strs(ru, ("drift", "rule", "key_features"), ()),
        slice_key_features=r.boolean(ru, ("drift", "rule", "slice_key_features"), True),
        min_severity=r.num(ru, ("drift", "rule", "min_severity"), 1.0, lo=0, lo_open=True),
    )
    drift = DriftSettings(
        method=r.choice(dr, ("drift", "method"), None, None),
        threshold=r.num(dr, ("drift", "threshold"), None, lo=0, lo_open=True),
        sample_rows=r.num(dr, ("drift", "sample_rows"), 50_000, integer=True, lo=100),
        slice_columns=r.strs(sl, ("drift", "slices", "columns"), ("country", "merchant_category")),
        slice_top=r.num(sl, ("drift", "slices", "top"), 3, integer=True, lo=0),
        min_slice_rows=r.num(sl, ("drift", "slices", "min_rows"), 1_000, integer=True, lo=1),
        rule=rule,
    )

    st = r.section(d, ("staleness",), {"cutoffs", "n_cutoffs", "horizon_weeks", "train_days", "fpr", "tolerance",
                                       "loss", "min_positives", "num_boost_round"})
    cutoffs = r.strs(st, ("staleness", "cutoffs"), ())
    for i, c in enumerate(cutoffs):
        try:
            date.fromisoformat(c)
        except ValueError:
            raise doc.error(("staleness", "cutoffs", i), f"expected an ISO date like 2025-05-01, got {c!r}") from None
    staleness = StalenessSettings(
        cutoffs=cutoffs,
        n_cutoffs=r.num(st, ("staleness", "n_cutoffs"), 3, integer=True, lo=1),
        horizon_weeks=r.num(st, ("staleness", "horizon_weeks"), 8, integer=True, lo=2),
        train_days=r.num(st, ("staleness", "train_days"), 60, integer=True, lo=1),
        fpr=r.num(st, ("staleness", "fpr"), 0.01, lo=0, hi=1, lo_open=True),
        tolerance=r.num(st, ("staleness", "tolerance"), 0.10, lo=0, lo_open=True),
        loss=r.choice(st, ("staleness", "loss"), "relative", ("relative", "absolute")),
        min_positives=r.num(st, ("staleness", "min_positives"), 20, integer=True, lo=1),
        num_boost_round=r.num(st, ("staleness", "num_boost_round"), 100, integer=True, lo=1),
    )

    es = r.section(d, ("estimation",), {"calibration", "confidence", "replicates", "window_days", "recheck_contract"})
    contract = r.choice(es, ("estimation", "recheck_contract"), None, None)
    if contract and not Path(contract).is_absolute() and doc.path not in ("<string>",):
        # relative to the repository root the config lives in (contracts/..), like the CLI's defaults
        root = Path(doc.path).resolve().parent.parent
        contract = str(root / contract) if (root / contract).exists() else contract
    estimation = EstimationSettings(
        calibration=r.choice(es, ("estimation", "calibration"), "isotonic", METHODS),
        confidence=r.num(es, ("estimation", "confidence"), 0.95, lo=0.5, hi=0.999),
        replicates=r.num(es, ("estimation", "replicates"), 200, integer=True, lo=20),
        window_days=r.num(es, ("estimation", "window_days"), 7, integer=True, lo=1),
        recheck_contract=contract,
    )
    return MonitorConfig(drift=drift, drift_features=r.strs(dr, ("drift", "features"), ()), staleness=staleness,
                         estimation=estimation, path=doc.path)


def load_monitor_config(path: str | Path) -> MonitorConfig:
    """Load and validate contracts/monitor.yaml (SpecError naming file, line and key)."""
    return config_from_doc(load_yaml(path))


def monitor_config_from_text(text: str, path: str = "<string>") -> MonitorConfig:
    return config_from_doc(parse_yaml(text, path))
