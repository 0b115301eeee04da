"""The data sections of the training spec and the feature library.

What the training-set job needs to know: how a user's table maps onto the canonical
columns (DatasetSpec), the train and test windows (Windows, ResolvedWindows), row
filters, the data-check bounds (Checks), where Spark runs (SparkSpec) and which features
exist (known_features, feature_needs). The whole-file model (TrainingSpec, the XGBoost
section, load_spec) lives in the train package, which builds on this module; the data
package never imports it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from ratchet.data import columns as C

#: Aggregation windows the feature job knows, in seconds.
WINDOW_SECONDS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}

#: Features that are not window aggregates, and the optional columns each one needs.
SCALAR_FEATURES: dict[str, tuple[str, ...]] = {
    "amount": (),
    "hour_of_day": (),
    "seconds_since_card_prev": (),
    "amount_to_card_mean": (),
    "merchant_fraud_rate_30d": (),
    "cross_border": (C.COUNTRY, C.CARD_COUNTRY),
    "is_online": (C.CHANNEL,),
}
_AGG_RE = re.compile(r"^(card|merchant)_(count|amount)_(1h|24h|7d|30d)$")
FILTER_OPS = ("==", "!=", ">", ">=", "<", "<=", "in", "not_in")


def feature_needs(name: str) -> tuple[str, ...] | None:
    """Optional columns a feature needs, or None if the feature is unknown."""
    if name in SCALAR_FEATURES:
        return SCALAR_FEATURES[name]
    return () if _AGG_RE.match(name) else None


def known_features() -> list[str]:
    """Every feature name the training-set job can compute."""
    aggs = [f"{e}_{k}_{w}" for e in ("card", "merchant") for k in ("count", "amount") for w in WINDOW_SECONDS]
    return list(SCALAR_FEATURES) + aggs


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
    max_row_count_change: float = 0.5  # relative to the previous run; 0.5 = ±50 %


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
