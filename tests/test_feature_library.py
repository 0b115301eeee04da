"""The feature library's newer families, by hand: delayed merchant risk, card mean/max, calendar flags.

Point-in-time correctness of every feature (later rows and later labels change nothing)
is tests/test_trainingset.py::test_point_in_time_features_ignore_later_rows_and_later_labels,
which runs over known_features(), these included.
"""

from __future__ import annotations

import pytest

from ratchet.data.spec import known_features
from ratchet.data.trainingset import lookback_seconds
from ratchet.errors import SpecError
from ratchet.serving.schema import feature_range
from ratchet.train.spec import parse_spec
from tests.test_trainingset import features_of, tx_frame

pytestmark = pytest.mark.slow

RISK = ["merchant_risk_1d", "merchant_risk_7d", "merchant_risk_count_1d", "merchant_risk_count_7d"]


def test_delayed_merchant_risk_counts_only_labels_known_before_t(spark):
    # delay D = 1 day: the 1d window of a payment at t is [t - 2d, t - 1d), the 7d one [t - 8d, t - 1d)
    df = tx_frame([
        {"id": 1, "ts": "2024-03-01 10:00:00", "fraud": 1, "label_at": "2024-03-03 10:00:00"},
        {"id": 2, "ts": "2024-03-01 12:00:00"},
        {"id": 3, "ts": "2024-03-02 11:00:00"},  # t - D = 03-01 11:00: id 1 in the 1d window, its label not known
        {"id": 4, "ts": "2024-03-03 11:00:00"},  # 1d window [03-01 11:00, 03-02 11:00): id 2 only
        # a fraud whose label comes after it has left the 1d window: counted in 7d only
        {"id": 5, "ts": "2024-03-04 09:00:00", "fraud": 1, "label_at": "2024-03-06 12:00:00"},
        {"id": 6, "ts": "2024-03-06 10:00:00"},  # 1d window [03-04 10:00, 03-05 10:00): id 8 (id 5 just before)
        {"id": 7, "ts": "2024-03-06 13:00:00"},  # 1d window [03-04 13:00, 03-05 13:00): id 8
        {"id": 8, "ts": "2024-03-05 09:30:00"},  # 1d window [03-03 09:30, 03-04 09:30): id 4 and id 5
        {"id": 9, "ts": "2024-03-06 12:30:00"},  # 7d window [02-28 12:30, 03-05 12:30): ids 1-5, 8; label 5 known
        {"id": 10, "ts": "2024-03-02 11:00:00", "merchant": "m2"},  # another merchant sees nothing
    ])
    f = features_of(spark, df, features=RISK, risk_delay_days=1)
    assert f["merchant_risk_count_1d"].to_dict() == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 2, 9: 1, 10: 0}
    assert f.loc[3, "merchant_risk_1d"] == 0.0  # id 1 is in the window but its label comes on 03-03
    assert f.loc[8, "merchant_risk_1d"] == 0.0  # id 5 is in the window, its label comes on 03-06
    assert f.loc[9, "merchant_risk_count_7d"] == 6  # ids 1, 2, 3, 4, 5, 8
    assert f.loc[9, "merchant_risk_7d"] == pytest.approx(2 / 6)  # ids 1 and 5, both labelled before 12:30
    assert f.loc[6, "merchant_risk_7d"] == pytest.approx(1 / 6)  # ids 1-5 and 8; id 5's label not yet known
    assert f.loc[3, "merchant_risk_7d"] == 0.0  # id 1 in [02-24 11:00, 03-01 11:00), its label not yet known
    assert f.loc[4, "merchant_risk_7d"] == pytest.approx(1 / 2)  # ids 1, 2; id 1 labelled at 03-03 10:00
    assert f.loc[10, RISK].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_card_mean_and_max_and_calendar_flags(spark):
    df = tx_frame([
        {"id": 1, "ts": "2024-03-01 03:00:00", "card": "A", "amount": 10},  # Friday night
        {"id": 2, "ts": "2024-03-01 10:00:00", "card": "A", "amount": 30},
        {"id": 3, "ts": "2024-03-02 09:00:00", "card": "A", "amount": 60},  # Saturday; id 1 is 30h before
        {"id": 4, "ts": "2024-03-02 09:00:00", "card": "A", "amount": 5},  # same instant as id 3
        {"id": 5, "ts": "2024-03-03 23:00:00", "card": "B", "amount": 0},  # Sunday, a card's first payment
    ])
    feats = ["card_mean_amount_24h", "card_mean_amount_7d", "amount_to_card_mean_7d", "card_max_amount_24h",
             "card_max_amount_7d", "amount_to_card_max_7d", "is_weekend", "is_night"]
    f = features_of(spark, df, features=feats)
    assert f["card_mean_amount_24h"].to_dict() == {1: 0.0, 2: 10.0, 3: 30.0, 4: 30.0, 5: 0.0}
    assert f["card_mean_amount_7d"].to_dict() == {1: 0.0, 2: 10.0, 3: 20.0, 4: 20.0, 5: 0.0}
    assert f["amount_to_card_mean_7d"].to_dict() == pytest.approx({1: 1.0, 2: 3.0, 3: 3.0, 4: 0.25, 5: 1.0})
    assert f["card_max_amount_24h"].to_dict() == {1: 0.0, 2: 10.0, 3: 30.0, 4: 30.0, 5: 0.0}
    assert f["card_max_amount_7d"].to_dict() == {1: 0.0, 2: 10.0, 3: 30.0, 4: 30.0, 5: 0.0}
    assert f["amount_to_card_max_7d"].to_dict() == pytest.approx({1: 1.0, 2: 3.0, 3: 2.0, 4: 5 / 30, 5: 1.0})
    assert f["is_weekend"].to_dict() == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert f["is_night"].to_dict() == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0}


def test_the_pandas_features_agree_with_the_spark_job(spark):
    """Monitoring's in-memory features (ratchet.monitor.features) are the Spark job's, for the new families."""
    from ratchet.monitor.features import PANDAS_FEATURES, point_in_time_features
    from tests.test_trainingset import random_frame

    raw = random_frame(n=400, seed=5, days=40)
    names = sorted(f for f in PANDAS_FEATURES if f.startswith(("card_mean", "card_max", "amount_to_card"))
                   or f in ("is_weekend", "is_night"))
    assert len(names) == 19  # 4 card statistics x 4 windows, amount_to_card_mean, the two flags
    spark_f = features_of(spark, raw, features=names)
    mem = point_in_time_features(raw, names).set_index("transaction_id").sort_index()
    for name in names:
        assert mem[name].to_numpy() == pytest.approx(spark_f[name].to_numpy()), name


def test_every_value_the_job_builds_is_inside_the_served_range(spark):
    """Nothing is trained that the decision service would refuse: ranges follow the library."""
    from tests.test_trainingset import random_frame

    f = features_of(spark, random_frame(n=500, seed=9, days=45), features=known_features())
    for name in known_features():
        lo, hi = feature_range(name)
        values = f[name].dropna()
        assert lo is not None, f"{name} has no lower bound in the request schema"
        assert (values >= lo).all() and (hi is None or (values <= hi).all()), name
    assert f["merchant_risk_7d"].gt(0).any() and f["card_max_amount_7d"].gt(0).any()  # the data exercises them


def test_lookback_and_ranges_follow_the_library():
    assert lookback_seconds(["card_count_30d"]) == 30 * 86400
    assert lookback_seconds(["merchant_risk_30d"], risk_delay_days=7) == 37 * 86400
    assert lookback_seconds(["merchant_risk_count_1d"], risk_delay_days=7) == 30 * 86400  # 8d < 30d
    assert feature_range("merchant_risk_7d") == (0.0, 1.0)
    assert feature_range("is_weekend") == (0.0, 1.0)
    assert feature_range("amount_to_card_max_7d") == (0.0, None)


def test_an_unknown_feature_names_its_line_and_the_closest_name():
    text = "name: t\nfeatures:\n  - amount\n  - merchant_risk_7days\n"
    with pytest.raises(SpecError) as e:
        parse_spec(text, "s.yaml")
    assert "s.yaml:4" in str(e.value) and "merchant_risk_7d" in str(e.value)


def test_feature_options_set_the_risk_delay_and_enter_the_recipe():
    base = "name: t\nfeatures: [merchant_risk_7d]\n"
    plain = parse_spec(base, "s.yaml")
    assert plain.feature_options.risk_delay(plain.dataset) == 7.0
    delayed = parse_spec(base + "dataset: {label_delay_days: 3}\n", "s.yaml")
    assert delayed.feature_options.risk_delay(delayed.dataset) == 3.0
    explicit = parse_spec(base + "feature_options: {risk_delay_days: 2}\n", "s.yaml")
    assert explicit.feature_options.risk_delay(explicit.dataset) == 2.0
    assert explicit.spec_hash() != plain.spec_hash()
    with pytest.raises(SpecError) as e:
        parse_spec(base + "feature_options:\n  risk_delay: 2\n", "s.yaml")
    assert "s.yaml:4" in str(e.value)
