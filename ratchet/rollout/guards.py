"""Guards: count live decisions into Observations, and judge them against the plan.

`observe_decisions` turns a decision-log DataFrame into counts (I/O-free, pandas);
`judge` is pure and says, for one role (canary or shadow), which guards held, which
were breached and which could not be judged yet, with the numbers that decided it:

    >>> obs = observe_decisions(log, since=step_started, per="country")
    >>> v = judge(obs, "canary", plan.guards)
    >>> v.breached, v.headline
    (True, 'block rate BR +50% > 10%')

Block rates: per slice value (country by default), canary vs production on the same
window (and the same cohort), or the shadow vs the served decision on the same units
(paired: only the discordant units carry information). Each slice is three-valued like a
contract clause: pass when the interval lies within the allowance, fail when it lies
entirely beyond it -- credible after Holm's correction over the slices judged, so thirty
healthy countries do not give thirty chances of a false rollback -- else inconclusive;
below min_support "not judged". Error rate: breached when the interval's lower end exceeds
the maximum. Every interval is a confidence sequence (ratchet.evaluate.stats.cs_multiplier:
Robbins' normal mixture, Waudby-Smith et al. 2024), valid at every look at once, so a
controller that re-checks on every pass, after any number of decisions, keeps the chance
of a false rollback of a healthy version within 1 - confidence. p99 latency: breached
when the point estimate exceeds the maximum with enough decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ratchet.evaluate.stats import (
    TUNE_FACTOR, cs_alpha, cs_alpha_at, cs_multiplier, holm, paired_difference, rate_se, symmetric_p, z_two_sided,
)
from ratchet.rollout.plan import BlockRateGuard, Guards
from ratchet.rollout.state import Cohort, Observations, RoleStats, ShadowReview, SliceCounts, iso

ROLES = ("production", "canary", "shadow")


@dataclass(frozen=True)
class Check:
    name: str            # block_rate[FR], error_rate, p99_latency_ms
    status: str          # pass | fail | inconclusive | not_judged
    text: str            # "block rate FR +2.1% <= 10%"
    excess: float = 0.0  # how far beyond the limit relative to the limit (for picking the headline)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardVerdict:
    role: str
    decisions: int
    checks: tuple[Check, ...]

    @property
    def breaches(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "fail")

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    @property
    def headline(self) -> str:
        """The check that decided: the worst breach, else the closest call among judged checks."""
        if self.breaches:
            return ", ".join(c.text for c in sorted(self.breaches, key=lambda c: -c.excess)[:2])
        judged = [c for c in self.checks if c.status in ("pass", "inconclusive")]
        rates = [c for c in judged if c.name.startswith("block_rate")]
        if rates:  # the business check speaks first; error rate and latency only when they breach
            return max(rates, key=lambda c: c.excess).text
        unjudged = [c for c in self.checks if c.name.startswith("block_rate") and c.status == "not_judged"]
        if unjudged:  # say so rather than let latency speak for a guard that could not judge
            return max(unjudged, key=lambda c: c.evidence.get("support", 0)).text
        if judged:
            return max(judged, key=lambda c: c.excess).text
        if self.checks:
            return self.checks[0].text
        return "no guards configured"

    def evidence(self, limit: int = 8) -> dict[str, Any]:
        """Compact evidence for the history: breaches first, then the closest calls."""
        ordered = sorted(self.checks, key=lambda c: (c.status != "fail", -c.excess))
        return {"role": self.role, "decisions": self.decisions,
                "checks": [{"name": c.name, "status": c.status, "text": c.text, **c.evidence} for c in ordered[:limit]],
                "not_judged": sum(1 for c in self.checks if c.status == "not_judged")}


def _pct(x: float) -> str:
    return f"{x:+.1%}" if abs(x) < 0.1 else f"{x:+.0%}"


def _cs_interval(d: np.ndarray, se: np.ndarray, t: np.ndarray, min_support: int):  # noqa: ANN202
    """z -> the confidence sequence d ± multiplier * se at the alpha of quantile z (anytime-valid)."""
    t_star = TUNE_FACTOR * max(1, min_support)
    return lambda z: (d - cs_multiplier(t, cs_alpha(z), t_star) * se, d + cs_multiplier(t, cs_alpha(z), t_star) * se)


def _block_rate_checks(counts: tuple[SliceCounts, ...], role: str, br: BlockRateGuard) -> list[Check]:
    """Per slice: pass (the confidence sequence lies within the allowance), fail (beyond it,
    credible after Holm over the judged slices) or inconclusive; not judged below min_support."""
    alpha = 1.0 - br.confidence
    k1 = np.array([c.base_blocks for c in counts], float)
    n1 = np.array([c.base_n for c in counts], float)
    k2 = np.array([c.blocks for c in counts], float)
    n2 = np.array([c.n for c in counts], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pb, pc = k1 / n1, k2 / n2
    paired = all(c.pairs is not None for c in counts)
    if paired:  # the shadow: both decisions of the same units
        t = np.array([c.pairs for c in counts], float)
        d, se = paired_difference(np.array([c.only_candidate for c in counts], float),
                                  np.array([c.only_base for c in counts], float), t)
    else:       # the canary: its own cards against production's
        t = np.minimum(n1, n2)
        d, se = pc - pb, np.hypot(rate_se(k2, n2), rate_se(k1, n1))
    allow = np.array([br.allowance(x) if np.isfinite(x) else 0.0 for x in pb])
    judged = np.minimum(n1, n2) >= br.min_support
    interval_at = _cs_interval(d, se, t, br.min_support)
    t_star = TUNE_FACTOR * max(1, br.min_support)
    with np.errstate(invalid="ignore"):
        p_pass, p_fail = symmetric_p(d, se, -allow, allow, lambda x: cs_alpha_at(x, t, t_star))
        lo, hi = interval_at(np.full(len(counts), z_two_sided(br.confidence)))
    fail = holm(p_fail, alpha, judged)
    m = int(judged.sum())
    checks = []
    for i, c in enumerate(counts):
        name = f"block_rate[{c.slice}]"
        if not judged[i]:
            checks.append(Check(name, "not_judged",
                                f"block rate {c.slice} not judged (support {min(c.n, c.base_n)} < {br.min_support})",
                                evidence={"support": min(c.n, c.base_n)}))
            continue
        diff = pc[i] - pb[i]
        rel = diff / pb[i] if pb[i] > 0 else (0.0 if diff == 0 else float("inf"))
        limit_rel = allow[i] / pb[i] if pb[i] > 0 else float("inf")
        status = "fail" if fail[i] else ("pass" if p_pass[i] <= alpha else "inconclusive")
        limit_txt = f"{limit_rel:.0%}" if np.isfinite(limit_rel) else f"{allow[i]:g} absolute"
        rel_txt = _pct(rel) if np.isfinite(rel) else f"{diff:+.4f}"
        text = f"block rate {c.slice} {rel_txt} {'>' if status == 'fail' else '≤'} {limit_txt}"
        if status != "fail" and abs(diff) > allow[i]:
            text += " (not credible)"
        elif status == "inconclusive":
            text += " (inconclusive)"
        checks.append(Check(name, status, text,
                            excess=(abs(diff) - allow[i]) / allow[i] if allow[i] > 0 else abs(diff),
                            evidence={"production": [c.base_blocks, c.base_n], role: [c.blocks, c.n],
                                      **({"pairs": c.pairs, "discordant": [c.only_candidate, c.only_base]}
                                         if paired else {}),
                                      "difference": round(float(diff), 6),
                                      "interval": [round(float(lo[i]), 6), round(float(hi[i]), 6)],
                                      "allowance": round(float(allow[i]), 6), "p_fail": round(float(p_fail[i]), 6),
                                      "method": f"confidence sequence, Holm over {m}"}))
    return checks


def judge(obs: Observations, role: str, guards: Guards, names: tuple[str, ...] | None = None) -> GuardVerdict:
    """Judge one role's observations against the guards (all of them, or `names`). Pure.

    Block rate and error rate are judged with confidence sequences (anytime-valid: the
    controller may look after every decision without inflating false rollbacks), block
    rates with Holm's correction over the slices judged (see ratchet.evaluate.stats)."""
    use = set(names) if names is not None else {"block_rate", "error_rate", "p99_latency_ms", "missing_features"}
    stats: RoleStats = obs.role(role)
    checks: list[Check] = []
    br = guards.block_rate
    if br is not None and "block_rate" in use:
        counts = obs.block_counts.get(role, ())
        if counts:
            checks += _block_rate_checks(counts, role, br)
        else:
            checks.append(Check("block_rate", "not_judged", f"block rate not judged (no {role} decisions yet)"))
    unit = (br or BlockRateGuard()).min_support
    if guards.max_error_rate is not None and "error_rate" in use:
        if stats.decisions == 0:
            checks.append(Check("error_rate", "not_judged", f"error rate not judged (no {role} decisions)"))
        else:
            checks.append(_rate_check("error_rate", "error rate", stats.errors, stats.decisions,
                                      guards.max_error_rate, unit, guards.confidence, "errors"))
    if guards.missing_features and "missing_features" in use and role in obs.missing:
        n, counts = obs.missing[role]
        for name in guards.missing_features:
            if n < guards.missing_min_decisions:
                checks.append(Check(f"missing[{name}]", "not_judged", f"{name} missing not judged "
                                    f"({n} < {guards.missing_min_decisions} {role} decisions)"))
            else:
                checks.append(_rate_check(f"missing[{name}]", f"{name} missing in", counts.get(name, 0), n,
                                          guards.max_missing_rate, guards.missing_min_decisions, guards.confidence,
                                          "missing"))
    if guards.max_p99_latency_ms is not None and "p99_latency_ms" in use:
        mx = guards.max_p99_latency_ms
        if stats.p99_latency_ms is None or stats.decisions < guards.latency_min_decisions:
            checks.append(Check("p99_latency_ms", "not_judged",
                                f"p99 latency not judged ({stats.decisions} < {guards.latency_min_decisions} decisions)"))
        else:
            p99 = stats.p99_latency_ms
            fail = p99 > mx
            checks.append(Check("p99_latency_ms", "fail" if fail else "pass",
                                f"p99 latency {p99:.0f} ms {'>' if fail else '≤'} {mx:.0f} ms",
                                excess=(p99 - mx) / mx if mx > 0 else p99, evidence={"p99_ms": round(p99, 2)}))
    return GuardVerdict(role=role, decisions=stats.decisions, checks=tuple(checks))


def _rate_check(name: str, what: str, events: int, decisions: int, mx: float, unit: int, confidence: float,
                noun: str) -> Check:
    """Breached when the rate's confidence sequence lies entirely above `mx` (anytime-valid)."""
    rate = events / decisions
    t = np.array([float(decisions)])
    se = rate_se(np.array([events]), t)
    interval_at = _cs_interval(np.array([rate]), se, t, unit)
    _, p_fail = symmetric_p(np.array([rate]), se, np.array([-np.inf]), np.array([mx]),
                            lambda x: cs_alpha_at(x, t, TUNE_FACTOR * unit))
    fail = bool(p_fail[0] <= 1.0 - confidence)
    low, _ = interval_at(np.array([z_two_sided(confidence)]))
    return Check(name, "fail" if fail else "pass", f"{what} {rate:.2%} {'>' if fail else '≤'} {mx:.2%}",
                 excess=(rate - mx) / mx if mx > 0 else rate,
                 evidence={noun: events, "decisions": decisions, "cs_low": round(float(low[0]), 6),
                           "p_fail": round(float(p_fail[0]), 6)})


# ---- counting a decision log -------------------------------------------------------------
def _errors(df) -> np.ndarray:  # noqa: ANN001 - pandas DataFrame
    err = np.zeros(len(df), dtype=bool)
    if "error" in df.columns:
        err |= df["error"].notna().to_numpy() & (df["error"].astype(str).str.len() > 0).to_numpy()
    if "status" in df.columns:
        s = df["status"].astype(str).str.lower()
        err |= ~s.isin(["ok", "200", "success", "nan", "none", ""]).to_numpy()
    return err


def _in_cohort(df, cohort: Cohort | None) -> np.ndarray:  # noqa: ANN001
    keep = np.ones(len(df), dtype=bool)
    for col, values in cohort or ():
        keep &= df[col].astype(str).isin(values).to_numpy()
    return keep


def observe_decisions(log, *, since: datetime | None = None, until: datetime | None = None,  # noqa: ANN001
                      per: str = "country", cohort: Cohort | None = None,
                      shadow_review: ShadowReview | None = None) -> Observations:
    """Count a decision log (one row per role per request) into Observations.

    Columns: request_id, ts, role (production|canary|shadow), version, decision
    (allow|block), optional latency_ms, status/error, and the `per` column. The canary is
    compared with production on the same window and, when the plan names a cohort, on
    that cohort only (production rows outside it are not the same traffic). The shadow
    is compared with the served decision of the same units (request_id, or card_id for a
    log counted per card): paired counts (SliceCounts.pairs, only_candidate, only_base).
    """
    import pandas as pd

    df = log
    if len(df) and (since is not None or until is not None):
        ts = pd.to_datetime(df["ts"], utc=True)
        keep = np.ones(len(df), dtype=bool)
        if since is not None:
            keep &= (ts >= pd.Timestamp(since)).to_numpy()
        if until is not None:
            keep &= (ts < pd.Timestamp(until)).to_numpy()
        df = df[keep]
    roles: dict[str, RoleStats] = {}
    blocks: dict[str, tuple[SliceCounts, ...]] = {}
    err = _errors(df) if len(df) else np.zeros(0, bool)
    role_col = df["role"].astype(str).to_numpy() if len(df) else np.array([], dtype=object)
    for role in ROLES:
        m = role_col == role
        sub = df[m]
        p99 = None
        if "latency_ms" in sub.columns and len(sub):
            lat = pd.to_numeric(sub["latency_ms"], errors="coerce").dropna()
            p99 = float(np.percentile(lat, 99)) if len(lat) else None
        roles[role] = RoleStats(decisions=int(m.sum()), errors=int(err[m].sum()), p99_latency_ms=p99)
    if len(df) and per in df.columns:
        ok = ~err
        blocked = (df["decision"].astype(str) == "block").to_numpy()
        for role in ("canary", "shadow"):
            base_mask = (role_col == "production") & ok
            cand_mask = (role_col == role) & ok
            if role == "canary" and cohort:
                inside = _in_cohort(df, cohort)
                base_mask &= inside
                cand_mask &= inside
            if not cand_mask.any():
                continue
            key = df[per].astype(str).to_numpy()
            unit = "request_id" if "request_id" in df.columns else ("card_id" if "card_id" in df.columns else None)
            if role == "shadow" and unit is not None:
                served = np.isin(role_col, ("production", "canary")) & ok
                blocks[role] = _paired_counts(df[unit].to_numpy(), key, blocked, served, cand_mask)
                continue
            b = pd.DataFrame({"k": key[base_mask], "x": blocked[base_mask]}).groupby("k")["x"].agg(["sum", "count"])
            c = pd.DataFrame({"k": key[cand_mask], "x": blocked[cand_mask]}).groupby("k")["x"].agg(["sum", "count"])
            both = b.join(c, how="outer", lsuffix="_b", rsuffix="_c").fillna(0)
            blocks[role] = tuple(SliceCounts(str(k), int(r["count_b"]), int(r["sum_b"]), int(r["count_c"]), int(r["sum_c"]))
                                 for k, r in both.sort_index().iterrows())
    return Observations(roles=roles, block_counts=blocks, shadow_review=shadow_review,
                        window_start=iso(since) if since else None, per=per)


def _paired_counts(unit: np.ndarray, key: np.ndarray, blocked: np.ndarray, served: np.ndarray,
                   shadow: np.ndarray) -> tuple[SliceCounts, ...]:
    """Per slice: the shadow's and the served decision of the same units (requests or cards)."""
    import pandas as pd

    b = pd.DataFrame({"u": unit[served], "k": key[served], "b": blocked[served]}).groupby("u").agg(
        k=("k", "first"), b=("b", "max"))
    c = pd.DataFrame({"u": unit[shadow], "c": blocked[shadow]}).groupby("u")["c"].max()
    j = b.join(c, how="inner")
    j["oc"], j["ob"] = j["c"] & ~j["b"], j["b"] & ~j["c"]
    g = j.groupby("k")[["b", "c", "oc", "ob"]].agg(["sum", "count"])
    return tuple(SliceCounts(str(k), int(r[("b", "count")]), int(r[("b", "sum")]), int(r[("c", "count")]),
                             int(r[("c", "sum")]), pairs=int(r[("b", "count")]), only_candidate=int(r[("oc", "sum")]),
                             only_base=int(r[("ob", "sum")])) for k, r in g.sort_index().iterrows())


def review_shadow(log, labels, contract_path: str, *, min_labelled: int = 1) -> ShadowReview:  # noqa: ANN001
    """Judge the contract on shadow decisions joined with matured labels, with confidence
    sequences (the controller looks on every pass): failed on a credible blocking failure,
    else passed, with the clause[slice] keys shown to pass (they resolve open questions).

    `labels`: request_id, label (0/1) for requests whose label has matured. Production
    rows give baseline_score/baseline_threshold, shadow rows candidate_score/
    candidate_threshold, on the same requests. Slice columns come from the log.
    """
    from ratchet.contracts import evaluate_contract, load_contract
    from ratchet.errors import RatchetError

    prod = log[log["role"] == "production"]
    sh = log[log["role"] == "shadow"]
    keep = [c for c in prod.columns if c not in ("role", "version", "score", "threshold", "decision", "latency_ms",
                                                  "status", "error", "ts")]
    joined = (prod[keep + ["score", "threshold"]].rename(columns={"score": "baseline_score", "threshold": "baseline_threshold"})
              .merge(sh[["request_id", "score", "threshold"]].rename(
                  columns={"score": "candidate_score", "threshold": "candidate_threshold"}), on="request_id")
              .merge(labels[["request_id", "label"]], on="request_id"))
    if len(joined) < min_labelled:
        return ShadowReview("pending", f"{len(joined)} shadow decisions with matured labels (< {min_labelled})")
    try:
        verdict = evaluate_contract(load_contract(contract_path), joined, sequential=True)
    except RatchetError as exc:
        return ShadowReview("pending", f"contract not judged yet: {exc}")
    blocking = [r for r in verdict.results if r.severity == "block"]
    passed = frozenset(r.key for r in blocking if r.status == "pass")
    below = frozenset(r.key for r in blocking if r.status == "not_judged")
    counts = {s: sum(1 for r in blocking if r.status == s) for s in ("pass", "inconclusive", "not_judged")}
    fails = verdict.failures()
    if fails:
        return ShadowReview("failed", "; ".join(r.sentence() for r in fails[:2]),
                            {"rows": len(joined), "failures": [r.sentence() for r in fails[:8]]},
                            passed_keys=passed, below_support=below)
    return ShadowReview("passed", f"no credible failure on {len(joined):,} labelled shadow decisions "
                                  f"({counts['pass']} pass, {counts['inconclusive']} inconclusive, "
                                  f"{counts['not_judged']} not judged)",
                        {"rows": len(joined), **counts}, passed_keys=passed, below_support=below)
