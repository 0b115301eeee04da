"""Per-merchant thresholds: suggest before you automate.

Each release re-derives every large merchant's threshold for the candidate (keep the
merchant's false-positive rate at production's and maximise recall, or match its block
rate), writes the suggestions next to the verdict, and waits for a person to accept,
edit or reject them; every decision goes into an append-only ledger in MLflow. When
people stop changing the suggestions (the policy's graduation rule), `status` says so
and the policy can switch to `mode: auto`.

    >>> from ratchet.thresholds import load_policy, suggest_thresholds
    >>> s = suggest_thresholds(scored, load_policy("contracts/thresholds.yaml"))
    >>> print(s.to_text())

Given the release's contract, the suggestions also honour its blocking clauses on block
and approval rates: every judged slice (country, category, top merchant, ...) stays
within the policy's `contract_target` share of its allowance wherever feasible, and an
approval whose edits break one is refused unless forced with a reason.

Modules: policy (contracts/thresholds.yaml), optimise (one sorted pass, a threshold per
group), constraints (the contract's per-slice limits on block rates), repair (thresholds
moved until they hold), contract_fit (the two joined, and edits re-judged), suggest (the
suggestion table and its renderings), ledger (decisions, entries, graduation: pure),
cycle (registry side: record, approve, review, status). The commands are
ratchet.app.commands.thresholds; the demo's cycle is ratchet.app.demo.thresholds.
"""

from ratchet.thresholds.ledger import ThresholdError, decide, graduation, parse_edits
from ratchet.thresholds.policy import Graduation, MinSupport, ThresholdPolicy, load_policy, policy_from_text
from ratchet.thresholds.suggest import GLOBAL, Suggestions, read_suggestions, suggest_thresholds

__all__ = [
    "GLOBAL", "Graduation", "MinSupport", "Suggestions", "ThresholdError", "ThresholdPolicy", "decide", "graduation",
    "load_policy", "parse_edits", "policy_from_text", "read_suggestions", "suggest_thresholds",
]
