"""What people did with threshold suggestions, and whether they have stopped changing them.

Pure functions: turn an approval (edits, rejections) into per-merchant decisions, build
the append-only ledger entry that records them, and judge the graduation rule over the
ledger. Reading and writing the ledger lives in ratchet.thresholds.cycle.

Decisions, per merchant and per cycle:
- accepted: the suggested threshold, unchanged;
- edited: the person chose another value (recorded, with the edit = approved - suggested);
- rejected: the merchant gets no threshold of its own; it falls back to the version's
  global threshold. (To keep today's value instead, --set it: that is an edit.)
- auto: applied without a person (policy mode: auto).
The global threshold is a suggestion too, named '*'; it can be edited, not rejected.

An approval whose edits move a blocking contract clause's slice beyond its allowance is
refused (ratchet.thresholds.cycle); forced through (--force --reason), the entry records
`forced`: the reason and the clauses, slices and numbers it overrode.

Approving a version that already has an approval writes a new entry that supersedes the
old one (`supersedes`: its cycle); entries are never rewritten, and graduation counts
one cycle per version, its latest decision.

    >>> approval = decide(suggestions, parse_edits(["m0001=0.62"]), ["m0002"], actor="alice")
    >>> report = graduation(entries, policy.graduation)
    >>> report.met, report.sentence
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ratchet.errors import RatchetError
from ratchet.thresholds.policy import Graduation
from ratchet.thresholds.suggest import GLOBAL, Suggestions

ENTRY_FORMAT = "ratchet.thresholds.ledger/1"
DECISIONS = ("accepted", "edited", "rejected", "auto")
#: Comparisons at the rule's boundary forgive float noise (0.52 - 0.50 is 0.020000000000000018).
EPS = 1e-9


class ThresholdError(RatchetError):
    """A threshold review or approval cannot go ahead; the message says what to change."""


def parse_edits(items: list[str] | None) -> dict[str, float]:
    """`--set MERCHANT=VALUE` arguments -> {merchant: value}, each value a number in [0, 1]."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, raw = item.rpartition("=")
        if not sep or not name:
            raise ThresholdError(f"--set {item!r}: expected MERCHANT=VALUE, e.g. --set m0001=0.62 (or '*'=0.5 "
                                 "for the global threshold)")
        try:
            value = float(raw)
        except ValueError:
            raise ThresholdError(f"--set {item!r}: {raw!r} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ThresholdError(f"--set {item!r}: a threshold must be within [0, 1] (a payment is blocked when "
                                 f"its score >= threshold), got {raw}")
        if name in out and out[name] != value:
            raise ThresholdError(f"--set gives merchant {name!r} two values ({out[name]:g} and {value:g}); keep one")
        out[name] = value
    return out


@dataclass(frozen=True)
class Decision:
    merchant: str
    suggested: float
    approved: float | None  # None: rejected (falls back to the global threshold)
    decision: str

    @property
    def edit(self) -> float | None:
        return None if self.approved is None or self.decision != "edited" else self.approved - self.suggested

    def to_dict(self) -> dict[str, Any]:
        return {"merchant": self.merchant, "suggested": self.suggested, "approved": self.approved,
                "decision": self.decision, "edit": self.edit}


@dataclass(frozen=True)
class Approval:
    """The decisions on one version's suggestions and the thresholds they produce."""

    decisions: tuple[Decision, ...]
    threshold: float
    merchant_thresholds: dict[str, float]
    actor: str
    mode: str
    forced: dict[str, Any] | None = None  # {"reason": ..., "clauses": [breach, ...]}: contract clauses overridden

    def summary(self) -> dict[str, Any]:
        return summarise([d.to_dict() for d in self.decisions])


def summarise(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, the share accepted unchanged and the edit sizes of a cycle's decisions."""
    n = len(decisions)
    count = {k: sum(1 for d in decisions if d["decision"] == k) for k in DECISIONS}
    edits = [abs(d["edit"]) for d in decisions if d.get("edit") is not None]
    unchanged = count["accepted"] + count["auto"]
    return {"suggestions": n, **count, "accepted_share": (unchanged / n) if n else 1.0,
            "max_edit": max(edits) if edits else 0.0, "mean_edit": (sum(edits) / len(edits)) if edits else 0.0}


def decide(s: Suggestions, edits: dict[str, float], rejects: list[str] | None, *, actor: str,
           mode: str = "suggest") -> Approval:
    """Per-merchant decisions for an approval; raises ThresholdError (naming the merchant)
    for anything it cannot apply, before anything is written."""
    rejects = list(dict.fromkeys(rejects or []))
    listed = {m["merchant"]: m for m in s.merchants}
    known = {GLOBAL, *listed}
    unknown = [m for m in [*edits, *rejects] if m not in known]
    if unknown:
        sample = ", ".join(list(listed)[:8]) + (" ..." if len(listed) > 8 else "")
        raise ThresholdError(f"unknown merchant(s) {', '.join(map(repr, unknown))}: not in version "
                             f"{s.version}'s suggestions (listed: '*' (global){', ' + sample if sample else ''}); "
                             "see `ratchet thresholds review`")
    both = sorted(set(edits) & set(rejects))
    if both:
        raise ThresholdError(f"merchant(s) {', '.join(map(repr, both))} both --set and --reject: choose one")
    if GLOBAL in rejects:
        raise ThresholdError("the global threshold '*' cannot be rejected (every other merchant needs one); "
                             "--set '*'=VALUE to change it")
    not_own = [m for m in rejects if listed[m]["source"] != "merchant"]
    if not_own:
        raise ThresholdError(f"merchant(s) {', '.join(map(repr, not_own))} have no threshold of their own to reject "
                             "(they already use the global threshold)")
    auto = mode == "auto"

    def one(name: str, suggested: float, own: bool) -> Decision | None:
        if auto:
            return Decision(name, suggested, suggested, "auto")
        if name in rejects:
            return Decision(name, suggested, None, "rejected")
        if name in edits:
            value = edits[name]
            return Decision(name, suggested, value, "accepted" if value == suggested else "edited")
        return Decision(name, suggested, suggested, "accepted") if own else None

    decisions = [one(GLOBAL, s.global_threshold, True)]
    for m in s.merchants:
        decisions.append(one(m["merchant"], float(m["suggested_threshold"]), m["source"] == "merchant"))
    kept = tuple(d for d in decisions if d is not None)
    glob = next(d.approved for d in kept if d.merchant == GLOBAL)
    per_merchant = {d.merchant: float(d.approved) for d in kept if d.merchant != GLOBAL and d.approved is not None}
    return Approval(decisions=kept, threshold=float(glob), merchant_thresholds=per_merchant, actor=actor, mode=mode)


def digest(entry: dict[str, Any]) -> str:
    """sha256 of an entry's canonical JSON (without its own digest and reader fields)."""
    body = {k: v for k, v in entry.items() if k != "digest" and not k.startswith("_")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def build_entry(approval: Approval, s: Suggestions, *, model: str, version: int, cycle: int, at: str,
                previous: list[dict[str, Any]]) -> dict[str, Any]:
    """The ledger entry for one approval; chained to the previous entry by its digest."""
    earlier = [e for e in previous if e.get("version") == version]
    entry = {
        "format": ENTRY_FORMAT, "model": model, "version": version, "cycle": cycle, "at": at,
        "actor": approval.actor, "mode": approval.mode, "objective": s.objective,
        "baseline_version": s.baseline_version, "supersedes": earlier[-1]["cycle"] if earlier else None,
        "decisions": [d.to_dict() for d in approval.decisions], "summary": approval.summary(),
        "approved": {"threshold": approval.threshold, "merchant_thresholds": approval.merchant_thresholds},
        "prev_digest": previous[-1].get("digest") if previous else None,
    }
    if approval.forced is not None:  # only then: entries without it keep their digests
        entry["forced"] = approval.forced
    entry["digest"] = digest(entry)
    return entry


def verify_chain(entries: list[dict[str, Any]]) -> list[str]:
    """Problems with the ledger's integrity (edited entries, missing ones); [] when intact."""
    problems = []
    prev = None
    for i, e in enumerate(entries):
        if e.get("digest") != digest(e):
            problems.append(f"cycle {e.get('cycle')}: content does not match its digest (edited after writing?)")
        if e.get("prev_digest") != prev:
            problems.append(f"cycle {e.get('cycle')}: does not follow the entry before it (an entry is missing?)")
        if e.get("cycle") != i + 1:
            problems.append(f"cycle {e.get('cycle')}: expected cycle number {i + 1}")
        if e.get("_deleted"):
            problems.append(f"cycle {e.get('cycle')}: its MLflow run was deleted (still counted)")
        prev = e.get("digest")
    return problems


def effective(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per version: its latest decision, in the order of those decisions."""
    latest: dict[Any, dict[str, Any]] = {}
    for e in entries:
        latest[e.get("version")] = e
    return sorted(latest.values(), key=lambda e: int(e.get("cycle", 0)))


def _meets(e: dict[str, Any], rule: Graduation) -> tuple[bool, str]:
    s = e["summary"]
    if s["accepted_share"] < rule.min_accepted_share - EPS:
        return False, (f"cycle {e['cycle']} (version {e['version']}): {s['accepted_share']:.0%} accepted unchanged "
                       f"< {rule.min_accepted_share:.0%}")
    if s["max_edit"] > rule.max_edit + EPS:
        return False, f"cycle {e['cycle']} (version {e['version']}): an edit of {s['max_edit']:.4g} > {rule.max_edit:g}"
    return True, ""


@dataclass(frozen=True)
class GraduationReport:
    met: bool
    streak: int              # consecutive reviewed cycles, most recent backwards, that meet the rule
    rule: Graduation
    reviewed: int            # reviewed (mode suggest) cycles in the ledger
    window: list[dict[str, Any]] = field(default_factory=list)  # the last N reviewed cycles' summaries
    sentence: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"met": self.met, "streak": self.streak, "rule": self.rule.describe(), "cycles_needed": self.rule.cycles,
                "reviewed_cycles": self.reviewed, "window": self.window, "sentence": self.sentence}


def graduation(entries: list[dict[str, Any]], rule: Graduation) -> GraduationReport:
    """Is the rule met? Judged on the reviewed cycles (a person decided, mode suggest), one per
    version; cycles applied automatically are evidence of nothing and are skipped."""
    reviewed = [e for e in effective(entries) if e.get("mode") == "suggest"]
    streak, why_not = 0, ""
    for e in reversed(reviewed):
        ok, why = _meets(e, rule)
        if not ok:
            why_not = why
            break
        streak += 1
    window = [{"cycle": e["cycle"], "version": e["version"], "actor": e["actor"], "at": e["at"],
               **{k: e["summary"][k] for k in ("suggestions", "accepted", "edited", "rejected", "accepted_share",
                                               "max_edit", "mean_edit")},
               "meets_rule": _meets(e, rule)[0]} for e in reviewed[-rule.cycles:]]
    met = streak >= rule.cycles
    if met:
        sentence = (f"graduation rule MET: the last {rule.cycles} reviewed cycles each had at least "
                    f"{rule.min_accepted_share:.0%} of suggestions accepted unchanged and no edit larger than "
                    f"{rule.max_edit:g}. People have stopped changing the suggestions: thresholds can run "
                    "automatically (set mode: auto in the threshold policy).")
    else:
        sentence = (f"graduation rule not met: {min(streak, rule.cycles)} of {rule.cycles} consecutive reviewed cycles "
                    f"meet it ({rule.describe()})" + (f"; most recent miss: {why_not}" if why_not else "")
                    + ("" if why_not or len(reviewed) >= rule.cycles
                       else f"; {rule.cycles - len(reviewed)} more reviewed cycle(s) needed"))
    return GraduationReport(met=met, streak=streak, rule=rule, reviewed=len(reviewed), window=window,
                            sentence=sentence)
