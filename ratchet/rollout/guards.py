"""Guards: count live decisions into Observations, and judge them against the plan.

`observe_decisions` turns a decision-log DataFrame into counts (I/O-free, pandas);
`judge` is pure and says, for one role (canary or shadow), which guards held, which
were breached and which could not be judged yet, with the numbers that decided it:

    >>> obs = observe_decisions(log, since=step_started, per="country")
    >>> v = judge(obs, "canary", plan.guards)
    >>> v.breached, v.headline
    (True, 'block rate BR +50% > 10%')

Block rates: per slice value (country by default), canary vs production on the same
window (and the same cohort). A slice fails only when the Newcombe interval on the
difference (ratchet.evaluate.stats.newcombe, reused) lies entirely beyond the
allowance -- the same rule as the contract's rate_stability clause -- so noise in a
small country neither passes nor rolls back silently; below min_support it is "not
judged". Error rate: breached when the Wilson lower bound exceeds the maximum. Both intervals are
drawn at a level that grows with each doubling of the evidence (sequential_confidence,
evidence_look), so re-checking every pass does not inflate false rollbacks; block-rate intervals are also
Bonferroni-corrected over the slices judged, so thirty healthy countries do not give
thirty chances of a false rollback. p99
latency: breached when the point estimate exceeds the maximum with enough decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ratchet.evaluate.stats import newcombe, wilson, z_two_sided
from ratchet.rollout.plan import BlockRateGuard, Guards
from ratchet.rollout.state import Cohort, Observations, RoleStats, ShadowReview, SliceCounts, iso

ROLES = ("production", "canary", "shadow")


@dataclass(frozen=True)
class Check:
    name: str            # block_rate[FR], error_rate, p99_latency_ms
    status: str          # pass | fail | not_judged
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
        judged = [c for c in self.checks if c.status == "pass"]
        rates = [c for c in judged if c.name.startswith("block_rate")]
        if rates:  # the business check speaks first; error rate and latency only when they breach
            return max(rates, key=lambda c: c.excess).text
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


def sequential_confidence(confidence: float, look: int) -> float:
    """The confidence for the `look`-th check (1, 2, ...) of a step.

    The controller re-checks the guards on every pass; at a fixed level, a healthy canary
    would sooner or later show a "credible" breach by chance. Spending the error rate
    alpha = 1 - confidence as alpha * 6 / (pi^2 k^2) on look k keeps the chance of any
    false breach over all the looks within alpha (the terms sum to alpha).
    """
    alpha = 1.0 - confidence
    return 1.0 - alpha * 6.0 / (math.pi ** 2 * max(1, look) ** 2)


def evidence_look(decisions: int, unit: int) -> int:
    """Looks counted by evidence, not by pass: one per doubling of the decisions from `unit`.

    Passes between two doublings re-test nearly the same data (their results are almost
    the same), so they are counted as one look; a controller that was down, or passes an
    hour apart, do not change the count. An approximation of a group-sequential design in
    which the k-th look happens at unit * 2^(k-1) decisions."""
    if decisions <= unit or unit <= 0:
        return 1
    return 1 + int(math.floor(math.log2(decisions / unit)))


def judge(obs: Observations, role: str, guards: Guards, names: tuple[str, ...] | None = None,
          look: int | None = None) -> GuardVerdict:
    """Judge one role's observations against the guards (all of them, or `names`). Pure.

    look: which check this is (see sequential_confidence); by default counted from the
    role's decisions (evidence_look, from the block-rate guard's min_support). The block
    rate and error rate intervals are drawn at the confidence for that look."""
    use = set(names) if names is not None else {"block_rate", "error_rate", "p99_latency_ms"}
    stats: RoleStats = obs.role(role)
    checks: list[Check] = []
    br = guards.block_rate
    if look is None:
        look = evidence_look(stats.decisions, (br or BlockRateGuard()).min_support)
    if br is not None and "block_rate" in use:
        counts = obs.block_counts.get(role, ())
        if counts:
            k1 = np.array([c.base_blocks for c in counts], float)
            n1 = np.array([c.base_n for c in counts], float)
            k2 = np.array([c.blocks for c in counts], float)
            n2 = np.array([c.n for c in counts], float)
            # Bonferroni over the slices judged: any one country breaching by chance would roll back
            judged = max(1, int((np.minimum(n1, n2) >= br.min_support).sum()))
            level = 1.0 - (1.0 - sequential_confidence(br.confidence, look)) / judged
            lo, hi = newcombe(k1, n1, k2, n2, z_two_sided(level))
            for i, c in enumerate(counts):
                name = f"block_rate[{c.slice}]"
                if min(c.n, c.base_n) < br.min_support:
                    checks.append(Check(name, "not_judged",
                                        f"block rate {c.slice} not judged (support {min(c.n, c.base_n)} < {br.min_support})"))
                    continue
                pb, pc = c.base_blocks / c.base_n, c.blocks / c.n
                allow = br.allowance(pb)
                diff = pc - pb
                rel = diff / pb if pb > 0 else (0.0 if diff == 0 else float("inf"))
                limit_rel = allow / pb if pb > 0 else float("inf")
                fail = bool(lo[i] > allow or hi[i] < -allow)
                limit_txt = f"{limit_rel:.0%}" if np.isfinite(limit_rel) else f"{allow:g} absolute"
                rel_txt = _pct(rel) if np.isfinite(rel) else f"{diff:+.4f}"
                text = f"block rate {c.slice} {rel_txt} {'>' if fail else '≤'} {limit_txt}"
                if not fail and abs(diff) > allow:
                    text += " (not credible)"
                checks.append(Check(name, "fail" if fail else "pass", text,
                                    excess=(abs(diff) - allow) / allow if allow > 0 else abs(diff),
                                    evidence={"production": [c.base_blocks, c.base_n], role: [c.blocks, c.n],
                                              "difference": round(diff, 6),
                                              "interval": [round(float(lo[i]), 6), round(float(hi[i]), 6)],
                                              "allowance": round(allow, 6), "look": look,
                                              "confidence": round(level, 6)}))
        else:
            checks.append(Check("block_rate", "not_judged", f"block rate not judged (no {role} decisions yet)"))
    if guards.max_error_rate is not None and "error_rate" in use:
        mx = guards.max_error_rate
        if stats.decisions == 0:
            checks.append(Check("error_rate", "not_judged", f"error rate not judged (no {role} decisions)"))
        else:
            level = sequential_confidence(guards.confidence, look)
            low, _ = wilson(np.array([stats.errors]), np.array([stats.decisions]), z_two_sided(level))
            fail = bool(low[0] > mx)
            rate = stats.error_rate
            checks.append(Check("error_rate", "fail" if fail else "pass",
                                f"error rate {rate:.2%} {'>' if fail else '≤'} {mx:.2%}",
                                excess=(rate - mx) / mx if mx > 0 else rate,
                                evidence={"errors": stats.errors, "decisions": stats.decisions,
                                          "wilson_low": round(float(low[0]), 6), "look": look,
                                          "confidence": round(level, 6)}))
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
    is compared with production on the same requests (it scores every request).
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
            b = pd.DataFrame({"k": key[base_mask], "x": blocked[base_mask]}).groupby("k")["x"].agg(["sum", "count"])
            c = pd.DataFrame({"k": key[cand_mask], "x": blocked[cand_mask]}).groupby("k")["x"].agg(["sum", "count"])
            both = b.join(c, how="outer", lsuffix="_b", rsuffix="_c").fillna(0)
            blocks[role] = tuple(SliceCounts(str(k), int(r["count_b"]), int(r["sum_b"]), int(r["count_c"]), int(r["sum_c"]))
                                 for k, r in both.sort_index().iterrows())
    return Observations(roles=roles, block_counts=blocks, shadow_review=shadow_review,
                        window_start=iso(since) if since else None, per=per)


def review_shadow(log, labels, contract_path: str, *, min_labelled: int = 1) -> ShadowReview:  # noqa: ANN001
    """Judge the contract on shadow decisions joined with matured labels.

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
        verdict = evaluate_contract(load_contract(contract_path), joined)
    except RatchetError as exc:
        return ShadowReview("pending", f"contract not judged yet: {exc}")
    fails = verdict.failures()
    if fails:
        return ShadowReview("failed", "; ".join(r.sentence() for r in fails[:2]),
                            {"rows": len(joined), "failures": [r.sentence() for r in fails[:8]]})
    return ShadowReview("passed", f"contract {contract_path} held on {len(joined):,} labelled shadow decisions",
                        {"rows": len(joined)})
