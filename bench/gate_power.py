"""Benchmark: the statistical claims of the release decision, measured by simulation.

Five measurements, each on simulated scored data with a known truth (fixed seeds: a
rerun prints the same figures):

1. aa       false blocks of the offline gate: candidate and baseline of EQUAL quality that
            disagree row by row as retrains do, judged once against fraud.yaml plus a
            blocking top-1,000-merchant clause and a blocking country x category clause
            (>= 1,000 judged slices); a false block is `not verdict.passed`.
2. shadow   false rollbacks of the shadow review: the same A/A on a growing stream of
            labelled shadow decisions, judged at every look with sequential=True
            (confidence sequences) and, for comparison, with sequential=False.
   boundary the least favourable null for the shadow review: every country's block rate
            exactly at country_block_rate_stable's tolerance (+10%), judged at every look
            in both modes -- where a test's error nears its bound and re-testing
            fixed-sample intervals shows its inflation.
3. guards   false rollbacks of the label-free block-rate guard (ratchet.rollout.guards.judge)
            for a canary (unpaired: other requests) and a shadow (paired: same requests)
            re-checked at every look, and the share of a +30% country harm it catches.
4. power    share of injected harms caught, offline (one fixed test window of N rows,
            sequential=False) and in shadow (sequential, at the looks), for N in --sizes:
            a 2x block rate in a category holding 0.5% of traffic, a 30% block-rate rise
            in a country holding 10%, and the largest merchant's block rate tripled.

The simulated world (the demo's shape: ratchet/data/synth.py): 8 countries (GB 25% ...
NL 6%), 13 categories (podcasts 0.5%), card-present vs online, ~4,150 merchants (a Zipf
head, the largest with 2.7% of rows, and a flat body), fraud ~1%, block rate ~1%. A
model's latent score is mu*label + beta*log(risk) + sqrt(rho)*shared + sqrt(1-rho)*own
noise: two models of equal quality that share most of their errors, like two retrains;
--rho sets how much (the printed overlap is the share of one model's blocks the other
also blocks).

    .venv/bin/python bench/gate_power.py [--trials 200] [--quick] [--only aa,shadow,boundary,guards,power]

A whole run takes about half an hour on 2 cores; bench/RESULTS.md lists the per-section
commands (each a few minutes).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr

from ratchet.contracts import Contract, contract_from_text, evaluate_contract

ROOT = Path(__file__).resolve().parents[1]
FRAUD_YAML = ROOT / "contracts" / "fraud.yaml"

# ---- the simulated world ------------------------------------------------------------------
#: country, share of rows, fraud risk multiplier (the demo's test window, rounded)
COUNTRIES = (("GB", 0.25, 0.85), ("DE", 0.18, 0.60), ("FR", 0.16, 1.40), ("ES", 0.10, 0.95),
             ("IT", 0.09, 0.85), ("BR", 0.085, 1.75), ("US", 0.075, 0.85), ("NL", 0.06, 1.20))
#: category, share of rows, fraud rate, online share, median amount, amount sigma (log)
CATEGORIES = (
    ("grocery", 0.220, 0.0016, 0.06, 35.0, 0.70), ("restaurants", 0.137, 0.0006, 0.12, 28.0, 0.60),
    ("fuel", 0.088, 0.0005, 0.02, 55.0, 0.40), ("fashion", 0.103, 0.0138, 0.45, 60.0, 0.70),
    ("electronics", 0.063, 0.0233, 0.55, 180.0, 0.90), ("travel", 0.052, 0.0064, 0.70, 320.0, 0.90),
    ("digital_goods", 0.091, 0.0290, 1.00, 15.0, 0.90), ("subscriptions", 0.073, 0.0350, 1.00, 12.0, 0.50),
    ("pharmacy", 0.051, 0.0016, 0.15, 22.0, 0.60), ("home_garden", 0.065, 0.0034, 0.30, 70.0, 0.80),
    ("gambling", 0.035, 0.0112, 0.85, 40.0, 1.00), ("crypto", 0.017, 0.0135, 1.00, 150.0, 1.10),
    # podcasts: a card testers' target (synth.py's _TESTING_CATS); riskier than in the demo's
    # test window (1.4% fraud), so that a 2x block rate exceeds category_approval_rate's 2 points
    ("podcasts", 0.005, 0.0300, 1.00, 8.0, 0.40),
)
ONLINE_RISK = 4.0          # online vs card-present fraud risk within a category
MU, BETA = 2.5, 0.6        # the models' separation of fraud and their use of context risk
BLOCK_RATE = 0.01          # the baseline's overall block rate at threshold 0.5
HARMED_COUNTRY, HARMED_CATEGORY, HARMED_MERCHANT = "ES", "podcasts", 0


@dataclass(frozen=True)
class World:
    """Merchants and their attributes (fixed per seed); rows are drawn per trial."""

    weights: np.ndarray    # merchant share of rows
    country: np.ndarray    # merchant -> country index
    category: np.ndarray   # merchant -> category index
    risk: np.ndarray       # merchant fraud-risk multiplier (mean ~1)
    t0: float              # latent threshold: blocks BLOCK_RATE of rows

    @property
    def n_merchants(self) -> int:
        return len(self.weights)


def merchant_weights() -> np.ndarray:
    """A Zipf head of 50 merchants (12% of rows, the largest 2.7%), a flat-ish body of 1,100
    (75%: at 400k rows each has ~200+ rows, so 1,000 merchant slices are judged) and a tail of
    3,000 small merchants (13%)."""
    head = 1.0 / (np.arange(50) + 1.0)
    body = (np.arange(1100) + 50.0) ** -0.3
    tail = np.ones(3000)
    return np.concatenate([head / head.sum() * 0.12, body / body.sum() * 0.75, tail / tail.sum() * 0.13])


def make_world(seed: int = 20261129, calibration_rows: int = 2_000_000) -> World:
    rng = np.random.default_rng(seed)
    w = merchant_weights()
    cshare = np.array([c[1] for c in COUNTRIES])
    kshare = np.array([c[1] for c in CATEGORIES])
    target = np.outer(cshare / cshare.sum(), kshare / kshare.sum())   # country x category shares
    got = np.zeros_like(target)
    country = np.empty(len(w), np.int64)
    category = np.empty(len(w), np.int64)
    # the largest merchant is a GB fashion retailer (block rate ~1%: tripling it is a real harm)
    pinned = {0: (0, [c[0] for c in CATEGORIES].index("fashion"))}
    for i in range(len(w)):  # merchants, largest first, to the cell furthest below its share
        if i in pinned:
            ci, ki = pinned[i]
        else:
            ci, ki = np.unravel_index(np.argmax(target - got), target.shape)
        country[i], category[i] = ci, ki
        got[ci, ki] += w[i]
    risk = rng.lognormal(-0.125, 0.5, len(w))
    risk[0] = 1.0
    world = World(w, country, category, risk, 0.0)
    # calibrate the threshold once, on a large sample: the baseline blocks BLOCK_RATE of rows
    d, _ = _deterministic(world, draw_rows(world, calibration_rows, np.random.default_rng(seed + 1)))
    lat = d + np.random.default_rng(seed + 2).normal(size=len(d))
    return World(w, country, category, risk, float(np.quantile(lat, 1.0 - BLOCK_RATE)))


def draw_rows(world: World, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Slice columns, fraud probability and labels of n rows."""
    m = rng.choice(world.n_merchants, size=n, p=world.weights)
    ci, ki = world.country[m], world.category[m]
    online_share = np.array([c[3] for c in CATEGORIES])[ki]
    online = rng.random(n) < online_share
    # online rows are ONLINE_RISK times as risky as card-present ones, the category's rate kept
    k_cp = 1.0 / (online_share * ONLINE_RISK + (1.0 - online_share))
    chan = np.where(online, ONLINE_RISK * k_cp, k_cp)
    p = (np.array([c[2] for c in CATEGORIES])[ki] * np.array([c[2] for c in COUNTRIES])[ci]
         * world.risk[m] * chan)
    p = np.clip(p, 0.0, 0.5)
    y = (rng.random(n) < p).astype(np.int8)
    med, sig = np.array([c[4] for c in CATEGORIES])[ki], np.array([c[5] for c in CATEGORIES])[ki]
    amount = np.exp(np.log(med) + sig * rng.normal(size=n))
    return {"merchant": m, "country": ci, "category": ki, "online": online, "p": p, "label": y, "amount": amount}


def _deterministic(world: World, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free part of every model's latent score (mu*y + beta*log risk), and y."""
    y = rows["label"].astype(float)
    return MU * y + BETA * np.log(np.maximum(rows["p"], 1e-6) / 0.01), y


def _sig(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def lift_for(d: np.ndarray, t0: float, mult: float) -> float:
    """The shift of the latent score that multiplies the expected block rate of these rows by
    `mult` (noise N(0, 1): P(block) = Phi(d + shift - t0)), by bisection."""
    target = mult * ndtr(d - t0).mean()
    lo, hi = -5.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if ndtr(d + mid - t0).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def harm_mask(rows: dict[str, np.ndarray], harm: str | None) -> np.ndarray | None:
    if harm is None:
        return None
    if harm == "category_2x":
        return rows["category"] == [c[0] for c in CATEGORIES].index(HARMED_CATEGORY)
    if harm in ("country_1.3x", "country_2x"):
        return rows["country"] == [c[0] for c in COUNTRIES].index(HARMED_COUNTRY)
    if harm == "merchant_3x":
        return rows["merchant"] == HARMED_MERCHANT
    raise ValueError(harm)


def candidate_shift(rows: dict[str, np.ndarray], d: np.ndarray, t0: float, harm: str | None) -> np.ndarray:
    """Per row, what the harm adds to the candidate's latent score (zeros: none)."""
    shift = np.zeros(len(d))
    if harm == AT_ALLOWANCE:  # every country's block rate exactly at the tolerance: +10%
        for i in range(len(COUNTRIES)):
            m = rows["country"] == i
            if m.any():
                shift[m] = lift_for(d[m], t0, 1.0 + TOLERANCE_COUNTRY)
        return shift
    mask = harm_mask(rows, harm)
    if mask is not None and mask.any():
        shift[mask] = lift_for(d[mask], t0, HARMS[harm][0])
    return shift


#: The least favourable A/A: every country's block rate +10%, exactly fraud.yaml's tolerance
#: for country_block_rate_stable -- no violation, so any fail is false; here a test's error
#: rate nears its bound (2.5% for an excess on one side) instead of staying far below it.
AT_ALLOWANCE, TOLERANCE_COUNTRY = "countries_at_allowance", 0.10


HARMS = {  # name -> (block-rate multiplier, the slice that must fail, what it is)
    "category_2x": (2.0, f"merchant_category={HARMED_CATEGORY}", f"2x block rate in {HARMED_CATEGORY} (0.5% of rows)"),
    "country_1.3x": (1.3, f"country={HARMED_COUNTRY}", f"+30% block rate in {HARMED_COUNTRY} (10% of rows)"),
    "merchant_3x": (3.0, f"merchant_id={HARMED_MERCHANT}",
                    f"3x block rate at the largest merchant ({merchant_weights()[0]:.1%} of rows)"),
    "country_2x": (2.0, f"country={HARMED_COUNTRY}", f"2x block rate in {HARMED_COUNTRY} (10% of rows)"),
}


def scored_frame(world: World, n: int, rng: np.random.Generator, rho: float, harm: str | None = None,
                 per_row_thresholds: bool = False) -> pd.DataFrame:
    """n scored rows: baseline and candidate of equal quality (A/A), or the candidate with `harm`.

    per_row_thresholds: both models at threshold 0.5 (columns), so an injected harm is the
    stated multiple of the baseline's block rate in its slice; otherwise the contract's
    thresholds apply (fraud.yaml: the candidate matches the baseline's block rate)."""
    rows = draw_rows(world, n, rng)
    d, _ = _deterministic(world, rows)
    shared = rng.normal(size=n)
    lat_b = d + np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * rng.normal(size=n)
    lat_c = d + np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * rng.normal(size=n)
    lat_c = lat_c + candidate_shift(rows, d, world.t0, harm)
    cn = [c[0] for c in COUNTRIES]
    kn = [c[0] for c in CATEGORIES]
    df = pd.DataFrame({
        "label": rows["label"],
        "baseline_score": _sig(lat_b - world.t0), "candidate_score": _sig(lat_c - world.t0),
        "country": pd.Categorical.from_codes(rows["country"], cn),
        "merchant_category": pd.Categorical.from_codes(rows["category"], kn),
        "channel": pd.Categorical.from_codes(rows["online"].astype(np.int64), ["card_present", "online"]),
        "merchant_id": rows["merchant"].astype(np.int64), "amount": rows["amount"],
    })
    if per_row_thresholds:
        df["baseline_threshold"] = 0.5
        df["candidate_threshold"] = 0.5
    return df


# ---- contracts ----------------------------------------------------------------------------
def only_clauses(contract: Contract, keep) -> Contract:  # noqa: ANN001 - predicate on Clause
    """The contract with only the clauses `keep` accepts. Each clause is judged on its own
    (thresholds come from the scores, Holm runs within a clause), so the kept clauses get
    exactly the statuses they get in the whole contract; a verdict's `passed` depends only
    on the blocking clauses."""
    return replace(contract, clauses=tuple(c for c in contract.clauses if keep(c)))


def fraud_contract() -> Contract:
    return contract_from_text(FRAUD_YAML.read_text(), str(FRAUD_YAML))


def big_contract() -> Contract:
    """fraud.yaml with the country x category clause blocking and a blocking block-rate
    clause over the top 1,000 merchants (same tolerance as top_merchant_block_rate_stable)."""
    text = FRAUD_YAML.read_text()
    slices = "slices:\n"
    assert text.count(slices) == 1, "fraud.yaml's layout changed: update bench/gate_power.py"
    text = text.replace(slices, slices + "  top_merchant_1000:\n    column: merchant_id\n    top: 1000\n", 1)
    start = text.index("- name: country_category_approval_rate")
    end = text.index("- name:", start + 1)
    clause = text[start:end]
    assert "    severity: warn\n" in clause, "fraud.yaml's layout changed: update bench/gate_power.py"
    text = text[:start] + clause.replace("    severity: warn\n", "", 1) + text[end:]
    text = text.rstrip("\n") + """

  - name: merchant_1000_block_rate_stable
    description: The top 1,000 merchants keep their block rate (within 25% relative or 0.5 points).
    kind: rate_stability
    metric: block_rate
    per: top_merchant_1000
    tolerance: {relative: 0.25, absolute: 0.005}
    min_support: 200
"""
    return contract_from_text(text, f"{FRAUD_YAML} + blocking country_x_category + top_merchant_1000")


def review_needs(contract: Contract) -> tuple[int, int, int]:
    """(frauds, non-frauds, rows) before a live review judges: the rule of
    ratchet.rollout.observe.review_needs (whole-population blocking clauses' min_support)."""
    pos = neg = rows = 0
    for c in contract.clauses:
        if c.per is not None or not c.blocking:
            continue
        if c.metric in ("recall", "recall_at_fpr", "auc", "average_precision"):
            pos = max(pos, c.min_support)
        elif c.metric == "fpr":
            neg = max(neg, c.min_support)
        else:
            rows = max(rows, c.min_support)
    return pos, neg, rows


def looks_for(y: np.ndarray, needs: tuple[int, int, int], k: int) -> list[int]:
    """k look sizes, evenly spaced from the first prefix the review can judge to all rows."""
    pos = np.cumsum(y)
    neg = np.arange(1, len(y) + 1) - pos
    ok = (pos >= needs[0]) & (neg >= needs[1]) & (np.arange(1, len(y) + 1) >= needs[2])
    if not ok.any():
        return []
    first = int(np.argmax(ok)) + 1
    return sorted({int(round(x)) for x in np.linspace(first, len(y), k)})


def _blocking(v) -> list:  # noqa: ANN001
    return [r for r in v.results if r.severity == "block"]


# ---- 1. offline A/A -------------------------------------------------------------------------
def bench_aa(world: World, trials: int, rows: int, rho: float, seed: int) -> dict:
    contract = big_contract()
    rng = np.random.default_rng(seed)
    blocked = open_q = 0
    inconclusive, judged, judged_all, overlap, seconds = [], [], [], [], []
    by_clause: dict[str, int] = {}
    open_by: dict[str, int] = {}
    t_start = time.perf_counter()
    for t in range(trials):
        df = scored_frame(world, rows, rng, rho)
        t0 = time.perf_counter()
        v = evaluate_contract(contract, df)
        seconds.append(time.perf_counter() - t0)
        res = _blocking(v)
        judged.append(sum(r.status in ("pass", "fail", "inconclusive") for r in res))
        judged_all.append(sum(r.status in ("pass", "fail", "inconclusive") for r in v.results))
        inconclusive.append(sum(r.status == "inconclusive" for r in res))
        for r in res:
            if r.status == "inconclusive":
                open_by[r.name] = open_by.get(r.name, 0) + 1
        open_q += bool(v.open_questions())
        if not v.passed:
            blocked += 1
            for name in {f.name for f in v.failures()}:
                by_clause[name] = by_clause.get(name, 0) + 1
        tv = v.threshold_values
        cb = df["candidate_score"].to_numpy() >= np.asarray(tv["candidate"], float)
        bb = df["baseline_score"].to_numpy() >= np.asarray(tv["baseline"], float)
        overlap.append((cb & bb).sum() / max(1, bb.sum()))
        if (t + 1) % max(1, trials // 10) == 0:
            print(f"  [aa] {t + 1}/{trials} releases, {blocked} blocked, {time.perf_counter() - t_start:.0f} s", flush=True)
    out = {"trials": trials, "rows": rows, "blocked": blocked, "open": open_q, "by_clause": by_clause,
           "judged": (min(judged), float(np.mean(judged)), max(judged)), "judged_all": float(np.mean(judged_all)),
           "inconclusive": (float(np.mean(inconclusive)), int(np.max(inconclusive))),
           "overlap": float(np.mean(overlap)), "seconds": float(np.median(seconds)), "contract": contract.path}
    print(f"[aa] {trials} A/A releases of {rows:,} rows (rho {rho}, the two models share {out['overlap']:.0%} of "
          f"their blocks), contract with {out['judged'][1]:,.0f} judged blocking slices "
          f"(min {out['judged'][0]:,}, {out['judged_all']:,.0f} with warn clauses):")
    print(f"[aa]   false blocks {blocked}/{trials} = {blocked / trials:.1%} (target <= 1%)"
          + (f"; by clause {by_clause}" if by_clause else ""))
    print(f"[aa]   releases with open questions {open_q}/{trials} = {open_q / trials:.0%}; inconclusive blocking "
          f"slices per release: mean {out['inconclusive'][0]:.1f}, max {out['inconclusive'][1]} "
          f"(of {out['judged'][1]:,.0f} judged); evaluate_contract {out['seconds']:.2f} s each (median)")
    out["inconclusive_by_clause"] = {k: v / trials for k, v in sorted(open_by.items(), key=lambda kv: -kv[1])}
    print("[aa]   inconclusive per release by clause: "
          + ", ".join(f"{k} {v:.1f}" for k, v in out["inconclusive_by_clause"].items()))
    return out


# ---- 2. shadow A/A with continuous looks ------------------------------------------------------
def bench_shadow(world: World, trials: int, rows: int, looks: int, rho: float, seed: int,
                 modes: tuple[bool, ...] = (True, False)) -> dict:
    contract = only_clauses(fraud_contract(), lambda c: c.blocking)  # `passed` is the blocking clauses'
    needs = review_needs(contract)
    rng = np.random.default_rng(seed)
    fails = {m: 0 for m in modes}
    firsts: dict[bool, list[int]] = {m: [] for m in modes}
    by_clause: dict[bool, dict[str, int]] = {m: {} for m in modes}
    n_looks, first_n = [], []
    t_start = time.perf_counter()
    for t in range(trials):
        df = scored_frame(world, rows, rng, rho)
        sizes = looks_for(df["label"].to_numpy(), needs, looks)
        n_looks.append(len(sizes))
        first_n.append(sizes[0] if sizes else rows)
        for seq in modes:
            for j, n in enumerate(sizes):
                v = evaluate_contract(contract, df.iloc[:n], sequential=seq)
                if not v.passed:
                    fails[seq] += 1
                    firsts[seq].append(j + 1)
                    for name in {f.name for f in v.failures()}:
                        by_clause[seq][name] = by_clause[seq].get(name, 0) + 1
                    break
        if (t + 1) % max(1, trials // 10) == 0:
            print(f"  [shadow] {t + 1}/{trials} shadow phases, false rollbacks: "
                  + ", ".join(f"sequential={m} {fails[m]}" for m in modes)
                  + f", {time.perf_counter() - t_start:.0f} s", flush=True)
    out = {"trials": trials, "rows": rows, "looks": float(np.mean(n_looks)), "first_look": float(np.mean(first_n)),
           "needs": needs, "fails": fails, "first_looks": firsts, "by_clause": by_clause}
    print(f"[shadow] {trials} A/A shadow phases, fraud.yaml's blocking clauses judged at {out['looks']:.0f} looks, "
          f"from ~{out['first_look']:,.0f} labelled rows (the first prefix with {needs[0]} frauds and {needs[1]} "
          f"non-frauds: review_needs) to {rows:,}:")
    for m in modes:
        f = fails[m]
        print(f"[shadow]   sequential={m}: false rollbacks (a blocking fail at any look) {f}/{trials} = {f / trials:.1%}"
              + (" (target <= 1%)" if m else " (fixed-sample intervals re-tested)")
              + (f"; by clause {by_clause[m]}; first failing look {sorted(firsts[m])}" if f else ""), flush=True)
    return out


def bench_boundary(world: World, trials: int, rows: int, looks: int, rho: float, seed: int) -> dict:
    """False rollbacks where they are likeliest: every country's block rate exactly at the
    allowance, judged by country_block_rate_stable alone at every look, both modes."""
    contract = only_clauses(fraud_contract(), lambda c: c.name == "country_block_rate_stable")
    needs = review_needs(only_clauses(fraud_contract(), lambda c: c.blocking))
    rng = np.random.default_rng(seed)
    fails = {True: 0, False: 0}
    once = 0
    t_start = time.perf_counter()
    for t in range(trials):
        df = scored_frame(world, rows, rng, rho, harm=AT_ALLOWANCE, per_row_thresholds=True)
        sizes = looks_for(df["label"].to_numpy(), needs, looks)
        once += not evaluate_contract(contract, df).passed
        for seq in (True, False):
            for n in sizes:
                if not evaluate_contract(contract, df.iloc[:n], sequential=seq).passed:
                    fails[seq] += 1
                    break
        if (t + 1) % max(1, trials // 5) == 0:
            print(f"  [boundary] {t + 1}/{trials}, false fails: sequential {fails[True]}, fixed-sample {fails[False]}, "
                  f"{time.perf_counter() - t_start:.0f} s", flush=True)
    print(f"[boundary] {trials} shadow phases with every country's block rate +{TOLERANCE_COUNTRY:.0%} (exactly the "
          f"tolerance of country_block_rate_stable: a fail is false), {looks} looks to {rows:,} rows:")
    print(f"[boundary]   false fails at any look: sequential=True {fails[True]}/{trials} = {fails[True] / trials:.1%}; "
          f"sequential=False {fails[False]}/{trials} = {fails[False] / trials:.1%}; one fixed-sample look at "
          f"{rows:,} rows {once}/{trials} = {once / trials:.1%} (Holm over 8 countries at 95%: at most 2.5% for an "
          f"excess on one side)", flush=True)
    return {"trials": trials, "rows": rows, "seq": fails[True], "fixed": fails[False], "once": once}


# ---- 3. label-free block-rate guard -----------------------------------------------------------
def guard_counts(world: World, n: int, rng: np.random.Generator, rho: float, role: str, weight: float,
                 harm: str | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per country and cumulative per request (n requests): production and role decisions.

    canary: each request goes to the canary with probability `weight` (independent
    requests: unpaired); shadow: every request is scored by both (paired)."""
    rows = draw_rows(world, n, rng)
    d, _ = _deterministic(world, rows)
    shared = rng.normal(size=n)
    lat_b = d + np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * rng.normal(size=n)
    lat_c = d + np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * rng.normal(size=n)
    lat_c = lat_c + candidate_shift(rows, d, world.t0, harm)
    bb, cb = lat_b >= world.t0, lat_c >= world.t0
    if role == "canary":
        to_canary = rng.random(n) < weight
        return {"country": rows["country"], "canary": to_canary, "base_block": bb & ~to_canary,
                "cand_block": cb & to_canary}, [c[0] for c in COUNTRIES]
    return {"country": rows["country"], "base_block": bb, "cand_block": cb}, [c[0] for c in COUNTRIES]


def _observations(c: dict[str, np.ndarray], names: list[str], n: int, role: str):  # noqa: ANN202
    from ratchet.rollout.state import Observations, RoleStats, SliceCounts

    k = len(names)
    ctry = c["country"][:n]
    count = lambda m: np.bincount(ctry, weights=m[:n], minlength=k).astype(int)  # noqa: E731
    if role == "canary":
        can = c["canary"][:n]
        base_n, cand_n = count(~can), count(can)
        base_k, cand_k = count(c["base_block"]), count(c["cand_block"])
        rows = tuple(SliceCounts(names[i], int(base_n[i]), int(base_k[i]), int(cand_n[i]), int(cand_k[i]))
                     for i in range(k))
        return Observations(roles={role: RoleStats(decisions=int(cand_n.sum()))}, block_counts={role: rows})
    nn = np.bincount(ctry, minlength=k)
    bb, cb = c["base_block"][:n], c["cand_block"][:n]
    base_k, cand_k = count(bb), count(cb)
    only_c, only_b = count(cb & ~bb), count(bb & ~cb)
    rows = tuple(SliceCounts(names[i], int(nn[i]), int(base_k[i]), int(nn[i]), int(cand_k[i]), pairs=int(nn[i]),
                             only_candidate=int(only_c[i]), only_base=int(only_b[i])) for i in range(k))
    return Observations(roles={role: RoleStats(decisions=n)}, block_counts={role: rows})


def bench_guards(world: World, trials: int, rows: int, looks: int, rho: float, seed: int,
                 harm: str | None = None) -> dict:
    from ratchet.rollout.guards import judge
    from ratchet.rollout.plan import BlockRateGuard, Guards

    guards = Guards(block_rate=BlockRateGuard(), max_error_rate=None)
    br = guards.block_rate
    out: dict = {"trials": trials, "rows": rows, "looks": looks, "harm": harm,
                 "guard": f"per {br.per}, relative {br.relative}, absolute {br.absolute}, min_support {br.min_support}, "
                          f"confidence {br.confidence}"}
    rng = np.random.default_rng(seed)
    for role, weight in (("canary", 0.25), ("shadow", 1.0)):
        hits, first = 0, []
        for _ in range(trials):
            c, names = guard_counts(world, rows, rng, rho, role, weight, harm)
            sizes = sorted({int(round(x)) for x in np.linspace(rows / looks, rows, looks)})
            for j, n in enumerate(sizes):
                if judge(_observations(c, names, n, role), role, guards, names=("block_rate",)).breached:
                    hits += 1
                    first.append(j + 1)
                    break
        out[role] = {"hits": hits, "weight": weight, "first_looks": first}
        what = "false rollbacks" if harm is None else f"caught ({HARMS[harm][2]})"
        unit = (f"{rows:,} requests, the canary at {weight:.0%} (~{rows * weight:,.0f} canary decisions, unpaired)"
                if role == "canary" else f"{rows:,} requests scored by both (paired)")
        kind = "A/A" if harm is None else "harmed"
        print(f"[guards] {role}: {trials} {kind} {'steps' if role == 'canary' else 'shadow phases'} of {unit}, "
              f"{looks} looks: {what} {hits}/{trials} = {hits / trials:.1%}"
              + (" (target <= 1%)" if harm is None else ""), flush=True)
    return out


# ---- 4. power -----------------------------------------------------------------------------
def harm_clause(contract: Contract, target: str) -> Contract:
    """The contract reduced to the blocking clause that judges `target`'s family."""
    family = target.split("=")[0]
    per = {"merchant_category": "merchant_category", "country": "country", "merchant_id": "top_merchant"}[family]
    sub = only_clauses(contract, lambda c: c.blocking and c.per == per)
    assert len(sub.clauses) == 1, f"expected one blocking clause per {per}, got {[c.name for c in sub.clauses]}"
    return sub


def bench_power(world: World, trials: int, sizes: list[int], looks: int, rho: float, seed: int,
                harms: list[str], shadow_max: int) -> dict:
    full = fraud_contract()
    needs = review_needs(only_clauses(full, lambda c: c.blocking))  # the live review waits for these
    out: dict = {}
    t_start = time.perf_counter()
    for harm in harms:
        h = list(HARMS).index(harm)
        mult, target, what = HARMS[harm]
        contract = harm_clause(full, target)
        clause = contract.clauses[0]
        for n in sizes:
            rng = np.random.default_rng([seed, h, n])  # the same figures whatever else --sizes lists
            off = seq = 0
            base_rate, cand_rate, support, first = [], [], [], []
            do_shadow = n <= shadow_max
            for _ in range(trials):
                df = scored_frame(world, n, rng, rho, harm=harm, per_row_thresholds=True)
                v = evaluate_contract(contract, df)
                x = next((r for r in v.results if r.slice == target), None)
                if x is not None and x.baseline is not None:
                    support.append(x.support)
                    flip = clause.metric == "approval_rate"
                    base_rate.append(1 - x.baseline if flip else x.baseline)
                    cand_rate.append(1 - x.candidate if flip else x.candidate)
                off += any(r.blocking_failure and r.slice == target for r in v.results)
                if do_shadow:
                    sizes_k = looks_for(df["label"].to_numpy(), needs, looks)
                    for j, m in enumerate(sizes_k):
                        vs = evaluate_contract(contract, df.iloc[:m], sequential=True)
                        if any(r.blocking_failure and r.slice == target for r in vs.results):
                            seq += 1
                            first.append(m)
                            break
            out[(harm, n)] = o = {"offline": off, "shadow": seq if do_shadow else None, "trials": trials,
                                  "support": float(np.mean(support)) if support else 0.0,
                                  "base": float(np.mean(base_rate)) if base_rate else float("nan"),
                                  "cand": float(np.mean(cand_rate)) if cand_rate else float("nan"),
                                  "clause": clause.name, "first_caught_rows": float(np.median(first)) if first else None}
            sh = (f"{seq / trials:.0%} ({seq}/{trials}"
                  + (f", median at {o['first_caught_rows']:,.0f} rows)" if first else ")")) if do_shadow else "not run"
            print(f"[power] {what}, N={n:,}: {target} ~{o['support']:,.0f} rows, block rate {o['base']:.2%} -> "
                  f"{o['cand']:.2%} ({clause.name}); caught offline {off / trials:.0%} ({off}/{trials}), "
                  f"in shadow ({looks} sequential looks to N) {sh}  [{time.perf_counter() - t_start:.0f} s]", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200, help="simulated releases / phases per A/A figure (default 200)")
    ap.add_argument("--power-trials", type=int, default=100, help="simulated harms per harm x size (default 100)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 20 trials, small sizes (figures not meaningful)")
    ap.add_argument("--only", default="aa,shadow,boundary,guards,power",
                    help="comma-separated sections to run (default: all)")
    ap.add_argument("--aa-rows", type=int, default=400_000, help="rows per offline A/A release (default 400,000)")
    ap.add_argument("--shadow-rows", type=int, default=40_000, help="labelled shadow rows at the last look (default 40,000)")
    ap.add_argument("--looks", type=int, default=20, help="looks per shadow phase / guard step (default 20)")
    ap.add_argument("--sizes", default="36000,100000,300000", help="test-window sizes for power (default 36k,100k,300k)")
    ap.add_argument("--shadow-max", type=int, default=1_000_000,
                    help="largest size for which shadow power is simulated (default 1,000,000)")
    power_harms = [h for h in HARMS if h != "country_2x"]
    ap.add_argument("--harms", default=",".join(power_harms), help=f"harms for power (default {','.join(power_harms)}; "
                    "also country_2x)")
    ap.add_argument("--rho", type=float, default=0.9, help="shared share of the two models' noise (default 0.9)")
    ap.add_argument("--shadow-modes", default="seq,fixed",
                    help="shadow A/A: seq (sequential=True), fixed (sequential=False) or both (default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.trials, args.power_trials = 20, 10
        args.aa_rows, args.shadow_rows, args.looks = 100_000, 30_000, 8
        args.sizes, args.shadow_max = "36000", 36_000
    only = set(args.only.split(","))
    print(f"cores: {os.cpu_count()}; seed {args.seed}; rho {args.rho}")
    t0 = time.perf_counter()
    world = make_world()
    probe = scored_frame(world, 400_000, np.random.default_rng(args.seed), args.rho)
    v = evaluate_contract(fraud_contract(), probe)  # also warms the kernels
    ov = v.overall["baseline"]
    print(f"world: {world.n_merchants:,} merchants, fraud rate {probe['label'].mean():.2%}, baseline block rate "
          f"{ov['block_rate']:.2%}, AUC {ov['auc']:.3f}, recall {ov['recall']:.1%}, precision {ov['precision']:.1%} "
          f"({time.perf_counter() - t0:.1f} s to build)")
    if "aa" in only:
        bench_aa(world, args.trials, args.aa_rows, args.rho, args.seed + 1)
    if "shadow" in only:
        modes = tuple({"seq": True, "fixed": False}[m] for m in args.shadow_modes.split(","))
        bench_shadow(world, args.trials, args.shadow_rows, args.looks, args.rho, args.seed + 2, modes)
    if "boundary" in only:
        bench_boundary(world, args.trials, args.shadow_rows, args.looks, args.rho, args.seed + 5)
    if "power" in only:
        bench_power(world, args.power_trials, [int(x) for x in args.sizes.split(",")], args.looks, args.rho,
                    args.seed + 3, args.harms.split(","), args.shadow_max)
    if "guards" in only:
        g = bench_guards(world, args.trials, args.shadow_rows, args.looks, args.rho, args.seed + 4)
        print(f"[guards] BlockRateGuard(): {g['guard']}; each request is its own card")
        for harm in ("country_1.3x", "country_2x"):
            for rows in (args.shadow_rows, 10 * args.shadow_rows):
                bench_guards(world, args.power_trials, rows, args.looks, args.rho, args.seed + 6, harm=harm)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
