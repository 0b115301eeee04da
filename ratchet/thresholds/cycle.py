"""The suggest -> review -> approve cycle against the registry (the acting side).

A release's suggestions are logged with its version (artifacts thresholds/suggestions.*
of the version's MLflow run) and the version is tagged:

    thresholds         pending | approved | auto | bootstrap | not_reviewed (gate rejected it)
    threshold          the global threshold (suggested until approved, then approved)
    merchant_thresholds  JSON {merchant: threshold}, written by an approval
    thresholds_cycle   the ledger cycle that set them

The decision service reads `threshold` and `merchant_thresholds`, so what it applies
for a version is exactly what was approved (or, before approval, the global suggestion
for every merchant). Every approval is one entry in the ledger (an MLflow experiment,
see Registry.append_ledger_entry), written before the tags it explains.

Suggestions made under a contract carry its blocking block-rate clauses and the scored
rows they were judged on (thresholds/suggestions-scored.parquet). An approval whose
edits or rejections move one of those slices beyond its allowance (point estimate) is
refused with the clause, the slice and the numbers, and nothing is written; with
force=True and a reason it goes through and the ledger entry records what was forced.
`merchant_thresholds` must fit one MLflow model-version tag (MAX_TAG_CHARS).

    >>> record_release(registry, version, suggestions, passed=True)      # register step
    >>> approve_version(registry, 7, edits={"m0001": 0.62}, rejects=["m0002"], actor="alice")
    >>> print(status_text(status(registry, load_policy())))
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratchet.errors import RegistryError
from ratchet.thresholds.constraints import Breach
from ratchet.thresholds.ledger import Approval, ThresholdError, build_entry, decide, graduation, verify_chain
from ratchet.thresholds.policy import ThresholdPolicy
from ratchet.thresholds.suggest import FILES, SCORED_FILE, Suggestions

if TYPE_CHECKING:
    from ratchet.registry import Registry


ARTIFACT_DIR = "thresholds"
TAG_STATE, TAG_CYCLE = "thresholds", "thresholds_cycle"
#: The longest model-version tag value MLflow accepts (MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH in
#: mlflow.utils.validation, MLflow 3.x; the SQL column is TEXT since migration bda7b8c39065 --
#: a store created before it and not upgraded (`mlflow db upgrade`) holds only 5000 characters).
#: About 30 characters per merchant entry: some 3,000 merchants with their own threshold.
MAX_TAG_CHARS = 100_000


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def suggestion_files(folder: str | Path, stage: str | Path | None = None) -> dict[str, str]:
    """{artifact dir: local folder} for a release's suggestion files, when `folder` has them
    ({} otherwise). With `stage`, the three files are copied there first, so the rest of
    `folder` (the verdict, reports) is not logged twice."""
    import shutil

    f = Path(folder)
    if not all((f / n).exists() for n in FILES):
        return {}
    if stage is None:
        return {ARTIFACT_DIR: str(f)}
    Path(stage).mkdir(parents=True, exist_ok=True)
    for n in (*FILES, SCORED_FILE):  # the scored rows exist when the suggestions honoured a contract
        if (f / n).exists():
            shutil.copy2(f / n, Path(stage) / n)
    return {ARTIFACT_DIR: str(stage)}


def record_release(registry: Registry, version: int, s: Suggestions, *, passed: bool) -> str:
    """Tag a just-registered version with its suggested thresholds; in auto mode apply them
    at once (ledger actor 'auto'). Returns the version's thresholds state."""
    base = {"threshold": repr(float(s.global_threshold))}
    if s.bootstrap:
        state = "bootstrap"
    elif not passed:
        state = "not_reviewed"  # the gate rejected the version: its thresholds will never be used
    elif s.mode == "auto":
        s.version = version
        apply_approval(registry, version, s, decide(s, {}, [], actor="auto", mode="auto"))
        return "auto"
    else:
        state = "pending"
    registry.set_tags(version, {**base, TAG_STATE: state})
    return state


def load_suggestions(registry: Registry, version: int) -> Suggestions:
    """A version's suggestions from its MLflow run; ThresholdError when it has none."""
    text = registry.version_artifact_text(version, f"{ARTIFACT_DIR}/suggestions.json")
    if text is None:
        raise ThresholdError(f"version {version} of '{registry.model_name}' has no threshold suggestions (it was "
                             "registered without them, e.g. before per-merchant thresholds); nothing to review or approve")
    s = Suggestions.from_dict(json.loads(text))
    s.version = version
    return s


def merchant_tag(merchant_thresholds: dict[str, float]) -> str:
    """The `merchant_thresholds` tag value; ThresholdError when it does not fit one tag."""
    text = json.dumps(dict(sorted(merchant_thresholds.items())))
    if len(text) > MAX_TAG_CHARS:
        raise ThresholdError(f"{len(merchant_thresholds):,} merchant thresholds take {len(text):,} characters, more "
                             f"than an MLflow tag holds ({MAX_TAG_CHARS:,}); --reject some small merchants (they use "
                             "the global threshold) or raise the policy's min_support")
    return text


def apply_approval(registry: Registry, version: int, s: Suggestions, approval: Approval, at: str | None = None) -> dict[str, Any]:
    """Append the ledger entry, then set the version's threshold tags; the entry."""
    per_merchant = merchant_tag(approval.merchant_thresholds)  # before anything is written
    entries = registry.ledger_entries()
    entry = build_entry(approval, s, model=registry.model_name, version=version, cycle=len(entries) + 1,
                        at=at or _now(), previous=entries)
    summ = entry["summary"]
    registry.append_ledger_entry(
        entry, tags={"ratchet.ledger.cycle": str(entry["cycle"]), "ratchet.ledger.version": str(version),
                     "ratchet.ledger.actor": approval.actor, "ratchet.ledger.mode": approval.mode,
                     "ratchet.ledger.digest": entry["digest"],
                     **({"ratchet.ledger.forced": "true"} if approval.forced is not None else {}),
                     **{f"ratchet.ledger.{k}": str(summ[k]) for k in ("accepted", "edited", "rejected", "auto")}},
        metrics={"accepted_share": summ["accepted_share"], "max_edit": summ["max_edit"],
                 "suggestions": summ["suggestions"]})
    registry.set_tags(version, {
        "threshold": repr(float(approval.threshold)),
        "merchant_thresholds": per_merchant,
        TAG_STATE: "auto" if approval.mode == "auto" else "approved",
        TAG_CYCLE: str(entry["cycle"]),
    })
    return entry


def approve_version(registry: Registry, version: int, edits: dict[str, float] | None = None, rejects: list[str] | None = None,
                    *, actor: str, at: str | None = None, force: bool = False,
                    reason: str | None = None) -> tuple[dict[str, Any], Suggestions]:
    """Record a person's approval of a version's suggestions and apply it.

    Every check happens before the first write: an unknown version or merchant, a value
    outside [0, 1] (see parse_edits), a version without suggestions, a bootstrap or a
    version its gate rejected each raise ThresholdError / RegistryError and change nothing.
    So does an edit or rejection that moves a blocking contract clause's slice beyond its
    allowance, unless `force` with a `reason`: then the entry records both.
    """
    reason = (reason or "").strip()
    if force and not reason:
        raise ThresholdError('--force needs --reason "why": the ledger records which contract clauses were '
                             "overridden, by whom and why")
    if reason and not force:
        raise ThresholdError("--reason explains a --force; add --force, or drop --reason")
    tags = registry.tags(version)  # RegistryError for an unknown version
    s = load_suggestions(registry, version)
    if not s.reviewable():
        raise ThresholdError(f"version {version} is a bootstrap release: it has only a global threshold "
                             f"({s.global_threshold:.4g}) and no per-merchant suggestions to approve")
    if tags.get("state") == "rejected":
        raise ThresholdError(f"version {version} was rejected by its gate ({tags.get('reason', '')[:200]}); "
                             "its thresholds will never be used, so there is nothing to approve")
    approval = decide(s, edits or {}, rejects or [], actor=actor, mode="suggest")
    judged = rejudge(registry, version, s, approval)
    if not judged.ok and not force:
        raise ThresholdError(judged.unjudged or refusal_text(version, judged))
    if not judged.ok:
        approval = replace(approval, forced={"reason": reason, "clauses": [b.to_dict() for b in judged.broken],
                                             **({"unjudged": judged.unjudged} if judged.unjudged else {})})
    return apply_approval(registry, version, s, approval, at=at), s


@dataclass(frozen=True)
class Rejudged:
    """An approval re-judged by the contract: the slices it breaks, a hint for each, or why it could not be judged."""

    broken: tuple[Breach, ...] = ()
    hints: tuple[str, ...] = ()
    unjudged: str = ""

    @property
    def ok(self) -> bool:
        return not self.broken and not self.unjudged


def scored_rows(registry: Registry, version: int):  # -> pd.DataFrame | None
    """The scored rows stored with a version's suggestions, or None when it has none."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = registry.release_artifact(version, f"{ARTIFACT_DIR}/{SCORED_FILE}", tmp)
        except RegistryError:
            return None
        except Exception:  # noqa: BLE001 -- MLflow's error for a missing artifact (only registry/ imports mlflow)
            return None
        return pd.read_parquet(local) if Path(local).is_file() else None


def rejudge(registry: Registry, version: int, s: Suggestions, approval: Approval) -> Rejudged:
    """The slices the approval puts (further) beyond their allowance compared with the
    suggestion. Unchanged suggestions, or suggestions made without a contract, need no judging."""
    from ratchet.thresholds.contract_fit import edit_hint, judge_edit

    section = s.contract or {}
    approved = (approval.threshold, approval.merchant_thresholds)
    if not section.get("clauses") or approved == s.thresholds():
        return Rejudged()
    rows = scored_rows(registry, version)
    if rows is None:
        return Rejudged(unjudged=(
            f"version {version}'s suggestions honour contract {section.get('name')!r}, but its scored rows "
            f"({ARTIFACT_DIR}/{SCORED_FILE}) are missing, so edits cannot be re-judged; approve the suggestions "
            'unchanged, or --force --reason "why" to record an unjudged edit'))
    broken = tuple(judge_edit(section, rows, s.thresholds(), approved))
    return Rejudged(broken, tuple(edit_hint(section, rows, b) for b in broken))


def refusal_text(version: int, judged: Rejudged) -> str:
    """The refusal: each clause and slice with its numbers, then what to change."""
    lines = [f"approval of version {version} refused, nothing changed: it moves {len(judged.broken)} slice(s) of "
             "blocking contract clauses beyond their allowance"]
    for b, hint in list(zip(judged.broken, judged.hints))[:10]:
        lines.append(f"  - {b.sentence()}" + (f"; {hint}" if hint else ""))
    if len(judged.broken) > 10:
        lines.append(f"  ... and {len(judged.broken) - 10} more")
    lines.append(f"choose values closer to the suggestions (ratchet thresholds review {version}), or record the "
                 'override with --force --reason "why"')
    return "\n".join(lines)


def review_text(registry: Registry, version: int, limit: int | None = None) -> str:
    """The review table of a version (the `limit` largest merchants; None: all), with what is in force."""
    s = load_suggestions(registry, version)
    tags = registry.tags(version)
    state = tags.get(TAG_STATE, "unknown")
    lines = [s.to_text(limit=limit)]
    lines.append(f"state: thresholds {state}" + (f" (ledger cycle {tags[TAG_CYCLE]})" if TAG_CYCLE in tags else ""))
    if state in ("approved", "auto"):
        default, per = registry.thresholds(version)
        lines.append(f"in force: global {default:.4f}, {len(per)} merchant thresholds")
    elif state == "pending":
        lines.append("in force until approval: the global suggestion for every merchant. Approve with\n"
                     f"  ratchet thresholds approve {version} [--set MERCHANT=VALUE ...] [--reject MERCHANT ...]\n"
                     "(rejected merchants fall back to the global threshold; --set '*'=VALUE edits the global one)")
    return "\n".join(lines)


def _rollout_mode() -> str | None:
    try:
        from ratchet.files import project_file
        from ratchet.yamlfile import load_yaml

        mode = load_yaml(project_file("contracts/rollout.yaml")).data.get("mode", "suggest")
        return str(mode)
    except Exception:  # informative only: status must not fail on another file
        return None


def status(registry: Registry, policy: ThresholdPolicy) -> dict[str, Any]:
    """History of cycles, acceptance, graduation and pending versions, as a dict."""
    entries = registry.ledger_entries()
    report = graduation(entries, policy.graduation)
    pending = []
    for v in registry.versions():
        if registry.tags(v).get(TAG_STATE) == "pending":
            pending.append(v)
    cycles = [{"cycle": e["cycle"], "version": e["version"], "at": e["at"], "actor": e["actor"], "mode": e["mode"],
               "supersedes": e.get("supersedes"), "forced": bool(e.get("forced")), **e["summary"]} for e in entries]
    return {"model": registry.model_name, "policy": {"path": policy.path, "mode": policy.mode,
                                                    "objective": policy.objective},
            "promotions_mode": _rollout_mode(), "pending_versions": pending, "cycles": cycles,
            "graduation": report.to_dict(), "ledger_problems": verify_chain(entries)}


def status_text(st: dict[str, Any]) -> str:
    p = st["policy"]
    lines = [f"thresholds for model '{st['model']}': mode {p['mode']}, objective {p['objective']} ({p['path']})"]
    if st.get("promotions_mode"):
        lines.append(f"promotions (rollout plan): mode {st['promotions_mode']}")
    lines.append(f"pending review: {', '.join(f'version {v}' for v in st['pending_versions']) or 'none'}")
    if st["cycles"]:
        lines.append(f"{'cycle':>5} {'version':>7}  {'at':<25} {'actor':<14} {'mode':<8} {'n':>5} {'accepted':>8} "
                     f"{'edited':>6} {'rejected':>8} {'unchanged':>9} {'max edit':>8}")
        for c in st["cycles"]:
            sup = (f"  (supersedes cycle {c['supersedes']})" if c.get("supersedes") else "") + (
                "  (forced past the contract)" if c.get("forced") else "")
            lines.append(f"{c['cycle']:>5} {c['version']:>7}  {c['at']:<25} {str(c['actor'])[:14]:<14} {c['mode']:<8} "
                         f"{c['suggestions']:>5} {c['accepted'] + c['auto']:>8} {c['edited']:>6} {c['rejected']:>8} "
                         f"{c['accepted_share']:>9.0%} {c['max_edit']:>8.4f}{sup}")
    else:
        lines.append("no approval cycles yet")
    lines.append(st["graduation"]["sentence"])
    for problem in st["ledger_problems"]:
        lines.append(f"ledger: {problem}")
    if not st["ledger_problems"] and st["cycles"]:
        lines.append(f"ledger: {len(st['cycles'])} entries, chain intact")
    return "\n".join(lines)
