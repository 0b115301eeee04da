"""Training spec: validation errors point at file, line and key; windows resolve correctly."""

from datetime import datetime

import pytest

from ratchet.errors import SpecError
from ratchet.train.spec import known_features, load_spec, parse_spec

BASE = """\
name: t
features: [amount, card_count_1h]
windows:
  maturity_days: 10
  train_days: 20
  gap_days: 2
  test_days: 5
"""


def test_default_spec_loads_and_hash_is_stable():
    a, b = load_spec("specs/fraud.yaml"), load_spec("specs/fraud.yaml")
    assert a.spec_hash() == b.spec_hash()
    assert a.xgboost.params["tree_method"] == "hist"
    assert set(a.features) <= set(known_features())


def test_hash_changes_with_the_recipe():
    a = parse_spec(BASE)
    b = parse_spec(BASE.replace("train_days: 20", "train_days: 21"))
    assert a.spec_hash() != b.spec_hash()


def test_windows_derive_from_as_of():
    w = parse_spec(BASE).windows.resolve(as_of="2025-03-01")
    assert w.test_end == datetime(2025, 2, 19)
    assert w.test_start == datetime(2025, 2, 14)
    assert w.train_end == datetime(2025, 2, 12)
    assert w.train_start == datetime(2025, 1, 23)


def test_windows_fall_back_to_latest_timestamp():
    w = parse_spec(BASE).windows.resolve(latest_ts=datetime(2025, 3, 1))
    assert w.as_of == datetime(2025, 3, 1) and w.test_end == datetime(2025, 2, 19)


def test_explicit_windows():
    text = BASE.replace("windows:\n", "windows:\n  train_start: 2025-01-01\n  train_end: 2025-02-01\n"
                        "  test_start: 2025-02-08\n  test_end: 2025-03-01\n")
    w = parse_spec(text).windows.resolve()
    assert (w.train_start, w.test_end) == (datetime(2025, 1, 1), datetime(2025, 3, 1))


@pytest.mark.parametrize("text, needle", [
    (BASE.replace("train_days: 20", "train_days: ten"), "s.yaml:5: windows.train_days: expected an integer"),
    (BASE.replace("train_days: 20", "train_days: -3"), "windows.train_days: expected a positive number"),
    (BASE.replace("card_count_1h", "card_count_2h"), "s.yaml:2: features[1]: unknown feature 'card_count_2h'"),
    (BASE + "xgboost:\n  params:\n    eta: -1\n", "s.yaml:10: xgboost.params.eta: expected a non-negative number"),
    (BASE + "xgboost:\n  params:\n    tree_method: exact\n", "xgboost.params.tree_method: ratchet trains with tree_method: hist"),
    (BASE + "colour: red\n", "s.yaml:8: colour: unknown key"),
    (BASE + "dataset:\n  columns:\n    txn_id: ID\n", "s.yaml:10: dataset.columns.txn_id: not a canonical column"),
    (BASE + "filters:\n  - {column: amount, op: '~', value: 1}\n", "s.yaml:9: filters[0].op: unknown operator"),
    (BASE.replace("windows:\n", "windows:\n  train_start: 2025-01-01\n"), "explicit windows need all four dates"),
    (BASE + "checks:\n  label_rate_min: 0.5\n  label_rate_max: 0.1\n", "label_rate_min must be below label_rate_max"),
    ("features: [amount\n", "s.yaml:2: not valid YAML"),
    ("- a\n- b\n", "expected a YAML mapping"),
    ("name: x\n", "features: expected a non-empty list"),
])
def test_bad_specs_name_file_line_and_key(text, needle):
    with pytest.raises(SpecError) as err:
        parse_spec(text, "s.yaml")
    assert needle in str(err.value)


def test_unreadable_spec_file(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpecError, match="cannot read the file"):
        load_spec(bad)


def test_required_columns_follow_features():
    spec = parse_spec(BASE.replace("[amount, card_count_1h]", "[amount, cross_border, is_online]"))
    assert spec.required_columns() == {"country", "card_country", "channel"}


def test_missing_features_policy_defaults_validates_and_stays_out_of_the_hash():
    from ratchet.errors import SpecError
    from ratchet.train.spec import parse_spec

    base = "name: t\nfeatures: [amount, seconds_since_card_prev, hour_of_day]\n"
    # default: only what is missing by construction (a card's first payment has no previous one)
    assert parse_spec(base).missing_allowed == ("seconds_since_card_prev",)
    assert parse_spec(base + "missing_features: {allowed: [hour_of_day]}\n").missing_allowed == ("hour_of_day",)
    assert parse_spec(base + "missing_features: {allowed: []}\n").missing_allowed == ()
    with pytest.raises(SpecError, match=r"s.yaml:3: missing_features.allowed\[0\]: 'hour_of_dy' is not one of the "
                                        r"spec's features; did you mean 'hour_of_day'\?"):
        parse_spec(base + "missing_features: {allowed: [hour_of_dy]}\n", "s.yaml")
    assert parse_spec(base).spec_hash() == parse_spec(base + "missing_features: {allowed: []}\n").spec_hash()
