"""Exploration: allow a small, random, logged share of the payments the model would block.

A blocked payment never gets a label, so every later model is trained and judged on data
censored by the policy of its time. Exploration lets a share of would-be-blocked payments
through, each with the probability it had, so inverse-propensity weighting can estimate
what any other policy would have caught and blocked (ratchet.evaluate.counterfactual).

Pure and standard library only: the decision service (ratchet.serving) and the synthetic
world's censoring (ratchet.data.censoring) decide with the same functions, so the
offline simulation is the policy that serves.

    policy = ExplorationPolicy(share=0.05)
    explorer = Explorer(policy)
    d = explorer.decide(score=0.93, threshold=0.8, amount=40.0, key="tx-1", ts=1.7e9,
                        merchant_id="m1", merchant_category="grocery")
    d.decision, d.propensity, d.explored      # ('block', 0.95, False) or ('allow', 0.05, True)

Propensity is the probability of the decision that was taken, given the score: 1.0 for a
payment the model allows, ``p`` for an explored allow and ``1 - p`` for a kept block, 1.0
for a block that could not be explored (opted-out merchant, day's loss cap reached). A
row's inverse-propensity weight, when its label is seen, is 1 / propensity of its allow.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

#: The largest share a policy may explore: beyond it the model barely decides.
MAX_SHARE = 0.5
_DAY = 86400.0
_DENOM = float(1 << 64)


@dataclass(frozen=True)
class ExplorationPolicy:
    """What to explore, and how much.

    share: the probability of allowing a would-be-blocked payment whose score is at the
        threshold. min_share: the probability at score 1.0; in between it falls linearly
        with the score (so payments the model is least sure of are explored most).
        Default: min_share = share (flat). Both in (0, MAX_SHARE]; min_share <= share.
    max_expected_loss_per_day: an optional cap on the expected fraud loss of explored
        payments per UTC day, sum of score x amount; once reached, nothing more is explored
        that day (those blocks have propensity 1.0).
    opt_out_merchants / opt_out_categories: merchants never explored (merchant_id, or
        merchant_category).
    seed: salts the per-payment draw; the draw is a hash of (seed, key), so the same
        payment gets the same decision on every replica and every replay.
    """

    share: float
    min_share: float | None = None
    max_expected_loss_per_day: float | None = None
    opt_out_merchants: frozenset[str] = field(default_factory=frozenset)
    opt_out_categories: frozenset[str] = field(default_factory=frozenset)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= MAX_SHARE:
            raise ValueError(f"exploration share must be in (0, {MAX_SHARE}], got {self.share}")
        low = self.share if self.min_share is None else self.min_share
        if not 0.0 < low <= self.share:
            raise ValueError(f"exploration min_share must be in (0, share={self.share}], got {low}")
        if self.max_expected_loss_per_day is not None and self.max_expected_loss_per_day <= 0:
            raise ValueError(f"max_expected_loss_per_day must be > 0, got {self.max_expected_loss_per_day}")

    def share_at(self, score: float, threshold: float) -> float:
        """The exploration probability of a would-be-blocked payment (score >= threshold)."""
        low = self.share if self.min_share is None else self.min_share
        if low == self.share or threshold >= 1.0:
            return self.share
        pos = min(max((score - threshold) / (1.0 - threshold), 0.0), 1.0)
        return self.share - (self.share - low) * pos

    def opted_out(self, merchant_id: str | None, merchant_category: str | None) -> bool:
        return (merchant_id is not None and merchant_id in self.opt_out_merchants) or \
            (merchant_category is not None and merchant_category in self.opt_out_categories)

    def to_dict(self) -> dict[str, object]:
        return {"share": self.share, "min_share": self.min_share,
                "max_expected_loss_per_day": self.max_expected_loss_per_day,
                "opt_out_merchants": sorted(self.opt_out_merchants),
                "opt_out_categories": sorted(self.opt_out_categories), "seed": self.seed}


def draw(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key): the same on every machine and run."""
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode())
    return int.from_bytes(h.digest(), "big") / _DENOM


class Decision(NamedTuple):
    decision: str        # allow | block
    propensity: float    # probability of this decision given the score
    explored: bool       # a would-be block let through
    share: float         # the exploration probability this payment had (0.0 when it could not be explored)


ALLOW = Decision("allow", 1.0, False, 0.0)


class Explorer:
    """Decides with a policy and keeps the day's expected explored loss (thread-safe).

    The loss cap makes decisions depend on the payments before them in the same UTC day;
    feed payments in time order (the service does by construction; the offline simulation
    sorts by ts) for the offline and online decisions to agree.
    """

    def __init__(self, policy: ExplorationPolicy) -> None:
        self.policy = policy
        self._day = -1
        self._spent = 0.0
        self._lock = threading.Lock()

    def decide(self, score: float, threshold: float, amount: float, key: str, ts: float,
               merchant_id: str | None = None, merchant_category: str | None = None) -> Decision:
        if score < threshold:
            return ALLOW
        p = self.policy
        if p.opted_out(merchant_id, merchant_category):
            return Decision("block", 1.0, False, 0.0)
        share = p.share_at(score, threshold)
        cap = p.max_expected_loss_per_day
        if cap is not None:
            with self._lock:
                day = int(ts // _DAY)
                if day != self._day:
                    self._day, self._spent = day, 0.0
                exposure = score * max(amount, 0.0)
                if self._spent + exposure > cap:
                    return Decision("block", 1.0, False, 0.0)
                if draw(p.seed, key) < share:
                    self._spent += exposure
                    return Decision("allow", share, True, share)
                return Decision("block", 1.0 - share, False, share)
        if draw(p.seed, key) < share:
            return Decision("allow", share, True, share)
        return Decision("block", 1.0 - share, False, share)

    def spent_today(self) -> float:
        with self._lock:
            return self._spent
