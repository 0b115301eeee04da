"""Point-in-time features in pandas, for monitoring work that repeats over many windows.

The backtest and the drift check slice one feature table many times; building it once
in memory with numpy beats a Spark job per window on one machine. The definitions are
those of the Spark job (ratchet.data.trainingset.add_features): every aggregate covers
[t - W, t) of the same card or merchant, strictly before the row. The merchant fraud
rate and the delayed merchant risk need the label stream, so they stay Spark-only; ask
for them and the error says so. For releases, the Spark job remains the one source of training sets.

    feats = point_in_time_features(generate(SynthConfig(rows=100_000)), ["amount", "card_count_24h"])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ratchet.data import columns as C
from ratchet.errors import RatchetError
from ratchet.data.spec import WINDOW_SECONDS, known_features

#: Features computed here (every known feature but those built from labels: the merchant fraud rate and risk).
PANDAS_FEATURES: frozenset[str] = frozenset(
    f for f in known_features() if f != "merchant_fraud_rate_30d" and not f.startswith("merchant_risk"))
LABEL = "label"
_US = 1_000_000


def _window_sums(key: np.ndarray, t: np.ndarray, amount: np.ndarray, seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: count and amount sum of rows with the same key in [t - W, t)."""
    codes, _ = pd.factorize(key)
    order = np.lexsort((t, codes))
    span = int(t.max() - t.min()) + seconds * _US + 1 if len(t) else 1
    k = codes[order].astype(np.int64) * span + (t[order] - (t.min() if len(t) else 0))
    lo = np.searchsorted(k, k - seconds * _US, side="left")
    hi = np.searchsorted(k, k, side="left")  # rows at the very same time do not see each other
    cs = np.concatenate([[0.0], np.cumsum(amount[order])])
    count, total = np.empty(len(t)), np.empty(len(t))
    count[order] = hi - lo
    total[order] = cs[hi] - cs[lo]
    return count, total


def _window_max(key: np.ndarray, t: np.ndarray, amount: np.ndarray, seconds: int) -> np.ndarray:
    """Per row: the largest amount of rows with the same key in [t - W, t), NaN when there are none."""
    frame = pd.DataFrame({"k": pd.factorize(key)[0], "t": pd.to_datetime(t, unit="us"), "a": amount,
                          "i": np.arange(len(t))}).sort_values(["k", "t", "i"], kind="stable")
    top = (frame.set_index("t").groupby("k", sort=False)["a"]
           .rolling(pd.Timedelta(seconds=seconds), closed="left").max().to_numpy())
    # rows at the very same time do not see each other: take the value of the first row of each (key, t)
    first = ~frame.duplicated(["k", "t"]).to_numpy()
    top = pd.Series(np.where(first, top, np.nan)).groupby((first).cumsum()).transform("first").to_numpy()
    out = np.empty(len(t))
    out[frame["i"].to_numpy()] = top
    return out


def _previous_time(key: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per row: seconds since the same key's previous row (strictly earlier, within 30 days), else NaN."""
    codes, _ = pd.factorize(key)
    order = np.lexsort((t, codes))
    c, ts = codes[order], t[order]
    span = int(ts.max() - ts.min()) + 1 if len(ts) else 1
    k = c.astype(np.int64) * span + (ts - (ts.min() if len(ts) else 0))
    first_same = np.searchsorted(k, k, side="left")  # first row of the same (key, time)
    prev = first_same - 1
    ok = (prev >= 0) & (c[np.maximum(prev, 0)] == c)
    gap = np.where(ok, (ts - ts[np.maximum(prev, 0)]) / _US, np.nan)
    gap[gap > WINDOW_SECONDS["30d"]] = np.nan
    out = np.empty(len(t))
    out[order] = gap
    return out


def point_in_time_features(raw: pd.DataFrame, features: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Canonical transactions -> ts, label, label_available_at, slice columns and the features.

    Rows keep the input order. `label` is is_fraud (final), `label_available_at` is kept
    when present so callers can tell matured labels from immature ones.
    """
    unknown = [f for f in features if f not in PANDAS_FEATURES]
    if unknown:
        raise RatchetError(f"feature(s) {', '.join(unknown)} cannot be computed in memory "
                           "(merchant_fraud_rate_30d and merchant_risk_* need the Spark job: pass a feature table built by it)")
    for col in (C.TS, C.CARD_ID, C.MERCHANT_ID, C.AMOUNT):
        if col not in raw.columns:
            raise RatchetError(f"the transactions lack column '{col}'")
    t = pd.to_datetime(raw[C.TS]).to_numpy(dtype="datetime64[us]").astype(np.int64)
    amount = raw[C.AMOUNT].to_numpy(dtype=float)
    keep = [c for c in (C.TRANSACTION_ID, C.TS, C.CARD_ID, C.MERCHANT_ID, C.MERCHANT_CATEGORY, C.COUNTRY,
                        C.CARD_COUNTRY, C.CHANNEL, C.LABEL_AVAILABLE_AT) if c in raw.columns]
    out = raw[keep].copy()
    if C.IS_FRAUD in raw.columns:
        out[LABEL] = raw[C.IS_FRAUD].to_numpy().astype(np.int8)
    cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def sums(entity: str, w: str) -> tuple[np.ndarray, np.ndarray]:
        if (entity, w) not in cache:
            col = C.CARD_ID if entity == "card" else C.MERCHANT_ID
            cache[(entity, w)] = _window_sums(raw[col].to_numpy(), t, amount, WINDOW_SECONDS[w])
        return cache[(entity, w)]

    for f in features:
        if f == "amount":
            out[f] = amount
        elif f == "hour_of_day":
            out[f] = pd.to_datetime(raw[C.TS]).dt.hour.to_numpy(dtype=float)
        elif f == "is_weekend":
            out[f] = (pd.to_datetime(raw[C.TS]).dt.dayofweek >= 5).to_numpy(dtype=float)
        elif f == "is_night":
            out[f] = (pd.to_datetime(raw[C.TS]).dt.hour < 6).to_numpy(dtype=float)
        elif f == "is_online":
            out[f] = (raw[C.CHANNEL].astype(str).str.lower() == "online").astype(float).to_numpy()
        elif f == "cross_border":
            out[f] = (raw[C.COUNTRY] != raw[C.CARD_COUNTRY]).astype(float).to_numpy()
        elif f == "seconds_since_card_prev":
            out[f] = _previous_time(raw[C.CARD_ID].to_numpy(), t)
        elif f == "amount_to_card_mean" or f.startswith("amount_to_card_mean_"):
            n, s = sums("card", "30d" if f == "amount_to_card_mean" else f.rsplit("_", 1)[1])
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f] = np.where((n > 0) & (s != 0), amount / (s / np.maximum(n, 1)), 1.0)
        elif f.startswith("card_mean_amount_"):
            n, s = sums("card", f.rsplit("_", 1)[1])
            out[f] = np.where(n > 0, s / np.maximum(n, 1), 0.0)
        elif f.startswith(("card_max_amount_", "amount_to_card_max_")):
            top = _window_max(raw[C.CARD_ID].to_numpy(), t, amount, WINDOW_SECONDS[f.rsplit("_", 1)[1]])
            if f.startswith("card_max_amount_"):
                out[f] = np.nan_to_num(top, nan=0.0)
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[f] = np.where(np.isfinite(top) & (top != 0), amount / np.where(top == 0, 1, top), 1.0)
        else:
            entity, kind, w = f.split("_")
            n, s = sums(entity, w)
            out[f] = n if kind == "count" else s
    return out
