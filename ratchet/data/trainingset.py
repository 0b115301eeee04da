"""The Spark training-set job: raw transactions -> point-in-time features -> train/test Parquet.

Every feature of a transaction at time t uses only what was known strictly before t:
other transactions with ts < t, and fraud labels whose label_available_at < t. So the
features of a row never change when later rows are added or later labels arrive, which
is what the decision service sees at decision time.

Feature semantics (``t`` = the transaction's ts, microsecond precision, UTC):

- ``card_count_W`` / ``card_amount_W`` (W in 1h, 24h, 7d, 30d): number and summed amount
  of the same card's transactions with ``t - W <= ts' < t``. Transactions at exactly the
  same instant do not see each other. 0 when there are none.
- ``merchant_count_W`` / ``merchant_amount_W``: the same per merchant_id (amounts summed
  in units of 1/AMOUNT_SCALE, i.e. to 0.0001).
- ``seconds_since_card_prev``: seconds since the card's latest transaction strictly
  before t and at most 30 days before it; **null** (XGBoost's missing value) when there
  is none. It is the one nullable feature (NULLABLE_FEATURES), left out of the null-rate
  check. No feature but the delayed merchant risk looks back more than 30 days
  (MAX_LOOKBACK_SECONDS), so the job only reads history from train_start - 30 days
  (or - (D + 30) days with merchant_risk_30d) on, and a serving-side feature store
  needs no more history than that.
- ``amount_to_card_mean``: amount / mean amount of the card's transactions in the 30 days
  before t; 1.0 when there are none or their mean is 0.
- ``merchant_fraud_rate_30d``: chargebacks (fraud labels) at the merchant that arrived
  in the 30 days before t (``t - 30d <= label_available_at < t``), divided by the
  merchant's transaction count over the same 30 days plus MERCHANT_RATE_SMOOTHING
  (additive smoothing towards 0, so a merchant with 2 transactions and 1 chargeback
  reads 1/12, not 50 %). Labels not yet available at t never count.
- ``card_mean_amount_W``: card_amount_W / card_count_W, 0 when there are none;
  ``amount_to_card_mean_W``: amount / card_mean_amount_W, 1.0 when there are none or
  their mean is 0 (``amount_to_card_mean`` is the 30-day one). ``card_max_amount_W`` and
  ``amount_to_card_max_W``: the same with the largest amount of those payments.
- ``merchant_risk_W`` (W in 1d, 7d, 14d, 30d) and ``merchant_risk_count_W``: the
  merchant's payments with ``t - D - W <= ts' < t - D`` (D = the spec's
  feature_options.risk_delay_days, default the dataset's label_delay_days, else 7 days:
  the handbook's delayed terminal risk), and the share of them that are frauds whose
  label arrived before t (``label_available_at < t``); 0 when there are none. The
  delay only places the window where most labels are known: a label not yet available
  at t never counts, whatever D is. These features look back D + W.
- ``is_weekend`` (Saturday or Sunday, UTC), ``is_night`` (0:00 to 5:59 UTC),
  ``cross_border`` (country != card_country), ``is_online`` (channel == "online"),
  ``hour_of_day`` (UTC), ``amount``: from the row itself, as 0.0/1.0 or numbers.

Train and test rows: ``train_start <= ts < train_end`` and ``test_start <= ts < test_end``
(ResolvedWindows), and only rows whose label is final at as_of
(``label_available_at <= as_of``); rows in a window with an immature label are dropped
and counted (``rows_immature``). Derived windows end maturity_days before as_of, so with
label delays up to maturity_days nothing is dropped; explicit windows may drop rows near
their end when as_of is too early, and the result says how many.

    result = build_training_set("data/tx.parquet", load_spec("specs/fraud.yaml"), "out/ts")
    train = pandas.read_parquet(result.train_path)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ratchet.data import columns as C
from ratchet.data.checks import (
    EvidenceNeed, QualityColumns, WindowPlan, check_duplicates, check_sample_size, describe_needs, evaluate_quality,
    evaluate_raw, evaluate_splits, raw_stats, run_checks, split_stats, text_examples, window_columns, window_counts,
    with_examples,
)
from ratchet.data.dataset import CANONICAL_TYPES, data_snapshot, filter_condition, read_transactions
from ratchet.data.logged import (
    CENSORED_COLUMN, PROPENSITY_COLUMN, check_logged, logged_block, logged_columns, logged_counts,
)
from ratchet.data.spark import get_spark
from ratchet.errors import RatchetError
from ratchet.data.spec import (
    DEFAULT_RISK_DELAY_DAYS, FUTURE_TOLERANCE_S, RISK_WINDOW_DAYS, WINDOW_SECONDS, DataSpec, ResolvedWindows,
    known_features,
)

LABEL = "label"
#: Features that are null by design (see the module docstring); the null-rate check skips them.
NULLABLE_FEATURES: frozenset[str] = frozenset({"seconds_since_card_prev"})
#: Pseudo-count added to the merchant's 30-day transaction count in merchant_fraud_rate_30d.
MERCHANT_RATE_SMOOTHING = 10.0
#: Canonical columns kept in the output for slicing, when the data has them.
SLICE_COLUMNS: tuple[str, ...] = (C.CARD_ID, C.MERCHANT_ID, C.MERCHANT_CATEGORY, C.COUNTRY, C.CARD_COUNTRY,
                                  C.CHANNEL, C.AMOUNT)

#: The longest look-back of any feature: history older than this never matters.
MAX_LOOKBACK_SECONDS = max(WINDOW_SECONDS.values())

#: Merchant amount sums are exact integer sums of round(amount * AMOUNT_SCALE).
AMOUNT_SCALE = 10_000

_US = 1_000_000
_T = "_t"  # event time in microseconds since the epoch


@dataclass(frozen=True)
class TrainingSetResult:
    """Where the training set was written and what went into it."""

    train_path: str
    test_path: str
    rows_train: int
    rows_test: int
    windows: ResolvedWindows
    snapshot: dict[str, Any]
    features: list[str]
    checks: list[dict[str, Any]] = field(default_factory=list)
    rows_immature: int = 0  # rows inside a window dropped because their label was not final at as_of
    rows_duplicate_dropped: int = 0  # repeated transaction_ids dropped (checks.duplicates: drop)
    rows_censored: int = 0  # rows inside a window logged as blocked: no label (trained on with censoring.censored: genuine)
    rows_explored: int = 0  # rows inside a window allowed with propensity < 1 (explored)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["windows"] = self.windows.to_dict()
        return d


def _micros(dt: datetime) -> int:
    """A naive (UTC) or aware datetime as microseconds since the epoch."""
    aware = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    delta = aware - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * _US + delta.microseconds


def _from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us / _US, tz=timezone.utc).replace(tzinfo=None)


def _frame(window: Window, seconds: int) -> Window:
    # [t - W, t): strictly before the row, so simultaneous rows do not see each other.
    return window.rangeBetween(-seconds * _US, -1)


def _needed_windows(features: list[str], entity: str) -> dict[str, set[str]]:
    """{"count": {"1h", ...}, "amount": {...}} for one entity's aggregate features."""
    need: dict[str, set[str]] = {"count": set(), "amount": set()}
    for f in features:
        parts = f.split("_")
        if len(parts) == 3 and parts[0] == entity and parts[1] in need and parts[2] in WINDOW_SECONDS:
            need[parts[1]].add(parts[2])
    return need


def _risk_windows(features: list[str]) -> tuple[set[str], set[str]]:
    """Windows of the merchant_risk_W and merchant_risk_count_W features asked for."""
    rate = {f.rsplit("_", 1)[1] for f in features if f.startswith("merchant_risk_") and "_count_" not in f}
    count = {f.rsplit("_", 1)[1] for f in features if f.startswith("merchant_risk_count_")}
    return rate, count


def _merchant_events(out: DataFrame, df: DataFrame, need: dict[str, set[str]], rate: bool,
                     bounded: Any, hi: int | None, risk: set[str] = frozenset(), delay_us: int = 0,
                     risk_lo: int | None = None) -> DataFrame:
    """Transactions plus +/- events whose running sum, strictly before t, is each window's total.

    A transaction at t' counts +1 (and +amount) at t' and -1 (-amount) at t' + W, so the
    sum of all events strictly before t is the total over [t - W, t). A chargeback counts
    +1 at label_available_at and -1 thirty days later. Spark evaluates an
    unbounded-preceding frame incrementally, whereas a sliding range frame re-aggregates
    its whole content for every row: for a merchant with k transactions per window that
    is k times the work, and large merchants have many. Cards have few, so they keep
    plain sliding frames. Amounts are summed as integers (AMOUNT_SCALE units) so that
    adding and removing them leaves no rounding residue.

    Delayed risk windows (`risk`, delay D): a payment at t' counts +1 at t' + D and -1 at
    t' + D + W, so the sum before t counts the payments in [t - D - W, t - D); a fraud
    among them with label at a counts +1 at max(t' + D, a) (both: in the window and
    known before t) and -1 at t' + D + W, and not at all when its label comes later.
    """
    units = F.round(F.col(C.AMOUNT) * AMOUNT_SCALE).cast("long")
    deltas: dict[str, Column] = {f"_dc_{w}": F.lit(1) for w in need["count"]}
    deltas.update({f"_da_{w}": units for w in need["amount"]})
    # every other event comes from one scan of `df`: a row holds its own events (an array of
    # structs with one field per delta column, null where that event does not count) and
    # they are exploded; the conditions are those each event would need in a branch of its own
    fields = _delta_types(need) + ([("_dcb", "int")] if rate else [])
    fields += [(f"_drc_{w}", "int") for w in sorted(risk)] + [(f"_drf_{w}", "int") for w in sorted(risk)]
    t = F.unix_micros(F.col(C.TS))
    label_t = F.unix_micros(F.col(C.LABEL_AVAILABLE_AT))
    fraud_known = (F.col(C.IS_FRAUD) == 1) & F.col(C.LABEL_AVAILABLE_AT).isNotNull()
    is_tx = bounded(t)
    events: list[tuple[Column, Column, dict[str, Column]]] = []  # (condition, time, deltas)

    def below_hi(at: Column) -> Column:
        return at < hi if hi is not None else F.lit(True)

    for w in sorted(need["count"] | need["amount"]):
        expiry = {}
        if w in need["count"]:
            expiry[f"_dc_{w}"] = F.lit(-1)
        if w in need["amount"]:
            expiry[f"_da_{w}"] = -units
        at = t + WINDOW_SECONDS[w] * _US
        events.append((is_tx & below_hi(at), at, expiry))
    if rate:
        chargeback = fraud_known & bounded(label_t)
        events.append((chargeback, label_t, {"_dcb": F.lit(1)}))
        gone = label_t + WINDOW_SECONDS["30d"] * _US
        events.append((chargeback & below_hi(gone), gone, {"_dcb": F.lit(-1)}))
    if risk:
        risk_tx = is_tx & (t >= risk_lo) if risk_lo is not None else is_tx
        enter = t + delay_us
        events.append((risk_tx & below_hi(enter), enter, {f"_drc_{w}": F.lit(1) for w in sorted(risk)}))
        for w in sorted(risk):
            leave = enter + RISK_WINDOW_DAYS[w] * 86400 * _US
            events.append((risk_tx & below_hi(leave), leave, {f"_drc_{w}": F.lit(-1)}))
        fraud = fraud_known & (t >= risk_lo) if risk_lo is not None else fraud_known
        known = F.greatest(enter, label_t)
        for w in sorted(risk):
            leave = enter + RISK_WINDOW_DAYS[w] * 86400 * _US
            counted = fraud & (known < leave)
            events.append((counted & below_hi(known), known, {f"_drf_{w}": F.lit(1)}))
            events.append((counted & below_hi(leave), leave, {f"_drf_{w}": F.lit(-1)}))
    types = dict(fields)
    structs = [F.when(cond, F.struct(at.alias(_T), *[values.get(k, F.lit(None)).cast(types[k]).alias(k)
                                                      for k, _ in fields]))
               for cond, at, values in events]
    tx_rows = out.withColumns({**{k: v.cast(types[k]) for k, v in deltas.items()}, "_is_tx": F.lit(1)})
    if not structs:
        return tx_rows
    exploded = (df.select(C.MERCHANT_ID, F.explode(F.array(*structs)).alias("_e")).where(F.col("_e").isNotNull())
                .select(C.MERCHANT_ID, "_e.*"))
    return tx_rows.unionByName(exploded, allowMissingColumns=True)


def _delta_types(need: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The merchant window delta columns and their types (counts int, amounts long units)."""
    return [(f"_dc_{w}", "int") for w in sorted(need["count"])] + [(f"_da_{w}", "long") for w in sorted(need["amount"])]


def lookback_seconds(features: list[str] | tuple[str, ...], risk_delay_days: float = DEFAULT_RISK_DELAY_DAYS) -> int:
    """How far back the history of these features reaches (a feature store keeps this much)."""
    rate, count = _risk_windows(list(features))
    risk = max((RISK_WINDOW_DAYS[w] * 86400 for w in rate | count), default=0)
    return max(MAX_LOOKBACK_SECONDS, int(round(risk_delay_days * 86400)) + risk if risk else 0)


def add_features(df: DataFrame, features: list[str] | tuple[str, ...], start: datetime | None = None,
                 until: datetime | None = None, risk_delay_days: float = DEFAULT_RISK_DELAY_DAYS) -> DataFrame:
    """`df` (canonical columns) plus one double column per feature, point-in-time correct.

    Uses every row of `df` as history. With `start` and `until`, returns only rows with
    start <= ts < until, and reads only the history that can matter to them
    (transactions and chargebacks from start - lookback_seconds on, before until); their features
    are the same as without the bounds. Spark sorts once per entity: all card features
    share one window ordering, all merchant features (and the chargeback events the
    merchant fraud rate needs) another.

        feats = add_features(tx.df, ["card_count_1h", "merchant_fraud_rate_30d"])
    """
    features = list(features)
    unknown = [f for f in features if f not in known_features()]
    if unknown:
        raise ValueError(f"unknown features: {', '.join(unknown)}")
    lo = _micros(start) - lookback_seconds(features, risk_delay_days) * _US if start is not None else None
    hi = _micros(until) if until is not None else None
    delay_us = int(round(risk_delay_days * 86400 * _US))

    def bounded(t: Column) -> Column:
        cond = F.lit(True)
        if lo is not None:
            cond = cond & (t >= lo)
        if hi is not None:
            cond = cond & (t < hi)
        return cond

    out = df.withColumn(_T, F.unix_micros(F.col(C.TS))).where(bounded(F.col(_T)))
    amount = F.col(C.AMOUNT)

    # --- per merchant: running sums of +/- events (see _merchant_events), one sort
    mneed = _needed_windows(features, "merchant")
    rate = "merchant_fraud_rate_30d" in features
    if rate:
        mneed["count"].add("30d")
    risk_rate, risk_count = _risk_windows(features)
    risk = risk_rate | risk_count
    if mneed["count"] or mneed["amount"] or risk:
        events = _merchant_events(out, df, mneed, rate, bounded, hi, risk, delay_us, lo)
        merchant = Window.partitionBy(C.MERCHANT_ID).orderBy(_T).rangeBetween(Window.unboundedPreceding, -1)
        mcols: dict[str, Column] = {}
        for w in sorted(mneed["count"]):
            mcols[f"_mc_{w}"] = F.coalesce(F.sum(f"_dc_{w}").over(merchant), F.lit(0))
        for w in sorted(mneed["amount"]):
            mcols[f"_ma_{w}"] = F.coalesce(F.sum(f"_da_{w}").over(merchant), F.lit(0)) / AMOUNT_SCALE
        if rate:
            mcols["_mcb_30d"] = F.coalesce(F.sum("_dcb").over(merchant), F.lit(0))
        for w in sorted(risk):
            mcols[f"_mrc_{w}"] = F.coalesce(F.sum(f"_drc_{w}").over(merchant), F.lit(0))
            if w in risk_rate:
                mcols[f"_mrf_{w}"] = F.coalesce(F.sum(f"_drf_{w}").over(merchant), F.lit(0))
        out = events.withColumns(mcols).where(F.col("_is_tx") == 1)

    # --- per card: one window ordering for every card feature
    card = Window.partitionBy(C.CARD_ID).orderBy(_T)
    cneed = _needed_windows(features, "card")
    if "amount_to_card_mean" in features:
        cneed["count"].add("30d")
        cneed["amount"].add("30d")
    card_max: set[str] = set()
    for f in features:
        if f.startswith(("card_mean_amount_", "amount_to_card_mean_")):
            cneed["count"].add(f.rsplit("_", 1)[1])
            cneed["amount"].add(f.rsplit("_", 1)[1])
        elif f.startswith(("card_max_amount_", "amount_to_card_max_")):
            card_max.add(f.rsplit("_", 1)[1])
    card_cols: dict[str, Column] = {}
    for w in sorted(cneed["count"]):
        card_cols[f"_cc_{w}"] = F.count(F.lit(1)).over(_frame(card, WINDOW_SECONDS[w]))
    for w in sorted(cneed["amount"]):
        card_cols[f"_ca_{w}"] = F.coalesce(F.sum(amount).over(_frame(card, WINDOW_SECONDS[w])), F.lit(0.0))
    for w in sorted(card_max):
        card_cols[f"_cx_{w}"] = F.max(amount).over(_frame(card, WINDOW_SECONDS[w]))
    if "seconds_since_card_prev" in features:
        card_cols["_cprev"] = F.max(_T).over(_frame(card, MAX_LOOKBACK_SECONDS))
    if card_cols:
        out = out.withColumns(card_cols)

    # --- the features themselves, as doubles
    feats: dict[str, Column] = {}
    for f in features:
        if f == "amount":
            continue  # the amount column is already there (and a slice column)
        if f == "hour_of_day":
            e = F.hour(F.col(C.TS))
        elif f == "is_weekend":
            e = F.dayofweek(F.col(C.TS)).isin(1, 7).cast("int")  # Spark: 1 = Sunday, 7 = Saturday
        elif f == "is_night":
            e = (F.hour(F.col(C.TS)) < 6).cast("int")
        elif f == "is_online":
            e = (F.lower(F.col(C.CHANNEL)) == "online").cast("int")  # null channel stays null
        elif f == "cross_border":
            e = (F.col(C.COUNTRY) != F.col(C.CARD_COUNTRY)).cast("int")
        elif f == "seconds_since_card_prev":
            e = (F.col(_T) - F.col("_cprev")) / _US
        elif f == "amount_to_card_mean":
            n, s = F.col("_cc_30d"), F.col("_ca_30d")
            e = F.when((n > 0) & (s != 0), amount / (s / n)).otherwise(F.lit(1.0))
        elif f == "merchant_fraud_rate_30d":
            e = F.col("_mcb_30d") / (F.col("_mc_30d") + F.lit(MERCHANT_RATE_SMOOTHING))
        elif f.startswith("card_mean_amount_"):
            w = f.rsplit("_", 1)[1]
            n, s = F.col(f"_cc_{w}"), F.col(f"_ca_{w}")
            e = F.when(n > 0, s / n).otherwise(F.lit(0.0))
        elif f.startswith("amount_to_card_mean_"):
            w = f.rsplit("_", 1)[1]
            n, s = F.col(f"_cc_{w}"), F.col(f"_ca_{w}")
            e = F.when((n > 0) & (s != 0), amount / (s / n)).otherwise(F.lit(1.0))
        elif f.startswith("card_max_amount_"):
            e = F.coalesce(F.col(f"_cx_{f.rsplit('_', 1)[1]}"), F.lit(0.0))
        elif f.startswith("amount_to_card_max_"):
            top = F.col(f"_cx_{f.rsplit('_', 1)[1]}")
            e = F.when(top.isNotNull() & (top != 0), amount / top).otherwise(F.lit(1.0))
        elif f.startswith("merchant_risk_count_"):
            e = F.col(f"_mrc_{f.rsplit('_', 1)[1]}")
        elif f.startswith("merchant_risk_"):
            w = f.rsplit("_", 1)[1]
            n = F.col(f"_mrc_{w}")
            e = F.when(n > 0, F.col(f"_mrf_{w}") / n).otherwise(F.lit(0.0))
        else:
            entity, kind, w = f.split("_")
            e = F.col(f"_{entity[0]}{kind[0]}_{w}")
        feats[f] = e.cast("double")
    out = out.withColumns(feats)
    if "amount" in features:
        out = out.withColumn(C.AMOUNT, amount.cast("double"))
    if start is not None:
        out = out.where(F.col(_T) >= _micros(start))
    helpers = [c for c in out.columns if c.startswith("_")]
    return out.drop(*helpers)


def build_training_set(raw_path: str | Path, spec: DataSpec, out_dir: str | Path, *, as_of: str | None = None,
                       previous_rows: int | None = None, spark: SparkSession | None = None,
                       clock: datetime | None = None, evidence: Sequence[EvidenceNeed] = ()) -> TrainingSetResult:
    """Read raw transactions, check them, build point-in-time features, write train/test Parquet.

    `as_of` (ISO date) overrides the spec's; when neither is set and the windows are
    derived, the latest transaction's time is used. `previous_rows` is the raw row count
    of the baseline version's data snapshot (``snapshot["rows"]``), for the row-count-change
    check. `clock` (default: now) is the run's clock: transactions after it are refused.
    `evidence`: what the contract's whole-population blocking clauses need from the test
    window (see checks.check_sample_size); a window short of it is refused before any
    feature is built, from per-window counts of the raw pass (in its one aggregation when
    the windows are known before the data is read, else one small aggregation after), and
    again on the written rows.
    Raises DataCheckError (first failed check), MissingColumnError or RatchetError.

    Output: ``out_dir/train.parquet`` and ``out_dir/test.parquet`` (directories of Parquet
    parts, readable by pandas.read_parquet) with transaction_id, ts (naive UTC),
    ``label`` (0/1), every feature (double) and the slice columns the data has, rows
    sorted by (ts, transaction_id) within each part.

        result = build_training_set("data/tx.parquet", spec, "out/trainingset", as_of="2025-06-01")
    """
    spark = spark or get_spark()
    features = list(spec.features)
    tx = read_transactions(spark, raw_path, spec)
    df = tx.df

    # 1. raw data: one aggregation; fail before the expensive part
    keep = filter_condition(spec.filters)
    null_columns = [c for c in C.REQUIRED if c in tx.columns]
    if C.LABEL_AVAILABLE_AT in tx.columns and not tx.label_available_derived:
        null_columns.append(C.LABEL_AVAILABLE_AT)
    ts_us = F.unix_micros(F.col(C.TS))
    now = clock or datetime.now(timezone.utc)
    as_of_ref = as_of or spec.windows.as_of or (spec.windows.test_end if spec.windows.explicit else None)
    as_of_end = _as_of_end(as_of_ref)
    label_at = None if tx.label_available_derived else F.unix_micros(F.col(C.LABEL_AVAILABLE_AT))
    doubles = tuple(f.name for f in df.schema.fields if f.dataType.typeName() in ("double", "float"))
    quality = QualityColumns(transaction_id=C.TRANSACTION_ID, ts_micros=ts_us, label_at_micros=label_at,
                             double_columns=doubles, clock_micros=_micros(now) + FUTURE_TOLERANCE_S * _US,
                             as_of_micros=_micros(as_of_end) if as_of_end is not None else None)
    # the windows, when known before the data is read: their counts join the one aggregation
    early = _windows_before_reading(spec, as_of) if evidence else None
    mature = F.unix_micros(F.col(C.LABEL_AVAILABLE_AT))
    censored = logged_block(tx.columns)
    if censored is not None:  # a blocked payment has no label: not a null, and not mature
        mature = F.when(~censored, mature)
    extra = window_columns(_window_bounds(early), keep, C.IS_FRAUD, ts_us,
                           mature <= F.lit(_micros(early.as_of))) if early else []
    if censored is not None:
        extra += logged_columns(keep, C.PROPENSITY in tx.columns, censored)
    checked = tx.checked if tx.checked is not None else df
    exempt = {C.IS_FRAUD: censored, C.LABEL_AVAILABLE_AT: censored} if censored is not None else None
    rstats, qstats, agg_row = raw_stats(checked, null_columns, keep, C.IS_FRAUD, ts_us, quality=quality,
                                        text_numeric=tx.text_numeric, extra=extra, null_exempt=exempt)
    results_logged = check_logged(agg_row, C.PROPENSITY in tx.columns) if censored is not None else []
    if censored is not None:
        explored = f"{int(agg_row['lg_explored'] or 0):,} explored (allowed with propensity < 1)" \
            if C.PROPENSITY in tx.columns else "no propensity column"
        print(f"[ratchet] logged decisions: {int(agg_row['lg_censored'] or 0):,} blocked rows (censored: no label; "
              f"censoring.censored: {spec.censoring.censored}), {explored}", flush=True)
    if any(rstats.unparsed.values()):
        rstats = text_examples(checked, rstats)
    qstats = with_examples(df, quality, qstats, keep)  # a limit(1) job per problem found; none on clean data
    expected = {c: CANONICAL_TYPES[c] for c in tx.columns}
    actual = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    results = run_checks(evaluate_raw(rstats, spec.checks, actual, expected, previous_rows))
    quality_results = evaluate_quality(
        qstats, rstats, spec.checks, clock=_text(_from_micros(quality.clock_micros)),
        as_of=_text(as_of_end) if as_of_end is not None else None, fmt_ts=lambda us: _text(_from_micros(us)))
    dropped = 0
    if qstats.duplicate_ids:
        example = _duplicate_example(df)
        quality_results[0] = check_duplicates(qstats.duplicate_ids, rstats.rows, example, spec.checks.duplicates)
        if spec.checks.duplicates == "drop":
            dropped = qstats.duplicate_ids
            first = Window.partitionBy(C.TRANSACTION_ID).orderBy(C.TS, C.LABEL_AVAILABLE_AT)
            df = df.withColumn("_n", F.row_number().over(first)).where(
                F.col(C.TRANSACTION_ID).isNull() | (F.col("_n") == 1)).drop("_n")
            print(f"[ratchet] checks.duplicates: drop: dropped {dropped:,} of {rstats.rows:,} rows that repeat a "
                  f"transaction_id (kept the first by ts)", flush=True)
    results += run_checks(quality_results)
    results += run_checks(results_logged)
    snapshot = data_snapshot(tx, rstats.rows)

    latest = _from_micros(rstats.max_ts_micros) if rstats.max_ts_micros is not None else None
    earliest = _from_micros(qstats.min_ts_micros) if qstats.min_ts_micros is not None else None
    try:
        windows = spec.windows.resolve(latest_ts=latest, as_of=as_of)
    except ValueError as exc:
        raise RatchetError(f"cannot resolve the train/test windows: {exc}") from None
    context = _window_context(windows, earliest, latest)
    _check_windows_overlap(windows, earliest, latest, context, spec, as_of)
    plan = _window_plan(windows, spec, earliest, latest)
    if evidence:
        if early != windows:  # as_of came from the data: one small aggregation for the windows' counts
            agg_row = tx.df.agg(*window_columns(_window_bounds(windows), keep, C.IS_FRAUD, ts_us,
                                                mature <= F.lit(_micros(windows.as_of)))).collect()[0]
        counts = window_counts(agg_row, ("train", "test"))
        sample = check_sample_size(evidence, counts["test"], plan)
        print(f"[ratchet] evidence: {sample.observed}; the contract needs {describe_needs(evidence)}", flush=True)
        results += run_checks([sample])

    # 2. features over all (filtered) history, then the two windows of mature rows
    if censored is not None:  # a blocked payment's label is unknown, whatever the feed says: no chargeback event
        df = df.withColumns({C.IS_FRAUD: F.when(~censored, F.col(C.IS_FRAUD)),
                             C.LABEL_AVAILABLE_AT: F.when(~censored, F.col(C.LABEL_AVAILABLE_AT))})
    feat = add_features(df.where(keep), features, start=min(windows.train_start, windows.test_start),
                        until=max(windows.train_end, windows.test_end),
                        risk_delay_days=spec.feature_options.risk_delay(spec.dataset))
    t = F.unix_micros(F.col(C.TS))
    in_window = (F.when((t >= _micros(windows.train_start)) & (t < _micros(windows.train_end)), F.lit("train"))
                 .when((t >= _micros(windows.test_start)) & (t < _micros(windows.test_end)), F.lit("test")))
    mature = F.unix_micros(F.col(C.LABEL_AVAILABLE_AT)) <= _micros(windows.as_of)
    split = F.when(in_window.isNotNull() & ~F.coalesce(mature, F.lit(False)), F.lit("immature")).otherwise(in_window)
    label = F.col(C.IS_FRAUD)
    logged: list[Column] = []
    if censored is not None:
        genuine = spec.censoring.censored == "genuine"
        train_row = F.coalesce(in_window == "train", F.lit(False))
        split = F.when(in_window.isNotNull() & censored & ~(train_row & F.lit(genuine)), F.lit("censored")) \
            .when(in_window.isNotNull() & censored, F.lit("train")).otherwise(split)
        label = F.when(censored, F.lit(0)).otherwise(label)  # only genuine mode writes such rows (train only)
        logged = [censored.cast("int").alias(CENSORED_COLUMN)]
        if C.PROPENSITY in tx.columns:
            logged.append(F.col(C.PROPENSITY).alias(PROPENSITY_COLUMN))
    slices = [c for c in SLICE_COLUMNS if c in tx.columns and c not in features]
    rows = (feat.withColumn("split", split).where(F.col("split").isNotNull())
            .select("split", C.TRANSACTION_ID, F.col(C.TS).cast("timestamp_ntz").alias(C.TS),
                    label.alias(LABEL), *features, *slices, *logged)
            .sortWithinPartitions("split", C.TS, C.TRANSACTION_ID))

    # 3. one write for both splits, then statistics from the written columns (cheap)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = out / "_parts"
    rows.write.mode("overwrite").partitionBy("split").parquet(str(parts))
    null_cols = [f for f in features if f not in NULLABLE_FEATURES]
    if any(parts.rglob("*.parquet")):
        splits = split_stats(spark.read.parquet(str(parts)), "split", LABEL, null_cols)
    else:  # no row in either window: reading the empty folder would fail to infer a schema
        splits = {}
    immature = splits.get("immature")
    censored_split = splits.get("censored")
    paths = {}
    for name in ("train", "test"):
        target = out / f"{name}.parquet"
        if target.exists():
            shutil.rmtree(target)
        src = parts / f"split={name}"
        if src.exists():
            os.replace(src, target)
        else:
            target.mkdir()
        paths[name] = str(target.resolve())
    shutil.rmtree(parts, ignore_errors=True)
    results += run_checks(evaluate_splits(splits, spec.checks, context))
    if evidence:  # exact now: duplicates dropped, immature labels dropped
        results += run_checks([check_sample_size(evidence, splits["test"], plan, when="written")])

    return TrainingSetResult(
        train_path=paths["train"], test_path=paths["test"],
        rows_train=splits["train"].rows, rows_test=splits["test"].rows, rows_duplicate_dropped=dropped,
        windows=windows, snapshot=snapshot, features=features,
        checks=[r.to_dict() for r in results], rows_immature=immature.rows if immature else 0,
        **logged_counts(censored_split, paths["train"], paths["test"], censored is not None),
    )


def _windows_before_reading(spec: DataSpec, as_of: str | None) -> ResolvedWindows | None:
    """The windows when they do not depend on the data (explicit, or an as_of is given)."""
    if not (spec.windows.explicit or as_of or spec.windows.as_of):
        return None
    try:
        return spec.windows.resolve(as_of=as_of)
    except ValueError:
        return None  # reported with the data's range once it is read


def _window_bounds(w: ResolvedWindows) -> dict[str, tuple[int, int]]:
    return {"train": (_micros(w.train_start), _micros(w.train_end)),
            "test": (_micros(w.test_start), _micros(w.test_end))}


def _window_plan(w: ResolvedWindows, spec: DataSpec, earliest: datetime | None,
                 latest: datetime | None) -> WindowPlan:
    sw = spec.windows
    return WindowPlan(test_start=str(w.test_start.date()), test_end=str(w.test_end.date()),
                      test_days=round((w.test_end - w.test_start).total_seconds() / 86400, 2), explicit=sw.explicit,
                      other_days=sw.maturity_days + sw.gap_days + sw.train_days,
                      data_days=(latest - earliest).total_seconds() / 86400 if earliest and latest else None)


def _text(dt: datetime) -> str:
    return dt.isoformat(sep=" ", timespec="seconds")


def _as_of_end(as_of: str | None) -> datetime | None:
    """The last instant of the as_of day (a date means the whole day), or None."""
    if not as_of:
        return None
    dt = datetime.fromisoformat(str(as_of))
    if dt.tzinfo:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    if len(str(as_of)) <= 10 or dt == datetime(dt.year, dt.month, dt.day):
        dt = dt + timedelta(days=1) - timedelta(microseconds=1)
    return dt


def _duplicate_example(df: DataFrame) -> str | None:
    """One repeated transaction_id (a small job, run only when the count says there are some)."""
    row = (df.where(F.col(C.TRANSACTION_ID).isNotNull()).groupBy(C.TRANSACTION_ID).count()
           .where(F.col("count") > 1).limit(1).collect())
    return f"{row[0][C.TRANSACTION_ID]} ({row[0]['count']} rows)" if row else None


def _window_context(w: ResolvedWindows, earliest: datetime | None, latest: datetime | None) -> str:
    span = (f"the data (after filters) spans {earliest.date()} to {latest.date()}" if earliest and latest
            else "the data has no rows after filters")
    return (f"step training_set: train window {w.train_start.date()} to {w.train_end.date()}, test window "
            f"{w.test_start.date()} to {w.test_end.date()}, as_of {w.as_of.date()}; {span}")


def _check_windows_overlap(w: ResolvedWindows, earliest: datetime | None, latest: datetime | None, context: str,
                           spec: DataSpec, as_of: str | None) -> None:
    """Refuse windows that lie entirely outside the data, before any feature is built."""
    if earliest is None or latest is None:
        return  # non_empty[after_filters] already failed
    outside = [name for name, lo, hi in (("train", w.train_start, w.train_end), ("test", w.test_start, w.test_end))
               if hi <= earliest or lo > latest]
    if not outside:
        return
    sw = spec.windows
    if sw.explicit:
        fix = "set the explicit windows (windows.train_start .. test_end) inside the data's range"
    else:
        back = sw.maturity_days + sw.test_days + sw.gap_days + sw.train_days
        lo, hi = earliest + timedelta(days=back), latest + timedelta(days=sw.maturity_days)
        source = "--as-of" if as_of else ("windows.as_of" if sw.as_of else "the latest transaction")
        if lo.date() <= hi.date():
            fix = (f"as_of came from {source}; choose --as-of (or windows.as_of) between {lo.date()} and {hi.date()} "
                   "so that both windows fall inside the data")
        else:
            fix = (f"the windows need {back} days of data (maturity_days + test_days + gap_days + train_days) but "
                   f"the data covers {(latest - earliest).days} days: lower those, or give more history")
    raise RatchetError(f"the {' and '.join(outside)} window holds no data: {context}. {fix}")


def build_recent_traffic(raw_path: str | Path, spec: DataSpec, out_path: str | Path, *, start: datetime,
                         end: datetime, spark: SparkSession | None = None) -> Path:
    """Point-in-time features for the rows with start <= ts < end, whatever their labels'
    maturity: traffic a release was neither trained nor judged on (after its test window).

    The demo replays it as the live traffic of the rollout: its labels stand for the ones
    that mature while the version is in shadow (the synthetic world knows them already).
    One Parquet file, rows in (ts, transaction_id) order, the same columns as test.parquet.
    """
    spark = spark or get_spark()
    features = list(spec.features)
    tx = read_transactions(spark, raw_path, spec)
    feat = add_features(tx.df.where(filter_condition(spec.filters)), features, start=start, until=end,
                        risk_delay_days=spec.feature_options.risk_delay(spec.dataset))
    slices = [c for c in SLICE_COLUMNS if c in tx.columns and c not in features]
    t = F.unix_micros(F.col(C.TS))
    rows = (feat.where((t >= _micros(start)) & (t < _micros(end)))
            .select(C.TRANSACTION_ID, F.col(C.TS).cast("timestamp_ntz").alias(C.TS), F.col(C.IS_FRAUD).alias(LABEL),
                    *features, *slices))
    frame = rows.toPandas().sort_values([C.TS, C.TRANSACTION_ID], kind="stable").reset_index(drop=True)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return out
