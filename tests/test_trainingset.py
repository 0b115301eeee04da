"""The Spark training-set job: feature values, point-in-time correctness, windows, mapping, errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratchet.errors import DataCheckError, MissingColumnError, RatchetError
from ratchet.train.spec import Windows, known_features, load_spec, parse_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
from tests.conftest import HANDBOOK  # noqa: E402


# --- hand-made data ------------------------------------------------------------------

def tx_frame(rows: list[dict]) -> pd.DataFrame:
    """Canonical transactions from short dicts; defaults fill what a test does not care about."""
    out = []
    for i, r in enumerate(rows):
        ts = pd.Timestamp(r["ts"])
        fraud = int(r.get("fraud", 0))
        out.append({
            "transaction_id": int(r.get("id", i + 1)), "ts": ts, "card_id": r.get("card", "c1"),
            "merchant_id": r.get("merchant", "m1"), "merchant_category": r.get("category", "grocery"),
            "country": r.get("country", "DE"), "card_country": r.get("card_country", "DE"),
            "channel": r.get("channel", "card_present"), "amount": float(r.get("amount", 10.0)),
            "is_fraud": fraud,
            "label_available_at": pd.Timestamp(r["label_at"]) if "label_at" in r else ts + pd.Timedelta(days=3),
        })
    df = pd.DataFrame(out)
    df["ts"] = df["ts"].astype("datetime64[us]")
    df["label_available_at"] = df["label_available_at"].astype("datetime64[us]")
    df["is_fraud"] = df["is_fraud"].astype("int8")
    return df


def random_frame(n: int = 600, seed: int = 1, start: str = "2024-01-01", days: int = 20) -> pd.DataFrame:
    """Random canonical transactions with ties, several cards/merchants and varied label delays."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start).value // 1000
    ts = t0 + np.sort(rng.integers(0, days * 86400, n)) * 1_000_000
    ts[10:14] = ts[10]  # a few identical timestamps
    fraud = (rng.random(n) < 0.15).astype("int8")
    delay_s = np.where(fraud == 1, rng.integers(3600, 6 * 86400, n), 8 * 86400)
    return pd.DataFrame({
        "transaction_id": np.arange(1, n + 1, dtype="int64"),
        "ts": pd.to_datetime(ts, unit="us").astype("datetime64[us]"),
        "card_id": rng.choice([f"c{i}" for i in range(12)], n),
        "merchant_id": rng.choice([f"m{i}" for i in range(5)], n),
        "merchant_category": rng.choice(["grocery", "travel"], n),
        "country": rng.choice(["DE", "FR"], n, p=[0.8, 0.2]),
        "card_country": "DE",
        "channel": rng.choice(["online", "card_present"], n),
        "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
        "is_fraud": fraud,
        "label_available_at": pd.to_datetime(ts + delay_s * 1_000_000, unit="us").astype("datetime64[us]"),
    })


SPEC_TMPL = """
name: test
label: is_fraud
dataset: {dataset}
windows: {windows}
features: {features}
checks: {checks}
"""


def make_spec(features=None, windows="{maturity_days: 10, train_days: 40, test_days: 20}",
              dataset="{columns: {}}", checks="{min_rows: 10, label_rate_min: 0.001, label_rate_max: 0.5}",
              filters=None):
    text = SPEC_TMPL.format(dataset=dataset, windows=windows, features=list(features or known_features()),
                            checks=checks)
    if filters:
        text += f"filters: {filters}\n"
    return parse_spec(text)


def write(df: pd.DataFrame, tmp_path: Path, name: str = "tx.parquet") -> Path:
    p = tmp_path / name
    df.to_parquet(p, index=False)
    return p


def features_of(spark, df: pd.DataFrame, features=None, **kw) -> pd.DataFrame:
    from ratchet.data.trainingset import add_features

    sdf = spark.createDataFrame(df)
    out = add_features(sdf, list(features or known_features()), **kw).toPandas()
    return out.sort_values("transaction_id").set_index("transaction_id")


# --- feature values --------------------------------------------------------------------

def test_feature_values_match_hand_computed(spark):
    d = "2024-03-01 "
    df = tx_frame([
        {"id": 1, "ts": d + "10:00:00", "card": "A", "amount": 10, "fraud": 1, "label_at": d + "10:45:00",
         "country": "FR", "channel": "online"},
        {"id": 2, "ts": d + "10:30:00", "card": "A", "amount": 20},
        {"id": 3, "ts": d + "10:30:00", "card": "A", "amount": 30},  # same instant as id 2
        {"id": 4, "ts": d + "11:00:00", "card": "A", "amount": 40},  # id 1 is exactly 1h before
        {"id": 6, "ts": "2024-03-02 10:30:00", "card": "A", "amount": 50},  # ids 2,3 exactly 24h before
        {"id": 7, "ts": d + "10:15:00", "card": "B", "amount": 5},
        {"id": 8, "ts": d + "10:20:00", "card": "B", "amount": 7, "merchant": "m2"},
        {"id": 9, "ts": "2024-01-20 12:00:00", "card": "C", "merchant": "m3"},
        {"id": 10, "ts": "2024-02-19 12:00:00", "card": "C", "merchant": "m3"},  # exactly 30 days later
        {"id": 11, "ts": "2024-01-10 12:00:00", "card": "D", "merchant": "m3"},
        {"id": 12, "ts": d + "12:00:00", "card": "D", "merchant": "m3"},  # 51 days later
    ])
    f = features_of(spark, df)

    full, f = f, f.drop(index=[9, 10, 11, 12])
    assert f["card_count_1h"].to_dict() == {1: 0, 2: 1, 3: 1, 4: 3, 6: 0, 7: 0, 8: 1}
    assert f["card_amount_1h"].to_dict() == {1: 0, 2: 10, 3: 10, 4: 60, 6: 0, 7: 0, 8: 5}
    assert f.loc[6, "card_count_24h"] == 3 and f.loc[6, "card_amount_24h"] == 90  # ids 2, 3, 4
    assert f.loc[6, "card_count_30d"] == 4 and f.loc[6, "card_amount_7d"] == 100
    # merchant m1 holds every row but id 8
    assert f["merchant_count_1h"].to_dict() == {1: 0, 2: 2, 3: 2, 4: 4, 6: 0, 7: 1, 8: 0}
    assert f.loc[4, "merchant_amount_1h"] == 10 + 5 + 20 + 30
    assert f.loc[6, "merchant_count_24h"] == 3 and f.loc[6, "merchant_amount_24h"] == 90
    # seconds since the card's latest strictly earlier transaction; null for a first one
    assert math.isnan(f.loc[1, "seconds_since_card_prev"]) and math.isnan(f.loc[7, "seconds_since_card_prev"])
    assert f.loc[[2, 3, 4, 8], "seconds_since_card_prev"].tolist() == [1800, 1800, 1800, 300]
    assert f.loc[6, "seconds_since_card_prev"] == 23.5 * 3600
    # nothing looks back more than 30 days
    assert full.loc[10, "seconds_since_card_prev"] == 30 * 86400 and full.loc[10, "card_count_30d"] == 1
    assert math.isnan(full.loc[12, "seconds_since_card_prev"]) and full.loc[12, "card_count_30d"] == 0
    assert full.loc[12, "amount_to_card_mean"] == 1.0
    # amount over the card's prior 30-day mean; 1.0 without history
    assert f["amount_to_card_mean"].to_dict() == pytest.approx({1: 1.0, 2: 2.0, 3: 3.0, 4: 2.0, 6: 2.0, 7: 1.0, 8: 1.4})
    # id 1's chargeback arrives at 10:45: ids 4 and 6 know it, id 2 (10:30) does not
    assert f.loc[2, "merchant_fraud_rate_30d"] == 0.0
    assert f.loc[4, "merchant_fraud_rate_30d"] == pytest.approx(1 / (4 + 10))
    assert f.loc[6, "merchant_fraud_rate_30d"] == pytest.approx(1 / (5 + 10))
    assert f.loc[8, "merchant_fraud_rate_30d"] == 0.0
    assert f["cross_border"].to_dict() == {1: 1, 2: 0, 3: 0, 4: 0, 6: 0, 7: 0, 8: 0}
    assert f["is_online"].to_dict() == {1: 1, 2: 0, 3: 0, 4: 0, 6: 0, 7: 0, 8: 0}
    assert f["hour_of_day"].to_dict() == {1: 10, 2: 10, 3: 10, 4: 11, 6: 10, 7: 10, 8: 10}
    assert all(f[c].dtype == "float64" for c in known_features())


def test_point_in_time_features_ignore_later_rows_and_later_labels(spark):
    full = random_frame(n=600, seed=3)
    cut = full["ts"].iloc[300]  # a real row's time, so rows at exactly t are compared too
    later_label = full["label_available_at"] > cut
    assert later_label.sum() > 50 and (full["is_fraud"][later_label] == 1).sum() > 5

    past = full[full["ts"] <= cut].copy()
    immature = past["label_available_at"] > cut
    # labels not yet available at t: flip them and move them elsewhere (still after t)
    past.loc[immature, "is_fraud"] = (1 - past.loc[immature, "is_fraud"]).astype("int8")
    past.loc[immature, "label_available_at"] = cut + pd.Timedelta(hours=1)
    assert immature.sum() > 10

    a = features_of(spark, full)
    b = features_of(spark, past)
    keep = a.index[a["ts"] <= cut]
    assert len(keep) == len(b) > 300
    pd.testing.assert_frame_equal(a.loc[keep, known_features()], b.loc[keep, known_features()])
    # reading only the history that can matter (start - 30d .. until) changes nothing
    start = full["ts"].iloc[150]
    c = features_of(spark, full, start=start.to_pydatetime(), until=cut.to_pydatetime())
    inside = a.index[(a["ts"] >= start) & (a["ts"] < cut)]
    assert list(c.index) == list(inside)
    pd.testing.assert_frame_equal(a.loc[inside, known_features()], c[known_features()])
    # and the check has teeth: the full data does change features after t, label-based ones included
    assert not a.loc[a["ts"] > cut, "merchant_fraud_rate_30d"].eq(0).all()
    assert a.loc[a["ts"] <= cut, "merchant_risk_1d"].gt(0).any() and a.loc[a["ts"] <= cut, "merchant_risk_7d"].gt(0).any()


# --- the whole job ------------------------------------------------------------------------

def test_build_with_windows_derived_from_as_of(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    df = random_frame(n=1500, seed=5, start="2024-01-01", days=90)
    spec = make_spec()  # maturity 10, train 40, test 20 days
    res = build_training_set(write(df, tmp_path), spec, tmp_path / "out", as_of="2024-03-31", spark=spark)

    w = res.windows
    assert (w.as_of.isoformat(), w.test_end.isoformat()) == ("2024-03-31T00:00:00", "2024-03-21T00:00:00")
    assert (w.test_start.isoformat(), w.train_start.isoformat()) == ("2024-03-01T00:00:00", "2024-01-21T00:00:00")
    train, test = pd.read_parquet(res.train_path), pd.read_parquet(res.test_path)
    assert (len(train), len(test)) == (res.rows_train, res.rows_test)
    assert train["ts"].between(w.train_start, w.train_end, inclusive="left").all()
    assert test["ts"].between(w.test_start, w.test_end, inclusive="left").all()
    expected_train = df["ts"].between(w.train_start, w.train_end, inclusive="left").sum()
    assert len(train) == expected_train and res.rows_immature == 0
    # maturity: every chosen label was final at as_of
    label_at = df.set_index(df["transaction_id"].astype(str))["label_available_at"]
    for part in (train, test):
        assert (label_at.loc[part["transaction_id"]] <= w.as_of).all()
    assert set(train.columns) >= {"transaction_id", "ts", "label", "card_id", "merchant_id", "merchant_category",
                                  "country", "card_country", "channel", *known_features()}
    assert train["label"].isin([0, 1]).all() and train["label"].nunique() == 2
    assert str(train["ts"].dtype) == "datetime64[us]"
    assert res.snapshot["rows"] == 1500 and len(res.snapshot["content_hash"]) == 64
    assert {c["name"] for c in res.checks} >= {"non_empty[raw]", "label_rate[train]", "row_count_change"}
    d = res.to_dict()
    assert d["windows"]["as_of"] == "2024-03-31T00:00:00" and d["rows_train"] == len(train)



def test_explicit_windows_drop_labels_not_final_at_as_of(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    df = random_frame(n=1500, seed=6, start="2024-01-01", days=90)
    windows = "{train_start: 2024-01-15, train_end: 2024-02-15, test_start: 2024-02-20, test_end: 2024-03-10}"
    spec = make_spec(windows=windows, features=["amount", "card_count_24h", "merchant_fraud_rate_30d"])
    res = build_training_set(write(df, tmp_path), spec, tmp_path / "out", spark=spark)
    assert res.windows.as_of.isoformat() == "2024-03-10T00:00:00"  # defaults to test_end
    test = pd.read_parquet(res.test_path)
    in_test = df[df["ts"].between("2024-02-20", "2024-03-10", inclusive="left")]
    mature = in_test["label_available_at"] <= pd.Timestamp("2024-03-10")
    assert len(test) == mature.sum() < len(in_test)
    assert res.rows_immature == (~mature).sum()
    assert list(test.columns[:3]) == ["transaction_id", "ts", "label"]

    # a later as_of makes every label final
    res2 = build_training_set(write(df, tmp_path), spec, tmp_path / "out", as_of="2024-03-20", spark=spark)
    assert res2.rows_test == len(in_test) and res2.rows_immature == 0


def test_column_mapping_on_a_renamed_csv(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    df = random_frame(n=800, seed=8, start="2024-01-01", days=60)
    renamed = df.drop(columns=["label_available_at", "merchant_category", "country", "card_country", "channel"])
    renamed = renamed.rename(columns={"transaction_id": "TXID", "ts": "WHEN", "card_id": "PAN_TOKEN",
                                      "merchant_id": "SHOP", "amount": "EUR", "is_fraud": "CB"})
    renamed["WHEN"] = renamed["WHEN"].dt.strftime("%d/%m/%Y %H:%M:%S")
    renamed["CB"] = renamed["CB"].map({0: "false", 1: "true"})
    path = tmp_path / "tx.csv"
    renamed.to_csv(path, index=False)
    spec = make_spec(
        features=["amount", "hour_of_day", "card_count_7d", "merchant_fraud_rate_30d"],
        dataset="{columns: {transaction_id: TXID, ts: WHEN, card_id: PAN_TOKEN, merchant_id: SHOP, amount: EUR, "
                "is_fraud: CB}, label_delay_days: 5, timestamp_format: 'dd/MM/yyyy HH:mm:ss'}",
        windows="{maturity_days: 5, train_days: 30, test_days: 15}")
    res = build_training_set(path, spec, tmp_path / "out", as_of="2024-03-01", spark=spark)
    train = pd.read_parquet(res.train_path)
    src = df.set_index(df["transaction_id"].astype(str)).loc[train["transaction_id"]]
    assert (train["amount"].to_numpy() == src["amount"].to_numpy()).all()
    assert (train["label"].to_numpy() == src["is_fraud"].to_numpy()).all()
    assert (train["ts"].to_numpy() == src["ts"].to_numpy()).all()
    assert "merchant_category" not in train.columns and res.rows_test > 0


# --- clear errors ------------------------------------------------------------------------

def test_missing_required_column_names_canonical_source_and_available(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    df = tx_frame([{"ts": "2024-01-01"}]).rename(columns={"card_id": "pan"})
    with pytest.raises(MissingColumnError) as err:
        build_training_set(write(df, tmp_path), make_spec(), tmp_path / "out", spark=spark)
    msg = str(err.value)
    assert "'card_id'" in msg and "looked for 'card_id'" in msg and "pan" in msg and "dataset.columns" in msg


def test_missing_optional_column_needed_by_a_feature(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    df = tx_frame([{"ts": "2024-01-01"}]).drop(columns=["country"])
    with pytest.raises(MissingColumnError) as err:
        build_training_set(write(df, tmp_path), make_spec(features=["amount", "cross_border"]), tmp_path / "o",
                           spark=spark)
    assert str(err.value).startswith(
        "feature 'cross_border' needs columns country, which the dataset lacks: map them under dataset.columns "
        "or remove the feature from features:")


def test_missing_label_time_and_label_delay(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    df = tx_frame([{"ts": "2024-01-01"}]).drop(columns=["label_available_at"])
    with pytest.raises(MissingColumnError, match=r"no label_available_at column .*dataset.label_delay_days"):
        build_training_set(write(df, tmp_path), make_spec(features=["amount"]), tmp_path / "o", spark=spark)


def test_unreadable_path_names_it(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    with pytest.raises(RatchetError, match="nope.parquet: no such file"):
        build_training_set(tmp_path / "nope.parquet", make_spec(), tmp_path / "o", spark=spark)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(RatchetError, match="bad.parquet: cannot read the data as parquet"):
        build_training_set(bad, make_spec(), tmp_path / "o", spark=spark)


# --- data checks inside the job ------------------------------------------------------------

def test_data_checks_fail_with_check_observed_and_bound(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    df = random_frame(n=1200, seed=9, start="2024-01-01", days=90)
    spec = make_spec(features=["amount", "card_count_24h"])
    out = tmp_path / "out"

    empty = write(df.iloc[:0], tmp_path, "empty.parquet")
    with pytest.raises(DataCheckError, match=r"'non_empty\[raw\]' failed: observed 0, expected > 0 rows"):
        build_training_set(empty, spec, out, spark=spark)

    nulls = df.copy()
    nulls.loc[nulls.index[::10], "amount"] = np.nan
    with pytest.raises(DataCheckError, match=r"'null_rate\[raw.amount\]' failed: observed 0.1, expected <= 0.01"):
        build_training_set(write(nulls, tmp_path, "nulls.parquet"), spec, out, spark=spark)

    with pytest.raises(DataCheckError, match=r"'row_count_change' failed: observed \+20.0% \(1000 -> 1200 rows\), "
                                             r"expected \|change\| <= 10%"):
        build_training_set(write(df, tmp_path), dataclasses.replace(
            spec, checks=dataclasses.replace(spec.checks, max_row_count_change=0.1)), out, previous_rows=1000,
            spark=spark)

    genuine = df.assign(is_fraud=np.int8(0))
    with pytest.raises(DataCheckError, match=r"'both_labels_present\[raw\]' failed: observed 0 fraud / \d+ genuine"):
        build_training_set(write(genuine, tmp_path, "genuine.parquet"), spec, out, spark=spark)

    tight = dataclasses.replace(spec, checks=dataclasses.replace(spec.checks, label_rate_max=0.01))
    with pytest.raises(DataCheckError, match=r"'label_rate\[train\]' failed: observed 0\.1\d+, expected within "
                                             r"\[0.001, 0.01\]") as err:
        build_training_set(write(df, tmp_path), tight, out, spark=spark)
    assert err.value.check == "label_rate[train]"


# --- a real third-party dataset -----------------------------------------------------------

@pytest.mark.skipif(not HANDBOOK.exists(), reason="fraud-handbook data not present")
def test_handbook_spec_builds_a_training_set(spark, tmp_path):
    from ratchet.data.trainingset import build_training_set

    spec = load_spec(ROOT / "specs" / "handbook.yaml")
    assert spec.windows.explicit and spec.dataset.label_delay_days == 7
    # one month keeps the test quick: July's file, train 07-05..07-15, test 07-18..07-25
    short = dataclasses.replace(spec, windows=Windows(
        train_start="2018-07-05", train_end="2018-07-15", test_start="2018-07-18", test_end="2018-07-25",
        as_of="2018-08-01"))
    res = build_training_set(str(HANDBOOK / "transactions-2018-0[7].parquet"), short, tmp_path / "out", spark=spark)
    assert res.snapshot["path"].endswith("transactions-2018-0[7].parquet")
    assert 250_000 < res.snapshot["rows"] < 350_000
    train, test = pd.read_parquet(res.train_path), pd.read_parquet(res.test_path)
    for part in (train, test):
        assert part["label"].nunique() == 2 and 0.003 < part["label"].mean() < 0.03
        assert set(spec.features) <= set(part.columns) and part["merchant_id"].nunique() > 1000
        assert part[list(spec.features)].drop(columns="seconds_since_card_prev").notna().all().all()
    assert res.rows_train > 80_000 and res.rows_test > 50_000 and res.rows_immature == 0
    # terminals compromised in the simulation show up in the delayed, point-in-time terminal risk
    by_label = train.groupby("label")["merchant_risk_7d"].mean()
    assert by_label[1] > 5 * by_label[0]


@pytest.mark.skipif(not (ROOT / "ratchet" / "data" / "synth.py").exists(), reason="synth not there yet")
def test_synthetic_data_builds_with_the_default_spec(spark, tmp_path):
    from ratchet.data.synth import SynthConfig, generate
    from ratchet.data.trainingset import build_training_set

    df = generate(SynthConfig(rows=20_000, days=240, seed=3))
    spec = load_spec(ROOT / "specs" / "fraud.yaml")
    res = build_training_set(write(df, tmp_path), spec, tmp_path / "out", spark=spark)
    train = pd.read_parquet(res.train_path)
    assert res.rows_train > 1000 and res.rows_test > 0 and train["label"].nunique() == 2
    # no as_of anywhere: the latest transaction is the release date
    assert res.windows.as_of == df["ts"].max().to_pydatetime()
    assert res.windows.test_end == res.windows.as_of - pd.Timedelta(days=spec.windows.maturity_days)
