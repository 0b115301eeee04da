"""Canary routing: sticky by card, monotonic in the weight. Pure functions.

A card's bucket is a stable hash of (salt, card_id) in [0, 10000); it goes to the
canary when bucket < weight * 100. So one card sees one model for the whole ramp, and
raising the weight only moves cards from production to the canary, never back. The
salt is the canary version, so each new canary starts on a different set of cards.

    >>> route_to_canary("card-42", weight=25.0, salt="7")
    False
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

from ratchet.serving.config import Cohort

BUCKETS = 10_000


def canary_bucket(card_id: str, salt: str = "") -> int:
    """Stable across processes and machines (unlike hash()): blake2b of salt and card."""
    h = _keyed(salt).copy()  # the keyed state once per salt: same digest, ~1 us instead of ~15
    h.update(card_id.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "big") % BUCKETS


@functools.lru_cache(maxsize=64)
def _keyed(salt: str):  # noqa: ANN202 - hashlib blake2b object
    return hashlib.blake2b(digest_size=8, key=salt.encode()[:64])


def route_to_canary(card_id: str, weight: float, salt: str = "") -> bool:
    if weight <= 0.0:
        return False
    if weight >= 100.0:
        return True
    return canary_bucket(card_id, salt) < weight * (BUCKETS / 100)


def cohort_matcher(cohort: Cohort | None) -> Callable[[object], bool]:
    """A predicate on a request (attribute access) that is True inside the cohort."""
    if not cohort:
        return lambda _req: True
    sets = [(key, frozenset(values)) for key, values in cohort]

    def inside(req: object) -> bool:
        return all(getattr(req, key, None) in values for key, values in sets)

    return inside
