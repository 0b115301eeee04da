"""Data checks: pure check functions, their ordering, and the statistics aggregations."""

from __future__ import annotations

import pytest

from ratchet.data.checks import (
    CheckResult, RawStats, SplitStats, check_both_labels, check_label_rate, check_min_rows, check_non_empty,
    check_null_rate, check_row_count_change, check_schema, evaluate_raw, evaluate_splits, run_checks,
)
from ratchet.errors import DataCheckError
from ratchet.train.spec import Checks

BOUNDS = Checks(min_rows=100, label_rate_min=0.001, label_rate_max=0.2, max_null_rate=0.01, max_row_count_change=0.5)
SCHEMA = {"ts": "timestamp", "amount": "double"}


def test_each_check_passes_and_fails_on_its_bound():
    assert check_non_empty("raw", 1).passed and not check_non_empty("raw", 0).passed
    assert check_min_rows("train", 100, 100).passed and not check_min_rows("train", 99, 100).passed
    assert check_both_labels("train", 10, 1).passed
    assert not check_both_labels("train", 10, 0).passed and not check_both_labels("train", 10, 10).passed
    assert check_label_rate("train", 1000, 200, 0.001, 0.2).passed
    assert not check_label_rate("train", 1000, 201, 0.001, 0.2).passed
    assert not check_label_rate("train", 1000, 0, 0.001, 0.2).passed
    assert check_null_rate("raw", "amount", 1, 100, 0.01).passed
    assert not check_null_rate("raw", "amount", 2, 100, 0.01).passed
    assert check_row_count_change(150, 100, 0.5).passed and check_row_count_change(50, 100, 0.5).passed
    assert not check_row_count_change(151, 100, 0.5).passed and not check_row_count_change(49, 100, 0.5).passed
    skipped = check_row_count_change(10, None, 0.5)
    assert skipped.passed and "skipped" in skipped.observed
    assert check_schema(SCHEMA, SCHEMA).passed
    bad = check_schema({"ts": "string"}, SCHEMA)
    assert not bad.passed and bad.observed == "ts: string (want timestamp); amount: missing (want double)"


@pytest.mark.parametrize("result, message", [
    (check_non_empty("train", 0), "data check 'non_empty[train]' failed: observed 0, expected > 0 rows"),
    (check_both_labels("test", 50, 0), "data check 'both_labels_present[test]' failed: observed 0 fraud / 50 genuine"),
    (check_null_rate("test", "card_count_1h", 5, 100, 0.01),
     "data check 'null_rate[test.card_count_1h]' failed: observed 0.05, expected <= 0.01 (checks.max_null_rate)"),
    (check_label_rate("train", 100, 50, 0.001, 0.2),
     "data check 'label_rate[train]' failed: observed 0.5, expected within [0.001, 0.2]"),
    (check_row_count_change(40, 100, 0.5),
     "data check 'row_count_change' failed: observed -60.0% (100 -> 40 rows), expected |change| <= 50%"),
    (check_min_rows("train", 10, 100), "data check 'min_rows[train]' failed: observed 10, expected >= 100 rows"),
])
def test_run_checks_raises_naming_check_observed_and_bound(result, message):
    with pytest.raises(DataCheckError) as err:
        run_checks([CheckResult("ok", True, 1, "x"), result])
    assert str(err.value).startswith(message)
    assert err.value.check == result.name and err.value.observed == result.observed


def test_run_checks_stops_at_the_first_failure_and_returns_all_when_passing():
    passing = [check_non_empty("raw", 5), check_min_rows("train", 500, 100)]
    assert run_checks(passing) == passing
    with pytest.raises(DataCheckError, match="non_empty"):
        run_checks([check_non_empty("raw", 0), check_min_rows("train", 1, 100)])


def test_evaluate_raw_order_and_contents():
    stats = RawStats(rows=1000, rows_filtered=990, nulls={"amount": 0, "ts": 30}, bad_labels=0, max_ts_micros=1)
    results = evaluate_raw(stats, BOUNDS, SCHEMA, SCHEMA, previous_rows=900)
    names = [r.name for r in results]
    assert names == ["non_empty[raw]", "schema", "non_empty[after_filters]", "null_rate[raw.amount]",
                     "null_rate[raw.ts]", "label_values", "row_count_change"]
    with pytest.raises(DataCheckError, match=r"null_rate\[raw.ts\]' failed: observed 0.03"):
        run_checks(results)
    empty = evaluate_raw(RawStats(rows=0, rows_filtered=0), BOUNDS, SCHEMA, SCHEMA)
    with pytest.raises(DataCheckError, match=r"non_empty\[raw\]"):
        run_checks(empty)
    bad = evaluate_raw(RawStats(rows=10, rows_filtered=10, bad_labels=3), BOUNDS, SCHEMA, SCHEMA)
    with pytest.raises(DataCheckError, match="'label_values' failed: observed 3 rows"):
        run_checks(bad)


def test_evaluate_splits():
    good = {"train": SplitStats(1000, 20, {"f": 0}), "test": SplitStats(300, 5, {"f": 3})}
    assert all(r.passed for r in evaluate_splits(good, BOUNDS))
    no_test = {"train": SplitStats(1000, 20, {"f": 0})}
    with pytest.raises(DataCheckError, match=r"non_empty\[test\]"):
        run_checks(evaluate_splits(no_test, BOUNDS))
    one_label_test = {"train": SplitStats(1000, 20), "test": SplitStats(300, 0)}
    with pytest.raises(DataCheckError, match=r"both_labels_present\[test\]"):
        run_checks(evaluate_splits(one_label_test, BOUNDS))
    nulls = {"train": SplitStats(1000, 20, {"f": 11}), "test": SplitStats(300, 5, {"f": 0})}
    with pytest.raises(DataCheckError, match=r"null_rate\[train.f\]' failed: observed 0.011"):
        run_checks(evaluate_splits(nulls, BOUNDS))


@pytest.mark.slow
def test_statistics_come_from_one_aggregation_each(spark):
    from pyspark.sql import functions as F

    from ratchet.data.checks import raw_stats, split_stats

    rows = [(1, 10.0, 0, "train"), (2, None, 1, "train"), (3, float("nan"), 0, "test"), (4, 5.0, 2, "test"),
            (5, 1.0, None, None)]
    df = spark.createDataFrame(rows, "id long, amount double, is_fraud int, split string")
    stats = raw_stats(df, ["amount", "is_fraud"], F.col("id") <= 4, "is_fraud", F.col("id") * 1000)
    assert stats == RawStats(rows=5, rows_filtered=4, nulls={"amount": 2, "is_fraud": 1}, bad_labels=1,
                             max_ts_micros=4000)
    per = split_stats(df.where(F.col("split").isNotNull()), "split", "is_fraud", ["amount"])
    assert per["train"] == SplitStats(rows=2, positives=1, nulls={"amount": 1})
    assert per["test"] == SplitStats(rows=2, positives=2, nulls={"amount": 1})


def test_preflight_reads_only_the_schema_and_metadata(tmp_path):
    """The cheap pre-pipeline check: mapping, missing columns and emptiness without Spark."""
    import pandas as pd
    import pytest

    from ratchet.data.dataset import preflight
    from ratchet.errors import DataCheckError, MissingColumnError
    from ratchet.train.spec import load_spec

    spec = load_spec("specs/fraud.yaml")
    df = pd.DataFrame({"transaction_id": [1], "ts": pd.to_datetime(["2025-01-01"]), "card_id": ["c"],
                       "merchant_id": ["m"], "merchant_category": ["x"], "country": ["FR"], "card_country": ["FR"],
                       "channel": ["online"], "amount": [1.0], "is_fraud": [0],
                       "label_available_at": pd.to_datetime(["2025-02-01"])})
    df.to_parquet(tmp_path / "ok.parquet")
    assert preflight(tmp_path / "ok.parquet", spec) == 1
    df.head(0).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataCheckError, match="non_empty"):
        preflight(tmp_path / "empty.parquet", spec)
    df.drop(columns=["channel"]).to_parquet(tmp_path / "nochannel.parquet")
    with pytest.raises(MissingColumnError, match="feature 'is_online' needs columns channel"):
        preflight(tmp_path / "nochannel.parquet", spec)
    (tmp_path / "x.csv").write_text("transaction_id,ts\n1,2025-01-01\n")
    with pytest.raises(MissingColumnError, match="required column 'card_id'"):
        preflight(tmp_path / "x.csv", spec)
