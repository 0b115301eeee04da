"""The one wire format of "what runs where", shared by the controller and the decision service.

What runs is production, an optional canary (a weight in percent, optionally restricted
to a cohort of slice values) and an optional shadow. The controller writes it into the
service's environment (`STAGE_ENV`) or its admin API; the service reports it back; both
sides compare the same `fingerprint` text, e.g.

    production=v6 canary=v7@25% shadow=none cohort=country:FR,BE

Versions are numbers, or alias references ('@production') before the service resolves
them. A cohort travels as text 'country=FR,BE;channel=web' (`cohort_text`).
"""

from __future__ import annotations

#: A version number, or an alias name ("production", "@canary") resolved at (re)load time.
VersionRef = int | str
#: Slice key -> the values the canary is restricted to, sorted by key.
Cohort = tuple[tuple[str, tuple[str, ...]], ...]

#: The environment variables `ratchet serve` reads for what runs (and backends write).
STAGE_ENV: dict[str, str] = {
    "production": "RATCHET_PRODUCTION_VERSION",
    "canary": "RATCHET_CANARY_VERSION",
    "canary_weight": "RATCHET_CANARY_WEIGHT",
    "shadow": "RATCHET_SHADOW_VERSION",
    "cohort": "RATCHET_CANARY_COHORT",
}


def _ref(x: VersionRef | None) -> str:
    return "none" if x is None else (f"v{x}" if isinstance(x, int) else f"@{x}")


def fingerprint(production: VersionRef | None, canary: VersionRef | None, canary_weight: float,
                shadow: VersionRef | None, cohort: Cohort | None) -> str:
    """A readable, stable summary of what runs; a canary-less state has no weight or cohort."""
    c = "none" if canary is None else f"{_ref(canary)}@{float(canary_weight):g}%"
    parts = [f"production={_ref(production)}", f"canary={c}", f"shadow={_ref(shadow)}"]
    if canary is not None and cohort:
        parts.append("cohort=" + ";".join(f"{k}:{','.join(v)}" for k, v in cohort))
    return " ".join(parts)


def cohort_text(cohort: Cohort | None) -> str:
    """'country=FR,BE;channel=web' ('' for none): the env var and flag form."""
    return ";".join(f"{k}={','.join(v)}" for k, v in cohort) if cohort else ""


def parse_cohort_text(text: str | None) -> Cohort | None:
    """The cohort of 'KEY=V1,V2[;KEY=...]' (None for ''); a ValueError names a malformed part.
    Which keys are slice keys is the service's to check."""
    items: list[tuple[str, tuple[str, ...]]] = []
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"cohort: expected KEY=V1,V2[;KEY=...], got {part!r}")
        k, vals = part.split("=", 1)
        items.append((k.strip(), tuple(v.strip() for v in vals.split(",") if v.strip())))
    return tuple(items) or None
