"""The decision log's one schema: the row the service appends and the Arrow columns it becomes.

Written by the serving side (service.py for served roles, shadow.py for shadow rows, through
decision_log.DecisionLog) and read by the rollout side (ratchet.rollout.observe), so both
take their column names from here.

A `DecisionRow` is what a request appends: a NamedTuple, as cheap to build as a plain tuple
on the request path. Its first fields are the log's scalar columns, same names, same order
(`ts` is epoch seconds here and a UTC timestamp in the file); the last two are turned into
columns by the writer thread, off the request path:

    request        the validated request: its slice keys (SLICE_KEYS) become string columns,
                   and, for served rows, the values of `feature_names` become the `features` map
    feature_names  the model's inputs (served rows, for replay), or None (shadow rows: a null map)

DecisionLog.append first writes the same content (scalars, slice keys, feature values) to
the log's journal, from which a killed process's rows are recovered into these columns.

    >>> DecisionRow(rid, time.time(), "production", 6, 0.91, 0.8, "block", "ok", None, 0.4, 1, 0.95, False, req, names)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pyarrow as pa

from ratchet.serving.schema import SLICE_KEYS

#: One value per row, carried as-is by DecisionRow (its leading fields, same order).
SCALAR_FIELDS: tuple[pa.Field, ...] = tuple(pa.field(name, type_) for name, type_ in (
    ("request_id", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("role", pa.string()),             # production | canary | shadow
    ("version", pa.int64()),
    ("score", pa.float64()),           # null when status != ok
    ("threshold", pa.float64()),
    ("decision", pa.string()),         # allow | block; null when status != ok
    ("status", pa.string()),           # ok | error | timeout
    ("error", pa.string()),
    ("latency_ms", pa.float64()),      # served roles: request received -> decided; shadow: its scoring
    ("config_generation", pa.int64()),  # which loaded configuration decided (see GET /admin/config)
    # the probability of `decision` given the score (ratchet.exploration): 1.0 for every deterministic
    # decision (allows, canary and shadow rows, no exploration); p for an explored allow, 1 - p for a
    # block that could have been explored. A labelled allow weighs 1 / propensity.
    ("propensity", pa.float64()),
    ("explored", pa.bool_()),          # a production block let through by exploration (decision = allow)
))

#: The stable schema of every decision-log file: the scalars, the slice keys, the features map.
SCHEMA = pa.schema([
    *SCALAR_FIELDS,
    *[(k, pa.string()) for k in SLICE_KEYS],
    ("features", pa.map_(pa.string(), pa.float64())),  # served rows only: the model inputs, for replay
])

#: Names of the scalar columns, in schema order (what the rollout guards read besides slice keys).
SCALAR_COLUMNS: tuple[str, ...] = tuple(f.name for f in SCALAR_FIELDS)

#: The values of the columns added last, for rows written before them (older journals and files):
#: every decision then was deterministic.
LATER_COLUMNS: dict[str, Any] = {"propensity": 1.0, "explored": False}


class DecisionRow(NamedTuple):
    """One decision as appended to the log on the request path (see the module docstring)."""

    request_id: str
    ts: float                     # epoch seconds (time.time())
    role: str
    version: int
    score: float | None
    threshold: float | None
    decision: str | None
    status: str
    error: str | None
    latency_ms: float
    config_generation: int
    propensity: float             # 1.0 unless exploration could change this decision
    explored: bool
    request: Any                  # validated request: slice keys and features read by attribute
    feature_names: tuple[str, ...] | None


# the record and the schema are one list: fail at import, not in a log file, if they drift
if DecisionRow._fields != (*SCALAR_COLUMNS, "request", "feature_names") \
        or tuple(SCHEMA.names[len(SCALAR_COLUMNS):]) != (*SLICE_KEYS, "features") \
        or SCALAR_COLUMNS[-len(LATER_COLUMNS):] != tuple(LATER_COLUMNS):
    raise RuntimeError(f"DecisionRow fields {DecisionRow._fields} do not match the decision log "
                      f"schema {SCHEMA.names}")
