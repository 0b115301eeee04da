"""Data checks that run before anything trains.

Each check is a small pure function of already computed statistics and returns a
CheckResult saying what it saw and what it expected. The statistics come from two Spark
aggregations in the training-set job (one over the raw data, one over the train/test
rows), never one job per check. `run_checks` raises DataCheckError on the first failure.

    results = evaluate_raw(raw_stats, spec.checks, schema, previous_rows=412_000)
    run_checks(results)          # raises: data check 'row_count_change' failed: ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ratchet.data import columns as C
from ratchet.errors import DataCheckError
from ratchet.data.spec import Checks


@dataclass(frozen=True)
class CheckResult:
    """One data check: its name, whether it passed, the number it saw and the bound it needed."""

    name: str
    passed: bool
    observed: Any
    bound: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RawStats:
    """Statistics of the raw data under canonical names (one aggregation)."""

    rows: int  # before filters
    rows_filtered: int  # after the spec's filters
    nulls: dict[str, int] = field(default_factory=dict)  # per canonical column, before filters
    bad_labels: int = 0  # label values other than 0/1 (nulls not counted)
    max_ts_micros: int | None = None  # latest transaction after filters
    #: canonical numeric columns read from text: rows whose text is there but is not a number
    unparsed: dict[str, int] = field(default_factory=dict)
    unparsed_sources: dict[str, str] = field(default_factory=dict)  # canonical -> "'source' (type)"
    unparsed_examples: dict[str, str | None] = field(default_factory=dict)  # one text that did not parse


@dataclass(frozen=True)
class QualityStats:
    """What real transaction feeds get wrong, counted in the same raw aggregation (see quality_columns).

    Counts are over the rows the spec keeps (after filters) unless said otherwise; each
    `*_example` is one transaction_id showing the problem (None when the count is 0).
    """

    positives: int = 0  # is_fraud == 1 after filters
    negatives: int = 0  # is_fraud == 0 after filters
    duplicate_ids: int = 0  # rows whose transaction_id another row already has (all rows, before filters)
    future_rows: int = 0  # ts after the run's clock (plus FUTURE_TOLERANCE_S), all rows
    future_example: str | None = None
    future_max_ts_micros: int | None = None
    after_as_of_rows: int = 0  # ts after as_of (when one is known), all rows
    after_as_of_example: str | None = None
    label_before_ts: int = 0  # label_available_at < ts (a chargeback before the payment)
    label_before_ts_example: str | None = None
    infinite: dict[str, int] = field(default_factory=dict)  # per double column: +inf or -inf
    infinite_examples: dict[str, str | None] = field(default_factory=dict)
    min_ts_micros: int | None = None  # earliest transaction after filters


@dataclass(frozen=True)
class QualityColumns:
    """The columns and reference times quality_columns needs (canonical names)."""

    transaction_id: str
    ts_micros: Column
    label_at_micros: Column | None = None  # None when label_available_at is derived (never before ts)
    double_columns: tuple[str, ...] = ()
    clock_micros: int | None = None  # the run's clock + tolerance; rows after it are in the future
    as_of_micros: int | None = None  # end of the as_of day; None: no as_of known before the data is read


@dataclass(frozen=True)
class SplitStats:
    """Statistics of one split (train or test) of the training set (one aggregation for both)."""

    rows: int = 0
    positives: int = 0
    nulls: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EvidenceNeed:
    """What one blocking contract clause judged on the whole test set needs: the gate fails
    it when the test window holds fewer than `min_support` of `support` (rows, positives
    or negatives), so a release short of it is rejected whatever the model."""

    clause: str
    source: str  # contract file:line
    support: str  # "rows" | "positives" | "negatives"
    min_support: int


#: How each kind of support is named in messages.
SUPPORT_WORDS = {"rows": "rows", "positives": "fraud rows", "negatives": "genuine rows"}


@dataclass(frozen=True)
class WindowPlan:
    """What the sample-size check needs to suggest a test window: the resolved test window,
    the spec's window lengths and the data's span (days, after filters)."""

    test_start: str
    test_end: str
    test_days: float
    explicit: bool
    other_days: int = 0  # maturity_days + gap_days + train_days (derived windows)
    data_days: float | None = None


# --- the checks: pure functions ------------------------------------------------------

def check_non_empty(what: str, rows: int) -> CheckResult:
    return CheckResult(f"non_empty[{what}]", rows > 0, rows, "> 0 rows",
                       "" if rows > 0 else f"no rows in {what}: check the path, the filters and the windows")


def check_min_rows(what: str, rows: int, min_rows: int) -> CheckResult:
    return CheckResult(f"min_rows[{what}]", rows >= min_rows, rows, f">= {min_rows} rows (checks.min_rows)",
                       "widen the window or lower checks.min_rows")


def check_both_labels(what: str, rows: int, positives: int) -> CheckResult:
    negatives = rows - positives
    ok = positives > 0 and negatives > 0
    return CheckResult(f"both_labels_present[{what}]", ok, f"{positives} fraud / {negatives} genuine",
                       ">= 1 of each", "" if ok else f"the {what} window has only one label class; widen it")


def check_label_rate(what: str, rows: int, positives: int, lo: float, hi: float) -> CheckResult:
    rate = positives / rows if rows else 0.0
    return CheckResult(f"label_rate[{what}]", lo <= rate <= hi, round(rate, 6),
                       f"within [{lo}, {hi}] (checks.label_rate_min/max)",
                       "is the label column right, and are labels mature in this window?")


def check_null_rate(what: str, column: str, nulls: int, rows: int, max_rate: float) -> CheckResult:
    rate = nulls / rows if rows else 0.0
    return CheckResult(f"null_rate[{what}.{column}]", rate <= max_rate, round(rate, 6),
                       f"<= {max_rate} (checks.max_null_rate)",
                       f"{nulls} of {rows} rows have no usable '{column}' (missing, NaN or unparseable)")


def check_label_values(bad: int) -> CheckResult:
    return CheckResult("label_values", bad == 0, f"{bad} rows", "labels in {0, 1}",
                       "map the label to a 0/1 (or true/false) column")


def check_row_count_change(rows: int, previous_rows: int | None, max_change: float) -> CheckResult:
    if previous_rows is None or previous_rows <= 0:
        return CheckResult("row_count_change", True, "skipped (no previous run)", f"|change| <= {max_change}")
    change = rows / previous_rows - 1.0
    return CheckResult("row_count_change", abs(change) <= max_change,
                       f"{change:+.1%} ({previous_rows} -> {rows} rows)",
                       f"|change| <= {max_change:.0%} (checks.max_row_count_change)",
                       "the raw data grew or shrank a lot since the previous run: is a partition missing?")


def check_both_labels_raw(positives: int, negatives: int) -> CheckResult:
    ok = positives > 0 and negatives > 0
    which = "fraud (is_fraud = 1)" if positives == 0 else "genuine (is_fraud = 0)"
    return CheckResult("both_labels_present[raw]", ok, f"{positives} fraud / {negatives} genuine in the whole file",
                       ">= 1 of each", "" if ok else
                       f"the whole file (after filters) has no {which} rows, so no window can have both classes: "
                       "check the label column (dataset.columns.is_fraud or label:) and the export; "
                       "widening the windows cannot help")


def check_duplicates(duplicates: int, rows: int, example: str | None, mode: str) -> CheckResult:
    ex = f"; e.g. transaction_id {example}" if example else ""
    if duplicates == 0:
        return CheckResult("duplicates[transaction_id]", True, "0 rows", "unique transaction_id")
    if mode == "drop":
        return CheckResult("duplicates[transaction_id]", True, f"{duplicates} of {rows} rows dropped{ex}",
                           "unique transaction_id (checks.duplicates: drop keeps the first by ts)",
                           f"dropped {duplicates} duplicated rows, kept the first of each transaction_id")
    return CheckResult("duplicates[transaction_id]", False, f"{duplicates} of {rows} rows repeat a transaction_id{ex}",
                       "unique transaction_id (checks.duplicates: refuse)",
                       "deduplicate the export, or set checks.duplicates: drop to keep the first row of each "
                       "transaction_id (by ts)")


def check_future(rows: int, example: str | None, latest: str | None, limit: str, what: str, key: str) -> CheckResult:
    ex = (f"; e.g. transaction_id {example}" if example else "") + (f"; the latest ts is {latest}" if latest else "")
    return CheckResult(f"future_ts[{what}]", rows == 0, f"{rows} rows with ts after {limit}{ex}",
                       f"no ts after {limit} ({key})",
                       "" if rows == 0 else "column 'ts' has transactions in the future: check the timestamp "
                       "column, its unit and dataset.timestamp_format (or the clock of the export)"
                       + (", or pass the release date with --as-of / windows.as_of" if what == "as_of" else ""))


def check_label_before_ts(bad: int, rows: int, example: str | None, max_rate: float) -> CheckResult:
    rate = bad / rows if rows else 0.0
    ex = f"; e.g. transaction_id {example}" if example else ""
    return CheckResult("label_before_ts", rate <= max_rate, f"{bad} of {rows} rows ({rate:.2%}){ex}",
                       f"label_available_at >= ts in all but {max_rate} of rows (checks.max_label_before_ts_rate)",
                       "" if rate <= max_rate else "column 'label_available_at' is before 'ts' (a chargeback before "
                       "the payment): the merchant fraud rate would see the label early; check the mapping of "
                       "label_available_at (dataset.columns) and its time zone, or drop it and set "
                       "dataset.label_delay_days")


def check_infinite(column: str, count: int, rows: int, example: str | None) -> CheckResult:
    ex = f"; e.g. transaction_id {example}" if example else ""
    return CheckResult(f"infinite[{column}]", count == 0, f"{count} of {rows} rows are +inf or -inf{ex}", "finite values",
                       "" if count == 0 else f"column '{column}' has infinite values: fix the export, or drop those "
                       f"rows with a filter ({{column: {column}, op: '<', value: 1.0e300}})")


def check_numeric_text(column: str, source: str, bad: int, rows: int, example: str | None,
                       max_rate: float) -> CheckResult:
    """A canonical numeric column that arrives as text must parse (amounts as '1.234,56 EUR' do not).

    Runs before the filters are counted: a filter on the column (amount > 0) would
    otherwise drop every unparsed row and point at the filters instead."""
    rate = bad / rows if rows else 0.0
    ok = rate <= max_rate
    ex = f", e.g. {example!r}" if example is not None else ""
    if column == C.IS_FRAUD:
        what, fix = "0/1 labels", "Export the label as 0/1 (or true/false, yes/no)"
    else:
        what = "numbers"
        fix = (f"Convert '{column}' to a number in the export: a numeric column, or text with a decimal point and "
               "no thousands separator or currency (1234.56, not '1.234,56 EUR'; keep the currency in its own "
               "column)")
    return CheckResult(f"numeric[raw.{column}]", ok, f"{bad} of {rows} rows ({rate:.2%}) of column {source} are not "
                       f"{what}{ex}", f"<= {max_rate} of rows unparseable (checks.max_null_rate)", "" if ok else fix)


def describe_needs(needs: list[EvidenceNeed] | tuple[EvidenceNeed, ...]) -> str:
    """'auc_floor >= 100 fraud rows; recall_at_baseline_fpr >= 200 fraud rows', or 'nothing'."""
    return "; ".join(f"{n.clause} >= {n.min_support} {SUPPORT_WORDS[n.support]}" for n in needs) or "nothing"


def _have(test: "SplitStats", support: str) -> int:
    return {"rows": test.rows, "positives": test.positives, "negatives": test.rows - test.positives}[support]


def check_sample_size(needs: list[EvidenceNeed] | tuple[EvidenceNeed, ...], test: "SplitStats", plan: WindowPlan,
                      when: str = "raw") -> CheckResult:
    """The test window holds the evidence each whole-population blocking clause needs.

    A clause judged on the whole test set fails below its min_support (ratchet.contracts),
    so a window short of it dooms the release after training and scoring; this says so
    first, with the counts, the clause and the test_days that would hold enough (from the
    test window's own rate per day, plus 10% for day-to-day variation)."""
    name = f"sample_size[test{'' if when == 'raw' else '.' + when}]"
    window = f"the test window {plan.test_start} to {plan.test_end} ({plan.test_days:g} days)"
    held = f"{test.rows} rows, {test.positives} fraud, {test.rows - test.positives} genuine in {window}"
    short = [n for n in needs if _have(test, n.support) < n.min_support]
    bound = f"what the contract's whole-population blocking clauses need ({describe_needs(needs)}; min_support)"
    if not short:
        return CheckResult(name, True, held, bound)
    worst = max(short, key=lambda n: n.min_support / max(_have(test, n.support), 0.5))
    have, words = _have(test, worst.support), SUPPORT_WORDS[worst.support]
    parts = [f"The contract's {n.clause} ({n.source}) is judged on the whole test set and fails below "
             f"{n.min_support} {SUPPORT_WORDS[n.support]}; the test window holds {_have(test, n.support)}"
             for n in short]
    text = "; ".join(parts) + ", so this release would be rejected after training whatever the model"
    if have > 0 and plan.test_days > 0:
        rate = have / plan.test_days
        days = int(-(-worst.min_support * 1.1 // rate))
        text += (f". At the test window's {rate:.3g} {words} a day, {worst.min_support} need about "
                 f"{worst.min_support / rate:.0f} days: ")
        if plan.explicit:
            text += f"widen the explicit test window (windows.test_start .. windows.test_end) to {days} days or more"
        else:
            text += f"set windows.test_days to {days} or more (10% margin)"
            total = plan.other_days + days
            if plan.data_days is not None and total > plan.data_days:
                text += (f"; the windows then need {total} days of data (maturity_days + test_days + gap_days + "
                         f"train_days) but the data covers {plan.data_days:.0f}: also shorten train_days or give "
                         "more history")
    else:
        text += f". The test window has no {words} at all: check the label column and the windows"
    text += (f"; or give more data; or lower min_support of {worst.clause} in the contract ({worst.source}), "
             "accepting a judgement on less evidence")
    return CheckResult(name, False, held, bound, text)


def check_schema(actual: dict[str, str], expected: dict[str, str]) -> CheckResult:
    """Every expected column present with the expected Spark type."""
    wrong = [f"{c}: {actual.get(c, 'missing')} (want {t})" for c, t in expected.items() if actual.get(c) != t]
    return CheckResult("schema", not wrong, "; ".join(wrong) or "ok", "canonical columns and types",
                       "check dataset.columns and dataset.timestamp_format")


# --- statistics: one Spark aggregation each ------------------------------------------

def _null(col: str, numeric: bool, exempt: Column | None = None) -> Column:
    c = F.col(col)
    missing = (c.isNull() | F.isnan(c)) if numeric else c.isNull()
    if exempt is not None:  # rows where a null is expected (a blocked payment's label)
        missing = missing & ~F.coalesce(exempt, F.lit(False))
    return F.sum(F.when(missing, 1).otherwise(0))


def quality_columns(q: QualityColumns, keep: Column, label: str) -> list[Column]:
    """The aggregate expressions of QualityStats, added to raw_stats' one job (aliases q_*)."""
    tid, ts = F.col(q.transaction_id), q.ts_micros
    aggs = [F.sum(F.when(keep & (F.col(label) == 1), 1).otherwise(0)).alias("q_pos"),
            F.sum(F.when(keep & (F.col(label) == 0), 1).otherwise(0)).alias("q_neg"),
            (F.count(tid) - F.count_distinct(tid)).alias("q_dup"),
            F.min(F.when(keep, ts)).alias("q_min_ts")]
    if q.clock_micros is not None:
        fut = ts > F.lit(q.clock_micros)
        aggs += [F.sum(F.when(fut, 1).otherwise(0)).alias("q_fut"), F.max(F.when(fut, ts)).alias("q_fut_max")]
    if q.as_of_micros is not None:
        late = ts > F.lit(q.as_of_micros)
        aggs.append(F.sum(F.when(late, 1).otherwise(0)).alias("q_late"))
    if q.label_at_micros is not None:
        early = keep & (q.label_at_micros < ts)
        aggs.append(F.sum(F.when(early, 1).otherwise(0)).alias("q_early"))
    for i, c in enumerate(q.double_columns):
        inf = keep & F.col(c).isin(float("inf"), float("-inf"))
        aggs.append(F.sum(F.when(inf, 1).otherwise(0)).alias(f"q_inf_{i}"))
    return aggs


def _conditions(q: QualityColumns, keep: Column) -> dict[str, Column]:
    conds: dict[str, Column] = {}
    if q.clock_micros is not None:
        conds["future"] = q.ts_micros > F.lit(q.clock_micros)
    if q.as_of_micros is not None:
        conds["after_as_of"] = q.ts_micros > F.lit(q.as_of_micros)
    if q.label_at_micros is not None:
        conds["label_before_ts"] = keep & (q.label_at_micros < q.ts_micros)
    for c in q.double_columns:
        conds[f"inf:{c}"] = keep & F.col(c).isin(float("inf"), float("-inf"))
    return conds


def with_examples(df: DataFrame, q: QualityColumns, stats: QualityStats, keep: Column) -> QualityStats:
    """`stats` with one example transaction_id per problem found: a `limit(1)` job per
    non-zero count, so a clean file pays nothing for examples."""
    counts = {"future": stats.future_rows, "after_as_of": stats.after_as_of_rows,
              "label_before_ts": stats.label_before_ts, **{f"inf:{c}": n for c, n in stats.infinite.items()}}
    found: dict[str, str | None] = {}
    for key, cond in _conditions(q, keep).items():
        if counts.get(key):
            row = df.where(cond).select(q.transaction_id).limit(1).collect()
            found[key] = str(row[0][0]) if row else None
    return replace(stats, future_example=found.get("future"), after_as_of_example=found.get("after_as_of"),
                   label_before_ts_example=found.get("label_before_ts"),
                   infinite_examples={c: found.get(f"inf:{c}") for c in stats.infinite})


def _quality(row: Any, q: QualityColumns) -> QualityStats:
    def get(name: str) -> Any:
        return row[name] if name in row.__fields__ else None

    def ex(name: str) -> str | None:
        v = get(name)
        return None if v is None else str(v)

    return QualityStats(
        positives=int(get("q_pos") or 0), negatives=int(get("q_neg") or 0), duplicate_ids=int(get("q_dup") or 0),
        future_rows=int(get("q_fut") or 0), future_example=ex("q_fut_ex"), future_max_ts_micros=get("q_fut_max"),
        after_as_of_rows=int(get("q_late") or 0), after_as_of_example=ex("q_late_ex"),
        label_before_ts=int(get("q_early") or 0), label_before_ts_example=ex("q_early_ex"),
        infinite={c: int(get(f"q_inf_{i}") or 0) for i, c in enumerate(q.double_columns)},
        infinite_examples={c: ex(f"q_inf_ex_{i}") for i, c in enumerate(q.double_columns)},
        min_ts_micros=get("q_min_ts"))


def raw_stats(df: DataFrame, null_columns: list[str], keep: Column, label: str, ts_micros: Column,
              quality: QualityColumns | None = None, text_numeric: dict[str, str] | None = None,
              source_prefix: str = "_src_", extra: list[Column] | None = None,
              null_exempt: dict[str, Column] | None = None) -> Any:
    """Row counts, null counts, bad label values and the latest timestamp, in one job.

    With `quality`, the same job also counts what QualityStats holds (labels, duplicated
    ids, future timestamps, labels before ts, infinities: conditional sums) and a
    (RawStats, QualityStats) pair is returned, without examples (see with_examples). The
    duplicate count is the main extra cost: an exact count_distinct of transaction_id
    (Spark expands the rows once for it; no second scan of the file).

    `text_numeric` (canonical -> "'source' (type)"): numeric columns read from text, whose
    source is `df[source_prefix + canonical]`; rows with text that did not parse are
    counted (RawStats.unparsed, no examples: see text_examples). `extra`: more aggregate
    expressions for the same job; with it, the result row is returned last. `null_exempt`
    (column -> condition): rows where that column's null is expected, not counted (a
    censored row's label and label_available_at).
    """
    numeric = {f.name for f in df.schema.fields if f.dataType.typeName() in ("double", "float")}
    aggs = [F.count(F.lit(1)).alias("rows"), F.sum(F.when(keep, 1).otherwise(0)).alias("rows_filtered"),
            F.sum(F.when(F.col(label).isNotNull() & ~F.col(label).isin(0, 1), 1).otherwise(0)).alias("bad_labels"),
            F.max(F.when(keep, ts_micros)).alias("max_ts")]
    exempt = null_exempt or {}
    aggs += [_null(c, c in numeric, exempt.get(c)).alias(f"n_{i}") for i, c in enumerate(null_columns)]
    text_numeric = text_numeric or {}
    aggs += [F.sum(F.when(_unparsed(c, source_prefix), 1).otherwise(0)).alias(f"u_{i}")
             for i, c in enumerate(text_numeric)]
    if quality is not None:
        aggs += quality_columns(quality, keep, label)
    row = df.agg(*aggs, *(extra or [])).collect()[0]
    stats = RawStats(rows=int(row["rows"] or 0), rows_filtered=int(row["rows_filtered"] or 0),
                     nulls={c: int(row[f"n_{i}"] or 0) for i, c in enumerate(null_columns)},
                     bad_labels=int(row["bad_labels"] or 0), max_ts_micros=row["max_ts"],
                     unparsed={c: int(row[f"u_{i}"] or 0) for i, c in enumerate(text_numeric)},
                     unparsed_sources=dict(text_numeric))
    out: tuple[Any, ...] = (stats,) if quality is None else (stats, _quality(row, quality))
    if extra is not None:
        out += (row,)
    return out[0] if len(out) == 1 else out


def _unparsed(canonical: str, source_prefix: str) -> Column:
    return F.col(source_prefix + canonical).isNotNull() & F.col(canonical).isNull()


def text_examples(df: DataFrame, stats: RawStats, source_prefix: str = "_src_") -> RawStats:
    """`stats` with one text that did not parse per column that has some (a limit(1) job each)."""
    found: dict[str, str | None] = {}
    for c, n in stats.unparsed.items():
        if n:
            row = df.where(_unparsed(c, source_prefix)).select(source_prefix + c).limit(1).collect()
            found[c] = str(row[0][0]) if row else None
    return replace(stats, unparsed_examples=found)


def window_columns(bounds: dict[str, tuple[int, int]], keep: Column, label: str, ts_micros: Column,
                   mature: Column) -> list[Column]:
    """Aggregates for rows and positives per window ({"train": (lo_us, hi_us), ...}) among the
    rows the spec keeps whose label is final (`mature`): the rows each split will hold
    (before duplicates are dropped). Aliases w_<window>_rows / w_<window>_pos."""
    aggs = []
    for w, (lo, hi) in bounds.items():
        inside = keep & (ts_micros >= F.lit(lo)) & (ts_micros < F.lit(hi)) & F.coalesce(mature, F.lit(False))
        aggs += [F.sum(F.when(inside, 1).otherwise(0)).alias(f"w_{w}_rows"),
                 F.sum(F.when(inside & (F.col(label) == 1), 1).otherwise(0)).alias(f"w_{w}_pos")]
    return aggs


def window_counts(row: Any, windows: list[str] | tuple[str, ...]) -> dict[str, SplitStats]:
    """SplitStats (rows, positives) per window from a row holding window_columns' aggregates."""
    return {w: SplitStats(rows=int(row[f"w_{w}_rows"] or 0), positives=int(row[f"w_{w}_pos"] or 0))
            for w in windows}


def split_stats(df: DataFrame, split_col: str, label: str, null_columns: list[str]) -> dict[str, SplitStats]:
    """Rows, positives and null counts per split value, in one job."""
    numeric = {f.name for f in df.schema.fields if f.dataType.typeName() in ("double", "float")}
    aggs = [F.count(F.lit(1)).alias("rows"), F.sum(F.col(label)).alias("pos")]
    aggs += [_null(c, c in numeric).alias(f"n_{i}") for i, c in enumerate(null_columns)]
    out: dict[str, SplitStats] = {}
    for row in df.groupBy(split_col).agg(*aggs).collect():
        out[row[split_col]] = SplitStats(rows=int(row["rows"]), positives=int(row["pos"] or 0),
                                         nulls={c: int(row[f"n_{i}"] or 0) for i, c in enumerate(null_columns)})
    return out


# --- evaluating and enforcing ----------------------------------------------------------

def evaluate_raw(stats: RawStats, bounds: Checks, schema: dict[str, str], expected_schema: dict[str, str],
                 previous_rows: int | None = None, label: str = "is_fraud") -> list[CheckResult]:
    """Checks on the raw data, in the order they should fail."""
    results = [check_non_empty("raw", stats.rows), check_schema(schema, expected_schema)]
    results += [check_numeric_text(c, stats.unparsed_sources.get(c, f"'{c}'"), n, stats.rows,
                                   stats.unparsed_examples.get(c), bounds.max_null_rate)
                for c, n in stats.unparsed.items()]
    results.append(check_non_empty("after_filters", stats.rows_filtered))
    results += [check_null_rate("raw", c, n, stats.rows, bounds.max_null_rate) for c, n in stats.nulls.items()]
    results += [check_label_values(stats.bad_labels),
                check_row_count_change(stats.rows, previous_rows, bounds.max_row_count_change)]
    return results


def evaluate_quality(q: QualityStats, stats: RawStats, bounds: Checks, *, clock: str | None = None,
                     as_of: str | None = None, fmt_ts: Any = str) -> list[CheckResult]:
    """The raw-pass checks of what feeds get wrong, after evaluate_raw's, in the order they should fail.

    `clock` / `as_of` are the limits as text (None: that check was not counted);
    `fmt_ts` turns microseconds into text for the messages.
    """
    results = [check_duplicates(q.duplicate_ids, stats.rows, None, bounds.duplicates)]
    if clock is not None:
        results.append(check_future(q.future_rows, q.future_example,
                                    fmt_ts(q.future_max_ts_micros) if q.future_max_ts_micros is not None else None,
                                    clock, "clock", "the run's clock"))
    if as_of is not None and bounds.after_as_of == "refuse":
        results.append(check_future(q.after_as_of_rows, q.after_as_of_example, None, as_of, "as_of",
                                    "checks.after_as_of: refuse"))
    results += [check_infinite(c, n, stats.rows_filtered, q.infinite_examples.get(c)) for c, n in q.infinite.items()]
    results.append(check_label_before_ts(q.label_before_ts, stats.rows_filtered, q.label_before_ts_example,
                                         bounds.max_label_before_ts_rate))
    results.append(check_both_labels_raw(q.positives, q.negatives))
    return results


def evaluate_splits(splits: dict[str, SplitStats], bounds: Checks, context: str = "") -> list[CheckResult]:
    """Checks on the train and test rows, in the order they should fail.

    `context` (the window dates and the data's date range) is added to the hints of the
    emptiness checks."""
    train, test = splits.get("train", SplitStats()), splits.get("test", SplitStats())
    empty = [check_non_empty(w, s.rows) for w, s in (("train", train), ("test", test))]
    if context:
        empty = [r if r.passed else CheckResult(r.name, r.passed, r.observed, r.bound, f"{r.hint}; {context}")
                 for r in empty]
    results = [*empty,
               check_min_rows("train", train.rows, bounds.min_rows),
               check_both_labels("train", train.rows, train.positives),
               check_both_labels("test", test.rows, test.positives),
               check_label_rate("train", train.rows, train.positives, bounds.label_rate_min, bounds.label_rate_max),
               check_label_rate("test", test.rows, test.positives, bounds.label_rate_min, bounds.label_rate_max)]
    for name, s in (("train", train), ("test", test)):
        results += [check_null_rate(name, c, n, s.rows, bounds.max_null_rate) for c, n in s.nulls.items()]
    return results


def run_checks(results: list[CheckResult]) -> list[CheckResult]:
    """Raise DataCheckError for the first failed check; return all results when every one passed."""
    for r in results:
        if not r.passed:
            raise DataCheckError(r.name, r.observed, r.bound, r.hint)
    return results
