"""Bad data never reaches the registry (issue 13): each realistic mistake in a transaction
feed is refused in the cheap raw pass with a RatchetError (exit 2) naming the column or
file, a count, an example and the fix; the row-count baseline is never a rejected version;
unknown xgboost.params keys are refused with file:line and the closest name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ratchet.errors import DataCheckError, RatchetError, SpecError
from ratchet.data.dataset import preflight
from tests.test_trainingset import make_spec, random_frame, write

pytestmark = pytest.mark.slow

FEATURES = ["amount", "card_count_24h", "merchant_fraud_rate_30d"]


def good(n: int = 1200) -> pd.DataFrame:
    return random_frame(n=n, seed=9, start="2024-01-01", days=90)


def build(spark, tmp_path, df, spec=None, name="tx.parquet", **kw):
    from ratchet.data.trainingset import build_training_set

    return build_training_set(write(df, tmp_path, name), spec or make_spec(features=FEATURES), tmp_path / "out",
                              spark=spark, **kw)


def with_checks(spec, **checks):
    return dataclasses.replace(spec, checks=dataclasses.replace(spec.checks, **checks))


# --- 1. duplicated transaction_id --------------------------------------------------------

def test_duplicate_transaction_ids_are_refused_by_default(spark, tmp_path):
    df = good()
    dup = pd.concat([df, df.iloc[::5]], ignore_index=True)  # 20% exact copies
    with pytest.raises(DataCheckError, match=r"'duplicates\[transaction_id\]' failed: observed 240 of 1440 rows "
                                             r"repeat a transaction_id; e.g. transaction_id \d+ \(2 rows\)") as err:
        build(spark, tmp_path, dup)
    assert isinstance(err.value, RatchetError) and "checks.duplicates: drop" in str(err.value)


def test_duplicates_drop_keeps_the_first_and_says_how_many(spark, tmp_path, capsys):
    df = good()
    dup = pd.concat([df, df.iloc[::5]], ignore_index=True)
    res = build(spark, tmp_path, dup, with_checks(make_spec(features=FEATURES), duplicates="drop"))
    (tmp_path / "clean").mkdir()
    clean = build(spark, tmp_path / "clean", df)
    assert res.rows_duplicate_dropped == 240
    assert (res.rows_train, res.rows_test) == (clean.rows_train, clean.rows_test)
    assert "dropped 240 of 1,440 rows" in capsys.readouterr().out
    dropped = next(c for c in res.checks if c["name"] == "duplicates[transaction_id]")
    assert dropped["passed"] and "240 of 1440 rows dropped" in dropped["observed"]


# --- 2. timestamps in the future, labels before the payment --------------------------------

def test_timestamps_after_the_runs_clock_are_refused(spark, tmp_path):
    df = good()
    df["ts"] = df["ts"] + pd.DateOffset(years=75)  # every payment in 2099
    df["label_available_at"] = df["label_available_at"] + pd.DateOffset(years=75)
    with pytest.raises(DataCheckError, match=r"'future_ts\[clock\]' failed: observed 1200 rows with ts after "
                                             r"2026-\S+ \S+; e.g. transaction_id \d+; the latest ts is 2099-") as err:
        build(spark, tmp_path, df)
    assert "column 'ts'" in str(err.value) and "timestamp_format" in str(err.value)


def test_timestamps_after_as_of_refused_when_asked(spark, tmp_path):
    df = good()
    spec = with_checks(make_spec(features=FEATURES), after_as_of="refuse")
    with pytest.raises(DataCheckError, match=r"'future_ts\[as_of\]' failed: observed \d+ rows with ts after "
                                             r"2024-03-01 23:59:59; e.g. transaction_id \d+") as err:
        build(spark, tmp_path, df, spec, as_of="2024-03-01")
    assert "--as-of" in str(err.value)
    # the default allows them (backtests, the demo's first release)
    (tmp_path / "ok").mkdir()
    assert build(spark, tmp_path / "ok", df, as_of="2024-03-20").rows_train > 0


def test_label_available_before_ts_is_refused(spark, tmp_path):
    df = good()
    early = df.index[::3]  # a third of the rows: chargeback before the payment
    df.loc[early, "label_available_at"] = df.loc[early, "ts"] - pd.Timedelta(days=1)
    with pytest.raises(DataCheckError, match=r"'label_before_ts' failed: observed 400 of 1200 rows \(33.33%\); "
                                             r"e.g. transaction_id \d+") as err:
        build(spark, tmp_path, df)
    assert "label_available_at" in str(err.value) and "label_delay_days" in str(err.value)


# --- 3. infinities and NaN in numeric columns -------------------------------------------------

def test_infinite_amounts_are_a_data_check_not_a_spark_crash(spark, tmp_path):
    df = good()
    df.loc[df.index[::50], "amount"] = np.inf
    df.loc[df.index[1::100], "amount"] = -np.inf
    with pytest.raises(DataCheckError, match=r"'infinite\[amount\]' failed: observed 36 of 1200 rows are \+inf or "
                                             r"-inf; e.g. transaction_id \d+") as err:
        build(spark, tmp_path, df)
    assert "column 'amount'" in str(err.value) and "filter" in str(err.value)


def test_nan_amounts_are_counted_by_the_null_rate(spark, tmp_path):
    df = good()
    df.loc[df.index[::20], "amount"] = np.nan
    with pytest.raises(DataCheckError, match=r"null_rate\[raw.amount\]' failed: observed 0.05.*NaN"):
        build(spark, tmp_path, df)


def test_infinite_epoch_timestamps_become_nulls_not_a_crash(spark, tmp_path):
    df = good()
    df["ts"] = df["ts"].astype("int64") / 1e6  # epoch seconds as doubles
    df.loc[df.index[::10], "ts"] = np.inf
    with pytest.raises(DataCheckError, match=r"null_rate\[raw.ts\]' failed: observed 0.1"):
        build(spark, tmp_path, df)


# --- 4. one label in the whole file -------------------------------------------------------------

def test_no_fraud_at_all_is_found_in_the_raw_pass(spark, tmp_path):
    df = good().assign(is_fraud=np.int8(0))
    with pytest.raises(DataCheckError, match=r"'both_labels_present\[raw\]' failed: observed 0 fraud / 1200 genuine "
                                             r"in the whole file") as err:
        build(spark, tmp_path, df)
    assert "widening the windows cannot help" in str(err.value) and "label column" in str(err.value)
    assert not (tmp_path / "out").exists()  # failed before any feature was built


# --- 7. windows outside the data, folders whose files disagree -----------------------------------

def test_identical_timestamps_leave_the_windows_empty_exit_2(spark, tmp_path):
    df = good()
    df["ts"] = pd.Timestamp("2024-02-01")
    df["label_available_at"] = pd.Timestamp("2024-02-03")
    with pytest.raises(RatchetError, match=r"the train and test window holds no data: step training_set: train "
                                           r"window \S+ to \S+, test window \S+ to \S+, as_of 2024-02-01; the data "
                                           r"\(after filters\) spans 2024-02-01 to 2024-02-01") as err:
        build(spark, tmp_path, df)
    assert "lower those" in str(err.value)


def test_as_of_after_the_data_names_the_valid_range(spark, tmp_path):
    with pytest.raises(RatchetError, match=r"window holds no data: .*spans 2024-01-01 to 2024-03-3\d.*choose --as-of "
                                           r"\(or windows.as_of\) between \S+ and \S+") as err:
        build(spark, tmp_path, good(), as_of="2025-06-01")
    assert "as_of came from --as-of" in str(err.value)


def test_a_window_with_no_rows_is_a_data_check_not_a_schema_crash(spark, tmp_path):
    """Windows inside the data's range but no row in either (a gap): no UNABLE_TO_INFER_SCHEMA."""
    df = good()
    spec = make_spec(features=FEATURES, windows="{train_start: 2024-01-10, train_end: 2024-01-11, "
                                                "test_start: 2024-01-11, test_end: 2024-01-12, as_of: 2024-06-01}")
    df = df[(df["ts"] < "2024-01-09") | (df["ts"] >= "2024-01-13")]
    with pytest.raises(DataCheckError, match=r"'non_empty\[train\]' failed: .*check the path, the filters and the "
                                             r"windows; step training_set: train window 2024-01-10 to 2024-01-11.*"
                                             r"spans 2024-01-01 to"):
        build(spark, tmp_path, df, spec)


def _mixed_folder(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    df = good()
    df.iloc[:600].to_parquet(folder / "part-a.parquet", index=False)
    df.iloc[600:].astype({"amount": str}).to_parquet(folder / "part-b.parquet", index=False)
    return folder


def test_parquet_files_that_disagree_on_a_type_are_named_in_preflight(tmp_path):
    folder = _mixed_folder(tmp_path)
    with pytest.raises(RatchetError, match=r"the Parquet files disagree on the type of column 'amount' \(floating in "
                                           r"part-a.parquet; string in part-b.parquet; 2 files in all\): re-export"):
        preflight(folder, make_spec(features=FEATURES))


def test_parquet_files_that_disagree_on_a_type_are_named_by_the_job(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    with pytest.raises(RatchetError, match=r"disagree on the type of column 'amount'.*part-b.parquet"):
        build_training_set(_mixed_folder(tmp_path), make_spec(features=FEATURES), tmp_path / "out", spark=spark)


# --- 8. label rate and nulls on the test window --------------------------------------------------

def test_label_rate_is_checked_on_the_test_window_too(spark, tmp_path):
    df = good()
    test = (df["ts"] >= "2024-02-20") & (df["ts"] < "2024-03-11")  # the test window of as_of 2024-03-21
    bug = test & (np.arange(len(df)) % 5 < 2)  # a 40% label bug inside the test window only
    df.loc[bug, "is_fraud"] = 1
    spec = with_checks(make_spec(features=FEATURES), label_rate_max=0.3)
    with pytest.raises(DataCheckError, match=r"'label_rate\[test\]' failed: observed 0\.[3-9]\d*, expected within "
                                             r"\[0.001, 0.3\]"):
        build(spark, tmp_path, df, spec, as_of="2024-03-21")


# --- 5. the row-count baseline --------------------------------------------------------------------

def test_row_count_baseline_is_production_or_the_last_passed_never_a_rejected_one(tmp_path):
    import xgboost as xgb

    from ratchet.registry import Registry
    from ratchet.train.trainer import save_model
    from tests.test_registry import record

    rng = np.random.default_rng(0)
    x = rng.random((100, 2))
    booster = xgb.train({"tree_method": "hist", "objective": "binary:logistic"},
                        xgb.DMatrix(x, label=(x[:, 0] > 0.5).astype(int)), 2)
    model = str(save_model(booster, tmp_path / "m"))
    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "fraud")
    assert reg.previous_rows() is None and reg.baseline_version() is None

    v1 = reg.register(record(model, passed=True, rows=120_000))
    assert reg.previous_rows() == 120_000  # passed, no @production yet
    reg.register(record(model, passed=False, rows=66_000, reason="gate failed"))
    assert reg.previous_rows() == 120_000  # a rejected version is never the baseline
    reg.set_stage(v1, "production", actor="test", reason="bootstrap")
    reg.register(record(model, passed=True, rows=90_000))  # a candidate that passed, not in production
    assert reg.baseline_version() == v1 and reg.previous_rows() == 120_000  # @production wins
    reg.register(record(model, passed=False, rows=36_000, reason="gate failed"))
    assert reg.previous_rows() == 120_000


# --- 6. xgboost.params against XGBoost's known parameters -----------------------------------------

def test_unknown_xgboost_param_names_file_line_and_the_closest_name():
    from ratchet.train.spec import parse_spec

    text = "name: t\nfeatures: [amount]\nxgboost:\n  params:\n    max_depth: 4\n    max_dpth: 3\n"
    with pytest.raises(SpecError, match=r"^specs/t.yaml:6: xgboost.params.max_dpth: unknown XGBoost parameter "
                                        r"'max_dpth': did you mean 'max_depth'\?$"):
        parse_spec(text, "specs/t.yaml")
    with pytest.raises(SpecError, match=r"xgboost.params.zzz_qqq: unknown XGBoost parameter 'zzz_qqq': see XGBoost"):
        parse_spec(text.replace("max_dpth", "zzz_qqq"), "specs/t.yaml")
    ok = parse_spec(text.replace("max_dpth: 3", "reg_lambda: 2"), "specs/t.yaml")
    assert ok.xgboost.params["reg_lambda"] == 2


def test_the_known_parameter_list_covers_xgboosts_own_configuration():
    """Every user-facing parameter in a trained booster's save_config() is in XGBOOST_PARAMS."""
    import json

    import xgboost as xgb

    from ratchet.train.spec import DEFAULT_PARAMS, XGBOOST_PARAMS

    x = np.random.default_rng(0).random((40, 2))
    booster = xgb.train(DEFAULT_PARAMS, xgb.DMatrix(x, label=(x[:, 0] > 0.5).astype(int)), 1)
    internal = {"name", "version", "metrics", "num_trees", "specified_updater", "updater_seq", "debug_synchronize"}
    found: set[str] = set()

    def walk(d):
        for k, v in d.items():
            walk(v) if isinstance(v, dict) else found.add(k)

    walk(json.loads(booster.save_config()))
    assert found - internal - XGBOOST_PARAMS == set()
    assert set(DEFAULT_PARAMS) <= XGBOOST_PARAMS


# --- no user data error becomes exit 3 ------------------------------------------------------------

@pytest.mark.parametrize("spark_text", [
    "[CAST_OVERFLOW] The value Infinity of the type \"DOUBLE\" cannot be cast to \"BIGINT\" due to an overflow.",
    "[UNABLE_TO_INFER_SCHEMA] Unable to infer schema for Parquet. It must be specified manually.",
    "An error occurred while calling o93.collectToPython.\n: org.apache.spark.SparkException: [FAILED_READ_FILE]"
    " Error while reading file part-b.parquet.\n\tat org.apache.spark.sql.errors...",
])
def test_spark_errors_about_the_data_are_ratchet_errors_with_the_trace_in_a_log(tmp_path, spark_text):
    from ratchet.app.steps.release import _spark_data_error

    try:
        raise RuntimeError(spark_text)
    except RuntimeError as exc:
        err = _spark_data_error(exc, "/data/tx.parquet", str(tmp_path))
    assert isinstance(err, RatchetError)
    msg = str(err)
    assert msg.startswith("step training_set: Spark could not process /data/tx.parquet (") and "\n" not in msg
    assert "org.apache" not in msg and str(tmp_path / "training_set-spark-error.log") in msg
    assert spark_text.splitlines()[-1] in (tmp_path / "training_set-spark-error.log").read_text()
    assert _spark_data_error(RuntimeError("NullPointerException in ratchet's own code"), "/d", str(tmp_path)) is None


# --- end to end: ratchet pipeline run -------------------------------------------------------------

def test_pipeline_run_refuses_duplicated_transactions_with_exit_2_and_registers_nothing(tmp_path):
    import json

    from ratchet.data.synth import SynthConfig, write_transactions
    from ratchet.registry import Registry
    from tests.test_release_e2e import ROOT, ratchet

    data = write_transactions(SynthConfig(rows=20_000, seed=3, days=365), tmp_path / "tx.parquet", progress=False)
    df = pd.read_parquet(data)
    dup = tmp_path / "dup.parquet"
    pd.concat([df, df.iloc[::5]], ignore_index=True).to_parquet(dup, index=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = ratchet("pipeline", "run", "--local", "--data", str(dup), "--spec", str(ROOT / "specs/fraud.yaml"),
                  "--contract", str(ROOT / "contracts/fraud.yaml"), "--tracking-uri", uri, "--workdir",
                  str(tmp_path / "runs"), "--format", "json", "--bootstrap", "--as-of", "2025-12-31", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    j = json.loads(out.stdout)
    assert j["failed_step"] == "training_set" and "duplicates[transaction_id]" in j["error"]
    assert "4000 of 24000 rows repeat a transaction_id" in j["error"] and "checks.duplicates: drop" in j["error"]
    reg = Registry(uri, "fraud")
    assert reg.versions() == [] and reg.alias_version("production") is None


# --- 9. numbers that arrive as text ---------------------------------------------------------------

def _euro(x: float) -> str:
    """1234.56 -> '1.234,56 EUR' (a German export)."""
    return f"{x:,.2f} EUR".replace(",", "_").replace(".", ",").replace("_", ".")


def test_amounts_as_decimal_comma_text_are_named_before_the_filters_count(spark, tmp_path):
    """'1.234,56 EUR' would become null, the spec's filter amount > 0 would drop every row and
    non_empty[after_filters] would blame the path and the filters: the column is named first."""
    df = good()
    df["amount"] = [_euro(a) for a in df["amount"] * 20]
    with pytest.raises(DataCheckError, match=r"'numeric\[raw.amount\]' failed: observed 1200 of 1200 rows "
                                             r"\(100.00%\) of column 'amount' \(string\) are not numbers, e.g. "
                                             r"'\d{1,3}(\.\d{3})*,\d\d EUR'") as err:
        build(spark, tmp_path, df, make_spec(features=FEATURES, filters="[{column: amount, op: '>', value: 0}]"))
    msg = str(err.value)
    assert "Convert 'amount' to a number in the export" in msg and "1234.56, not '1.234,56 EUR'" in msg
    assert "after_filters" not in msg and not (tmp_path / "out").exists()


def test_amounts_as_text_in_a_csv_are_refused_too_and_numeric_text_passes(spark, tmp_path):
    df = good()
    df.assign(amount=[_euro(a) for a in df["amount"]]).to_csv(tmp_path / "bad.csv", index=False)
    from ratchet.data.trainingset import build_training_set

    with pytest.raises(DataCheckError, match=r"'numeric\[raw.amount\]' failed: observed 1200 of 1200 rows .*"
                                             r"column 'amount' \(string\) are not numbers"):
        build_training_set(tmp_path / "bad.csv", make_spec(features=FEATURES), tmp_path / "o1", spark=spark)
    df.to_csv(tmp_path / "good.csv", index=False)  # CSV: every column is text; numbers in it parse
    res = build_training_set(tmp_path / "good.csv", make_spec(features=FEATURES), tmp_path / "o2", spark=spark)
    assert res.rows_train > 0
    check = next(c for c in res.checks if c["name"] == "numeric[raw.amount]")
    assert check["passed"] and check["observed"].startswith("0 of 1200 rows")


# --- 10. sample size: what the contract needs from the test window, said before training ----------

RECALL_NEED = ("recall_at_baseline_fpr", "contracts/fraud.yaml:63", "positives", 200)


def test_a_test_window_too_small_for_the_contract_is_refused_before_any_feature(spark, tmp_path):
    from ratchet.data.checks import EvidenceNeed

    need = EvidenceNeed(*RECALL_NEED)
    for as_of, out in (("2024-03-21", "a"), (None, "b")):  # windows known before reading, or from the data
        (tmp_path / out).mkdir()
        with pytest.raises(DataCheckError, match=r"'sample_size\[test\]' failed: observed \d+ rows, (\d+) fraud, "
                                                 r"\d+ genuine in the test window \S+ to \S+ \(20 days\)") as err:
            build(spark, tmp_path / out, good(), as_of=as_of, evidence=[need])
        msg = str(err.value)
        held = int(err.value.observed.split(", ")[1].split()[0])
        assert 0 < held < 200
        assert (f"The contract's recall_at_baseline_fpr (contracts/fraud.yaml:63) is judged on the whole test "
                f"set and fails below 200 fraud rows; the test window holds {held}") in msg
        days = int(msg.split("set windows.test_days to ")[1].split()[0])
        assert days >= 200 / (held / 20) and "lower min_support of recall_at_baseline_fpr" in msg
        assert "also shorten train_days or give more history" in msg  # 90 days of data cannot hold that window
        assert not (tmp_path / out / "out").exists(), "refused before any feature was built"


def test_a_test_window_with_enough_evidence_passes_and_is_recorded(spark, tmp_path):
    from ratchet.data.checks import EvidenceNeed

    res = build(spark, tmp_path, good(), as_of="2024-03-21", evidence=[EvidenceNeed("auc_floor", "c.yaml:3",
                                                                                     "positives", 10)])
    names = {c["name"]: c for c in res.checks}
    assert names["sample_size[test]"]["passed"] and names["sample_size[test.written]"]["passed"]
    assert "auc_floor >= 10 fraud rows" in names["sample_size[test]"]["bound"]


def test_evidence_needs_are_the_blocking_whole_population_clauses():
    from ratchet.app.steps.release import evidence_needs
    from ratchet.contracts import load_contract
    from tests.test_release_e2e import ROOT

    contract = load_contract(ROOT / "contracts/fraud.yaml")
    full = {(n.clause, n.support, n.min_support) for n in evidence_needs(contract, bootstrap=False)}
    assert full == {("auc_floor", "positives", 100), ("fpr_no_worse", "negatives", 200),
                    ("recall_at_baseline_fpr", "positives", 200)}
    assert [(n.clause, n.min_support) for n in evidence_needs(contract, bootstrap=True)] == [("auc_floor", 100)]


def test_the_training_set_step_refuses_an_evidence_shortfall_naming_the_clause_with_exit_2(spark, tmp_path):
    """20,000 rows a year: a 45-day test window holds ~40 fraud rows; auc_floor needs 100. The
    step executor the kfp component calls reads the contract it is given and refuses before
    any feature (a kfp run of a training-set refusal, exit 2 and nothing registered, is
    test_pipeline_run_refuses_duplicated_transactions_with_exit_2_and_registers_nothing)."""
    from ratchet.app.steps.release import FAILURE_FILE, training_set_step
    from ratchet.data.synth import SynthConfig, write_transactions
    from ratchet.registry import Registry
    from tests.test_release_e2e import ROOT

    data = write_transactions(SynthConfig(rows=20_000, seed=3, days=365), tmp_path / "tx.parquet", progress=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    contract = ROOT / "contracts/fraud.yaml"
    with pytest.raises(DataCheckError) as err:
        training_set_step(str(data), (ROOT / "specs/fraud.yaml").read_text(), "specs/fraud.yaml", "2025-12-31", uri,
                          "fraud", str(tmp_path / "dataset"), str(tmp_path / "report"),
                          contract_yaml=contract.read_text(), contract_name=str(contract), bootstrap=True)
    msg = str(err.value)
    assert isinstance(err.value, RatchetError) and "sample_size[test]" in msg  # a RatchetError: exit 2
    assert "auc_floor (" in msg and "fraud.yaml:" in msg and "fails below 100 fraud rows" in msg
    assert "set windows.test_days to" in msg
    failure = (tmp_path / "report" / FAILURE_FILE).read_text()
    assert '"step": "training_set"' in failure and '"user_error": true' in failure
    assert not (tmp_path / "dataset" / "train.parquet").exists(), "refused before any feature was built"
    reg = Registry(uri, "fraud")
    assert reg.versions() == [] and reg.alias_version("production") is None



# --- 11. a bootstrap release goes to @production only on credibly passed bounds -------------------

BOOTSTRAP_CONTRACT = """
version: 1
name: bootstrap-test
slices: {}
thresholds: {candidate: match_baseline_block_rate, default: 0.5, bootstrap_block_rate: 0.02}
recall_at_fpr: {reference: baseline, bootstrap_fpr: 0.01}
clauses:
  - {name: auc_floor, kind: bound, metric: auc, min: 0.85, min_support: 20}
  - {name: recall_at_baseline_fpr, kind: must_improve, metric: recall_at_fpr, margin: {absolute: 0.0}}
"""


def _bootstrap_release(tmp_path, n: int, signal: float):
    """A model of AUC about 0.85 (signal 1.6) or well above (signal 4), judged on n test rows as a
    bootstrap release: evaluate, then register; returns (passed, reason, verdict text, registry, version)."""
    import json

    import xgboost as xgb

    from ratchet.app.steps.release import evaluate_step, register_step
    from ratchet.registry import Registry
    from ratchet.train.trainer import save_model

    rng = np.random.default_rng(5)

    def frame(rows):
        x = rng.normal(size=(rows, 2))
        y = (rng.random(rows) < 1 / (1 + np.exp(-(signal * x[:, 0] - 4.0)))).astype("int8")
        return pd.DataFrame({"amount": x[:, 0] + rng.normal(scale=0.3, size=rows), "hour_of_day": x[:, 1], "label": y})

    train = frame(20_000)
    names = ["amount", "hour_of_day"]
    booster = xgb.train({"tree_method": "hist", "objective": "binary:logistic", "max_depth": 2},
                        xgb.DMatrix(train[names], label=train["label"], feature_names=names), 20)
    model = str(save_model(booster, tmp_path / "model"))
    ts = tmp_path / "ts"
    ts.mkdir()
    frame(n).to_parquet(ts / "test.parquet", index=False)
    (ts / "trainingset.json").write_text(json.dumps({"snapshot": {"rows": n}, "windows": {}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = "name: t\nfeatures: [amount, hour_of_day]\n"
    passed = evaluate_step(str(ts / "test.parquet"), model, BOOTSTRAP_CONTRACT, "contracts/boot.yaml", uri, "fraud",
                           True, str(tmp_path / "ev"), str(tmp_path / "rep"))
    gate = json.loads((tmp_path / "rep" / "gate.json").read_text())
    assert gate["passed"] is passed
    version = register_step(model, spec, "specs/t.yaml", str(ts), str(tmp_path / "ev"), uri, "fraud",
                            str(tmp_path / "rep"))
    return passed, gate["reason"], (tmp_path / "ev" / "verdict.txt").read_text(), Registry(uri, "fraud"), version


def test_a_bootstrap_with_an_inconclusive_blocking_bound_does_not_reach_production(tmp_path):
    passed, reason, text, reg, version = _bootstrap_release(tmp_path, n=2_000, signal=1.6)
    assert passed is False
    assert reason.startswith("gate failed (bootstrap): a first release goes to @production only when every "
                             "blocking bound is shown to pass")
    assert "auc_floor inconclusive for all: candidate 0.8" in reason and "95% CI [" in reason
    assert "rule: auc >= 0.85" in reason and "[contracts/boot.yaml:" in reason
    assert "windows.test_days" in reason and "train a model that clears the bound" in reason
    assert "recall_at_baseline_fpr" not in reason  # a comparison has nothing to compare with: not a question
    assert text.startswith("FAILED: 1 open question(s) block a bootstrap release: contract bootstrap-test")
    assert "open questions: they block this release (a bootstrap has no production model" in text
    assert reg.tags(version)["state"] == "rejected" and reg.alias_version("production") is None


def test_a_bootstrap_whose_bounds_are_shown_to_pass_is_released(tmp_path):
    passed, reason, text, reg, version = _bootstrap_release(tmp_path, n=20_000, signal=4.0)
    assert passed is True and reason == "gate passed (bootstrap: absolute bounds only, each shown to pass)"
    assert text.startswith("PASSED")
    assert reg.tags(version)["state"] == "candidate"  # the pipeline's promote step then sets @production


def test_preflight_names_amounts_as_text_before_spark_starts(tmp_path):
    df = good()
    df.assign(amount=[_euro(a) for a in df["amount"]]).to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(DataCheckError, match=r"'numeric\[raw.amount\]' failed: observed 1000 of 1000 rows \(100.00%\) "
                                             r"of column 'amount' \(string; the first 1000 values of bad.parquet\) "
                                             r"are not numbers, e.g. '\d+,\d\d EUR'") as err:
        preflight(tmp_path / "bad.parquet", make_spec(features=FEATURES))
    assert "Convert 'amount' to a number in the export" in str(err.value)
    df.assign(amount=[_euro(a) for a in df["amount"]]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataCheckError, match=r"numeric\[raw.amount\]' failed: .*of bad.csv\) are not numbers"):
        preflight(tmp_path / "bad.csv", make_spec(features=FEATURES))
    # numbers as text pass (CSV always is text; a string column of numbers in Parquet too)
    df.to_csv(tmp_path / "good.csv", index=False)
    df.astype({"amount": str}).to_parquet(tmp_path / "text.parquet", index=False)
    assert preflight(tmp_path / "good.csv", make_spec(features=FEATURES)) is None
    assert preflight(tmp_path / "text.parquet", make_spec(features=FEATURES)) == 1200
