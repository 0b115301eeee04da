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

from pydantic import BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator

from ratchet.data import columns as C
from ratchet.data.spec import (  # noqa: F401 - re-exported: the data sections are imported from here too
    _AGG_RE, FILTER_OPS, MASTER_ENV, MASTER_RE, MEMORY_RE, SCALAR_FEATURES, SCORING_MODES, WINDOW_SECONDS,
    Checks, ChecksFile, DatasetFile, DatasetSpec, DataSpec, Filter, FilterFile, ResolvedWindows, SparkExecutors,
    SparkFile, SparkSpec, SpecSection, Windows, WindowsFile, _day, _filters, feature_needs, known_features, or_empty,
    typed,
)
from ratchet.yamlfile import YamlDoc, fail, load_yaml, parse_yaml, validate


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
    #: features a decision request may leave out (absent or null: scored as missing, and counted);
    #: every other feature is required (422 naming it). Serving policy, not part of the recipe's hash.
    missing_allowed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source_path")
        return d

    def spec_hash(self) -> str:
        """sha256 of the normalised spec: equal hashes mean equal training recipes."""
        recipe = self.to_dict()
        recipe.pop("spark")  # where it runs, not what it builds
        recipe.pop("missing_allowed")  # what the service accepts, not what is built
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
def _params(value: Any) -> dict[str, Any]:
    params = value or {}
    if not isinstance(params, dict):
        raise fail("expected a mapping of XGBoost parameters")
    for k in params:
        if k not in XGBOOST_PARAMS:
            close = difflib.get_close_matches(str(k), sorted(XGBOOST_PARAMS), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "see XGBoost's parameter list (doc/parameter.rst)"
            raise fail(f"unknown XGBoost parameter {k!r}: {hint}", k)
    if params.get("tree_method", "hist") != "hist":
        raise fail("ratchet trains with tree_method: hist only", "tree_method")
    for k in ("max_depth", "eta", "subsample", "colsample_bytree", "min_child_weight", "scale_pos_weight"):
        if k in params and (isinstance(params[k], bool) or not isinstance(params[k], (int, float)) or params[k] < 0):
            raise fail(f"expected a non-negative number, got {params[k]!r}", k)
    return dict(params)


_NONNEG = {"type": "number", "minimum": 0}


class XGBoostFile(SpecSection):
    # Other keys of XGBOOST_PARAMS are passed to XGBoost as they are; any other key is refused.
    params: Annotated[dict[str, Any], PlainValidator(_params), WithJsonSchema({
        "type": "object", "properties": {
            "tree_method": {"const": "hist"}, "max_depth": _NONNEG, "eta": _NONNEG, "subsample": _NONNEG,
            "colsample_bytree": _NONNEG, "min_child_weight": _NONNEG, "scale_pos_weight": _NONNEG},
        "propertyNames": {"enum": sorted(XGBOOST_PARAMS)}})] = {}
    num_boost_round: typed(int, positive=True) = 200
    distributed: typed(bool) = False


def _features(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise fail("expected a non-empty list of feature names; known: " + ", ".join(known_features()))
    for i, f in enumerate(value):
        if not isinstance(f, str) or feature_needs(f) is None:
            raise fail(f"unknown feature {f!r}; known: {', '.join(known_features())}", i)
    if len(set(value)) != len(value):
        raise fail("a feature is listed twice")
    return tuple(value)


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
    features: Annotated[Any, PlainValidator(_features), WithJsonSchema({  # validated to a tuple of names
        "type": "array", "minItems": 1, "uniqueItems": True,
        "items": {"anyOf": [{"enum": known_features()}, {"type": "string", "pattern": _AGG_RE.pattern}]}})] = Field(
        default=None, validate_default=True)  # required, with the spec's own message
    dataset: DatasetFile = DatasetFile()
    windows: WindowsFile = WindowsFile()
    filters: Annotated[list[FilterFile], BeforeValidator(_filters)] = []
    xgboost: XGBoostFile = XGBoostFile()
    checks: ChecksFile = ChecksFile()
    spark: SparkFile = SparkFile()
    missing_features: MissingFeaturesFile = MissingFeaturesFile()

    _sections = field_validator("dataset", "windows", "xgboost", "checks", "spark", "missing_features",
                                mode="before")(or_empty)

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
    f = validate(doc, SpecFile)
    x = f.xgboost
    xgb = XGBoostSpec(params={**DEFAULT_PARAMS, **x.params, "seed": f.seed}, num_boost_round=x.num_boost_round,
                      distributed=x.distributed)
    return TrainingSpec(name=Path(doc.path).stem if f.name is None else f.name, label=f.label, features=f.features,
                        dataset=f.dataset.value(), windows=f.windows.value(), filters=tuple(f.filters), xgboost=xgb,
                        checks=f.checks.value(), seed=f.seed, spark=f.spark.value(), source_path=doc.path,
                        missing_allowed=_missing_allowed(f))


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
