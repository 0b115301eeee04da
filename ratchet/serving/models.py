"""Loaded model versions: booster, feature order and decision thresholds.

A version's thresholds come from its registry tags: `threshold` (float, default 0.5)
and `merchant_thresholds` (JSON {merchant_id: threshold}) which override it per
merchant. A row is blocked when score >= threshold (as in ratchet.evaluate.metrics).

    >>> m = ModelLoader(Registry(uri, "fraud")).load(6)
    >>> m.predict(np.array([[12.5, 3, ...]], dtype=np.float32)), m.threshold_for("m-17")
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from ratchet.errors import RatchetError, RegistryError

log = logging.getLogger("ratchet.serving")

if TYPE_CHECKING:
    from ratchet.registry import Registry


DEFAULT_THRESHOLD = 0.5
#: Fault injection for tests and drills, e.g. RATCHET_SERVING_FAULT="shadow=raise" or "shadow=sleep:0.2".
FAULT_ENV = "RATCHET_SERVING_FAULT"


def parse_thresholds(version: int, tags: Mapping[str, str]) -> tuple[float, dict[str, float]]:
    """(default threshold, per-merchant thresholds) from a version's tags; bad tags are named."""
    def check(value: Any, where: str) -> float:
        try:
            t = float(value)
        except (TypeError, ValueError):
            raise RegistryError(f"version {version}: {where} must be a number, got {value!r}") from None
        if not math.isfinite(t) or not 0.0 <= t <= 1.0:
            raise RegistryError(f"version {version}: {where} must be within 0..1, got {value!r}")
        return t

    default = check(tags["threshold"], "tag 'threshold'") if tags.get("threshold") not in (None, "") else DEFAULT_THRESHOLD
    merchants: dict[str, float] = {}
    raw = tags.get("merchant_thresholds")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"version {version}: tag 'merchant_thresholds' is not JSON ({exc})") from None
        if not isinstance(parsed, dict):
            raise RegistryError(f"version {version}: tag 'merchant_thresholds' must be a JSON object "
                                "{merchant_id: threshold}")
        merchants = {str(k): check(v, f"merchant_thresholds[{k!r}]") for k, v in parsed.items()}
    return default, merchants


@dataclass(frozen=True)
class LoadedModel:
    """One version, ready to score single rows or batches (float32 matrices in `features` order)."""

    version: int
    booster: Any  # xgboost.Booster
    features: tuple[str, ...]
    threshold: float = DEFAULT_THRESHOLD
    merchant_thresholds: Mapping[str, float] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    #: the booster's trees compiled for single rows (ratchet.serving.predictor); None: the booster scores
    compiled: Any = field(default=None, compare=False, repr=False)
    #: features a request may leave out (its spec's missing_features); the others are required.
    #: None: no declared policy (a version without a ratchet spec): every feature may be missing.
    missing_allowed: frozenset[str] | None = None

    @property
    def required(self) -> frozenset[str]:
        """Features a request scored by this version must carry (not absent, not null)."""
        return frozenset() if self.missing_allowed is None else frozenset(self.features) - self.missing_allowed

    def __post_init__(self) -> None:
        if self.compiled is None and self.booster is not None:
            object.__setattr__(self, "compiled", compiled_for(self.booster, self.version))

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.compiled is not None:
            return self.compiled.predict(x)  # ~5-10 us a row, without the GIL
        # inplace_predict skips DMatrix construction: ~100-300 us for one row instead of ~1 ms
        return self.booster.inplace_predict(x)

    def threshold_for(self, merchant_id: str | None) -> float:
        if merchant_id is None or not self.merchant_thresholds:
            return self.threshold
        return self.merchant_thresholds.get(merchant_id, self.threshold)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "threshold": self.threshold,
                "merchant_thresholds": len(self.merchant_thresholds), "features": list(self.features),
                "scorer": "compiled" if self.compiled is not None else "xgboost"}


_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_compile_lock = threading.Lock()


def compiled_for(booster: Any, version: int | None = None) -> Any:
    """The booster's CompiledTrees (cached per booster), or None -- with a log line saying why --
    when the model has something the compiled kernel does not reproduce exactly."""
    from ratchet.serving.predictor import compile_booster

    with _compile_lock:
        try:
            return _compiled[booster]
        except (KeyError, TypeError):
            pass
        compiled, why = compile_booster(booster)
        if compiled is None:
            log.warning("version %s scores with xgboost's inplace_predict (~100-300 us a row), not the compiled "
                        "trees: %s", version, why)
        else:
            log.info("version %s: %d trees compiled for single-row scoring", version, compiled.n_trees)
        try:
            _compiled[booster] = compiled
        except TypeError:
            pass
        return compiled


class FaultyModel(LoadedModel):
    """A LoadedModel whose predict raises or sleeps first (RATCHET_SERVING_FAULT)."""

    fault: str = ""

    def predict(self, x: np.ndarray) -> np.ndarray:
        kind, _, arg = self.fault.partition(":")
        if kind == "raise":
            raise RuntimeError(f"injected fault in version {self.version}")
        if kind == "sleep":
            time.sleep(float(arg or 0.1))
        return super().predict(x)


def faults(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{"shadow": "raise"} from RATCHET_SERVING_FAULT="shadow=raise;canary=sleep:0.01"."""
    raw = (os.environ if environ is None else environ).get(FAULT_ENV, "")
    out = {}
    for part in raw.split(";"):
        if "=" in part:
            role, spec = part.split("=", 1)
            out[role.strip()] = spec.strip()
    return out


def with_fault(model: LoadedModel, fault: str | None) -> LoadedModel:
    if not fault:
        return model
    m = FaultyModel(model.version, model.booster, model.features, model.threshold, model.merchant_thresholds,
                    model.loaded_at, model.compiled, model.missing_allowed)
    object.__setattr__(m, "fault", fault)
    return m


class ModelLoader:
    """Loads versions through the Registry; boosters are cached (a version never changes),
    tags are re-read on every load so threshold changes arrive with a reload."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._boosters: dict[int, Any] = {}
        self._policies: dict[int, frozenset[str] | None] = {}

    def resolve(self, ref: int | str) -> int:
        if isinstance(ref, int):
            return ref
        v = self.registry.alias_version(ref)
        if v is None:
            raise RegistryError(f"model '{self.registry.model_name}' has no version @{ref} in "
                                f"{self.registry.tracking_uri}; give a version number or set the alias")
        return v

    def load(self, version: int) -> LoadedModel:
        tags = self.registry.tags(version)
        threshold, merchants = parse_thresholds(version, tags)
        booster = self._boosters.get(version)
        if booster is None:
            booster = self.registry.load_booster(version)
            # one thread per predict: single rows gain nothing from OpenMP and two cores are shared
            booster.set_param({"nthread": 1})
            if not booster.feature_names:
                raise RatchetError(f"version {version} carries no feature names; it was not trained by ratchet")
            self._boosters[version] = booster
        if version not in self._policies:
            self._policies[version] = self._missing_policy(version, tuple(booster.feature_names))
        return LoadedModel(version, booster, tuple(booster.feature_names), threshold, MappingProxyType(merchants),
                           missing_allowed=self._policies[version])

    def _missing_policy(self, version: int, features: tuple[str, ...]) -> frozenset[str] | None:
        """The version's missing_features policy, from the spec its release registered (a version
        never changes); None when it has no ratchet spec (registered by hand, or before specs said)."""
        from ratchet.errors import SpecError
        from ratchet.train.spec import parse_spec

        text = self.registry.version_artifact_text(version, "release/spec.yaml")
        if not text:
            return None
        try:
            spec = parse_spec(text, f"version {version} release/spec.yaml")
        except SpecError as exc:
            log.warning("version %d: its spec does not parse (%s); every feature may be missing", version, exc)
            return None
        if set(spec.features) != set(features):
            log.warning("version %d: its spec's features differ from the model's; every feature may be missing",
                        version)
            return None
        return frozenset(spec.missing_allowed)

    def forget_except(self, keep: set[int]) -> None:
        """Drop cached boosters no longer served (memory)."""
        for v in list(self._boosters):
            if v not in keep:
                del self._boosters[v]
                self._policies.pop(v, None)
