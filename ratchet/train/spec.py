"""The declarative training spec: dataset mapping, windows, filters, features, XGBoost.

A spec is a YAML file people edit. `load_spec` validates it completely and every error
names the file, the line and the key, e.g.
``specs/fraud.yaml:14: windows.train_days: expected a positive integer, got 'ten'``.
The file is declared as pydantic models (SpecFile here, its data sections in
ratchet.data.spec) checked by ratchet.yamlfile.validate.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator, model_validator,
)

from ratchet.data import columns as C
from ratchet.data.spec import (  # noqa: F401 - re-exported: the data sections are imported from here too
    FILTER_OPS, MASTER_ENV, MASTER_RE, MEMORY_RE, SCALAR_FEATURES, SCORING_MODES, WINDOW_SECONDS, Checks,
    Censoring, CensoringFile, ChecksFile, DatasetFile, DatasetSpec, DataSpec, FeatureOptions, FeatureOptionsFile,
    FeaturesField, Filter,
    FilterFile, ResolvedWindows, SparkExecutors, SparkFile, SparkSpec, SpecSection, Windows, WindowsFile, _day,
    _filters, feature_needs, known_features, or_empty, typed,
)
from ratchet.yamlfile import Problem, YamlDoc, default_message, fail, load_yaml, parse_yaml, validate


@dataclass(frozen=True)
class EarlyStopping:
    """Stop boosting once eval_metric on the validation tail (the train window's latest rows
    by ts: the last `validation_days` days, else the last `validation_fraction` of its rows)
    has not improved for `rounds` rounds."""

    rounds: int = 30
    validation_days: float | None = None
    validation_fraction: float | None = None


@dataclass(frozen=True)
class Search:
    """A grid over a few XGBoost parameters (declared order), at most max_trials fits."""

    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    max_trials: int = 8


@dataclass(frozen=True)
class XGBoostSpec:
    """XGBoost parameters (tree_method is always hist) and boosting rounds; optionally early
    stopping, a parameter search and class weighting (ratchet.train.trainer does them)."""

    params: dict[str, Any] = field(default_factory=dict)
    num_boost_round: int = 200
    distributed: bool = False
    early_stopping: EarlyStopping | None = None
    #: None, "balanced" (scale_pos_weight = negatives / positives of the train window) or a number
    class_weight: str | float | None = None
    search: Search | None = None


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
    #: features a decision request may leave out (absent or null: scored as missing, and counted);
    #: every other feature is required (422 naming it). Serving policy, not part of the recipe's hash.
    missing_allowed: tuple[str, ...] = ()
    feature_options: FeatureOptions = field(default_factory=FeatureOptions)
    censoring: Censoring = field(default_factory=Censoring)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source_path")
        return d

    def spec_hash(self) -> str:
        """sha256 of the normalised spec: equal hashes mean equal training recipes."""
        recipe = self.to_dict()
        recipe.pop("spark")  # where it runs, not what it builds
        recipe.pop("missing_allowed")  # what the service accepts, not what is built
        if self.feature_options == FeatureOptions():
            recipe.pop("feature_options")  # the defaults: hashes from before the section existed stay equal
        if self.censoring == Censoring():
            recipe.pop("censoring")
        for key in ("early_stopping", "class_weight", "search"):  # off: hashes from before these keys stay equal
            if recipe["xgboost"][key] is None:
                recipe["xgboost"].pop(key)
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


#: Every parameter XGBoost's Booster accepts (XGBoost 3.x, "XGBoost Parameters" in its
#: docs: doc/parameter.rst): the general, tree-booster, DART, linear-booster and
#: learning-task parameters, with their aliases. XGBoost exposes no list of them (a
#: booster's save_config() holds only the ones in use), so it is written down here; a key
#: outside it is a typo (max_dpth) that XGBoost would ignore with a warning, and the spec
#: refuses it naming the closest known name. tests/test_bad_data.py checks that every
#: parameter in a trained booster's configuration is in this list.
XGBOOST_PARAMS: frozenset[str] = frozenset({
    # general
    "booster", "device", "verbosity", "validate_parameters", "nthread", "n_jobs", "disable_default_eval_metric",
    "fail_on_invalid_gpu_id",
    # tree booster
    "eta", "learning_rate", "gamma", "min_split_loss", "max_depth", "min_child_weight", "max_delta_step",
    "subsample", "sampling_method", "colsample_bytree", "colsample_bylevel", "colsample_bynode", "lambda",
    "reg_lambda", "alpha", "reg_alpha", "tree_method", "scale_pos_weight", "updater", "refresh_leaf",
    "process_type", "grow_policy", "max_leaves", "max_bin", "num_parallel_tree", "monotone_constraints",
    "interaction_constraints", "multi_strategy", "max_cached_hist_node", "extmem_single_page",
    "max_cat_to_onehot", "max_cat_threshold", "sparse_threshold",
    # DART booster
    "sample_type", "normalize_type", "rate_drop", "one_drop", "skip_drop",
    # linear booster
    "feature_selector", "top_k",
    # learning task
    "objective", "base_score", "eval_metric", "seed", "random_state", "seed_per_iteration", "num_class",
    "tweedie_variance_power", "huber_slope", "quantile_alpha", "aft_loss_distribution",
    "aft_loss_distribution_scale", "lambdarank_pair_method", "lambdarank_num_pair_per_sample",
    "lambdarank_normalization", "lambdarank_score_normalization", "lambdarank_unbiased", "lambdarank_bias_norm",
    "ndcg_exp_gain", "num_feature", "num_target", "boost_from_average",
})


# ---- the file ------------------------------------------------------------------------
_NONNEG_PARAMS = ("max_depth", "eta", "subsample", "colsample_bytree", "min_child_weight", "scale_pos_weight")


def _unknown_param(k: Any, names: list[str], *path: str | int) -> Exception:
    close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "see XGBoost's parameter list (doc/parameter.rst)"
    return fail(f"unknown XGBoost parameter {k!r}: {hint}", *path, k)


def _nonneg(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


def _params(value: Any) -> dict[str, Any]:
    params = value or {}
    if not isinstance(params, dict):
        raise fail("expected a mapping of XGBoost parameters")
    for k in params:
        if k not in XGBOOST_PARAMS:
            raise _unknown_param(k, sorted(XGBOOST_PARAMS))
    if params.get("tree_method", "hist") != "hist":
        raise fail("ratchet trains with tree_method: hist only", "tree_method")
    for k in _NONNEG_PARAMS:
        if k in params and not _nonneg(params[k]):
            raise fail(f"expected a non-negative number, got {params[k]!r}", k)
    return dict(params)


_NONNEG = {"type": "number", "minimum": 0}

#: Parameters a search may not vary: they fix what is trained (hist, the objective and its
#: metric, the seed) or only how fast (threads), never the model's quality.
NOT_SEARCHED: frozenset[str] = frozenset({
    "tree_method", "objective", "eval_metric", "seed", "random_state", "nthread", "n_jobs", "device", "verbosity",
    "validate_parameters", "disable_default_eval_metric", "num_class", "booster"})
SEARCHABLE: tuple[str, ...] = tuple(sorted(XGBOOST_PARAMS - NOT_SEARCHED))


def _search(value: Any) -> Search | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("expected a mapping parameter: [values to try], e.g. {max_depth: [4, 6], max_trials: 8}")
    grid: list[tuple[str, tuple[Any, ...]]] = []
    max_trials = Search.__dataclass_fields__["max_trials"].default
    for k, values in value.items():
        if k == "max_trials":
            if isinstance(values, bool) or not isinstance(values, int) or values <= 0:
                raise fail(f"expected a positive integer (the most fits the search makes), got {values!r}", k)
            max_trials = values
            continue
        if k not in XGBOOST_PARAMS:
            raise _unknown_param(k, [*SEARCHABLE, "max_trials"])
        if k in NOT_SEARCHED:
            raise fail(f"{k} is not searched: it fixes what is trained, or only how fast", k)
        if not isinstance(values, list) or not values:
            raise fail(f"expected a non-empty list of values to try, got {values!r}", k)
        for i, v in enumerate(values):
            if not isinstance(v, (int, float, str)) or (k in _NONNEG_PARAMS and not _nonneg(v)):
                raise fail(f"expected a {'non-negative number' if k in _NONNEG_PARAMS else 'number or string'}, "
                           f"got {v!r}", k, i)
        if len({repr(v) for v in values}) != len(values):
            raise fail("a value is listed twice", k)
        grid.append((str(k), tuple(values)))
    if not grid:
        raise fail("name at least one XGBoost parameter to search, e.g. max_depth: [4, 6]")
    return Search(tuple(grid), max_trials)


def _class_weight(value: Any) -> str | float | None:
    if value is None or value == "none":
        return None
    if value == "balanced":
        return value
    if not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0:
        return float(value)
    raise fail(f"expected none, balanced or a positive number (XGBoost's scale_pos_weight), got {value!r}")


class EarlyStoppingFile(SpecSection):
    """xgboost.early_stopping: stop once the validation tail's eval_metric has not improved for
    `rounds` rounds. The tail is the train window's latest rows by ts: the last
    validation_days days, or the last validation_fraction of its rows (default 0.2)."""

    rounds: typed(int, positive=True) = 30
    validation_days: typed(float, positive=True) = None
    validation_fraction: typed(float, positive=True) = None

    @model_validator(mode="after")
    def _one_tail(self) -> "EarlyStoppingFile":
        if self.validation_days is not None and self.validation_fraction is not None:
            raise fail("give validation_days or validation_fraction, not both", "validation_fraction")
        if self.validation_fraction is not None and self.validation_fraction >= 1:
            raise fail(f"expected a fraction below 1 of the train window's rows, got {self.validation_fraction!r}",
                       "validation_fraction")
        return self

    def value(self) -> EarlyStopping:
        fraction = self.validation_fraction
        if self.validation_days is None and fraction is None:
            fraction = 0.2
        return EarlyStopping(self.rounds, self.validation_days, fraction)


class XGBoostFile(SpecSection):
    # Other keys of XGBOOST_PARAMS are passed to XGBoost as they are; any other key is refused.
    params: Annotated[dict[str, Any], PlainValidator(_params), WithJsonSchema({
        "type": "object", "properties": {
            "tree_method": {"const": "hist"}, "max_depth": _NONNEG, "eta": _NONNEG, "subsample": _NONNEG,
            "colsample_bytree": _NONNEG, "min_child_weight": _NONNEG, "scale_pos_weight": _NONNEG},
        "propertyNames": {"enum": sorted(XGBOOST_PARAMS)}})] = {}
    num_boost_round: typed(int, positive=True) = 200  # with early_stopping: the most rounds
    distributed: typed(bool) = False
    early_stopping: EarlyStoppingFile | None = None  # off when absent
    class_weight: Annotated[Any, PlainValidator(_class_weight), WithJsonSchema({
        "anyOf": [{"enum": ["none", "balanced"]}, {"type": "number", "exclusiveMinimum": 0}]})] = None
    # off when absent; needs early_stopping, whose validation tail scores the trials
    search: Annotated[Any, PlainValidator(_search), WithJsonSchema({
        "type": "object", "minProperties": 1,
        "properties": {"max_trials": {"type": "integer", "exclusiveMinimum": 0}},
        "propertyNames": {"enum": [*SEARCHABLE, "max_trials"]},
        "additionalProperties": {"type": "array", "minItems": 1, "items": {"type": ["number", "string"]}}})] = None

    @model_validator(mode="after")
    def _combinations(self) -> "XGBoostFile":
        if self.distributed:
            for key in ("early_stopping", "class_weight", "search"):
                if getattr(self, key) is not None:
                    raise fail(f"{key} trains in one process; drop it or set xgboost.distributed: false", key)
        if self.class_weight is not None and "scale_pos_weight" in self.params:
            raise fail("class_weight sets scale_pos_weight; drop one of them", "class_weight")
        if self.search is not None:
            if self.early_stopping is None:
                raise fail("the search scores each trial on early_stopping's validation tail; "
                           "add xgboost.early_stopping (e.g. {validation_days: 2, rounds: 30})", "search")
            for k, _ in self.search.grid:
                if k in self.params or (k == "scale_pos_weight" and self.class_weight is not None):
                    raise fail(f"{k} is both set ({'xgboost.params' if k in self.params else 'class_weight'}) "
                               "and searched; keep it in one place", "search", k)
        return self

    def value(self, seed: int) -> XGBoostSpec:
        return XGBoostSpec(params={**DEFAULT_PARAMS, **self.params, "seed": seed},
                           num_boost_round=self.num_boost_round, distributed=self.distributed,
                           early_stopping=None if self.early_stopping is None else self.early_stopping.value(),
                           class_weight=self.class_weight, search=self.search)


def _messages(p: Problem) -> str | None:
    """An unknown key under xgboost: also the closest allowed name (num_boost_rounds -> num_boost_round)."""
    if p.kind != "unknown_key" or p.keypath[:1] != ("xgboost",):
        return None
    close = difflib.get_close_matches(str(p.ctx["key"]), sorted(p.ctx["allowed"]), n=1, cutoff=0.6)
    return default_message(p) + (f"; did you mean {close[0]!r}?" if close else "")


#: Features missing by construction: seconds_since_card_prev has no value on a card's first payment.
MISSING_BY_CONSTRUCTION: frozenset[str] = frozenset({"seconds_since_card_prev"})


class MissingFeaturesFile(SpecSection):
    """missing_features: which features a decision request may leave out (absent or null).

    allowed: those features (scored as missing, as XGBoost treats NaN, and counted in
    ratchet_missing_features_total); every other feature is required, and a request without
    it is refused with a 422 naming it. Default: the features missing by construction
    (seconds_since_card_prev, on a card's first payment) among the spec's features."""

    allowed: list[str] | None = None


class SpecFile(SpecSection):
    """A training spec file (specs/fraud.yaml)."""

    model_config = ConfigDict(title="ratchet training spec")
    name: typed(str) = None  # None: the file's name
    label: typed(str) = C.IS_FRAUD
    seed: typed(int, nonneg=True) = 7
    features: FeaturesField = Field(default=None, validate_default=True)  # required, with the spec's own message
    dataset: DatasetFile = DatasetFile()
    windows: WindowsFile = WindowsFile()
    filters: Annotated[list[FilterFile], BeforeValidator(_filters)] = []
    xgboost: XGBoostFile = XGBoostFile()
    checks: ChecksFile = ChecksFile()
    spark: SparkFile = SparkFile()
    missing_features: MissingFeaturesFile = MissingFeaturesFile()
    feature_options: FeatureOptionsFile = FeatureOptionsFile()
    censoring: CensoringFile = CensoringFile()

    _sections = field_validator("dataset", "windows", "xgboost", "checks", "spark", "missing_features",
                                "feature_options", "censoring", mode="before")(or_empty)

    @field_validator("missing_features")
    @classmethod
    def _allowed_are_features(cls, m: MissingFeaturesFile, info: Any) -> MissingFeaturesFile:
        features = info.data.get("features") or ()
        for i, name in enumerate(m.allowed or ()):
            if name not in features:
                close = difflib.get_close_matches(str(name), features, n=1)
                raise fail(f"{name!r} is not one of the spec's features" +
                           (f"; did you mean {close[0]!r}?" if close else f" ({', '.join(features)})"), "allowed", i)
        return m


def spec_from_doc(doc: YamlDoc) -> TrainingSpec:
    """Validate a parsed spec document and build the TrainingSpec."""
    f = validate(doc, SpecFile, _messages)
    xgb = f.xgboost.value(f.seed)
    return TrainingSpec(name=Path(doc.path).stem if f.name is None else f.name, label=f.label, features=f.features,
                        dataset=f.dataset.value(), windows=f.windows.value(), filters=tuple(f.filters), xgboost=xgb,
                        checks=f.checks.value(), seed=f.seed, spark=f.spark.value(), source_path=doc.path,
                        missing_allowed=_missing_allowed(f), feature_options=f.feature_options.value(),
                        censoring=f.censoring.value())


def _missing_allowed(f: SpecFile) -> tuple[str, ...]:
    allowed = f.missing_features.allowed
    if allowed is None:
        return tuple(x for x in f.features if x in MISSING_BY_CONSTRUCTION)
    return tuple(dict.fromkeys(allowed))


def load_spec(path: str | Path) -> TrainingSpec:
    """Load and validate a training spec file (raises SpecError naming file, line and key)."""
    return spec_from_doc(load_yaml(path))


def parse_spec(text: str, path: str = "<string>") -> TrainingSpec:
    """Validate a spec given as YAML text (for tests and the pipeline, which ships it as text)."""
    return spec_from_doc(parse_yaml(text, path))
