"""The decision service's core, without HTTP: route, score, threshold, explore, log, shadow; reload.

Everything a request needs is one immutable Snapshot (models, weights, validator). A
request reads `service.snapshot` once and uses only that object, so a reload -- which
loads every model fully first, then replaces the reference in one assignment -- drops
no request and never mixes two configurations in one answer; the old snapshot keeps
serving until the swap, and stays if the load fails.

Exploration (optional, ratchet.exploration): a production decision that would block may be
let through with the policy's probability; the answer says `"explored": true` and the log
row carries the decision served with its propensity. Canary and shadow decisions are never
explored, and the shadow compares itself with production's model decision, not the allow.

    >>> svc = Service(ModelLoader(Registry(uri, "fraud")), metrics, decision_log, shadow)
    >>> svc.reload(StageConfig(production=6, canary=7, canary_weight=5, shadow=8))
    >>> svc.decide(b'{"card_id": "c1", "amount": 12.5}')
    (200, {'decision': 'allow', 'score': 0.03, 'threshold': 0.5, 'model_version': 6, 'role': 'production', ...})
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from datetime import datetime, timezone
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from ratchet.errors import RatchetError
from ratchet.exploration import Explorer
from ratchet.serving.config import StageConfig, VersionRef
from ratchet.serving.log_schema import DecisionRow
from ratchet.serving.metrics import Metrics
from ratchet.serving.models import LoadedModel, faults, with_fault
from ratchet.serving.routing import cohort_matcher, route_to_canary
from ratchet.serving.schema import attribute_reader, request_decoder, request_model, validation_problems
from ratchet.serving.shadow import ShadowItem

log = logging.getLogger("ratchet.serving")


def _known_features() -> tuple[str, ...]:
    try:
        from ratchet.train.spec import known_features

        return tuple(known_features())
    except Exception:  # noqa: BLE001 - the service can run without the training code's extras
        return ()


@dataclass(frozen=True)
class Snapshot:
    """One loaded configuration; immutable, swapped as a whole."""

    generation: int
    production: LoadedModel
    canary: LoadedModel | None
    canary_weight: float
    cohort: Any
    shadow: LoadedModel | None
    request_model: type[BaseModel]
    asked: StageConfig
    reason: str | None = None
    loaded_at: float = field(default_factory=time.time)
    in_cohort: Callable[[object], bool] = field(default=lambda _r: True)
    decoder: Any = None  # schema.request_decoder: the fast path; request_model decides what it refuses
    #: features of the served models a request may leave out (counted when it does), and their reader
    may_be_missing: tuple[str, ...] = ()
    read_optional: Callable[[object], tuple] | None = None

    @property
    def stages(self) -> StageConfig:
        """The resolved stage config (version numbers)."""
        return StageConfig(self.production.version, self.canary.version if self.canary else None,
                           self.canary_weight if self.canary else 0.0,
                           self.shadow.version if self.shadow else None, self.cohort if self.canary else None)

    def describe(self) -> dict[str, Any]:
        s = self.stages
        return {**s.to_dict(), "fingerprint": s.fingerprint(), "generation": self.generation,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                # when this process began serving this generation, to the microsecond: generations
                # start again at 1 in a restarted process, so (generation, serving_since) names one
                "serving_since": datetime.fromtimestamp(self.loaded_at, timezone.utc).isoformat(),
                "asked": self.asked.to_dict(), "reason": self.reason,
                "models": {role: m.describe() for role, m in
                           (("production", self.production), ("canary", self.canary), ("shadow", self.shadow)) if m},
                "request_fields": sorted(self.request_model.model_fields)}


class Service:
    def __init__(self, loader, metrics: Metrics | None = None, decision_log=None, shadow=None,  # noqa: ANN001
                 *, model_name: str = "fraud", fault_env: dict[str, str] | None = None,
                 explorer: Explorer | None = None, exploration_file: str | None = None) -> None:
        self.loader = loader
        self.metrics = metrics or Metrics()
        self.log = decision_log
        self.shadow = shadow
        self.model_name = model_name
        self.faults = faults() if fault_env is None else fault_env
        #: production's would-be blocks it may let through (None: exploration off); not reloaded
        self.explorer = explorer
        self.exploration_file = exploration_file
        self.snapshot: Snapshot | None = None
        self.not_ready_reason = "models not loaded yet"
        self._reload_lock = threading.Lock()
        self._generation = 0
        self._known = _known_features()
        self.metrics.gauges["ratchet_config_generation"] = lambda: self.snapshot.generation if self.snapshot else 0
        if explorer is not None and explorer.policy.max_expected_loss_per_day is not None:
            self.metrics.gauges["ratchet_exploration_expected_loss_today"] = explorer.spent_today

    def describe_exploration(self) -> dict[str, Any] | None:
        """The exploration policy for GET /admin/config (None: off)."""
        if self.explorer is None:
            return None
        return {"file": self.exploration_file, **self.explorer.policy.to_dict(),
                "expected_loss_today": self.explorer.spent_today()}

    # ---- configuration -----------------------------------------------------------------
    def merge(self, changes: dict[str, Any]) -> StageConfig:
        """The target of a reload: the current resolved config with `changes` applied."""
        current = self.snapshot.stages if self.snapshot else StageConfig()
        target = replace(current, **changes)
        if "canary" in changes and changes["canary"] is None:
            target = replace(target, canary_weight=0.0, cohort=None)
        return target

    def reload(self, target: StageConfig, reason: str | None = None) -> Snapshot:
        """Load every model of `target`, then swap atomically. Raises on failure; the old config keeps serving."""
        with self._reload_lock:
            try:
                snap = self._build(target, reason)
            except Exception:
                self.metrics.reloads["failed"] += 1
                raise
            self.snapshot = snap  # the swap: one reference assignment
            # what is loaded now lives as long as the config: out of the cyclic GC's sight, so a
            # full collection (tens of ms over mlflow's and the models' objects) no longer stalls requests
            gc.freeze()
            self.not_ready_reason = ""
            self.metrics.reloads["ok"] += 1
            keep = {m.version for m in (snap.production, snap.canary, snap.shadow) if m}
            if hasattr(self.loader, "forget_except"):
                self.loader.forget_except(keep)
        log.info("serving %s (generation %d)%s", snap.stages.fingerprint(), snap.generation,
                 f": {reason}" if reason else "")
        return snap

    def _build(self, target: StageConfig, reason: str | None) -> Snapshot:
        if target.production is None:
            raise RatchetError("a production version is required")
        if target.canary is not None and target.canary_weight <= 0 and not target.cohort:
            log.warning("canary loaded with weight 0: it receives no traffic")

        def resolve(ref: VersionRef | None) -> int | None:
            return None if ref is None else self.loader.resolve(ref)

        versions = {"production": resolve(target.production), "canary": resolve(target.canary),
                    "shadow": resolve(target.shadow)}
        loaded: dict[int, LoadedModel] = {}
        for v in versions.values():
            if v is not None and v not in loaded:
                loaded[v] = self.loader.load(v)
        role_model = {role: with_fault(loaded[v], self.faults.get(role) or self.faults.get(f"v{v}")) if v is not None else None
                      for role, v in versions.items()}
        features = list(self._known)
        for m in role_model.values():
            if m is not None:
                features += [f for f in m.features if f not in features]
        served = [m for m in (role_model["production"], role_model["canary"]) if m is not None]
        required = frozenset().union(*(m.required for m in served))
        optional = tuple(f for f in dict.fromkeys(f for m in served for f in m.features) if f not in required)
        self._generation += 1
        return Snapshot(
            generation=self._generation, production=role_model["production"], canary=role_model["canary"],
            canary_weight=target.canary_weight if role_model["canary"] else 0.0,
            cohort=target.cohort if role_model["canary"] else None, shadow=role_model["shadow"],
            request_model=request_model(tuple(features), required), asked=target, reason=reason,
            in_cohort=cohort_matcher(target.cohort if role_model["canary"] else None),
            decoder=request_decoder(tuple(features), required), may_be_missing=optional,
            read_optional=attribute_reader(optional) if optional else None,
        )

    # ---- the request path ----------------------------------------------------------------
    def decide(self, body: bytes, request_id: str | None = None, started: float | None = None) -> tuple[int, dict]:
        """(HTTP status, JSON payload) for one decision request body."""
        t0 = time.perf_counter() if started is None else started
        snap = self.snapshot
        if snap is None:
            return 503, {"detail": f"not ready: {self.not_ready_reason}"}
        try:
            req = snap.decoder.decode(body)
        except Exception:  # noqa: BLE001 - msgspec.DecodeError mostly; anything else: pydantic decides
            # refused by the fast validator (or none): pydantic has the last word and the error payload
            try:
                req = snap.request_model.model_validate_json(body)
            except ValidationError as exc:
                return 422, {"detail": validation_problems(exc)}
        if snap.read_optional is not None and None in (values := snap.read_optional(req)):
            missing = self.metrics.missing_features
            for name, v in zip(snap.may_be_missing, values):
                if v is None:
                    missing[name] += 1
        model, role = snap.production, "production"
        canary = snap.canary
        if canary is not None and snap.in_cohort(req) and route_to_canary(req.card_id, snap.canary_weight,
                                                                            str(canary.version)):
            model, role = canary, "canary"
        x = np.array([[getattr(req, f) for f in model.features]], dtype=np.float32)  # None -> NaN
        score = float(model.predict(x)[0])
        threshold = model.threshold_for(req.merchant_id)
        decision = served = "block" if score >= threshold else "allow"
        rid = request_id or uuid.uuid4().hex
        propensity, explored = 1.0, False
        if decision == "block" and role == "production" and self.explorer is not None:
            served, propensity, explored = self._explore(req, rid, score, threshold, model.version)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        self.metrics.decisions[(role, model.version, served)] += 1
        if self.log is not None:
            # journaled (one os.write) before this returns, so before the answer is sent: a
            # decision that was answered survives a kill -9 (decision_log's journal)
            self.log.append(DecisionRow(rid, time.time(), role, model.version, score, threshold, served, "ok", None,
                                        latency_ms, snap.generation, propensity, explored, req, model.features),
                            journal_now=True)
        if snap.shadow is not None and self.shadow is not None:
            self.shadow.submit(ShadowItem(snap.shadow, rid, time.monotonic(), req, role, decision, snap.generation))
        answer = {"decision": served, "score": score, "threshold": threshold, "model_version": model.version,
                  "role": role, "request_id": rid}
        if explored:
            answer["explored"] = True
        return 200, answer

    def _explore(self, req: Any, rid: str, score: float, threshold: float, version: int) -> tuple[str, float, bool]:
        """(served decision, propensity, explored) of a production would-be block, counted in the metrics.

        The draw's key is the payment's transaction_id (the same payment gets the same draw on every
        replica and retry), else the request id; a request without an amount exposes 0."""
        amount = getattr(req, "amount", None) or 0.0
        d = self.explorer.decide(score, threshold, amount, req.transaction_id or rid, time.time(),  # type: ignore[union-attr]
                                 req.merchant_id, req.merchant_category)
        if d.share > 0.0:
            self.metrics.observe_exploration(version, d.explored, amount, score)
        return d.decision, d.propensity, d.explored

    # ---- lifecycle -----------------------------------------------------------------------
    def load_initial(self, target: StageConfig, stop: threading.Event, retry_s: float = 2.0) -> None:
        """Load the start-up config, retrying while the registry is unreachable (readyz stays 503)."""
        while not stop.is_set() and self.snapshot is None:
            try:
                self.reload(target, reason="start-up")
                return
            except Exception as exc:  # noqa: BLE001 - report and retry; /readyz says why
                self.not_ready_reason = f"loading {target.fingerprint()} failed: {exc}"
                log.error("%s; retrying in %.0f s", self.not_ready_reason, retry_s)
                stop.wait(retry_s)

    def close(self) -> None:
        """Finish shadow work, then flush the decision log."""
        if self.shadow is not None:
            self.shadow.close()
        if self.log is not None:
            self.log.close()
