"""The data sections of the training spec and the feature library.

What the training-set job needs to know: how a user's table maps onto the canonical
columns (DatasetSpec), the train and test windows (Windows, ResolvedWindows), row
filters, the data-check bounds (Checks), where Spark runs (SparkSpec) and which features
exist (known_features, feature_needs), and the pydantic models of those sections of the
spec file (DatasetFile, WindowsFile, FilterFile, ChecksFile, SparkFile). The whole-file model (TrainingSpec, the XGBoost
section, load_spec) lives in the train package, which builds on this module; the data
package never imports it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import PlainValidator, WithJsonSchema, field_validator, model_validator

from ratchet.data import columns as C
from ratchet.yamlfile import FileModel, fail

#: Aggregation windows the feature job knows, in seconds.
WINDOW_SECONDS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
#: Windows of the delayed merchant risk features (merchant_risk_W, merchant_risk_count_W), in days.
RISK_WINDOW_DAYS: dict[str, int] = {"1d": 1, "7d": 7, "14d": 14, "30d": 30}
#: Default delay of the merchant risk windows when the spec declares none and has no label_delay_days.
DEFAULT_RISK_DELAY_DAYS = 7.0

#: Features that are not window aggregates, and the optional columns each one needs.
SCALAR_FEATURES: dict[str, tuple[str, ...]] = {
    "amount": (),
    "hour_of_day": (),
    "is_weekend": (),
    "is_night": (),
    "seconds_since_card_prev": (),
    "amount_to_card_mean": (),
    "merchant_fraud_rate_30d": (),
    "cross_border": (C.COUNTRY, C.CARD_COUNTRY),
    "is_online": (C.CHANNEL,),
}
_W = "|".join(WINDOW_SECONDS)
_AGG_RE = re.compile(rf"^(card|merchant)_(count|amount)_({_W})$")
#: card_mean_amount_W / card_max_amount_W: mean / largest amount of the card's payments in [t - W, t);
#: amount_to_card_mean_W / amount_to_card_max_W: the payment's amount over it.
CARD_STATS = ("card_mean_amount", "amount_to_card_mean", "card_max_amount", "amount_to_card_max")
_CARD_STAT_RE = re.compile(rf"^({'|'.join(CARD_STATS)})_({_W})$")
#: merchant_risk_W: share of the merchant's payments in the delayed window that are known frauds at t.
_RISK_RE = re.compile(rf"^merchant_risk(_count)?_({'|'.join(RISK_WINDOW_DAYS)})$")
FEATURE_PATTERNS: tuple[re.Pattern[str], ...] = (_AGG_RE, _CARD_STAT_RE, _RISK_RE)
FILTER_OPS = ("==", "!=", ">", ">=", "<", "<=", "in", "not_in")


def feature_needs(name: str) -> tuple[str, ...] | None:
    """Optional columns a feature needs, or None if the feature is unknown."""
    if name in SCALAR_FEATURES:
        return SCALAR_FEATURES[name]
    return () if any(p.match(name) for p in FEATURE_PATTERNS) else None


def known_features() -> list[str]:
    """Every feature name the training-set job can compute."""
    aggs = [f"{e}_{k}_{w}" for e in ("card", "merchant") for k in ("count", "amount") for w in WINDOW_SECONDS]
    means = [f"{k}_{w}" for k in CARD_STATS for w in WINDOW_SECONDS]
    risk = [f"merchant_risk{c}_{w}" for c in ("", "_count") for w in RISK_WINDOW_DAYS]
    return list(SCALAR_FEATURES) + aggs + means + risk


def _features(value: Any) -> tuple[str, ...]:
    """The spec's `features:` list, validated: known names, none twice (a typo names the closest)."""
    if not isinstance(value, list) or not value:
        raise fail("expected a non-empty list of feature names; known: " + ", ".join(known_features()))
    for i, f in enumerate(value):
        if not isinstance(f, str) or feature_needs(f) is None:
            close = difflib.get_close_matches(str(f), known_features(), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known_features())
            raise fail(f"unknown feature {f!r}; {hint}", i)
    if len(set(value)) != len(value):
        raise fail("a feature is listed twice")
    return tuple(value)


#: The spec's `features:` key: a list of known feature names, validated to a tuple.
FeaturesField = Annotated[Any, PlainValidator(_features), WithJsonSchema({
    "type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": known_features()}})]


@dataclass(frozen=True)
class FeatureOptions:
    """Parameters of the feature library (part of the recipe).

    risk_delay_days: the merchant risk windows end this long before t, [t - delay - W, t - delay),
    so that most of their labels are known (the handbook's "delay period"); None = the
    dataset's label_delay_days, else DEFAULT_RISK_DELAY_DAYS. Only labels available before t
    ever count, whatever the delay.
    """

    risk_delay_days: float | None = None

    def risk_delay(self, dataset: "DatasetSpec") -> float:
        if self.risk_delay_days is not None:
            return float(self.risk_delay_days)
        return float(dataset.label_delay_days) if dataset.label_delay_days is not None else DEFAULT_RISK_DELAY_DAYS


#: Values of censoring.explored and censoring.censored.
EXPLORED_WEIGHTS = ("none", "inverse_propensity")
CENSORED_MODES = ("drop", "genuine")


@dataclass(frozen=True)
class Censoring:
    """How a dataset that logs the production policy's decisions (columns decision and
    propensity) is trained on (part of the recipe). A payment logged as blocked has no
    outcome: its row is censored and never tested on.

    explored: "inverse_propensity" weights each labelled row by 1 / propensity in training
        (an explored payment allowed with probability 0.05 stands for 20), "none" (default)
        weighs every row 1.
    censored: "drop" (default) leaves blocked rows out of training; "genuine" trains on them
        as genuine payments (the no-chargeback reading of a feed), each weighted
        censored_weight (default 1.0; lower it to down-weight them).
    Censored rows are always features' history (other payments see them) and never a test row.
    """

    explored: str = "none"
    censored: str = "drop"
    censored_weight: float = 1.0


@dataclass(frozen=True)
class DatasetSpec:
    """How a user's table maps onto the canonical columns."""

    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> source column
    label_delay_days: float | None = None  # fixed delay when label_available_at is missing
    timestamp_format: str | None = None  # for string timestamps; None = let Spark infer

    def source(self, canonical: str) -> str:
        """The source column for a canonical column (identity when not mapped)."""
        return self.columns.get(canonical, canonical)


@dataclass(frozen=True)
class Windows:
    """Train and test windows: explicit dates, or derived from `as_of`.

    Derived: test_end = as_of - maturity_days (labels after that may still change),
    test_start = test_end - test_days, train_end = test_start - gap_days,
    train_start = train_end - train_days.
    """

    as_of: str | None = None
    maturity_days: int = 90
    train_days: int = 120
    gap_days: int = 0
    test_days: int = 30
    train_start: str | None = None
    train_end: str | None = None
    test_start: str | None = None
    test_end: str | None = None

    @property
    def explicit(self) -> bool:
        return self.test_end is not None

    def resolve(self, latest_ts: datetime | None = None, as_of: str | None = None) -> "ResolvedWindows":
        """Concrete window bounds; `as_of` overrides the spec's, `latest_ts` is the fallback."""
        if self.explicit:
            return ResolvedWindows(
                train_start=_day(self.train_start), train_end=_day(self.train_end),
                test_start=_day(self.test_start), test_end=_day(self.test_end),
                as_of=_day(as_of or self.as_of or self.test_end) ,
            )
        ref = as_of or self.as_of
        if ref is None and latest_ts is None:
            raise ValueError("windows need as_of (spec or --as-of) or data to derive it from")
        as_of_dt = _day(ref) if ref else latest_ts
        assert as_of_dt is not None
        test_end = as_of_dt - timedelta(days=self.maturity_days)
        test_start = test_end - timedelta(days=self.test_days)
        train_end = test_start - timedelta(days=self.gap_days)
        train_start = train_end - timedelta(days=self.train_days)
        return ResolvedWindows(train_start, train_end, test_start, test_end, as_of_dt)


@dataclass(frozen=True)
class ResolvedWindows:
    """Half-open intervals [start, end) for train and test, and the release date."""

    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime
    as_of: datetime

    def to_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Filter:
    """One row filter: `column op value`, applied before features are built."""

    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class Checks:
    """Bounds of the data checks that run before anything trains."""

    min_rows: int = 1000
    label_rate_min: float = 0.0005
    label_rate_max: float = 0.2
    max_null_rate: float = 0.01
    max_row_count_change: float = 0.5  # relative to @production's data (else the last passed version); 0.5 = ±50 %
    duplicates: str = "refuse"  # repeated transaction_id: "refuse", or "drop" (keep the first by ts)
    after_as_of: str = "allow"  # rows after as_of: "allow" (backtests) or "refuse"; the clock is always checked
    max_label_before_ts_rate: float = 0.0  # rows whose label_available_at < ts


#: Values of checks.duplicates and checks.after_as_of.
DUPLICATE_MODES = ("refuse", "drop")
AFTER_AS_OF_MODES = ("allow", "refuse")
#: A ts up to this long after the run's clock is not "in the future" (clock skew between systems).
FUTURE_TOLERANCE_S = 86400


#: Spark masters the spec accepts: local mode, Spark on Kubernetes, standalone, YARN, Spark Connect.
MASTER_RE = re.compile(r"^(local(\[(\d+|\*)(,\d+)?\])?|k8s://\S+|spark://\S+|sc://\S+|yarn)$")
#: Spark's size strings (JavaUtils.byteStringAs): 512m, 4g, 8gb, 1024 (MiB for executor memory).
MEMORY_RE = re.compile(r"^\d+(b|k|kb|m|mb|g|gb|t|tb|p|pb)?$", re.IGNORECASE)
#: Environment variable that overrides spark.master (the cluster sets it; a laptop does not).
MASTER_ENV = "RATCHET_SPARK_MASTER"
SCORING_MODES = ("auto", "local", "spark")


@dataclass(frozen=True)
class SparkExecutors:
    """Executor pods for a k8s:// master; None leaves Spark's own default."""

    image: str | None = None
    instances: int | None = None
    cores: int | None = None
    memory: str | None = None


@dataclass(frozen=True)
class SparkSpec:
    """Where the Spark parts run: the training-set job, distributed XGBoost, large-set scoring.

    Placement, not recipe: it is left out of spec_hash, so the same spec run on a laptop
    (local[2]) and on a cluster (k8s://, sc://) has the same hash. local[2] rather than
    local[*] by default: it always gives distributed XGBoost its two task slots, and the
    local driver memory (2g) is sized for two cores. `scoring: auto` scores the test set
    on Spark from `scoring_min_rows` rows (see ratchet.evaluate.spark_scoring).
    """

    master: str = "local[2]"
    conf: dict[str, str] = field(default_factory=dict)
    executor: SparkExecutors = field(default_factory=SparkExecutors)
    xgboost_workers: int = 2
    scoring: str = "auto"
    scoring_min_rows: int = 5_000_000

    def resolved_master(self, env: dict[str, str] | None = None) -> str:
        """spark.master, unless RATCHET_SPARK_MASTER overrides it."""
        import os

        value = (os.environ if env is None else env).get(MASTER_ENV, "").strip()
        if value and not MASTER_RE.match(value):
            from ratchet.errors import SpecError

            raise SpecError(f"{MASTER_ENV}={value!r} is not a Spark master; use local[N], k8s://https://host:port, "
                            "spark://host:7077, yarn or sc://host:15002")
        return value or self.master


def _day(value: str | None) -> datetime:
    if value is None:
        raise ValueError("missing date")
    return datetime.fromisoformat(str(value))


class DataSpec(Protocol):
    """What the data functions read from a training spec (the train package's TrainingSpec
    is one): the label, the features, the dataset mapping, windows, filters and checks."""

    @property
    def label(self) -> str: ...
    @property
    def features(self) -> tuple[str, ...]: ...
    @property
    def dataset(self) -> DatasetSpec: ...
    @property
    def windows(self) -> Windows: ...
    @property
    def filters(self) -> tuple[Filter, ...]: ...
    @property
    def checks(self) -> Checks: ...
    @property
    def feature_options(self) -> FeatureOptions: ...
    @property
    def censoring(self) -> Censoring: ...


# ---- the spec file's data sections (pydantic models, checked by ratchet.yamlfile.validate) ----
_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
               list: "a list"}
_KIND_SCHEMA = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array"}


def kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KIND_WORDS.get(k, k.__name__) for k in kinds)


def typed(kind: type | tuple[type, ...], *, positive: bool = False, nonneg: bool = False) -> Any:
    """A value of `kind` (an int is taken for a float), optionally > 0 or >= 0, with the
    spec's wording: ``expected an integer, got 'ten'``, ``expected a positive number, got -3``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)

    def check(value: Any) -> Any:
        if isinstance(value, bool) and bool not in kinds:
            raise fail(f"expected {kind_name(kinds)}, got {value!r}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise fail(f"expected {kind_name(kinds)}, got {value!r}")
        if positive and value <= 0:
            raise fail(f"expected a positive number, got {value!r}")
        if nonneg and value < 0:
            raise fail(f"expected zero or more, got {value!r}")
        return value

    types = [_KIND_SCHEMA[k] for k in kinds]
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    if positive:
        schema["exclusiveMinimum"] = 0
    if nonneg:
        schema["minimum"] = 0
    return Annotated[Any, PlainValidator(check), WithJsonSchema(schema)]


def or_empty(value: Any) -> Any:
    """A section written as null (or left empty) is the defaults."""
    return value or {}


class SpecSection(FileModel):
    """A section of the training spec: a key written as null takes its default."""

    none_is_default = True


def _columns(value: Any) -> dict[str, str]:
    cols = value or {}
    if not isinstance(cols, dict):
        raise fail("expected a mapping canonical_name: your_column_name")
    for k, v in cols.items():
        if k not in C.CANONICAL:
            raise fail(f"not a canonical column; canonical: {', '.join(C.CANONICAL)}", k)
        if not isinstance(v, str) or not v:
            raise fail(f"expected the name of a column in your data, got {v!r}", k)
    return dict(cols)


class DatasetFile(SpecSection):
    columns: Annotated[dict[str, str], PlainValidator(_columns), WithJsonSchema({
        "type": "object", "propertyNames": {"enum": list(C.CANONICAL)},
        "additionalProperties": {"type": "string", "minLength": 1}})] = {}
    label_delay_days: typed(float, nonneg=True) = None
    timestamp_format: typed(str) = None

    def value(self) -> DatasetSpec:
        return DatasetSpec(columns=self.columns, label_delay_days=self.label_delay_days,
                           timestamp_format=self.timestamp_format)


def _iso(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise fail(f"expected an ISO date like 2025-06-01, got {value!r}") from None


IsoDate = Annotated[str, PlainValidator(_iso), WithJsonSchema({"type": "string", "format": "date"})]
_EXPLICIT = ("train_start", "train_end", "test_start", "test_end")


class WindowsFile(SpecSection):
    as_of: IsoDate = None
    maturity_days: typed(int, nonneg=True) = 90
    train_days: typed(int, positive=True) = 120
    gap_days: typed(int, nonneg=True) = 0
    test_days: typed(int, positive=True) = 30
    train_start: IsoDate = None
    train_end: IsoDate = None
    test_start: IsoDate = None
    test_end: IsoDate = None

    @model_validator(mode="after")
    def _explicit(self) -> "WindowsFile":
        given = [k for k in _EXPLICIT if getattr(self, k)]
        if given and len(given) != 4:
            missing = sorted(set(_EXPLICIT) - set(given))
            raise fail(f"explicit windows need all four dates; missing: {', '.join(missing)}")
        if given:
            ts, te, ss, se = (datetime.fromisoformat(getattr(self, k)) for k in _EXPLICIT)
            if not ts < te <= ss < se:
                raise fail("explicit windows must satisfy train_start < train_end <= test_start < test_end")
        return self

    def value(self) -> Windows:
        return Windows(**self.model_dump())


def _filter(f: Any) -> Filter:
    if not isinstance(f, dict) or set(f) - {"column", "op", "value"} or "column" not in f or "op" not in f:
        raise fail("expected {column: NAME, op: OP, value: VALUE}")
    if f["op"] not in FILTER_OPS:
        raise fail(f"unknown operator {f['op']!r}; allowed: {', '.join(FILTER_OPS)}", "op")
    if f["column"] not in C.CANONICAL:
        raise fail(f"filters use canonical column names; {f['column']!r} is not one", "column")
    if f["op"] in ("in", "not_in") and not isinstance(f.get("value"), list):
        raise fail(f"operator {f['op']} needs a list value", "value")
    return Filter(f["column"], f["op"], f.get("value"))


#: One row filter, `{column: amount, op: ">", value: 0}`, validated to a Filter.
FilterFile = Annotated[Filter, PlainValidator(_filter), WithJsonSchema({
    "type": "object", "additionalProperties": False, "required": ["column", "op"],
    "properties": {"column": {"enum": list(C.CANONICAL)}, "op": {"enum": list(FILTER_OPS)}, "value": {}}})]


def _filters(value: Any) -> Any:
    value = value or []
    if not isinstance(value, list):
        raise fail("expected a list of {column, op, value}")
    return value


def one_of(choices: tuple[str, ...]) -> Any:
    """A string among `choices`, with the spec's wording and an enum in the JSON Schema."""
    def check(value: Any) -> Any:
        if value not in choices:
            raise fail(f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    return Annotated[str, PlainValidator(check), WithJsonSchema({"enum": list(choices)})]


class ChecksFile(SpecSection):
    min_rows: typed(int, nonneg=True) = 1000
    label_rate_min: typed(float, nonneg=True) = 0.0005
    label_rate_max: typed(float, positive=True) = 0.2
    max_null_rate: typed(float, nonneg=True) = 0.01
    max_row_count_change: typed(float, positive=True) = 0.5
    duplicates: one_of(DUPLICATE_MODES) = "refuse"
    after_as_of: one_of(AFTER_AS_OF_MODES) = "allow"
    max_label_before_ts_rate: typed(float, nonneg=True) = 0.0

    @model_validator(mode="after")
    def _rates(self) -> "ChecksFile":
        if self.label_rate_min >= self.label_rate_max:
            raise fail("label_rate_min must be below label_rate_max")
        return self

    def value(self) -> Checks:
        return Checks(**self.model_dump())


class FeatureOptionsFile(SpecSection):
    """feature_options: parameters of the feature library (see FeatureOptions)."""

    risk_delay_days: typed(float, nonneg=True) = None

    def value(self) -> FeatureOptions:
        return FeatureOptions(risk_delay_days=self.risk_delay_days)


class CensoringFile(SpecSection):
    """censoring: how logged decisions (columns decision, propensity) are trained on (see Censoring)."""

    explored: one_of(EXPLORED_WEIGHTS) = "none"
    censored: one_of(CENSORED_MODES) = "drop"
    censored_weight: typed(float, positive=True) = 1.0

    @model_validator(mode="after")
    def _weight_needs_genuine(self) -> "CensoringFile":
        if self.censored_weight != 1.0 and self.censored != "genuine":
            raise fail("censored_weight weighs blocked rows trained on as genuine: set censored: genuine, "
                       "or remove censored_weight", "censored_weight")
        return self

    def value(self) -> Censoring:
        return Censoring(explored=self.explored, censored=self.censored, censored_weight=self.censored_weight)


def _memory(value: Any) -> Any:
    if not isinstance(value, str):
        raise fail(f"expected a string, got {value!r}")
    if not MEMORY_RE.match(value):
        raise fail(f"expected a Spark size like 4g or 512m, got {value!r}")
    return value


class ExecutorFile(SpecSection):
    image: typed(str) = None
    instances: typed(int, positive=True) = None
    cores: typed(int, positive=True) = None
    memory: Annotated[str, PlainValidator(_memory), WithJsonSchema({"type": "string", "pattern": MEMORY_RE.pattern})] \
        = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise fail(f"expected a mapping with {', '.join(sorted(cls.model_fields))}")
        return value


def _master(value: Any) -> Any:
    if not isinstance(value, str):
        raise fail(f"expected a string, got {value!r}")
    if not MASTER_RE.match(value):
        raise fail(f"expected local[N], k8s://https://host:port, spark://host:7077, yarn or sc://host:15002, "
                   f"got {value!r}")
    return value


def _conf(value: Any) -> dict[str, str]:
    conf = value or {}
    if not isinstance(conf, dict):
        raise fail("expected a mapping of Spark settings, e.g. spark.sql.shuffle.partitions: 200")
    for k, v in conf.items():
        if not isinstance(k, str) or not k.startswith("spark."):
            raise fail("Spark settings start with 'spark.'", k)
        if not isinstance(v, (str, int, float, bool)):
            raise fail(f"expected a string, number or true/false, got {v!r}", k)
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in conf.items()}


def _scoring(value: Any) -> Any:
    if not isinstance(value, str):
        raise fail(f"expected a string, got {value!r}")
    if value not in SCORING_MODES:
        raise fail(f"expected one of {', '.join(SCORING_MODES)}, got {value!r}")
    return value


class SparkFile(SpecSection):
    master: Annotated[str, PlainValidator(_master), WithJsonSchema({"type": "string", "pattern": MASTER_RE.pattern})] \
        = "local[2]"
    conf: Annotated[dict[str, str], PlainValidator(_conf), WithJsonSchema({
        "type": "object", "propertyNames": {"pattern": "^spark\\."},
        "additionalProperties": {"type": ["string", "number", "boolean"]}})] = {}
    executor: ExecutorFile = ExecutorFile()
    xgboost_workers: typed(int, positive=True) = 2
    scoring: Annotated[str, PlainValidator(_scoring), WithJsonSchema({"enum": list(SCORING_MODES)})] = "auto"
    scoring_min_rows: typed(int, nonneg=True) = 5_000_000

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, v: Any) -> Any:
        return v or {}

    def value(self) -> SparkSpec:
        e = self.executor
        return SparkSpec(master=self.master, conf=self.conf,
                         executor=SparkExecutors(image=e.image, instances=e.instances, cores=e.cores, memory=e.memory),
                         xgboost_workers=self.xgboost_workers, scoring=self.scoring,
                         scoring_min_rows=self.scoring_min_rows)
