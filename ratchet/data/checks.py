"""Data checks that run before anything trains.

Each check is a small pure function of already computed statistics and returns a
CheckResult saying what it saw and what it expected. The statistics come from two Spark
aggregations in the training-set job (one over the raw data, one over the train/test
rows), never one job per check. `run_checks` raises DataCheckError on the first failure.

    results = evaluate_raw(raw_stats, spec.checks, schema, previous_rows=412_000)
    run_checks(results)          # raises: data check 'row_count_change' failed: ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

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


@dataclass(frozen=True)
class SplitStats:
    """Statistics of one split (train or test) of the training set (one aggregation for both)."""

    rows: int = 0
    positives: int = 0
    nulls: dict[str, int] = field(default_factory=dict)


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
                       f"{nulls} of {rows} rows have no usable '{column}' (missing or unparseable)")


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


def check_schema(actual: dict[str, str], expected: dict[str, str]) -> CheckResult:
    """Every expected column present with the expected Spark type."""
    wrong = [f"{c}: {actual.get(c, 'missing')} (want {t})" for c, t in expected.items() if actual.get(c) != t]
    return CheckResult("schema", not wrong, "; ".join(wrong) or "ok", "canonical columns and types",
                       "check dataset.columns and dataset.timestamp_format")


# --- statistics: one Spark aggregation each ------------------------------------------

def _null(col: str, numeric: bool) -> Column:
    c = F.col(col)
    missing = (c.isNull() | F.isnan(c)) if numeric else c.isNull()
    return F.sum(F.when(missing, 1).otherwise(0))


def raw_stats(df: DataFrame, null_columns: list[str], keep: Column, label: str, ts_micros: Column) -> RawStats:
    """Row counts, null counts, bad label values and the latest timestamp, in one job."""
    numeric = {f.name for f in df.schema.fields if f.dataType.typeName() in ("double", "float")}
    aggs = [F.count(F.lit(1)).alias("rows"), F.sum(F.when(keep, 1).otherwise(0)).alias("rows_filtered"),
            F.sum(F.when(F.col(label).isNotNull() & ~F.col(label).isin(0, 1), 1).otherwise(0)).alias("bad_labels"),
            F.max(F.when(keep, ts_micros)).alias("max_ts")]
    aggs += [_null(c, c in numeric).alias(f"n_{i}") for i, c in enumerate(null_columns)]
    row = df.agg(*aggs).collect()[0]
    return RawStats(rows=int(row["rows"] or 0), rows_filtered=int(row["rows_filtered"] or 0),
                    nulls={c: int(row[f"n_{i}"] or 0) for i, c in enumerate(null_columns)},
                    bad_labels=int(row["bad_labels"] or 0), max_ts_micros=row["max_ts"])


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
    results = [check_non_empty("raw", stats.rows), check_schema(schema, expected_schema),
               check_non_empty("after_filters", stats.rows_filtered)]
    results += [check_null_rate("raw", c, n, stats.rows, bounds.max_null_rate) for c, n in stats.nulls.items()]
    results += [check_label_values(stats.bad_labels),
                check_row_count_change(stats.rows, previous_rows, bounds.max_row_count_change)]
    return results


def evaluate_splits(splits: dict[str, SplitStats], bounds: Checks) -> list[CheckResult]:
    """Checks on the train and test rows, in the order they should fail."""
    train, test = splits.get("train", SplitStats()), splits.get("test", SplitStats())
    results = [check_non_empty("train", train.rows), check_non_empty("test", test.rows),
               check_min_rows("train", train.rows, bounds.min_rows),
               check_both_labels("train", train.rows, train.positives),
               check_both_labels("test", test.rows, test.positives),
               check_label_rate("train", train.rows, train.positives, bounds.label_rate_min, bounds.label_rate_max)]
    for name, s in (("train", train), ("test", test)):
        results += [check_null_rate(name, c, n, s.rows, bounds.max_null_rate) for c, n in s.nulls.items()]
    return results


def run_checks(results: list[CheckResult]) -> list[CheckResult]:
    """Raise DataCheckError for the first failed check; return all results when every one passed."""
    for r in results:
        if not r.passed:
            raise DataCheckError(r.name, r.observed, r.bound, r.hint)
    return results
