"""Synthetic transactions: schema, determinism, realism and scenario knobs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import ratchet.data.synth as synth
from ratchet.data import columns as C
from ratchet.data.synth import SynthConfig, generate, write_transactions
from ratchet.errors import RatchetError

DAY = pd.Timedelta(days=1)


#: The synthetic world labels every payment: no decision / propensity columns (ratchet.data.logged).
UNLOGGED = [c for c in C.CANONICAL if c not in (C.DECISION, C.PROPENSITY)]

@pytest.fixture(scope="module")
def cfg() -> SynthConfig:
    return SynthConfig(rows=200_000, seed=11)


@pytest.fixture(scope="module")
def df(cfg: SynthConfig) -> pd.DataFrame:
    return generate(cfg)


def _day(frame: pd.DataFrame, cfg: SynthConfig) -> np.ndarray:
    return ((frame[C.TS] - pd.Timestamp(cfg.start)) // DAY).to_numpy()


# --- schema -----------------------------------------------------------------------------

def test_schema_and_dtypes(df: pd.DataFrame) -> None:
    assert list(df.columns) == UNLOGGED  # every canonical column but the logged decisions: full labels
    expected = {
        C.TRANSACTION_ID: "int64", C.TS: "datetime64[us]", C.AMOUNT: "float64", C.IS_FRAUD: "int8",
        C.LABEL_AVAILABLE_AT: "datetime64[us]",
    }
    for col, dtype in expected.items():
        assert str(df[col].dtype) == dtype, col
    for col in (C.CARD_ID, C.MERCHANT_ID, C.MERCHANT_CATEGORY, C.COUNTRY, C.CARD_COUNTRY, C.CHANNEL):
        assert df[col].dtype == object, col
        assert df[col].map(type).eq(str).all(), col
    assert df[C.CARD_ID].str.fullmatch(r"c\d{6,}").all()
    assert df[C.MERCHANT_ID].str.fullmatch(r"m\d{5,}").all()
    assert df[C.COUNTRY].str.fullmatch(r"[A-Z]{2}").all()
    assert df[C.CARD_COUNTRY].str.fullmatch(r"[A-Z]{2}").all()
    assert set(df[C.CHANNEL].unique()) == {"card_present", "online"}
    assert set(df[C.IS_FRAUD].unique()) == {0, 1}
    amount = df[C.AMOUNT].to_numpy()
    assert (amount > 0).all()
    np.testing.assert_allclose(amount * 100, np.round(amount * 100), atol=1e-6)
    assert df.isna().sum().sum() == 0


def test_ids_unique_in_time_order(df: pd.DataFrame, cfg: SynthConfig) -> None:
    assert len(df) == cfg.rows
    np.testing.assert_array_equal(df[C.TRANSACTION_ID].to_numpy(), np.arange(cfg.rows))
    assert df[C.TS].is_monotonic_increasing
    days = _day(df, cfg)
    assert days.min() == 0 and days.max() == cfg.days - 1


def test_labels_arrive_after_the_transaction(df: pd.DataFrame) -> None:
    delay = df[C.LABEL_AVAILABLE_AT] - df[C.TS]
    assert (delay >= pd.Timedelta(0)).all()
    fraud = df[C.IS_FRAUD] == 1
    assert (delay[~fraud] == pd.Timedelta(days=90)).all()
    fd = delay[fraud] / DAY
    assert fd.min() >= 2 and fd.max() <= 90
    assert 12 <= fd.median() <= 30          # skewed: most chargebacks in a few weeks
    assert fd.quantile(0.9) > 1.5 * fd.median()


# --- determinism --------------------------------------------------------------------------

def test_deterministic_per_seed_and_parquet_roundtrip(tmp_path) -> None:
    config = SynthConfig(rows=20_000, seed=5, days=120)
    a, b = generate(config), generate(SynthConfig(rows=20_000, seed=5, days=120))
    pd.testing.assert_frame_equal(a, b)
    other = generate(SynthConfig(rows=20_000, seed=6, days=120))
    assert not a[C.CARD_ID].equals(other[C.CARD_ID])
    assert not np.allclose(a[C.AMOUNT].to_numpy(), other[C.AMOUNT].to_numpy())

    path = write_transactions(config, tmp_path / "nested" / "dir" / "tx.parquet")
    assert path == tmp_path / "nested" / "dir" / "tx.parquet" and path.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(path), a)

    slash = write_transactions(config, f"{tmp_path}/new_dir/")
    assert slash == tmp_path / "new_dir" / "transactions.parquet" and slash.exists()

    in_dir = write_transactions(config, tmp_path)
    assert in_dir == tmp_path / "transactions.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(in_dir), a)


def test_data_does_not_depend_on_chunking(monkeypatch) -> None:
    config = SynthConfig(rows=15_000, seed=2, days=60)
    whole = generate(config)
    monkeypatch.setattr(synth, "_CHUNK_ROWS", 1_000)
    chunks = list(synth.iter_chunks(config))
    assert len(chunks) > 3
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)


def test_progress_goes_to_stderr(tmp_path, capsys) -> None:
    write_transactions(SynthConfig(rows=2_000, days=30), tmp_path / "t.parquet", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "synth:" in captured.err and len(captured.err.splitlines()) <= 5
    write_transactions(SynthConfig(rows=2_000, days=30), tmp_path / "q.parquet", progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("rows,days", [(1, 1), (7, 3), (500, 400), (3_000, 1)])
def test_tiny_configs(rows: int, days: int) -> None:
    out = generate(SynthConfig(rows=rows, days=days, seed=1))
    assert len(out) == rows
    assert out[C.TS].is_monotonic_increasing
    assert out[C.IS_FRAUD].sum() <= rows // 2


# --- realism ------------------------------------------------------------------------------

def test_fraud_rate_in_bounds(df: pd.DataFrame) -> None:
    assert 0.005 <= df[C.IS_FRAUD].mean() <= 0.015


def test_categories_and_small_slice(df: pd.DataFrame) -> None:
    share = df[C.MERCHANT_CATEGORY].value_counts(normalize=True)
    assert 10 <= len(share) <= 14
    assert 0.002 <= share["podcasts"] <= 0.01
    assert share["grocery"] > 0.15 and share.index[0] == "grocery"
    assert {"crypto", "gambling", "subscriptions", "digital_goods"} <= set(share.index)
    # fraud differs strongly across categories
    rate = df.groupby(C.MERCHANT_CATEGORY)[C.IS_FRAUD].mean()
    assert rate["crypto"] > 5 * rate["grocery"]


def test_merchants_are_zipf_like(df: pd.DataFrame) -> None:
    volume = df[C.MERCHANT_ID].value_counts()
    assert 1_000 <= len(volume) <= 4_000
    top = max(1, len(volume) // 100)
    assert volume.iloc[:top].sum() / len(df) > 0.20
    assert (volume <= 5).sum() > 0.1 * len(volume)          # a long tail of small merchants
    # each merchant has one category and one country
    assert (df.groupby(C.MERCHANT_ID)[[C.MERCHANT_CATEGORY, C.COUNTRY]].nunique() == 1).all().all()


def test_cards_have_histories(df: pd.DataFrame) -> None:
    per_card = df[C.CARD_ID].value_counts()
    assert per_card.median() >= 5
    assert (df.groupby(C.CARD_ID)[C.CARD_COUNTRY].nunique() == 1).all()
    genuine = df[df[C.IS_FRAUD] == 0]
    # cards come back to the same merchants
    distinct = genuine.groupby(C.CARD_ID)[C.MERCHANT_ID].nunique()
    count = genuine.groupby(C.CARD_ID).size()
    busy = count >= 20
    assert (distinct[busy] / count[busy]).median() < 0.7


def test_countries_channels_and_cross_border(df: pd.DataFrame) -> None:
    countries = df[C.COUNTRY].value_counts(normalize=True)
    assert {"GB", "FR", "DE", "ES", "IT", "NL", "US"} <= set(countries.index)
    assert countries["GB"] > 2 * countries["NL"]
    cross = df[C.COUNTRY] != df[C.CARD_COUNTRY]
    assert 0.02 < cross.mean() < 0.15
    fraud = df[C.IS_FRAUD] == 1
    assert cross[fraud].mean() > 3 * cross[~fraud].mean()
    online = (df[C.CHANNEL] == "online").groupby(df[C.MERCHANT_CATEGORY]).mean()
    assert online["subscriptions"] == 1.0 and online["fuel"] < 0.2
    amount = df.groupby(C.MERCHANT_CATEGORY)[C.AMOUNT].median()
    assert amount["travel"] > 5 * amount["podcasts"]


def test_card_testing_bursts(df: pd.DataFrame) -> None:
    s = df.sort_values([C.CARD_ID, C.TS], kind="stable")
    same = s[C.CARD_ID].to_numpy()
    ts = s[C.TS].to_numpy().astype(np.int64)
    ten_min = 10 * 60 * 1_000_000
    # rows whose card has >= 3 transactions within 10 minutes (the row and its two neighbours)
    burst = np.zeros(len(s), bool)
    ok = (same[2:] == same[:-2]) & (ts[2:] - ts[:-2] <= ten_min)
    for k in range(3):
        burst[k: len(s) - 2 + k] |= ok
    fraud = s[C.IS_FRAUD].to_numpy() == 1
    assert burst[fraud].sum() > 0.15 * fraud.sum()
    assert burst[fraud].mean() > 10 * burst[~fraud].mean()
    tiny = s[C.AMOUNT].to_numpy() < 5
    assert (fraud & burst & tiny).sum() > 0.1 * fraud.sum()


def test_high_amount_cross_border(df: pd.DataFrame) -> None:
    usual = df[df[C.IS_FRAUD] == 0].groupby(C.CARD_ID)[C.AMOUNT].median()
    rel = df[C.AMOUNT] / df[C.CARD_ID].map(usual)
    hit = (df[C.COUNTRY] != df[C.CARD_COUNTRY]) & (df[C.CHANNEL] == "online") & (rel > 4)
    fraud = df[C.IS_FRAUD] == 1
    assert (hit & fraud).sum() > 0.05 * fraud.sum()
    assert hit[fraud].mean() > 10 * hit[~fraud].mean()
    assert (hit & ~fraud).sum() > 0                     # genuine look-alikes exist


def test_compromised_card_sprees(df: pd.DataFrame) -> None:
    fraud = df[df[C.IS_FRAUD] == 1]
    per_card = fraud.groupby(C.CARD_ID).agg(n=(C.TS, "size"), merchants=(C.MERCHANT_ID, "nunique"),
                                            span=(C.TS, lambda t: t.max() - t.min()))
    spree = (per_card.n >= 3) & (per_card.merchants >= 3) & (per_card.span > pd.Timedelta(hours=12)) \
        & (per_card.span < pd.Timedelta(days=10))
    assert spree.sum() >= 30


def test_new_country_launch(df: pd.DataFrame, cfg: SynthConfig) -> None:
    launch = cfg.launch_day
    assert launch == cfg.days // 2
    day = _day(df, cfg)
    br = (df[C.COUNTRY] == "BR") | (df[C.CARD_COUNTRY] == "BR")
    assert not br[day < launch].any()
    after = br[day >= launch]
    assert after.mean() > 0.02
    late = br[day >= cfg.days - 30].mean()
    early = br[(day >= launch) & (day < launch + 30)].mean()
    assert late > 2 * early                                   # a growing share
    fraud = df[C.IS_FRAUD] == 1
    assert fraud[br].mean() > fraud[(day >= launch) & ~br].mean()

    none = generate(SynthConfig(rows=20_000, seed=1, new_country=""))
    assert not ((none[C.COUNTRY] == "BR") | (none[C.CARD_COUNTRY] == "BR")).any()
    other = generate(SynthConfig(rows=20_000, seed=1, days=100, new_country="jp", new_country_day=10))
    jp_days = _day(other[other[C.COUNTRY] == "JP"], SynthConfig(days=100))
    assert len(jp_days) and jp_days.min() >= 10


def _ato_share(frame: pd.DataFrame, cfg: SynthConfig, lo: int, hi: int) -> float:
    day = _day(frame, cfg)
    sel = (day >= lo) & (day < hi)
    f = frame[sel & (frame[C.IS_FRAUD] == 1).to_numpy()]
    domestic = f[C.COUNTRY] == f[C.CARD_COUNTRY]
    return float((f[C.MERCHANT_CATEGORY].isin(["subscriptions", "digital_goods"]) & domestic
                  & (f[C.AMOUNT] > 5)).mean())


def test_new_fraud_pattern_emerges(df: pd.DataFrame, cfg: SynthConfig) -> None:
    P = cfg.pattern_day
    assert P == 2 * cfg.days // 3
    before, after = _ato_share(df, cfg, 0, P), _ato_share(df, cfg, P + 14, cfg.days)
    assert after > before + 0.15
    day = _day(df, cfg)
    ato_like = ((df[C.IS_FRAUD] == 1) & df[C.MERCHANT_CATEGORY].isin(["subscriptions", "digital_goods"])
                & (df[C.COUNTRY] == df[C.CARD_COUNTRY]) & (df[C.AMOUNT] > 5))
    assert ato_like[day >= P + 14].mean() > 2 * ato_like[day < P].mean()

    never = SynthConfig(rows=200_000, seed=11, new_pattern_day=-1)
    nv = generate(never)
    assert never.pattern_day is None
    assert abs(_ato_share(nv, never, P + 14, cfg.days) - _ato_share(nv, never, 0, P)) < 0.08


def _weekday_cv(frame: pd.DataFrame) -> float:
    counts = frame[C.TS].dt.dayofweek.value_counts()
    return float(counts.std() / counts.mean())


def test_seasonality_controls_volume_cycles() -> None:
    flat = generate(SynthConfig(rows=50_000, seed=3, seasonality=0.0))
    wavy = generate(SynthConfig(rows=50_000, seed=3, seasonality=0.5))
    assert _weekday_cv(flat) < 0.03
    assert _weekday_cv(wavy) > 2 * _weekday_cv(flat)
    monthly_flat = flat[C.TS].dt.month.value_counts()
    monthly_wavy = wavy[C.TS].dt.month.value_counts()
    assert monthly_wavy.std() / monthly_wavy.mean() > monthly_flat.std() / monthly_flat.mean()


def test_drift_shifts_fraud_characteristics() -> None:
    def cross_border_share(frame: pd.DataFrame, cfg: SynthConfig, lo: int, hi: int) -> float:
        day = _day(frame, cfg)
        f = frame[(day >= lo) & (day < hi) & (frame[C.IS_FRAUD] == 1).to_numpy()]
        return float((f[C.COUNTRY] != f[C.CARD_COUNTRY]).mean())

    # fast drift: card testers and high-amount fraud move from abroad to domestic merchants
    stable = SynthConfig(rows=300_000, seed=4, new_pattern_day=-1, new_country="")
    fast = SynthConfig(rows=300_000, seed=4, new_pattern_day=-1, new_country="", drift_speed=3.0)
    s, f = generate(stable), generate(fast)
    s_early, s_late = cross_border_share(s, stable, 0, 60), cross_border_share(s, stable, 275, 365)
    f_early, f_late = cross_border_share(f, fast, 0, 60), cross_border_share(f, fast, 275, 365)
    assert abs(s_early - s_late) < 0.12
    assert f_early - f_late > 0.2
    assert s_late - f_late > 0.25


# --- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    ({"rows": 0}, "rows"), ({"rows": -5}, "rows"), ({"rows": 2.5}, "rows"),
    ({"days": 0}, "days"), ({"seasonality": 1.5}, "seasonality"), ({"seasonality": -0.1}, "seasonality"),
    ({"drift_speed": -1.0}, "drift_speed"), ({"new_country": "BRA"}, "new_country"),
    ({"new_country_day": 400}, "new_country_day"), ({"new_pattern_day": -2}, "new_pattern_day"),
    ({"start": "yesterday"}, "start"), ({"seed": -1}, "seed"),
])
def test_invalid_config_says_what_to_fix(kwargs: dict, field: str) -> None:
    with pytest.raises(RatchetError, match=re.escape(f"SynthConfig.{field}")) as info:
        SynthConfig(**kwargs)
    assert "pass" in str(info.value)


def test_config_is_frozen_with_cli_defaults() -> None:
    config = SynthConfig()
    assert (config.rows, config.seed, config.start, config.days) == (200_000, 7, "2025-01-01", 365)
    assert (config.new_country, config.seasonality, config.drift_speed) == ("BR", 0.25, 0.0)
    with pytest.raises(AttributeError):
        config.rows = 5  # type: ignore[misc]
    assert SynthConfig(new_country=None).launch_day is None


def test_cli_synth(tmp_path) -> None:
    from ratchet.app.cli import main

    out = tmp_path / "cli" / "tx.parquet"
    assert main(["synth", "--rows", "3000", "--days", "60", "--out", str(out), "--quiet",
                 "--new-country", ""]) == 0
    back = pd.read_parquet(out)
    assert len(back) == 3000 and list(back.columns) == UNLOGGED
    assert main(["synth", "--rows", "0", "--out", str(out), "--quiet"]) == 2
