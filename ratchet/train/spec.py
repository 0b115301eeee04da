"""The declarative training spec: dataset mapping, windows, filters, features, XGBoost.

A spec is a YAML file people edit. `load_spec` validates it completely and every error
names the file, the line and the key, e.g.
``specs/fraud.yaml:14: windows.train_days: expected a positive integer, got 'ten'``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ratchet.data import columns as C
from ratchet.data.spec import (  # noqa: F401 - re-exported: the data sections are imported from here too
    _AGG_RE, FILTER_OPS, MASTER_ENV, MASTER_RE, MEMORY_RE, SCALAR_FEATURES, SCORING_MODES, WINDOW_SECONDS,
    Checks, DatasetSpec, DataSpec, Filter, ResolvedWindows, SparkExecutors, SparkSpec, Windows, _day, feature_needs,
    known_features,
)
from ratchet.yamlfile import YamlDoc, load_yaml, parse_yaml


@dataclass(frozen=True)
class XGBoostSpec:
    """XGBoost parameters (tree_method is always hist) and boosting rounds."""

    params: dict[str, Any] = field(default_factory=dict)
    num_boost_round: int = 200
    distributed: bool = False


@dataclass(frozen=True)
class TrainingSpec:
    """Everything needed to rebuild a model from raw data."""

    name: str
    label: str
    features: tuple[str, ...]
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    windows: Windows = field(default_factory=Windows)
    filters: tuple[Filter, ...] = ()
    xgboost: XGBoostSpec = field(default_factory=XGBoostSpec)
    checks: Checks = field(default_factory=Checks)
    seed: int = 7
    spark: SparkSpec = field(default_factory=SparkSpec)
    source_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source_path")
        return d

    def spec_hash(self) -> str:
        """sha256 of the normalised spec: equal hashes mean equal training recipes."""
        recipe = self.to_dict()
        recipe.pop("spark")  # where it runs, not what it builds
        blob = json.dumps(recipe, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def required_columns(self) -> set[str]:
        """Optional canonical columns this spec's features need."""
        need: set[str] = set()
        for f in self.features:
            need.update(feature_needs(f) or ())
        return need


DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "aucpr",
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "nthread": 2,
}


class _Reader:
    """Typed access to a YamlDoc section; each error names file, line and key."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc

    def get(self, mapping: dict[str, Any], path: tuple[str | int, ...], key: str, kind: type | tuple[type, ...],
            default: Any, *, positive: bool = False, nonneg: bool = False) -> Any:
        if key not in mapping or mapping[key] is None:
            return default
        value = mapping[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.doc.error(path + (key,), f"expected {_kname(kinds)}, got {value!r}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.doc.error(path + (key,), f"expected {_kname(kinds)}, got {value!r}")
        if positive and value <= 0:
            raise self.doc.error(path + (key,), f"expected a positive number, got {value!r}")
        if nonneg and value < 0:
            raise self.doc.error(path + (key,), f"expected zero or more, got {value!r}")
        return value

    def section(self, mapping: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = mapping.get(key) or {}
        if not isinstance(value, dict):
            raise self.doc.error((key,), f"expected a mapping, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                raise self.doc.error((key, k), f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return value


def _kname(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


_TOP_KEYS = {"name", "label", "features", "dataset", "windows", "filters", "xgboost", "checks", "seed", "spark"}


def spec_from_doc(doc: YamlDoc) -> TrainingSpec:
    """Validate a parsed spec document and build the TrainingSpec."""
    r = _Reader(doc)
    d = doc.data
    for k in d:
        if k not in _TOP_KEYS:
            raise doc.error((k,), f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = r.get(d, (), "name", str, Path(doc.path).stem)
    label = r.get(d, (), "label", str, C.IS_FRAUD)
    seed = r.get(d, (), "seed", int, 7, nonneg=True)

    raw_features = d.get("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise doc.error(("features",), "expected a non-empty list of feature names; known: " + ", ".join(known_features()))
    for i, f in enumerate(raw_features):
        if not isinstance(f, str) or feature_needs(f) is None:
            raise doc.error(("features", i), f"unknown feature {f!r}; known: {', '.join(known_features())}")
    if len(set(raw_features)) != len(raw_features):
        raise doc.error(("features",), "a feature is listed twice")

    ds = r.section(d, "dataset", {"columns", "label_delay_days", "timestamp_format"})
    cols = ds.get("columns") or {}
    if not isinstance(cols, dict):
        raise doc.error(("dataset", "columns"), "expected a mapping canonical_name: your_column_name")
    for k, v in cols.items():
        if k not in C.CANONICAL:
            raise doc.error(("dataset", "columns", k), f"not a canonical column; canonical: {', '.join(C.CANONICAL)}")
        if not isinstance(v, str) or not v:
            raise doc.error(("dataset", "columns", k), f"expected the name of a column in your data, got {v!r}")
    dataset = DatasetSpec(
        columns=dict(cols),
        label_delay_days=r.get(ds, ("dataset",), "label_delay_days", float, None, nonneg=True),
        timestamp_format=r.get(ds, ("dataset",), "timestamp_format", str, None),
    )

    w = r.section(d, "windows", {f for f in Windows.__dataclass_fields__})
    dates = {}
    for k in ("as_of", "train_start", "train_end", "test_start", "test_end"):
        v = w.get(k)
        if v is None:
            dates[k] = None
            continue
        try:
            dates[k] = datetime.fromisoformat(str(v)).isoformat()
        except ValueError:
            raise doc.error(("windows", k), f"expected an ISO date like 2025-06-01, got {v!r}") from None
    explicit = [k for k in ("train_start", "train_end", "test_start", "test_end") if dates[k]]
    if explicit and len(explicit) != 4:
        missing = sorted({"train_start", "train_end", "test_start", "test_end"} - set(explicit))
        raise doc.error(("windows",), f"explicit windows need all four dates; missing: {', '.join(missing)}")
    windows = Windows(
        as_of=dates["as_of"],
        maturity_days=r.get(w, ("windows",), "maturity_days", int, 90, nonneg=True),
        train_days=r.get(w, ("windows",), "train_days", int, 120, positive=True),
        gap_days=r.get(w, ("windows",), "gap_days", int, 0, nonneg=True),
        test_days=r.get(w, ("windows",), "test_days", int, 30, positive=True),
        train_start=dates["train_start"], train_end=dates["train_end"],
        test_start=dates["test_start"], test_end=dates["test_end"],
    )
    if windows.explicit:
        ts, te, ss, se = (datetime.fromisoformat(dates[k]) for k in ("train_start", "train_end", "test_start", "test_end"))
        if not ts < te <= ss < se:
            raise doc.error(("windows",), "explicit windows must satisfy train_start < train_end <= test_start < test_end")

    filters = []
    raw_filters = d.get("filters") or []
    if not isinstance(raw_filters, list):
        raise doc.error(("filters",), "expected a list of {column, op, value}")
    for i, f in enumerate(raw_filters):
        if not isinstance(f, dict) or set(f) - {"column", "op", "value"} or "column" not in f or "op" not in f:
            raise doc.error(("filters", i), "expected {column: NAME, op: OP, value: VALUE}")
        if f["op"] not in FILTER_OPS:
            raise doc.error(("filters", i, "op"), f"unknown operator {f['op']!r}; allowed: {', '.join(FILTER_OPS)}")
        if f["column"] not in C.CANONICAL:
            raise doc.error(("filters", i, "column"), f"filters use canonical column names; {f['column']!r} is not one")
        if f["op"] in ("in", "not_in") and not isinstance(f.get("value"), list):
            raise doc.error(("filters", i, "value"), f"operator {f['op']} needs a list value")
        filters.append(Filter(f["column"], f["op"], f.get("value")))

    x = r.section(d, "xgboost", {"params", "num_boost_round", "distributed"})
    params = x.get("params") or {}
    if not isinstance(params, dict):
        raise doc.error(("xgboost", "params"), "expected a mapping of XGBoost parameters")
    if params.get("tree_method", "hist") != "hist":
        raise doc.error(("xgboost", "params", "tree_method"), "ratchet trains with tree_method: hist only")
    for k in ("max_depth", "eta", "subsample", "colsample_bytree", "min_child_weight", "scale_pos_weight"):
        if k in params and (isinstance(params[k], bool) or not isinstance(params[k], (int, float)) or params[k] < 0):
            raise doc.error(("xgboost", "params", k), f"expected a non-negative number, got {params[k]!r}")
    xgb = XGBoostSpec(
        params={**DEFAULT_PARAMS, **params, "seed": seed},
        num_boost_round=r.get(x, ("xgboost",), "num_boost_round", int, 200, positive=True),
        distributed=r.get(x, ("xgboost",), "distributed", bool, False),
    )

    c = r.section(d, "checks", {f for f in Checks.__dataclass_fields__})
    checks = Checks(
        min_rows=r.get(c, ("checks",), "min_rows", int, 1000, nonneg=True),
        label_rate_min=r.get(c, ("checks",), "label_rate_min", float, 0.0005, nonneg=True),
        label_rate_max=r.get(c, ("checks",), "label_rate_max", float, 0.2, positive=True),
        max_null_rate=r.get(c, ("checks",), "max_null_rate", float, 0.01, nonneg=True),
        max_row_count_change=r.get(c, ("checks",), "max_row_count_change", float, 0.5, positive=True),
    )
    if checks.label_rate_min >= checks.label_rate_max:
        raise doc.error(("checks",), "label_rate_min must be below label_rate_max")
    return TrainingSpec(name=name, label=label, features=tuple(raw_features), dataset=dataset, windows=windows,
                        filters=tuple(filters), xgboost=xgb, checks=checks, seed=seed,
                        spark=_spark_section(doc, r), source_path=doc.path)


def _spark_section(doc: YamlDoc, r: _Reader) -> SparkSpec:
    s = r.section(doc.data, "spark", {f for f in SparkSpec.__dataclass_fields__})
    master = r.get(s, ("spark",), "master", str, "local[2]")
    if not MASTER_RE.match(master):
        raise doc.error(("spark", "master"), f"expected local[N], k8s://https://host:port, spark://host:7077, yarn "
                                             f"or sc://host:15002, got {master!r}")
    conf = s.get("conf") or {}
    if not isinstance(conf, dict):
        raise doc.error(("spark", "conf"), "expected a mapping of Spark settings, e.g. spark.sql.shuffle.partitions: 200")
    for k, v in conf.items():
        if not isinstance(k, str) or not k.startswith("spark."):
            raise doc.error(("spark", "conf", k), "Spark settings start with 'spark.'")
        if not isinstance(v, (str, int, float, bool)):
            raise doc.error(("spark", "conf", k), f"expected a string, number or true/false, got {v!r}")
    ex = s.get("executor") or {}
    allowed = set(SparkExecutors.__dataclass_fields__)
    if not isinstance(ex, dict):
        raise doc.error(("spark", "executor"), f"expected a mapping with {', '.join(sorted(allowed))}")
    for k in ex:
        if k not in allowed:
            raise doc.error(("spark", "executor", k), f"unknown key; allowed: {', '.join(sorted(allowed))}")
    path = ("spark", "executor")
    memory = r.get(ex, path, "memory", str, None)
    if memory is not None and not MEMORY_RE.match(memory):
        raise doc.error(path + ("memory",), f"expected a Spark size like 4g or 512m, got {memory!r}")
    executor = SparkExecutors(
        image=r.get(ex, path, "image", str, None),
        instances=r.get(ex, path, "instances", int, None, positive=True),
        cores=r.get(ex, path, "cores", int, None, positive=True),
        memory=memory,
    )
    scoring = r.get(s, ("spark",), "scoring", str, "auto")
    if scoring not in SCORING_MODES:
        raise doc.error(("spark", "scoring"), f"expected one of {', '.join(SCORING_MODES)}, got {scoring!r}")
    return SparkSpec(
        master=master,
        conf={k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in conf.items()},
        executor=executor,
        xgboost_workers=r.get(s, ("spark",), "xgboost_workers", int, 2, positive=True),
        scoring=scoring,
        scoring_min_rows=r.get(s, ("spark",), "scoring_min_rows", int, 5_000_000, nonneg=True),
    )


def load_spec(path: str | Path) -> TrainingSpec:
    """Load and validate a training spec file (raises SpecError naming file, line and key)."""
    return spec_from_doc(load_yaml(path))


def parse_spec(text: str, path: str = "<string>") -> TrainingSpec:
    """Validate a spec given as YAML text (for tests and the pipeline, which ships it as text)."""
    return spec_from_doc(parse_yaml(text, path))
