"""The compiled trees (ratchet.serving.predictor) against XGBoost itself, and the fast
request validator (msgspec) against the pydantic model it must never be looser than."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb
from pydantic import ValidationError

from ratchet.serving.models import LoadedModel
from ratchet.serving.predictor import compile_booster
from ratchet.serving.schema import request_decoder, request_model

FEATURES = ["amount", "hour_of_day", "card_count_1h", "merchant_count_24h", "is_online", "cross_border"]


def _data(rng: np.random.Generator, n: int, missing: float) -> np.ndarray:
    x = rng.random((n, len(FEATURES))).astype(np.float32) * np.array([1000, 24, 10, 500, 1, 1], dtype=np.float32)
    x[:, 4:] = np.round(x[:, 4:])
    x[rng.random(x.shape) < missing] = np.nan
    return x


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    rng = np.random.default_rng(3)
    x = _data(rng, 5000, 0.15)  # trained with missing values: learned default directions both ways
    y = ((np.nan_to_num(x[:, 0]) > 700) & (np.nan_to_num(x[:, 4]) > 0.5) | (np.nan_to_num(x[:, 2], nan=9.5) > 9)).astype(int)
    b = xgb.train({"tree_method": "hist", "objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "subsample": 0.8,
                   "seed": 1}, xgb.DMatrix(x, label=y, feature_names=FEATURES), 150)
    b.set_param({"nthread": 1})
    return b


def test_compiled_trees_match_xgboost_with_missing_values(booster):
    ct, why = compile_booster(booster)
    assert ct is not None, why
    assert ct.n_trees == 150
    x = _data(np.random.default_rng(11), 50_000, 0.25)
    x[:100] = np.nan  # all missing
    x[100:200, 0] = np.array([0.0, 1e30, -1.0, 700.0] * 25, dtype=np.float32)  # extremes and split-like values
    ref = booster.inplace_predict(x)
    got = ct.predict(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    for thr in (0.1, 0.5, 0.9):  # identical decisions away from the threshold
        clear = np.abs(ref - thr) > 1e-5
        assert ((got >= thr) == (ref >= thr))[clear].all()
    for i in range(300):  # the request path scores one row at a time
        assert abs(float(ct.predict(x[i:i + 1])[0]) - float(ref[i])) <= 1e-6


def test_loaded_model_uses_compiled_trees_and_falls_back(booster, caplog):
    m = LoadedModel(1, booster, tuple(FEATURES))
    assert m.compiled is not None and m.describe()["scorer"] == "compiled"
    rng = np.random.default_rng(0)
    x = rng.random((10, 2)).astype(np.float32)
    soft = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, label=np.arange(10) % 3), 2)
    ct, why = compile_booster(soft)
    assert ct is None and "objective" in why
    with caplog.at_level("WARNING", logger="ratchet.serving"):
        fallback = LoadedModel(2, soft, ("f0", "f1"))
    assert fallback.compiled is None and fallback.describe()["scorer"] == "xgboost"
    assert "inplace_predict" in caplog.text
    reg = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(x, label=x[:, 0]), 2)
    assert compile_booster(reg)[0] is None


def test_fast_validator_never_accepts_what_pydantic_refuses():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    names = tuple(FEATURES)
    model, decoder = request_model(names), request_decoder(names)
    numbers = st.one_of(st.none(), st.floats(), st.integers(-10**30, 10**30), st.booleans(), st.text(max_size=3))
    keys = st.sampled_from([*FEATURES, "card_id", "merchant_id", "country", "transaction_id", "zz", "", "__x"])
    values = st.one_of(numbers, st.text(max_size=140), st.lists(st.integers(), max_size=2))
    bodies = st.one_of(
        st.dictionaries(keys, values, max_size=8).map(lambda d: json.dumps(d).encode()),
        st.fixed_dictionaries({"card_id": st.text(min_size=0, max_size=130)},
                              optional={f: numbers for f in FEATURES}).map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=200))

    @settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(body):
        try:
            fast = decoder.decode(body)
        except Exception:  # noqa: BLE001 - refused: the service asks pydantic
            return
        try:
            slow = model.model_validate_json(body)
        except ValidationError as exc:
            raise AssertionError(f"fast validator accepted what pydantic refuses: {body!r}: {exc}") from None
        for name in ("card_id", "merchant_id", "country", *FEATURES):
            a, b = getattr(fast, name), getattr(slow, name)
            assert a == b or (a is None and b is None), (name, a, b, body)

    check()
