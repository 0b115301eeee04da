"""Request validation: one strict pydantic model per set of loaded features.

The features a request may carry are the union of the loaded models' feature names,
so the model is rebuilt on every reload. Every feature is optional (null or absent ->
NaN, XGBoost's missing value) and must be a finite JSON number inside its range; slice
keys are bounded strings; unknown fields are rejected. Validation errors name the field:

    >>> Req = request_model(("amount", "card_count_1h"))
    >>> Req.model_validate_json(b'{"card_id": "c1", "amount": -3}')
    ValidationError: amount  Input should be greater than or equal to 0 ...
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from ratchet.data import columns as C

#: Slice keys a request may carry (logged with every decision; card_id routes the canary).
SLICE_KEYS: tuple[str, ...] = (C.TRANSACTION_ID, C.CARD_ID, C.MERCHANT_ID, C.MERCHANT_CATEGORY, C.COUNTRY,
                               C.CARD_COUNTRY, C.CHANNEL)
MAX_KEY_LENGTH = 128


@functools.lru_cache(maxsize=64)
def attribute_reader(names: tuple[str, ...]) -> Callable[[object], tuple]:
    """obj -> the tuple of its `names` attributes (None for an absent one); one per names, cached.

    Reads features and slice keys off a validated request in one C-level call."""
    get = operator.attrgetter(*names) if len(names) > 1 else (lambda o: (getattr(o, names[0]),))

    def read(obj: object) -> tuple:
        try:
            return get(obj)
        except AttributeError:
            return tuple(getattr(obj, n, None) for n in names)

    return read


_NON_NEGATIVE = re.compile(r"^((card|merchant)_(count|amount)|card_mean_amount|amount_to_card_mean|card_max_amount"
                           r"|amount_to_card_max|merchant_risk_count)_\w+$")
_SHARE = re.compile(r"^merchant_risk_\d+d$")

#: Ranges of the features ratchet's training-set job computes: (ge, le); None = unbounded.
FEATURE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "amount": (0.0, None),
    "hour_of_day": (0.0, 24.0),
    "is_online": (0.0, 1.0),
    "is_weekend": (0.0, 1.0),
    "is_night": (0.0, 1.0),
    "cross_border": (0.0, 1.0),
    "seconds_since_card_prev": (0.0, None),
    "amount_to_card_mean": (0.0, None),
    # chargebacks that arrived in the last 30 days over the last 30 days' payments: it can
    # exceed 1 when older payments' chargebacks land (ratchet.data.trainingset)
    "merchant_fraud_rate_30d": (0.0, None),
}

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True,
                     str_max_length=MAX_KEY_LENGTH)


def feature_range(name: str) -> tuple[float | None, float | None]:
    if name in FEATURE_RANGES:
        return FEATURE_RANGES[name]
    if _SHARE.match(name):  # known frauds among the delayed window's payments
        return (0.0, 1.0)
    if _NON_NEGATIVE.match(name):
        return (0.0, None)
    return (None, None)


def request_model(features: tuple[str, ...] | list[str], required: frozenset[str] | set[str] = frozenset()
                  ) -> type[BaseModel]:
    """A strict pydantic model for a decision request carrying these features; those in
    `required` must be present and not null (the served models' missing-feature policy)."""
    fields: dict[str, Any] = {
        C.CARD_ID: (str, Field(..., min_length=1, max_length=MAX_KEY_LENGTH)),
    }
    for key in SLICE_KEYS:
        if key != C.CARD_ID:
            fields[key] = (str | None, Field(None, max_length=MAX_KEY_LENGTH))
    for name in features:
        if name in fields:
            raise ValueError(f"feature {name!r} collides with a slice key")
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"feature name {name!r} cannot be a request field")
        ge, le = feature_range(name)
        fields[name] = (float, Field(..., ge=ge, le=le)) if name in required else \
            (float | None, Field(None, ge=ge, le=le))
    return create_model("DecisionRequest", __config__=_STRICT, **fields)


def request_decoder(features: tuple[str, ...] | list[str], required: frozenset[str] | set[str] = frozenset()
                    ) -> msgspec.json.Decoder:
    """The request path's fast validator (msgspec, ~2 us): the same fields and constraints as
    request_model(features), into a struct read by attribute like the pydantic model.

    It may only be *stricter* than the pydantic model, never looser: the service takes its
    result when it accepts and otherwise asks the pydantic model, which either accepts too
    or produces the 422 payload (tests/test_serving.py compares both on fuzzed bodies)."""
    request_model(features, required)  # same name checks
    key = Annotated[str, msgspec.Meta(max_length=MAX_KEY_LENGTH)]
    fields: list[tuple] = [(C.CARD_ID, Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LENGTH)])]
    fields += [(k, key | None, None) for k in SLICE_KEYS if k != C.CARD_ID]
    for name in features:
        ge, le = feature_range(name)
        meta = {k: v for k, v in (("ge", ge), ("le", le)) if v is not None}
        number = Annotated[float, msgspec.Meta(**meta)] if meta else float
        fields.append((name, number) if name in required else (name, number | None, None))
    struct = msgspec.defstruct("DecisionRequest", fields, forbid_unknown_fields=True, frozen=True, kw_only=True,
                               gc=False)  # only str, float and None inside: nothing for the cyclic GC
    return msgspec.json.Decoder(struct)


def validation_problems(exc: ValidationError, limit: int = 20) -> list[dict[str, Any]]:
    """A JSON-safe list of problems, each naming the field (no echo of large inputs)."""
    out = []
    for e in exc.errors(include_url=False, include_input=False, include_context=False)[:limit]:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"field": ".".join(loc) or "(body)", "loc": loc, "type": e.get("type"), "msg": e.get("msg")})
    return out


#: a version in a reload body: a number (1, 2, ...) or an alias ("@production"), as text or number
VersionNumber = Annotated[int, Field(ge=1)]
VersionText = Annotated[str, Field(pattern=r"^(@[A-Za-z0-9_-]{1,100}|[1-9][0-9]{0,17})$")]
SliceKey = Literal[SLICE_KEYS]  # type: ignore[valid-type]
CohortValues = Annotated[list[Annotated[str, Field(max_length=MAX_KEY_LENGTH)]], Field(min_length=1)]


class ReloadRequest(BaseModel):
    """Body of POST /admin/reload. Absent keys keep their current value; null removes a
    canary or shadow (production cannot be removed); a version is a number or an alias
    ("@production"). Strict: what its JSON schema (GET /openapi.json) refuses, it refuses."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # absent: keep the current one; never null (no "default": null in the schema either)
    production: VersionNumber | VersionText = Field(None, json_schema_extra=lambda s: s.pop("default", None))  # type: ignore[assignment]
    canary: VersionNumber | VersionText | None = Field(None)
    canary_weight: float = Field(0.0, ge=0.0, le=100.0)
    shadow: VersionNumber | VersionText | None = Field(None)
    cohort: dict[SliceKey, CohortValues] | list[tuple[SliceKey, CohortValues]] | None = Field(None)
    reason: str | None = Field(None, max_length=2000)

    @field_validator("production", "canary", "shadow", mode="before")
    @classmethod
    def _integral(cls, v: Any) -> Any:
        """JSON Schema's integer: 6 and 6.0 alike."""
        return int(v) if isinstance(v, float) and v.is_integer() else v
