"""Censoring: what a production policy of the time lets us see of the payments' labels.

A blocked payment never gets a chargeback, so its label is never observed. censor() plays
the policy of the time over payments whose truth is known (synthetic data): each payment
gets the logged decision after exploration (ratchet.exploration, the same decider the
service uses) and that decision's propensity; the truth is kept in `is_fraud_true`, and a
blocked payment's `is_fraud` becomes null. ratchet.evaluate.counterfactual then estimates
another policy's recall, FPR and block rate from such rows.

    logged = censor(payments, score=predict(production, table), threshold=0.62,
                    policy=ExplorationPolicy(share=0.05, seed=1))
    logged[[DECISION, PROPENSITY, C.IS_FRAUD, TRUE_LABEL]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.errors import MissingColumnError, RatchetError
from ratchet.exploration import ExplorationPolicy, Explorer

#: The logged decision after exploration: "allow" or "block" (the canonical column).
DECISION = C.DECISION
#: The probability of the logged decision given the score (see ratchet.exploration.policy).
PROPENSITY = C.PROPENSITY
#: The label before censoring (int 0/1), for evaluating estimators on synthetic data.
TRUE_LABEL = "is_fraud_true"

_NEEDED = (C.TRANSACTION_ID, C.TS, C.AMOUNT, C.IS_FRAUD)


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Timestamps (naive = UTC, or tz-aware) as float epoch seconds."""
    t = pd.to_datetime(ts)
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t.to_numpy(dtype="datetime64[us]").astype(np.int64) / 1e6


def _check(frame: pd.DataFrame, score: np.ndarray) -> None:
    missing = [c for c in _NEEDED if c not in frame.columns]
    if missing:
        raise MissingColumnError(f"censor() needs column(s) {', '.join(missing)} in the canonical schema "
                                 "(ratchet.data.columns); map the source columns first")
    if len(score) != len(frame):
        raise RatchetError(f"censor() got {len(score)} scores for {len(frame)} payments; score every row, "
                           "in the frame's order")
    if frame[C.IS_FRAUD].isna().any():
        raise RatchetError("censor() needs the truth of every payment, but is_fraud has nulls; censor "
                           "uncensored data (synthetic or fully matured labels) only")


def logged_decisions(frame: pd.DataFrame, score: np.ndarray, threshold: float | np.ndarray,
                     policy: ExplorationPolicy | None) -> tuple[np.ndarray, np.ndarray]:
    """(allow: bool array, propensity: float array) in the frame's row order; `threshold` is
    one number or one per row (per-merchant thresholds).

    Would-be blocks are decided in (ts, transaction_id) order, because a loss cap makes a
    decision depend on the same day's earlier ones; allowed payments never touch the cap."""
    n = len(frame)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,))
    allow = np.asarray(score) < thresholds
    propensity = np.ones(n, dtype=np.float64)
    if policy is None or allow.all():
        return allow, propensity
    seconds = _epoch_seconds(frame[C.TS])
    blocked = np.flatnonzero(~allow)
    ids = frame[C.TRANSACTION_ID].to_numpy()[blocked]
    order = blocked[np.lexsort((ids, seconds[blocked]))]
    tx = frame[C.TRANSACTION_ID].astype(str).to_numpy()
    amount = frame[C.AMOUNT].to_numpy(dtype=np.float64)
    mid = frame[C.MERCHANT_ID].astype(str).to_numpy() if C.MERCHANT_ID in frame.columns else None
    cat = frame[C.MERCHANT_CATEGORY].astype(str).to_numpy() if C.MERCHANT_CATEGORY in frame.columns else None
    explorer = Explorer(policy)
    for i in order:
        d = explorer.decide(float(score[i]), float(thresholds[i]), float(amount[i]), tx[i], float(seconds[i]),
                            None if mid is None else mid[i], None if cat is None else cat[i])
        allow[i] = d.decision == "allow"
        propensity[i] = d.propensity
    return allow, propensity


def censor(frame: pd.DataFrame, score: np.ndarray, threshold: float | np.ndarray,
           policy: ExplorationPolicy | None) -> pd.DataFrame:
    """The payments as the policy of the time logged them (a copy; rows in the input order).

    Blocks are `score >= threshold` (one threshold, or one per row), then
    ratchet.exploration.Explorer lets a share through
    (key = str(transaction_id), ts as epoch seconds, merchant_id / merchant_category when
    present); policy=None explores nothing (every block has propensity 1.0). Adds DECISION
    ("allow" / "block"), PROPENSITY (float) and TRUE_LABEL (int8 0/1, the truth). `is_fraud`
    becomes pandas' nullable Int8, <NA> on exactly the blocked rows; `label_available_at`,
    when present, becomes NaT there. Allowed rows keep their label.
    """
    _check(frame, np.asarray(score))
    allow, propensity = logged_decisions(frame, np.asarray(score), threshold, policy)
    out = frame.copy()
    truth = out[C.IS_FRAUD].astype(np.int8)
    out[TRUE_LABEL] = truth
    out[C.IS_FRAUD] = truth.astype("Int8").where(allow, pd.NA)
    if C.LABEL_AVAILABLE_AT in out.columns:
        out[C.LABEL_AVAILABLE_AT] = pd.to_datetime(out[C.LABEL_AVAILABLE_AT]).where(allow, pd.NaT)
    out[DECISION] = np.where(allow, "allow", "block")
    out[PROPENSITY] = propensity
    return out


def apply_logged(raw: pd.DataFrame, logged: pd.DataFrame) -> pd.DataFrame:
    """The raw payments as a logging policy left them (a copy; rows in raw's order).

    `logged` is censor()'s output for some of the payments (matched on transaction_id):
    those take its DECISION, PROPENSITY, is_fraud (null when blocked) and
    label_available_at. Every other payment was decided by no model (before the first
    release, or dropped by the spec's filters): "allow" with propensity 1.0 and its label.
    TRUE_LABEL holds every payment's truth."""
    for name, frame in (("raw", raw), ("logged", logged)):
        if C.TRANSACTION_ID not in frame.columns:
            raise MissingColumnError(f"apply_logged() needs {C.TRANSACTION_ID} in the {name} payments")
    key = raw[C.TRANSACTION_ID].astype(str)
    pos = pd.Index(key).get_indexer(logged[C.TRANSACTION_ID].astype(str))
    if (pos < 0).any():
        raise RatchetError(f"{int((pos < 0).sum())} logged payments are not in the raw payments; "
                           "censor a subset of the same data")
    out = raw.copy()
    truth = out[C.IS_FRAUD].astype(np.int8)
    out[TRUE_LABEL] = truth
    label = truth.astype("Int8")
    label.iloc[pos] = logged[C.IS_FRAUD].astype("Int8").to_numpy()
    out[C.IS_FRAUD] = label
    if C.LABEL_AVAILABLE_AT in out.columns and C.LABEL_AVAILABLE_AT in logged.columns:
        available = pd.to_datetime(out[C.LABEL_AVAILABLE_AT]).copy()
        available.iloc[pos] = pd.to_datetime(logged[C.LABEL_AVAILABLE_AT]).to_numpy()
        out[C.LABEL_AVAILABLE_AT] = available
    decision = np.full(len(out), "allow", dtype=object)
    decision[pos] = logged[DECISION].to_numpy()
    propensity = np.ones(len(out), dtype=np.float64)
    propensity[pos] = logged[PROPENSITY].to_numpy(dtype=np.float64)
    out[DECISION], out[PROPENSITY] = decision, propensity
    return out
