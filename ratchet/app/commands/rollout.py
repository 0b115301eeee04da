"""CLI entry points for people: controller, promote, rollback, status, approve.

Each takes the argparse Namespace and returns an exit code (ratchet.app.cli wires them).
promote/rollback/approve only change the registry (the intent); the controller acts.
"""

from __future__ import annotations

import argparse
import getpass
import json
from typing import TYPE_CHECKING, Any

from ratchet.errors import RatchetError, RegistryError
from ratchet.rollout.controller import read_intent
from ratchet.rollout.plan import RolloutPlan, load_plan
from ratchet.rollout.planner import approval_change
from ratchet.rollout.state import (
    OPEN_QUESTIONS_TAG, POLICY_WAIVER_TAG, WAIVE_ALL, WAIVED_TAG, iso, parse_open_questions, parse_waived,
)

from ratchet.stages.model import Stage, State, previous_production, rollback_change

if TYPE_CHECKING:
    from ratchet.registry import Registry

EXIT_OK, EXIT_REJECTED = 0, 1
DEFAULT_PLAN = "contracts/rollout.yaml"


def _registry(args: argparse.Namespace) -> Registry:
    from ratchet.registry import Registry

    return Registry(getattr(args, "tracking_uri", None), getattr(args, "model_name", "fraud"))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


# ---- library functions (tested directly) ----------------------------------------------
def promote(registry: Registry, version: int, stage: str, *, actor: str, reason: str = "") -> str:
    """Set the alias (the intent); the controller makes the deployment follow."""
    registry.set_stage(version, stage, actor=actor, reason=reason or f"promoted to {stage} by {actor}")
    return f"@{stage} -> v{version}; the controller will apply it on its next pass"


def rollback(registry: Registry, *, actor: str, reason: str | None = None, stage: str | None = None) -> str:
    """Undo the latest step as the stage model decides (ratchet.stages.rollback_change):
    withdraw the canary, else the shadow, else move production back to the version it replaced."""
    aliases = registry.aliases()
    held = set(aliases.values())
    states = {v: registry.tags(v).get("state", "") for v in held}
    previous = None
    undo_production = stage == Stage.PRODUCTION or (
        stage is None and aliases.get(Stage.CANARY) is None and aliases.get(Stage.SHADOW) is None)
    if undo_production and aliases.get(Stage.PRODUCTION) is not None:
        previous = previous_production(aliases[Stage.PRODUCTION], _retired_at(registry))
        if previous is not None:
            states[previous] = registry.tags(previous).get("state", "")
    change = rollback_change(aliases, states, reason=reason or f"manual rollback by {actor}", stage=stage,
                             previous=previous)
    registry.apply(change, actor=actor)
    return change.summary


def _retired_at(registry: Registry) -> dict[int, str]:
    """Each retired version -> when it last became retired ('' when its history does not say)."""
    out: dict[int, str] = {}
    for v in registry.versions():
        if registry.tags(v).get("state") == State.RETIRED:
            left = [e.get("at", "") for e in registry.history(v) if e.get("to") == State.RETIRED]
            out[v] = max(left) if left else ""
    return out


def approve(registry: Registry, version: int, plan: RolloutPlan, *, actor: str, at: str | None = None) -> str:
    """Record a person's approval of the version's next gate (suggest mode, or after an undo)."""
    from datetime import datetime, timezone

    intent = read_intent(registry)
    if version not in intent.versions:
        registry.tags(version)  # raises a RegistryError naming the known versions
    change = approval_change(intent, version, plan, actor=actor, at=at or iso(datetime.now(timezone.utc)))
    registry.apply(change, actor=actor)
    return change.summary


def waive(registry: Registry, version: int, keys: list[str], *, actor: str, reason: str | None,
          at: str | None = None) -> str:
    """Record a person's waiver of open questions of `version` ('clause[slice]' keys, or 'all').

    Every check happens before the first write: an empty reason, a key that is not an open
    question of the version, or a version without open questions is a RatchetError."""
    from datetime import datetime, timezone

    if not reason or not reason.strip():
        raise RatchetError("a waiver needs a reason: add --reason \"...\" (it is kept in the version's history)")
    tags = registry.tags(version)  # RegistryError for an unknown version
    open_q = parse_open_questions(tags.get(OPEN_QUESTIONS_TAG))
    if not open_q:
        raise RatchetError(f"version {version} has no open questions to waive (its offline verdict resolved every "
                           "blocking clause x slice)")
    unknown = [k for k in keys if k != WAIVE_ALL and k not in open_q]
    if unknown:
        raise RatchetError(f"not an open question of version {version}: {', '.join(unknown)}; its open questions "
                           f"are e.g. {', '.join(sorted(open_q)[:3])} (`ratchet status --format json` lists them), "
                           "or waive 'all'")
    when = at or iso(datetime.now(timezone.utc))
    waived = parse_waived(tags.get(WAIVED_TAG))
    entry = {"by": actor, "at": when, "reason": reason.strip()}
    waived.update({k: entry for k in keys})
    registry.set_tags(version, {WAIVED_TAG: json.dumps(waived, sort_keys=True)})
    what = "all open questions" if WAIVE_ALL in keys else ", ".join(keys)
    registry.record_transition(version, tags.get("state") or None, tags.get("state") or "shadow", actor=actor,
                               reason=f"waived {what}: {reason.strip()}", evidence={"waived": keys[:50]})
    return f"waived {what} of v{version} by {actor}: {reason.strip()}"


def open_question_status(registry: Registry, version: int, live: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A version's open questions: all, waived, and still unresolved (given keys passed live)."""
    tags = registry.tags(version)
    open_q = parse_open_questions(tags.get(OPEN_QUESTIONS_TAG))
    waived = parse_waived(tags.get(WAIVED_TAG), tags.get(POLICY_WAIVER_TAG))
    unresolved = set() if WAIVE_ALL in waived else open_q - live - set(waived)
    return {"open": len(open_q), "waived": sorted(waived), "unresolved": sorted(unresolved)}


def status(registry: Registry, backend=None) -> dict[str, Any]:  # noqa: ANN001
    """Stages, versions, states, weights and each version's last event."""
    fact = backend.read() if backend is not None else None
    intent = read_intent(registry, fact)
    rows = []
    for stage in ("production", "canary", "shadow", "staging"):
        v = intent.aliases.get(stage)
        if v is None:
            continue
        info = intent.info(v)
        hist = registry.history(v)
        last = hist[-1] if hist else {}
        weight = None
        if stage == "canary":
            weight = fact.canary_weight if fact is not None and fact.canary == v else None
        oq = open_question_status(registry, v) if stage in ("shadow", "staging") else None
        rows.append({"stage": stage, "version": v, "state": info.state, "open_questions": oq,
                     "step": info.progress.step if info.progress.stage == "canary" else None,
                     "weight": weight, "paused": info.progress.paused,
                     "last_event_at": last.get("at"),
                     "last_event": (last.get("evidence") or {}).get("event") or
                     f"{last.get('from')} -> {last.get('to')}: {last.get('reason', '')}" if last else ""})
    return {"rows": rows, "deployment": fact.fingerprint() if fact is not None else None,
            "pending": (intent.pending or {}).get("event")}


def render_status(st: dict[str, Any]) -> str:
    head = ["STAGE", "VERSION", "STATE", "WEIGHT", "LAST EVENT AT", "LAST EVENT"]
    lines = [head]
    for r in st["rows"]:
        w = "" if r["weight"] is None else f"{r['weight']:g}%"
        if r["paused"]:
            w += " (paused)"
        lines.append([r["stage"], f"v{r['version']}", r["state"], w, r["last_event_at"] or "", r["last_event"][:100]])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head) - 1)]
    out = ["  ".join(str(c).ljust(widths[i]) if i < len(widths) else str(c) for i, c in enumerate(row)) for row in lines]
    if not st["rows"]:
        out.append("(no version holds a stage)")
    for r in st["rows"]:
        oq = r.get("open_questions")
        if oq and oq["open"]:
            left = oq["unresolved"]
            out.append(f"v{r['version']} open questions of its offline verdict: {oq['open']} "
                       f"({len(oq['waived'])} waived; {len(left)} not waived"
                       + (f", e.g. {', '.join(left[:3])}" if left else "") + ")"
                       + (f"; waive with `ratchet approve {r['version']} --waive KEY|all --reason ...`" if left else ""))
    if st.get("deployment"):
        out.append(f"deployment: {st['deployment']}")
    if st.get("pending"):
        out.append(f"interrupted action to resume: {st['pending']}")
    return "\n".join(out)


# ---- argparse entry points --------------------------------------------------------------
def _plan(args: argparse.Namespace) -> RolloutPlan:
    from ratchet.files import project_file

    return load_plan(project_file(getattr(args, "plan", None) or DEFAULT_PLAN))


def _backend(args: argparse.Namespace):
    kind = getattr(args, "backend", None) or "memory"
    if kind == "memory":
        from ratchet.rollout.backends.memory import MemoryBackend

        return MemoryBackend()
    if kind == "local":
        return _local_backend(args)
    if kind == "kubernetes":
        import os

        from ratchet.rollout.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(getattr(args, "namespace", None) or os.environ.get("RATCHET_NAMESPACE"),
                                 getattr(args, "deployment", None) or os.environ.get("RATCHET_DEPLOYMENT")
                                 or "ratchet-decision",
                                 container=getattr(args, "container", None) or "decision",
                                 kubeconfig=getattr(args, "kubeconfig", None), context=getattr(args, "context", None))
    raise RatchetError(f"unknown backend '{kind}'; use --backend memory, local or kubernetes")


def _local_backend(args: argparse.Namespace):  # -> LocalProcessBackend
    """The decision service at --service-url; state file in --state-dir (default: next to the
    MLflow store); with --serve, the backend starts the service there when none answers."""
    import os

    from ratchet.registry.store import absolute_tracking_uri, default_tracking_uri
    from ratchet.rollout.backends.local import LocalProcessBackend, ServeCommand, default_state_dir

    tracking = getattr(args, "tracking_uri", None)
    uri = absolute_tracking_uri(tracking) if tracking else default_tracking_uri()
    serve = None
    if getattr(args, "serve", False):
        serve = ServeCommand(uri, getattr(args, "model_name", "fraud"),
                             decision_log=getattr(args, "decision_log", None))
    return LocalProcessBackend(getattr(args, "service_url", None) or "http://127.0.0.1:8080",
                               getattr(args, "state_dir", None) or default_state_dir(uri),
                               admin_token=getattr(args, "admin_token", None) or os.environ.get("RATCHET_ADMIN_TOKEN"),
                               serve=serve)


def controller_cli(args: argparse.Namespace) -> int:
    from ratchet.rollout.controller import Controller

    plan = _plan(args)
    observe = None
    if getattr(args, "decision_log", None):
        from pathlib import Path

        from ratchet.files import read_table
        from ratchet.rollout.observe import decision_log_source, live_observer

        labels_path = getattr(args, "labels", None)

        def labels():  # matured labels grow between passes: re-read each time
            return read_table(labels_path) if Path(labels_path).exists() else None

        # the folder `ratchet serve` writes (each new file read once) or one log file (re-read on change)
        observe = live_observer(decision_log_source(args.decision_log), plan, labels if labels_path else None)
    backend = _backend(args)
    ctrl = Controller(_registry(args), backend, plan, observe, actor=f"ratchet controller ({_user()})")
    try:
        if getattr(args, "once", False):
            ctrl.run_once()
            return EXIT_OK
        ctrl.run_forever(getattr(args, "interval", None))
        return EXIT_OK
    finally:
        if hasattr(backend, "stop"):
            backend.stop()  # a service the backend started (--serve) ends with the controller


def promote_cli(args: argparse.Namespace) -> int:
    print(promote(_registry(args), int(args.version), args.to, actor=_user(), reason=getattr(args, "reason", None) or ""))
    return EXIT_OK


def rollback_cli(args: argparse.Namespace) -> int:
    user = _user()
    print(rollback(_registry(args), actor=user, reason=getattr(args, "reason", None),
                   stage=getattr(args, "stage", None)))
    return EXIT_OK


def approve_cli(args: argparse.Namespace) -> int:
    reg = _registry(args)
    version = getattr(args, "version", None)
    plan = _plan(args)
    if version is None:
        aliases = reg.aliases()
        version = next((aliases[s] for s in ("canary", "shadow", "staging") if s in aliases), None)
        if version is None:
            raise RegistryError("nothing awaits approval: no version at @canary, @shadow or @staging")
    if getattr(args, "waive", None):
        print(waive(reg, int(version), list(args.waive), actor=_user(), reason=getattr(args, "reason", None)))
        return EXIT_OK
    print(approve(reg, int(version), plan, actor=_user()))
    return EXIT_OK


def status_cli(args: argparse.Namespace) -> int:
    registry = _registry(args)
    st = status(registry)
    plot = getattr(args, "plot", None)
    if plot:
        from pathlib import Path

        from ratchet.rollout.ramp_plot import plot_ramp

        written = plot_ramp({v: registry.history(v) for v in registry.versions()}, Path(plot))
        st["plot"] = str(written) if written else None
        production = registry.alias_version("production")
        if written and production is not None:  # visible in the MLflow UI next to the version
            st["plot_run_id"] = registry.log_monitoring("ramp", production, artifacts={str(written): "ramp"})
    if getattr(args, "format", "text") == "json":
        print(json.dumps(st, indent=2, default=str))
    else:
        print(render_status(st))
        if plot:
            print(f"ramp history: {st['plot']}" if st["plot"] else "ramp history: no version has ramped yet")
    return EXIT_OK
