"""The decision service's configuration: process options (flags / env) and the stage
config (which versions serve, canary weight, cohort) that a hot reload replaces.

Imports only the standard library, so `ratchet --help` stays fast.

    >>> opts = options_from_args(build_parser().parse_args(["--production", "6"]))
    >>> opts.stages.production
    6
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ratchet.errors import SpecError
from ratchet.stages.wire import STAGE_ENV, Cohort, VersionRef, fingerprint, parse_cohort_text

if TYPE_CHECKING:
    from ratchet.exploration import ExplorationPolicy

ENV = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "model_name": "RATCHET_MODEL_NAME",
    **STAGE_ENV,
    "decision_log": "RATCHET_DECISION_LOG",
    "admin_token": "RATCHET_ADMIN_TOKEN",
    "exploration": "RATCHET_EXPLORATION",
}


@dataclass(frozen=True)
class StageConfig:
    """What serves: production, optional canary (weight in percent, optional cohort), optional shadow.

    Versions may be alias references (str) here; the service resolves them to numbers
    when it loads, and reports the numbers.
    """

    production: VersionRef | None = "production"
    canary: VersionRef | None = None
    canary_weight: float = 0.0
    shadow: VersionRef | None = None
    cohort: Cohort | None = None

    def fingerprint(self) -> str:
        """What serves, in the wire format the controller compares (ratchet.stages.wire)."""
        return fingerprint(self.production, self.canary, self.canary_weight, self.shadow, self.cohort)

    def to_dict(self) -> dict[str, Any]:
        return {"production": self.production, "canary": self.canary, "canary_weight": self.canary_weight,
                "shadow": self.shadow,
                "cohort": {k: list(v) for k, v in self.cohort} if self.cohort else None}


@dataclass(frozen=True)
class ServeOptions:
    """Everything `ratchet serve` needs; see add_serve_arguments for the meaning of each."""

    tracking_uri: str | None = None
    model_name: str = "fraud"
    stages: StageConfig = field(default_factory=StageConfig)
    decision_log: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None
    log_rotate_rows: int = 100_000
    log_rotate_seconds: float = 60.0
    shadow_queue: int = 10_000
    shadow_timeout_ms: float = 50.0
    max_body_bytes: int = 64 * 1024
    #: the exploration policy (loaded and checked when the options are read), and its file
    exploration: ExplorationPolicy | None = None
    exploration_file: str | None = None

    def with_stages(self, **changes: Any) -> ServeOptions:
        return replace(self, stages=replace(self.stages, **changes))


def parse_version_ref(text: str | int | None, what: str) -> VersionRef | None:
    """'6' -> 6, '@production' or 'production' -> 'production', '' / 'none' -> None."""
    if text is None or isinstance(text, int):
        return text
    t = str(text).strip()
    if t == "" or t.lower() == "none":
        return None
    if t.isdigit():
        if int(t) < 1:
            raise SpecError(f"{what}: version numbers start at 1, got {t}")
        return int(t)
    alias = t[1:] if t.startswith("@") else t
    if not alias.replace("_", "").replace("-", "").isalnum():
        raise SpecError(f"{what}: expected a version number or an alias such as @production, got {text!r}")
    return alias


def parse_weight(text: str | float | None, what: str = "canary weight") -> float:
    if text is None or text == "":
        return 0.0
    try:
        w = float(str(text).rstrip("%"))
    except ValueError:
        raise SpecError(f"{what}: expected a percentage 0..100, got {text!r}") from None
    if not 0.0 <= w <= 100.0:
        raise SpecError(f"{what}: expected a percentage 0..100, got {w:g}")
    return w


def parse_cohort(raw: str | Mapping[str, Any] | list | None) -> Cohort | None:
    """'country=FR,BE;channel=web' or {"country": ["FR"]} or [["country", ["FR"]]] -> cohort tuple."""
    if raw is None or raw == "" or raw == {} or raw == []:
        return None
    items: list[tuple[str, tuple[str, ...]]] = []
    if isinstance(raw, str):
        try:
            items = list(parse_cohort_text(raw) or ())
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    elif isinstance(raw, Mapping):
        items = [(str(k), tuple(str(v) for v in vals)) for k, vals in raw.items()]
    else:
        items = [(str(k), tuple(str(v) for v in vals)) for k, vals in raw]
    from ratchet.serving.schema import SLICE_KEYS

    for k, vals in items:
        if k not in SLICE_KEYS:
            raise SpecError(f"cohort: unknown slice key {k!r}; use one of {', '.join(SLICE_KEYS)}")
        if not vals:
            raise SpecError(f"cohort: slice key {k!r} has no values")
    return tuple(sorted(items))


def add_serve_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `ratchet serve` (and `python -m ratchet.serving`). Each falls back to its env var."""
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (env MLFLOW_TRACKING_URI; default sqlite:///mlflow.db)")
    p.add_argument("--model-name", default=None, help="registered model name (env RATCHET_MODEL_NAME; default fraud)")
    p.add_argument("--production", default=None,
                   help="production version or @alias (env RATCHET_PRODUCTION_VERSION; default @production)")
    p.add_argument("--canary", default=None, help="canary version or @alias (env RATCHET_CANARY_VERSION; default none)")
    p.add_argument("--canary-weight", default=None,
                   help="percent of cards routed to the canary, 0..100 (env RATCHET_CANARY_WEIGHT; default 0)")
    p.add_argument("--canary-cohort", default=None,
                   help="restrict the canary to slice values, e.g. 'country=FR,BE' (env RATCHET_CANARY_COHORT)")
    p.add_argument("--shadow", default=None, help="shadow version or @alias (env RATCHET_SHADOW_VERSION; default none)")
    p.add_argument("--decision-log", default=None,
                   help="directory (or pyarrow filesystem URI) for the Parquet decision log (env RATCHET_DECISION_LOG)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--admin-token", default=None,
                   help="bearer token required by /admin/* (env RATCHET_ADMIN_TOKEN; default none)")
    p.add_argument("--log-rotate-rows", type=int, default=100_000, help="decision-log rows per file (default 100000)")
    p.add_argument("--log-rotate-seconds", type=float, default=60.0,
                   help="start a new decision-log file at least this often (default 60)")
    p.add_argument("--shadow-queue", type=int, default=10_000,
                   help="shadow requests waiting at most; more are dropped and counted (default 10000)")
    p.add_argument("--shadow-timeout-ms", type=float, default=50.0,
                   help="a shadow scoring slower than this counts as a timeout (default 50)")
    p.add_argument("--exploration", default=None, metavar="FILE",
                   help="exploration policy file: let a random, logged share of production's would-be blocks "
                        "through (see contracts/exploration.yaml; env RATCHET_EXPLORATION; default off)")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ratchet.serving",
                                description="The ratchet decision service (same flags as `ratchet serve`).")
    return add_serve_arguments(p)


def options_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeOptions:
    """Flags win over env vars, env vars over defaults."""
    env = os.environ if environ is None else environ

    def pick(name: str) -> Any:
        v = getattr(args, name, None)
        return v if v is not None else env.get(ENV[name]) if name in ENV else None

    production = parse_version_ref(pick("production"), "--production")
    stages = StageConfig(
        production=production if production is not None else "production",
        canary=parse_version_ref(pick("canary"), "--canary"),
        canary_weight=parse_weight(pick("canary_weight")),
        shadow=parse_version_ref(pick("shadow"), "--shadow"),
        cohort=parse_cohort(getattr(args, "canary_cohort", None) or env.get(ENV["cohort"])),
    )
    if stages.canary is None and stages.canary_weight:
        raise SpecError("--canary-weight is set but no --canary version is given")
    exploration_file = pick("exploration") or None
    return ServeOptions(
        tracking_uri=pick("tracking_uri") or None,
        model_name=pick("model_name") or "fraud",
        stages=stages,
        decision_log=pick("decision_log") or None,
        host=args.host, port=args.port,
        admin_token=pick("admin_token") or None,
        log_rotate_rows=args.log_rotate_rows, log_rotate_seconds=args.log_rotate_seconds,
        shadow_queue=args.shadow_queue, shadow_timeout_ms=args.shadow_timeout_ms,
        exploration=load_exploration(exploration_file), exploration_file=exploration_file,
    )


def load_exploration(path: str | None) -> ExplorationPolicy | None:
    """The policy in `path` (None: exploration off); a bad file is a SpecError naming file, line and key."""
    if path is None:
        return None
    from ratchet.exploration import load_exploration_policy  # pydantic and YAML: only when asked for

    return load_exploration_policy(path)
