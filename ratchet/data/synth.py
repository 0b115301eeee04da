"""Synthetic card transactions with learnable fraud patterns, label delays and scenario knobs.

The generator builds entity tables first (countries, merchants, cards), then fraud
events (card-testing bursts, high-amount cross-border purchases, compromised-card
sprees, background fraud at risky merchants and, from ``new_pattern_day``, account
takeover at subscription / digital-goods merchants), then genuine traffic week by week.
Every week has its own random stream, so the data does not depend on how it is batched
in memory: :func:`generate` and :func:`write_transactions` produce the same rows.

Everything is vectorized numpy: loops run per entity table, per pattern and per week,
never per row. Same config, same rows, bit for bit.

Volume: an hour-of-day cycle is always present (a within-day shape, so daily volume
stays flat); ``seasonality`` scales the weekly cycle (busy Fridays and Saturdays, quiet
Sundays) and a yearly one (December peak, late-summer dip). ``seasonality=0`` gives flat
daily volume.

Drift: ``drift_speed`` moves the fraud patterns' characteristics with time (with
``mix = 1 - exp(-drift_speed * day / days)``): card-testing bursts slow down and use
larger amounts, cross-border fraud turns domestic, sprees move from electronics and
gambling to everyday categories with ordinary amounts, and the set of risky merchants
rotates. ``drift_speed=0`` keeps them stable.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ratchet.data import columns as C
from ratchet.errors import RatchetError

__all__ = ["SynthConfig", "generate", "iter_chunks", "write_transactions", "CATEGORIES", "BASE_COUNTRIES"]

_US_PER_S = 1_000_000
_US_PER_H = 3600 * _US_PER_S
_US_PER_DAY = 24 * _US_PER_H
_BLOCK_DAYS = 7            # one random stream per block of days
_CHUNK_ROWS = 1_000_000    # rows per in-memory chunk / Parquet row group (data does not depend on it)
_LABEL_WINDOW_DAYS = 90
_ZIPF_EXPONENT = 1.6       # merchant volumes inside a (country, category) cell

#: Base countries and their share of cards (and merchants).
BASE_COUNTRIES: tuple[tuple[str, float], ...] = (
    ("GB", 0.28), ("DE", 0.20), ("FR", 0.17), ("ES", 0.11), ("IT", 0.10), ("NL", 0.07), ("US", 0.07),
)

#: name, traffic share, online share, median amount, amount sigma (log), fraud multiplier
CATEGORIES: tuple[tuple[str, float, float, float, float, float], ...] = (
    ("grocery",       0.220, 0.06,  35.0, 0.70, 0.4),
    ("restaurants",   0.140, 0.12,  28.0, 0.60, 0.5),
    ("fuel",          0.090, 0.02,  55.0, 0.40, 0.6),
    ("fashion",       0.100, 0.45,  60.0, 0.70, 1.2),
    ("electronics",   0.060, 0.55, 180.0, 0.90, 2.0),
    ("travel",        0.050, 0.70, 320.0, 0.90, 1.5),
    ("digital_goods", 0.080, 1.00,  15.0, 0.90, 1.5),
    ("subscriptions", 0.070, 1.00,  12.0, 0.50, 0.8),
    ("pharmacy",      0.050, 0.15,  22.0, 0.60, 0.5),
    ("home_garden",   0.060, 0.30,  70.0, 0.80, 0.7),
    ("gambling",      0.030, 0.85,  40.0, 1.00, 2.5),
    ("crypto",        0.015, 1.00, 150.0, 1.10, 3.0),
    ("podcasts",      0.005, 1.00,   8.0, 0.40, 1.0),
)
_CAT_NAMES = [c[0] for c in CATEGORIES]
_CAT_SHARE = np.array([c[1] for c in CATEGORIES]) / sum(c[1] for c in CATEGORIES)
_CAT_ONLINE = np.array([c[2] for c in CATEGORIES])
_CAT_MEDIAN = np.array([c[3] for c in CATEGORIES])
_CAT_SIGMA = np.array([c[4] for c in CATEGORIES])
_CAT_FRAUD = np.array([c[5] for c in CATEGORIES])


def _cat_weights(**w: float) -> np.ndarray:
    out = np.zeros(len(CATEGORIES))
    for name, v in w.items():
        out[_CAT_NAMES.index(name)] = v
    return out


# where card testers test, where sprees spend (before / after drift), what account takeover buys
_TESTING_CATS = _cat_weights(digital_goods=1.0, podcasts=1.0, subscriptions=0.6, gambling=0.5)
_SESSION_CATS = _cat_weights(digital_goods=1.0, gambling=1.0, podcasts=1.0)
_XB_CATS = _cat_weights(electronics=3.0, travel=2.0, fashion=1.5, crypto=2.0, digital_goods=1.0)
_SPREE_CATS_A = _cat_weights(electronics=3.0, fashion=2.0, gambling=2.0, crypto=2.0, travel=1.0,
                             digital_goods=1.0, home_garden=0.5, grocery=0.2, restaurants=0.2)
_SPREE_CATS_B = _cat_weights(grocery=2.0, restaurants=2.0, fuel=1.5, pharmacy=1.5, home_garden=1.0,
                             fashion=0.5)
_ATO_CATS = _cat_weights(subscriptions=2.0, digital_goods=1.5)

#: hour-of-day shape of genuine traffic (local time ~ UTC for these countries)
_HOUR_PROFILE = np.array([0.6, 0.4, 0.3, 0.25, 0.3, 0.5, 1.2, 2.2, 3.2, 3.8, 4.2, 4.6,
                          5.2, 5.0, 4.6, 4.4, 4.6, 5.0, 5.6, 5.4, 4.6, 3.6, 2.4, 1.4])
_HOUR_CDF = np.cumsum(_HOUR_PROFILE) / _HOUR_PROFILE.sum()
_FRAUD_HOUR_PROFILE = 0.5 * _HOUR_PROFILE / _HOUR_PROFILE.sum() + 0.5 / 24
_FRAUD_HOUR_CDF = np.cumsum(_FRAUD_HOUR_PROFILE) / _FRAUD_HOUR_PROFILE.sum()
#: Monday..Sunday volume offsets, scaled by seasonality
_WEEKLY = np.array([-0.25, -0.20, -0.10, 0.0, 0.35, 0.55, -0.35])

# fraud budget: expected fraud rows as a share of all rows, per pattern
_RATE_TESTING, _RATE_XBORDER, _RATE_SPREE, _RATE_BACKGROUND = 0.0025, 0.0015, 0.0025, 0.0015
_RATE_ATO = 0.004           # share of rows after new_pattern_day (ramps up over two weeks)
_NEW_COUNTRY_FRAUD_BOOST = 2.5


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Invalid values raise RatchetError naming the field and the fix.

    rows: number of transactions. seed: random seed (same config, same data).
    start: first day (ISO date), days: number of days covered.
    new_country: ISO-2 code of a country launching on ``new_country_day`` (default
    ``days // 2``); None or "" for none. new_pattern_day: day a new fraud pattern
    (account takeover at subscription / digital-goods merchants) emerges; default
    ``2 * days // 3``, -1 for never. seasonality: 0..1 amplitude of weekly and yearly
    volume cycles. drift_speed: >= 0, how fast fraud patterns' characteristics shift.
    fraud_scale: multiplies every fraud pattern's volume (1 gives about 1.1% fraud).
    """

    rows: int = 200_000
    seed: int = 7
    start: str = "2025-01-01"
    days: int = 365
    new_country: str | None = "BR"
    new_country_day: int | None = None
    new_pattern_day: int | None = None
    seasonality: float = 0.25
    drift_speed: float = 0.0
    fraud_scale: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(field: str, value: object, fix: str) -> RatchetError:
            return RatchetError(f"SynthConfig.{field} is invalid ({value!r}): {fix}")

        def is_int(v: object) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if not is_int(self.rows) or self.rows <= 0:
            raise bad("rows", self.rows, "pass a positive whole number of transactions (e.g. --rows 200000)")
        if not is_int(self.seed) or self.seed < 0:
            raise bad("seed", self.seed, "pass a non-negative whole number (e.g. --seed 7)")
        if not is_int(self.days) or self.days <= 0:
            raise bad("days", self.days, "pass a positive whole number of days (e.g. --days 365)")
        try:
            date.fromisoformat(str(self.start))
        except ValueError:
            raise bad("start", self.start, "pass an ISO date such as 2025-01-01") from None
        if not isinstance(self.seasonality, (int, float)) or not 0.0 <= float(self.seasonality) <= 1.0:
            raise bad("seasonality", self.seasonality, "pass a number between 0 (flat volume) and 1")
        if (not isinstance(self.drift_speed, (int, float)) or not math.isfinite(self.drift_speed)
                or self.drift_speed < 0):
            raise bad("drift_speed", self.drift_speed, "pass a number >= 0 (0 = stable fraud patterns)")
        if (not isinstance(self.fraud_scale, (int, float)) or not math.isfinite(self.fraud_scale)
                or not 0 <= self.fraud_scale <= 20):
            raise bad("fraud_scale", self.fraud_scale, "pass a number between 0 and 20 (1 = about 1% fraud)")
        nc = self.new_country
        if nc not in (None, ""):
            if not isinstance(nc, str) or len(nc) != 2 or not nc.isascii() or not nc.isalpha():
                raise bad("new_country", nc, "pass a two-letter ISO country code such as BR, or '' for none")
        if self.new_country_day is not None and (not is_int(self.new_country_day)
                                                 or not 0 <= self.new_country_day < self.days):
            raise bad("new_country_day", self.new_country_day,
                      f"pass a day index between 0 and {self.days - 1} (days - 1), or omit it for days // 2")
        if self.new_pattern_day is not None and (not is_int(self.new_pattern_day) or not (
                self.new_pattern_day == -1 or 0 <= self.new_pattern_day < self.days)):
            raise bad("new_pattern_day", self.new_pattern_day,
                      f"pass a day index between 0 and {self.days - 1}, -1 for never, "
                      "or omit it for two thirds in")

    # resolved scenario values
    @property
    def launch_country(self) -> str | None:
        """The new country's code (upper case), or None."""
        return self.new_country.upper() if self.new_country else None

    @property
    def launch_day(self) -> int | None:
        """Day index the new country launches, or None without a new country."""
        if self.launch_country is None:
            return None
        return self.days // 2 if self.new_country_day is None else int(self.new_country_day)

    @property
    def pattern_day(self) -> int | None:
        """Day index the new fraud pattern emerges, or None for never."""
        if self.new_pattern_day is None:
            return 2 * self.days // 3
        return None if self.new_pattern_day == -1 else int(self.new_pattern_day)

    @property
    def start_date(self) -> date:
        return date.fromisoformat(str(self.start))


# ---------------------------------------------------------------------------------------
# helpers


class _GroupSampler:
    """Weighted sampling of items within groups (e.g. merchants within a country), vectorized."""

    def __init__(self, group_of_item: np.ndarray, weights: np.ndarray, n_groups: int) -> None:
        group_of_item = np.asarray(group_of_item, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        order = np.argsort(group_of_item, kind="stable")
        g, w = group_of_item[order], weights[order]
        totals = np.bincount(g, weights=w, minlength=n_groups)
        cs = np.cumsum(w)
        first = np.searchsorted(g, np.arange(n_groups))
        before = np.concatenate([[0.0], cs])[first]
        within = cs - before[g]
        safe = np.where(totals > 0, totals, 1.0)
        self.keys = g + np.minimum(within / safe[g], 1.0)
        self.items = order
        self.totals = totals
        self.n_groups = n_groups

    def has(self, groups: np.ndarray) -> np.ndarray:
        return self.totals[groups] > 0

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        groups = np.asarray(groups, dtype=np.int64)
        u = rng.random(groups.shape[0])
        pos = np.searchsorted(self.keys, groups + u, side="right")
        return self.items[np.minimum(pos, len(self.items) - 1)]


def _names(prefix: str, n: int, width: int) -> np.ndarray:
    width = max(width, len(str(max(n - 1, 0))))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def _cumulative_offsets(rng: np.random.Generator, sizes: np.ndarray, mean_gap_us: np.ndarray) -> np.ndarray:
    """Per row of events expanded by `sizes`: offset from the event start (first row 0)."""
    n = int(sizes.sum())
    ev = np.repeat(np.arange(len(sizes)), sizes)
    gaps = rng.exponential(1.0, n) * np.repeat(mean_gap_us, sizes)
    starts = np.cumsum(sizes) - sizes
    gaps[starts[sizes > 0]] = 0.0
    cs = np.cumsum(gaps)
    base = cs[starts[sizes > 0]]
    return (cs - np.repeat(base, sizes[sizes > 0])).astype(np.int64) if n else np.zeros(0, np.int64), ev


def _hour_offsets(rng: np.random.Generator, n: int, cdf: np.ndarray) -> np.ndarray:
    hours = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), 23)
    return hours.astype(np.int64) * _US_PER_H + rng.integers(0, _US_PER_H, n)


def _round_amount(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.round(x, 2), 0.01)


# ---------------------------------------------------------------------------------------
# the world: countries, merchants, cards, calendar, fraud events


class _World:
    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        rng = np.random.default_rng([config.seed, 0])
        days, rows = config.days, config.rows
        self.start_us = int(np.datetime64(config.start_date.isoformat(), "us").astype(np.int64))
        self.end_us = self.start_us + days * _US_PER_DAY

        # countries
        launch = config.launch_country
        base = [(c, w) for c, w in BASE_COUNTRIES if c != launch]
        wsum = sum(w for _, w in base)
        self.country_names = [c for c, _ in base] + ([launch] if launch else [])
        self.n_base = len(base)
        self.new_idx = self.n_base if launch else -1
        cshare = np.array([w / wsum for _, w in base] + ([0.06] if launch else []))
        self.country_share = cshare
        n_countries = len(self.country_names)

        # merchants: per (country, category) cells, Zipf volumes inside each cell
        n_m = int(np.clip(rows // 100, 150, 30_000))
        mshare_cat = _CAT_SHARE ** 0.7 / (_CAT_SHARE ** 0.7).sum()
        m_country, m_cat, m_vol = [], [], []
        for k in range(n_countries):
            for c in range(len(CATEGORIES)):
                cnt = max(1, round(n_m * cshare[k] * mshare_cat[c]))
                ranks = np.arange(1, cnt + 1, dtype=np.float64)
                w = ranks ** -_ZIPF_EXPONENT
                m_country.append(np.full(cnt, k))
                m_cat.append(np.full(cnt, c))
                m_vol.append(_CAT_SHARE[c] * w / w.sum())
        perm = rng.permutation(sum(len(a) for a in m_cat))
        self.m_country = np.concatenate(m_country)[perm]
        self.m_cat = np.concatenate(m_cat)[perm]
        self.m_vol = np.concatenate(m_vol)[perm]
        nm = len(self.m_cat)
        self.n_merchants = nm
        self.m_online = _CAT_ONLINE[self.m_cat] ** np.exp(rng.normal(0.0, 0.5, nm))
        risky_a = np.where(rng.random(nm) < 0.04, 6.0, 1.0)
        risky_b = np.where(rng.random(nm) < 0.04, 6.0, 1.0)
        self.m_risk_a = _CAT_FRAUD[self.m_cat] * rng.lognormal(0.0, 0.5, nm) * risky_a
        self.m_risk_b = _CAT_FRAUD[self.m_cat] * rng.lognormal(0.0, 0.5, nm) * risky_b
        small = self.m_vol < np.quantile(self.m_vol, 0.6)
        tester_w = _TESTING_CATS[self.m_cat] * small * (self.m_country < self.n_base)
        self.m_tester_a = tester_w * (rng.random(nm) < 0.08) * rng.pareto(1.2, nm)
        self.m_tester_b = tester_w * (rng.random(nm) < 0.08) * rng.pareto(1.2, nm)
        for arr in (self.m_tester_a, self.m_tester_b):
            if arr.sum() <= 0:            # tiny worlds: fall back to any online testing category merchant
                arr[:] = _TESTING_CATS[self.m_cat] * (self.m_country < self.n_base) + 1e-12
        self.merchant_names = _names("m", nm, 5)

        # samplers over merchants
        is_base = self.m_country < self.n_base
        self.by_country = _GroupSampler(self.m_country, self.m_vol, n_countries)
        us = self.country_names.index("US") if "US" in self.country_names else -1
        online_w = self.m_vol * self.m_online * is_base * np.where(self.m_country == us, 3.0, 1.0)
        zero = np.zeros(nm, dtype=np.int64)
        self.online_global = _GroupSampler(zero, online_w, 1)
        self.testers_a = _GroupSampler(zero, self.m_tester_a, 1)
        self.testers_b = _GroupSampler(self.m_country, self.m_tester_b, n_countries)   # drift: domestic testers
        self.xborder = _GroupSampler(zero, self.m_vol * self.m_online * _XB_CATS[self.m_cat] * is_base, 1)
        self.xborder_by_country = _GroupSampler(self.m_country, self.m_vol * self.m_online * _XB_CATS[self.m_cat],
                                                n_countries)
        self.spree_a = _GroupSampler(self.m_country, self.m_vol * _SPREE_CATS_A[self.m_cat], n_countries)
        self.spree_b = _GroupSampler(self.m_country, self.m_vol * _SPREE_CATS_B[self.m_cat], n_countries)
        self.background_a = _GroupSampler(self.m_country, self.m_vol * self.m_risk_a, n_countries)
        self.background_b = _GroupSampler(self.m_country, self.m_vol * self.m_risk_b, n_countries)
        self.ato = _GroupSampler(self.m_country, self.m_vol * _ATO_CATS[self.m_cat], n_countries)

        # cards: home country, amount level, activity, travel propensity, favourite merchants
        n_base_cards = max(50, rows // 30)
        n_new_cards = max(20, n_base_cards // 20) if launch else 0
        self.base_p = base_p = cshare[: self.n_base] / cshare[: self.n_base].sum()
        home = rng.choice(self.n_base, size=n_base_cards, p=base_p)
        self.c_home = np.concatenate([home, np.full(n_new_cards, self.new_idx)]).astype(np.int64)
        nc = len(self.c_home)
        self.n_cards = nc
        self.c_level = rng.lognormal(0.0, 0.45, nc)
        self.c_activity = rng.lognormal(0.0, 1.0, nc)
        self.c_travel = np.minimum(0.025 * rng.lognormal(0.0, 0.9, nc), 0.3)
        self.c_region = (self.c_home == self.new_idx).astype(np.int64) if launch else np.zeros(nc, np.int64)
        self.n_fav = 6
        self.fav_p = np.cumsum([0.32, 0.24, 0.16, 0.12, 0.09, 0.07])
        fav_groups = np.repeat(self.c_home, self.n_fav)
        self.c_fav = self.by_country.sample(fav_groups, rng).reshape(nc, self.n_fav)
        self.cards_by_region = _GroupSampler(self.c_region, self.c_activity, 2)
        self.cards_uniform = _GroupSampler(self.c_region, np.ones(nc), 2)
        self.card_names = _names("c", nc, 6)

        # calendar: daily volume and new-country share
        d = np.arange(days)
        day_dates = np.datetime64(config.start_date.isoformat(), "D") + d
        dow = (day_dates.astype(np.int64) + 3) % 7                       # Monday = 0
        doy = (day_dates - day_dates.astype("datetime64[Y]")).astype(np.int64)
        s = float(config.seasonality)
        yearly = 0.30 * np.cos(2 * np.pi * (doy - 350) / 365.25) - 0.12 * np.cos(4 * np.pi * (doy - 225) / 365.25)
        self.day_w = (1.0 + s * _WEEKLY[dow]) * (1.0 + s * yearly)
        self.day_p = self.day_w / self.day_w.sum()
        self.new_share = np.zeros(days)
        if launch:
            L = config.launch_day
            ramp = (d - L) / max(1, days - 1 - L)
            self.new_share = np.where(d >= L, 0.02 + 0.10 * np.clip(ramp, 0, 1), 0.0)
        self.mix = 1.0 - np.exp(-float(config.drift_speed) * d / days)

        # fraud, then genuine counts per day
        frng = np.random.default_rng([config.seed, 1])
        self.fraud = self._fraud_rows(frng)
        n_genuine = rows - len(self.fraud["ts"])
        self.day_counts = frng.multinomial(n_genuine, self.day_p)

    # -- fraud ------------------------------------------------------------------------
    def _events(self, rng: np.random.Generator, expected_rows: float, mean_size: float,
                day_p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Event count, day, start ts and card (region-aware) for one pattern."""
        n = int(rng.poisson(max(expected_rows, 0.0) / mean_size)) if day_p.sum() > 0 else 0
        day = rng.choice(len(day_p), size=n, p=day_p / day_p.sum())
        ts = self.start_us + day.astype(np.int64) * _US_PER_DAY + _hour_offsets(rng, n, _FRAUD_HOUR_CDF)
        region = (rng.random(n) < np.minimum(0.9, _NEW_COUNTRY_FRAUD_BOOST * self.new_share[day])).astype(np.int64)
        region = np.where(self.cards_uniform.has(region), region, 0)
        card = self.cards_uniform.sample(region, rng)
        return day, ts, card

    def _genuine_amount(self, rng: np.random.Generator, cat: np.ndarray, card: np.ndarray) -> np.ndarray:
        return _CAT_MEDIAN[cat] * self.c_level[card] * np.exp(rng.normal(0.0, 1.0, len(cat)) * _CAT_SIGMA[cat])

    def _pick(self, rng: np.random.Generator, a: _GroupSampler, b: _GroupSampler,
              groups: np.ndarray, mix: np.ndarray, groups_b: np.ndarray | None = None) -> np.ndarray:
        """Sample from `a`, or from `b` with probability `mix` (drift between two distributions)."""
        out = a.sample(groups, rng)
        use_b = rng.random(len(groups)) < mix
        if use_b.any():
            gb = groups if groups_b is None else groups_b
            out[use_b] = b.sample(gb[use_b], rng)
        return out

    def _fraud_rows(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        cfg = self.config
        rows, scale = cfg.rows, float(cfg.fraud_scale)
        parts: list[dict[str, np.ndarray]] = []

        def part(ts, card, merchant, online, amount):
            parts.append({"ts": np.asarray(ts, np.int64), "card": np.asarray(card, np.int64),
                          "merchant": np.asarray(merchant, np.int64), "online": np.asarray(online, bool),
                          "amount": _round_amount(np.asarray(amount, np.float64))})

        # 1. card testing: many tiny online transactions within minutes at small tester merchants
        day, ts0, card = self._events(rng, rows * _RATE_TESTING * scale, 8.0, self.day_p)
        mix = self.mix[day]
        sizes = 3 + rng.poisson(5.0, len(day))
        off, ev = _cumulative_offsets(rng, sizes, 45 * _US_PER_S * np.exp(2.5 * mix))
        zero = np.zeros(len(day), np.int64)
        home = self.c_home[card]
        b_mix = np.where(self.testers_b.has(home), mix, 0.0)
        m1 = self._pick(rng, self.testers_a, self.testers_b, zero, b_mix, home)
        m2 = self._pick(rng, self.testers_a, self.testers_b, zero, b_mix, home)
        merchant = np.where(rng.random(len(ev)) < 0.25, m2[ev], m1[ev])
        amount = rng.uniform(0.5, 3.0, len(ev)) * np.exp(2.0 * mix[ev])
        part(ts0[ev] + off, card[ev], merchant, np.ones(len(ev), bool), amount)

        # 2. high-amount cross-border online purchases, far above the card's usual level
        day, ts0, card = self._events(rng, rows * _RATE_XBORDER * scale, 1.6, self.day_p)
        mix = self.mix[day]
        sizes = 1 + rng.binomial(2, 0.3, len(day))
        off, ev = _cumulative_offsets(rng, sizes, np.full(len(day), 40 * 60 * _US_PER_S))
        zero = np.zeros(len(ev), np.int64)
        home = self.c_home[card[ev]]
        cand = [self.xborder.sample(zero, rng) for _ in range(3)]
        merchant = cand[2]
        for cnd in (cand[1], cand[0]):
            merchant = np.where(self.m_country[cnd] != home, cnd, merchant)
        domestic = rng.random(len(ev)) > 0.95 - 0.8 * mix[ev]        # drift: turns domestic
        dom_ok = domestic & self.xborder_by_country.has(home)
        if dom_ok.any():
            merchant[dom_ok] = self.xborder_by_country.sample(home[dom_ok], rng)
        cat = self.m_cat[merchant]
        amount = self._genuine_amount(rng, cat, card[ev]) * rng.lognormal(np.log(4.0) * (1 - 0.6 * mix[ev]), 0.5)
        part(ts0[ev] + off, card[ev], merchant, rng.random(len(ev)) < 0.92, amount)

        # 3. compromised-card sprees: several purchases over a few days, different merchants, larger amounts
        day, ts0, card = self._events(rng, rows * _RATE_SPREE * scale, 5.0, self.day_p)
        mix = self.mix[day]
        sizes = 2 + rng.poisson(3.0, len(day))
        off, ev = _cumulative_offsets(rng, sizes, np.full(len(day), 7 * _US_PER_H))
        home = self.c_home[card[ev]]
        abroad = rng.random(len(ev)) < 0.2 * (1 - mix[ev])
        dest = np.where(abroad, rng.integers(0, self.n_base, len(ev)), home)
        merchant = self._pick(rng, self.spree_a, self.spree_b, dest, mix[ev])
        cat = self.m_cat[merchant]
        amount = self._genuine_amount(rng, cat, card[ev]) * rng.lognormal(np.log(2.5) * (1 - 0.7 * mix[ev]), 0.5)
        online = rng.random(len(ev)) < np.maximum(self.m_online[merchant], 0.6)
        part(ts0[ev] + off, card[ev], merchant, online, amount)

        # 4. background fraud: single transactions at risky merchants, near-normal amounts
        day, ts0, card = self._events(rng, rows * _RATE_BACKGROUND * scale, 1.0, self.day_p)
        merchant = self._pick(rng, self.background_a, self.background_b, self.c_home[card], self.mix[day])
        cat = self.m_cat[merchant]
        amount = self._genuine_amount(rng, cat, card) * 1.3
        part(ts0, card, merchant, rng.random(len(day)) < self.m_online[merchant], amount)

        # 5. new pattern: account takeover at subscription / digital-goods merchants, normal amounts
        P = cfg.pattern_day
        if P is not None:
            d = np.arange(cfg.days)
            ramp = np.where(d >= P, np.clip((d - P + 1) / 14.0, 0.0, 1.0), 0.0)
            day_p = self.day_p * ramp
            expected = rows * _RATE_ATO * scale * day_p.sum()
            day, ts0, card = self._events(rng, expected, 2.5, day_p)
            sizes = 1 + rng.poisson(1.5, len(day))
            off, ev = _cumulative_offsets(rng, sizes, np.full(len(day), 4 * _US_PER_H))
            home = self.c_home[card[ev]]
            ok = self.ato.has(home)
            merchant = np.where(ok, self.ato.sample(np.where(ok, home, 0), rng), 0)
            keep = ok
            cat = self.m_cat[merchant]
            amount = self._genuine_amount(rng, cat, card[ev])
            part((ts0[ev] + off)[keep], card[ev][keep], merchant[keep], np.ones(keep.sum(), bool), amount[keep])

        fraud = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        # drop rows past the end; keep at most half the rows as fraud (tiny configs)
        keep = fraud["ts"] < self.end_us
        fraud = {k: v[keep] for k, v in fraud.items()}
        limit = rows // 2
        if len(fraud["ts"]) > limit:
            fraud = {k: v[:limit] for k, v in fraud.items()}
        n = len(fraud["ts"])
        delay_days = np.clip(rng.lognormal(np.log(20.0), 0.7, n), 2.0, 90.0)
        fraud["label"] = fraud["ts"] + (delay_days * _US_PER_DAY).astype(np.int64)
        order = np.argsort(fraud["ts"], kind="stable")
        return {k: v[order] for k, v in fraud.items()}

    # -- genuine traffic, one block of days at a time ------------------------------------
    def block(self, b: int) -> dict[str, np.ndarray]:
        """All rows (genuine and fraud) with ts in block `b`, sorted by ts."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 2, b])
        d0, d1 = b * _BLOCK_DAYS, min(cfg.days, (b + 1) * _BLOCK_DAYS)
        lo_us, hi_us = self.start_us + d0 * _US_PER_DAY, self.start_us + d1 * _US_PER_DAY
        total = int(self.day_counts[d0:d1].sum())

        # genuine in-app sessions (several small purchases within minutes): confusable with card testing
        n_sess = int(rng.binomial(total, 0.0025)) if total > 20 else 0
        sess_sizes = 1 + rng.poisson(1.5, n_sess)
        extras = int(sess_sizes.sum())
        if extras >= total // 2:
            n_sess, sess_sizes, extras = 0, sess_sizes[:0], 0
        n = total - extras

        counts = self.day_counts[d0:d1].astype(np.float64)
        day = d0 + np.minimum(np.searchsorted(np.cumsum(counts) / max(counts.sum(), 1), rng.random(n),
                                              side="right"), d1 - d0 - 1) if n else np.zeros(0, np.int64)
        ts = self.start_us + day.astype(np.int64) * _US_PER_DAY + _hour_offsets(rng, n, _HOUR_CDF)
        region = (rng.random(n) < self.new_share[day]).astype(np.int64)
        region = np.where(self.cards_by_region.has(region), region, 0)
        card = self.cards_by_region.sample(region, rng)
        home = self.c_home[card]

        u = rng.random(n)
        travel = u < self.c_travel[card]
        web = (~travel) & (u < self.c_travel[card] + 0.03) & (region == 0)
        fav = (~travel) & (~web) & (rng.random(n) < 0.6)
        merchant = self.by_country.sample(home, rng)
        if fav.any():
            slot = np.searchsorted(self.fav_p, rng.random(int(fav.sum())) * self.fav_p[-1], side="right")
            merchant[fav] = self.c_fav[card[fav], np.minimum(slot, self.n_fav - 1)]
        if web.any():
            merchant[web] = self.online_global.sample(np.zeros(int(web.sum()), np.int64), rng)
        if travel.any():
            h = home[travel]
            dest = rng.choice(self.n_base, size=len(h), p=self.base_p)
            other = (dest + rng.integers(1, max(self.n_base, 2), len(h))) % self.n_base
            dest = np.where(dest == h, other, dest)          # travel goes abroad
            merchant[travel] = self.by_country.sample(dest, rng)
        p_online = self.m_online[merchant] ** np.where(travel, 2.0, 1.0)     # abroad: mostly in person
        online = (rng.random(n) < p_online) | web
        cat = self.m_cat[merchant]
        amount = self._genuine_amount(rng, cat, card)
        amount *= np.where(travel, 1.3, 1.0)
        big = rng.random(n) < 0.01
        amount[big] *= rng.lognormal(np.log(3.0), 0.5, int(big.sum()))

        if n_sess:
            cand = np.flatnonzero(_SESSION_CATS[cat] > 0)
            pool = cand if len(cand) else np.arange(n)
            seeds = pool[rng.integers(0, len(pool), n_sess)]
            off, ev = _cumulative_offsets(rng, sess_sizes + 1, np.full(n_sess, 90 * _US_PER_S))
            first = np.cumsum(sess_sizes + 1) - (sess_sizes + 1)
            mask = np.ones(len(ev), bool)
            mask[first] = False                      # the seed row itself already exists
            ev, off = ev[mask], off[mask]
            s_ts = ts[seeds][ev] + off
            s_ts = np.where(s_ts >= hi_us, ts[seeds][ev] - off, s_ts)
            s_ts = np.maximum(s_ts, lo_us)
            s_amount = amount[seeds][ev] * rng.lognormal(0.0, 0.3, len(ev))
            ts = np.concatenate([ts, s_ts])
            card = np.concatenate([card, card[seeds][ev]])
            merchant = np.concatenate([merchant, merchant[seeds][ev]])
            online = np.concatenate([online, online[seeds][ev]])
            amount = np.concatenate([amount, s_amount])

        amount = _round_amount(amount)
        label = ts + _LABEL_WINDOW_DAYS * _US_PER_DAY
        is_fraud = np.zeros(len(ts), np.int8)

        f = self.fraud
        i0, i1 = np.searchsorted(f["ts"], [lo_us, hi_us])
        if i1 > i0:
            ts = np.concatenate([ts, f["ts"][i0:i1]])
            card = np.concatenate([card, f["card"][i0:i1]])
            merchant = np.concatenate([merchant, f["merchant"][i0:i1]])
            online = np.concatenate([online, f["online"][i0:i1]])
            amount = np.concatenate([amount, f["amount"][i0:i1]])
            label = np.concatenate([label, f["label"][i0:i1]])
            is_fraud = np.concatenate([is_fraud, np.ones(i1 - i0, np.int8)])

        order = np.argsort(ts, kind="stable")
        return {"ts": ts[order], "card": card[order], "merchant": merchant[order],
                "online": online[order], "amount": amount[order], "label": label[order],
                "is_fraud": is_fraud[order]}

    @property
    def n_blocks(self) -> int:
        return -(-self.config.days // _BLOCK_DAYS)

    def block_rows(self, b: int) -> int:
        d0, d1 = b * _BLOCK_DAYS, min(self.config.days, (b + 1) * _BLOCK_DAYS)
        lo_us, hi_us = self.start_us + d0 * _US_PER_DAY, self.start_us + d1 * _US_PER_DAY
        i0, i1 = np.searchsorted(self.fraud["ts"], [lo_us, hi_us])
        return int(self.day_counts[d0:d1].sum()) + int(i1 - i0)


# ---------------------------------------------------------------------------------------
# public API

_CHANNELS = np.array(["card_present", "online"], dtype=object)


def _frame(world: _World, arrays: dict[str, np.ndarray], first_id: int) -> pd.DataFrame:
    n = len(arrays["ts"])
    m, c = arrays["merchant"], arrays["card"]
    countries = np.array(world.country_names, dtype=object)
    cats = np.array(_CAT_NAMES, dtype=object)
    return pd.DataFrame({
        C.TRANSACTION_ID: np.arange(first_id, first_id + n, dtype=np.int64),
        C.TS: arrays["ts"].astype("datetime64[us]"),
        C.CARD_ID: world.card_names[c],
        C.MERCHANT_ID: world.merchant_names[m],
        C.MERCHANT_CATEGORY: cats[world.m_cat[m]],
        C.COUNTRY: countries[world.m_country[m]],
        C.CARD_COUNTRY: countries[world.c_home[c]],
        C.CHANNEL: _CHANNELS[arrays["online"].astype(np.int64)],
        C.AMOUNT: arrays["amount"].astype(np.float64),
        C.IS_FRAUD: arrays["is_fraud"].astype(np.int8),
        C.LABEL_AVAILABLE_AT: arrays["label"].astype("datetime64[us]"),
    })


def iter_chunks(config: SynthConfig, progress: bool = False) -> Iterator[pd.DataFrame]:
    """The transactions in time order, as DataFrames of about a million rows each."""
    t0 = time.perf_counter()
    world = _World(config)
    if progress:
        print(f"synth: {config.rows:,} rows over {config.days} days, {world.n_cards:,} cards, "
              f"{world.n_merchants:,} merchants, {len(world.fraud['ts']):,} fraud rows "
              f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    next_id, pending, pending_rows, b = 0, [], 0, 0
    while b < world.n_blocks:
        pending.append(world.block(b))
        pending_rows += len(pending[-1]["ts"])
        b += 1
        if pending_rows >= _CHUNK_ROWS or b == world.n_blocks:
            arrays = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            frame = _frame(world, arrays, next_id)
            next_id += len(frame)
            pending, pending_rows = [], 0
            if progress and (config.rows >= _CHUNK_ROWS or b == world.n_blocks):
                print(f"synth: {next_id:,}/{config.rows:,} rows (up to day {min(b * _BLOCK_DAYS, config.days)}, "
                      f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr)
            yield frame


def generate(config: SynthConfig) -> pd.DataFrame:
    """All transactions of `config` as one DataFrame in the canonical schema, sorted by ts."""
    frames = list(iter_chunks(config))
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


_SCHEMA = pa.schema([
    (C.TRANSACTION_ID, pa.int64()), (C.TS, pa.timestamp("us")), (C.CARD_ID, pa.string()),
    (C.MERCHANT_ID, pa.string()), (C.MERCHANT_CATEGORY, pa.string()), (C.COUNTRY, pa.string()),
    (C.CARD_COUNTRY, pa.string()), (C.CHANNEL, pa.string()), (C.AMOUNT, pa.float64()),
    (C.IS_FRAUD, pa.int8()), (C.LABEL_AVAILABLE_AT, pa.timestamp("us")),
])


def write_transactions(config: SynthConfig, out: str | Path, progress: bool = False) -> Path:
    """Write the transactions of `config` to one Parquet file (zstd); returns its path.

    `out` is the file to write; when it is an existing directory (or ends with a slash),
    `transactions.parquet` is written inside it. Parent directories are created; the file
    appears only once complete (written as `<name>.partial`, then renamed).
    """
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", "\\")):
        path = path / "transactions.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with pq.ParquetWriter(tmp, _SCHEMA, compression="zstd") as writer:
            for frame in iter_chunks(config, progress=progress):
                writer.write_table(pa.Table.from_pandas(frame, schema=_SCHEMA, preserve_index=False))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RatchetError(f"cannot write transactions to {path}: {exc}. Pick a writable --out path") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
