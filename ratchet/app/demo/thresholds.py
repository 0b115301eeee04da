"""The demo's threshold cycle: show the review table of a version, approve it as a person would."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ratchet.app.commands.thresholds import approval_text
from ratchet.thresholds.cycle import approve_version, load_suggestions, review_text, status, status_text
from ratchet.thresholds.ledger import ThresholdError
from ratchet.thresholds.policy import DEFAULT_PATH, load_policy

if TYPE_CHECKING:
    from ratchet.registry import Registry


def demo_cycle(registry: Registry, version: int, out: str | Path | None = None, *, actor: str = "demo-user",
               limit: int = 12) -> str:
    """Print the review table of `version`, approve it as `actor` with one edit (the largest
    merchant's threshold nudged up by 0.01) and one rejection (the second largest), then the
    status. Returns the text printed (also written to out/thresholds-demo.txt when given).

    When the contract refuses that approval (the edit or the rejection moves a blocking
    clause's slice beyond its allowance), the refusal is shown and the demo approves with
    less: the edit alone, else the suggestions unchanged.

    A version without per-merchant suggestions (bootstrap, or a release where no merchant
    had enough support), or one its gate rejected, is shown and left alone.
    """
    from ratchet.files import project_file

    s = load_suggestions(registry, version)
    parts = [f"$ ratchet thresholds review {version}", review_text(registry, version, limit=limit)]
    own = s.own()
    if not own or not s.reviewable():
        parts.append(f"(version {version} has no per-merchant suggestions to approve)")
    elif registry.tags(version).get("state") == "rejected":
        parts.append(f"(version {version} was rejected by its gate: its thresholds are not approved)")
    else:
        parts += _approve(registry, version, own, actor)
    policy = load_policy(project_file(DEFAULT_PATH))
    parts += ["$ ratchet thresholds status", status_text(status(registry, policy))]
    text = "\n".join(parts)
    print(text, flush=True)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "thresholds-demo.txt").write_text(text + "\n", encoding="utf-8")
    return text


def _approve(registry: Registry, version: int, own: list[dict], actor: str) -> list[str]:
    """Approve as a person would (one edit, one rejection), stepping back when the contract refuses."""
    edit = own[0]
    value = min(1.0, round(float(edit["suggested_threshold"]) + 0.01, 4))
    reject = [own[1]["merchant"]] if len(own) > 1 else []
    parts = []
    for edits, rejects in (({edit["merchant"]: value}, reject), ({edit["merchant"]: value}, []), ({}, [])):
        cmd = (f"$ ratchet thresholds approve {version}" + "".join(f" --set {m}={v:g}" for m, v in edits.items())
               + "".join(f" --reject {m}" for m in rejects) + f" --user {actor}")
        try:
            entry, _ = approve_version(registry, version, edits, rejects, actor=actor)
        except ThresholdError as exc:
            parts += [cmd, str(exc)]
            continue
        return parts + [cmd, approval_text(entry)]
    return parts
