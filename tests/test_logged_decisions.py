"""Data that logs the production policy's decisions: blocked rows are censored (never
labelled, never tested on), explored rows keep their propensity, training can weight them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ratchet.errors import DataCheckError, SpecError
from tests.test_trainingset import make_spec, random_frame, write

pytestmark = pytest.mark.slow

FEATURES = ["amount", "card_count_24h", "merchant_count_7d", "merchant_fraud_rate_30d", "merchant_risk_7d"]
WINDOWS = "{maturity_days: 10, train_days: 40, test_days: 20}"


def logged(df: pd.DataFrame, seed: int = 2) -> pd.DataFrame:
    """Block every payment over 80 (the 'production policy'), explore a tenth of them at p = 0.1."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    would_block = out["amount"].to_numpy() > 80
    explored = would_block & (rng.random(len(out)) < 0.1)
    out["decision"] = np.where(would_block & ~explored, "block", "allow")
    out["propensity"] = np.where(explored, 0.1, np.where(would_block, 0.9, 1.0))
    return out


def spec(censoring: str | None = None):
    s = make_spec(features=FEATURES, windows=WINDOWS)
    if censoring is None:
        return s
    from ratchet.train.spec import parse_spec

    text = ("name: test\nlabel: is_fraud\ndataset: {columns: {}}\nwindows: " + WINDOWS + "\nfeatures: "
            + str(FEATURES) + "\nchecks: {min_rows: 10, label_rate_min: 0.001, label_rate_max: 0.5}\n" + censoring)
    return parse_spec(text, "spec.yaml")


def build(spark, df, tmp_path, s, name="out"):
    from ratchet.data.trainingset import build_training_set

    return build_training_set(write(df, tmp_path, f"{name}.parquet"), s, tmp_path / name, as_of="2024-03-31",
                              spark=spark)


def test_blocked_rows_are_history_but_never_trained_or_tested_on(spark, tmp_path, capsys):
    df = logged(random_frame(n=2500, seed=5, start="2024-01-01", days=90))
    res = build(spark, df, tmp_path, spec())
    train, test = pd.read_parquet(res.train_path), pd.read_parquet(res.test_path)
    blocked = set(df.loc[df["decision"] == "block", "transaction_id"].astype(str))
    assert blocked and not (set(train["transaction_id"]) | set(test["transaction_id"])) & blocked
    w = res.windows
    in_windows = df["ts"].between(w.train_start, w.train_end, inclusive="left") | \
        df["ts"].between(w.test_start, w.test_end, inclusive="left")
    assert res.rows_censored == int((in_windows & (df["decision"] == "block")).sum()) > 0
    explored = in_windows & (df["decision"] == "allow") & (df["propensity"] < 1)
    assert res.rows_explored == int(explored.sum()) > 0
    assert set(train["propensity"].round(3)) <= {1.0, 0.1} and (train["censored"] == 0).all()
    assert "logged decisions:" in capsys.readouterr().out
    # a blocked row's label is unknown whatever the feed says: it never feeds a label-based feature
    flipped = df.copy()
    flipped.loc[flipped["decision"] == "block", "is_fraud"] = 1
    res2 = build(spark, flipped, tmp_path, spec(), name="flipped")
    a, b = pd.read_parquet(res.test_path), pd.read_parquet(res2.test_path)
    pd.testing.assert_frame_equal(a, b)
    # and without logging, the same rows are all there (the columns are what decides)
    plain = build(spark, df.drop(columns=["decision", "propensity"]), tmp_path, spec(), name="plain")
    assert plain.rows_train + plain.rows_test == res.rows_train + res.rows_test + res.rows_censored


def test_genuine_mode_trains_on_blocked_rows_as_genuine_but_never_tests_on_them(spark, tmp_path):
    df = logged(random_frame(n=2500, seed=5, start="2024-01-01", days=90))
    s = spec("censoring: {censored: genuine, censored_weight: 0.25, explored: inverse_propensity}\n")
    res = build(spark, df, tmp_path, s)
    train, test = pd.read_parquet(res.train_path), pd.read_parquet(res.test_path)
    blocked = set(df.loc[df["decision"] == "block", "transaction_id"].astype(str))
    as_genuine = train[train["censored"] == 1]
    assert len(as_genuine) > 0 and set(as_genuine["transaction_id"]) <= blocked
    assert (as_genuine["label"] == 0).all() and not set(test["transaction_id"]) & blocked
    from ratchet.train.trainer import sample_weights, train_model

    w = sample_weights(train, s.censoring)
    assert np.allclose(w[train["censored"].to_numpy() == 1], 0.25)
    explored = (train["censored"].to_numpy() == 0) & (train["propensity"].to_numpy() < 1)
    assert explored.any() and np.allclose(w[explored], 10.0)
    assert np.allclose(w[(train["censored"].to_numpy() == 0) & ~explored], 1.0)
    weighted, again = train_model(train, s), train_model(train, s)
    plain = train_model(train, spec("censoring: {censored: genuine}\n"))
    assert bytes(weighted.booster.save_raw("ubj")) == bytes(again.booster.save_raw("ubj"))
    assert bytes(weighted.booster.save_raw("ubj")) != bytes(plain.booster.save_raw("ubj"))
    assert weighted.training["sample_weight"]["weighted_rows"] == int((w != 1).sum())


def test_bad_logged_values_are_refused_in_the_raw_pass(spark, tmp_path):
    df = logged(random_frame(n=800, seed=3, start="2024-01-01", days=90))
    bad = df.copy()
    bad.loc[bad.index[:7], "propensity"] = 0.0
    with pytest.raises(DataCheckError, match=r"logged_propensity\[raw\].*7 rows"):
        build(spark, bad, tmp_path, spec(), name="badp")
    bad = df.copy()
    bad.loc[bad.index[:3], "decision"] = "review"
    with pytest.raises(DataCheckError, match=r"logged_decision\[raw\].*3 rows.*allow or block"):
        build(spark, bad, tmp_path, spec(), name="badd")


def test_inverse_propensity_without_a_propensity_column_names_the_fix():
    from ratchet.errors import MissingColumnError
    from ratchet.train.trainer import sample_weights

    s = spec("censoring: {explored: inverse_propensity}\n")
    with pytest.raises(MissingColumnError, match=r"no 'propensity' column.*dataset.columns"):
        sample_weights(pd.DataFrame({"label": [0, 1]}), s.censoring)


@pytest.mark.parametrize("section, words", [
    ("censoring: {censored_weight: 0.5}\n", "spec.yaml:7: censoring.censored_weight: censored_weight weighs"),
    ("censoring: {explored: ipw}\n", "spec.yaml:7: censoring.explored: expected one of none, inverse_propensity"),
    ("censoring: {censor: drop}\n", "spec.yaml:7: censoring"),
])
def test_the_censoring_section_names_file_line_and_key(section, words):
    with pytest.raises(SpecError) as err:
        spec(section)
    assert str(err.value).startswith(words), str(err.value)


def test_default_censoring_leaves_the_spec_hash_as_before():
    assert spec().spec_hash() == spec("censoring: {explored: none, censored: drop}\n").spec_hash()
    assert spec().spec_hash() != spec("censoring: {explored: inverse_propensity}\n").spec_hash()
