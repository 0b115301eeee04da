"""Suggested thresholds for a release: one per large merchant, a global one for the rest.

From the release's scored test window (label, candidate_score, baseline_score, the
production thresholds each row really had in `baseline_threshold`, merchant_id) choose,
for every merchant with enough support, the candidate threshold the policy's objective
asks for:

- keep_fpr (default): the merchant's false-positive rate stays at or below what
  production gives it today; among those thresholds, the one with the highest recall.
- match_block_rate: the merchant's block rate stays at or below production's, as close
  to it as the scores allow.

Merchants below support (and any merchant whose objective is undefined, e.g. no
legitimate payments for keep_fpr) get the global threshold, chosen the same way on the
whole population. Each suggestion carries what production does today and what the
candidate would do at the suggested threshold (and at today's threshold, unchanged).

With a contract (`contract=`), the thresholds also honour its blocking clauses on block
and approval rates (ratchet.thresholds.contract_fit): the global and per-merchant
thresholds are repaired together until every judged slice's block rate lies within the
policy's `contract_target` share of its allowance, giving merchants of a slice their own
threshold where needed; each row's `binding` names the clause (slice) that set it ("":
the objective), and what cannot be held is said, with the clause that binds. The scored
rows the contract needs are then written next to suggestions.json
(suggestions-scored.parquet), so edits can be re-judged at approval.

Censored data (the scored rows carry the logging policy's `propensity`: the labelled rows
are the payments production let through, explored would-be blocks with propensity < 1):
every figure -- the before / after / unchanged FPR, recall and block rate, per merchant and
global -- is a self-normalised IPW estimate (each labelled row weighted by 1 / propensity,
ratchet.thresholds.weighted), and the thresholds are chosen on the weighted figures: keep_fpr
keeps the merchant's weighted false positives at or below production's, match_block_rate its
weighted blocks. So a threshold above production's ("block less") gets an estimated recall and
FPR. suggestions.json then says `"estimator": "ipw"` (absent: plain counts), each row counts its
`explored` rows, a merchant with fewer than MIN_EXPLORED of them is noted as uncertain
(positivity), and one with none gets the global threshold (its own would be chosen blind to
production's blocks there: opted out of exploration, say). Support (min_support) is counted
in labelled rows either way. The contract's clauses are honoured as the contract engine
judges them: ipw clauses weighted, plain ones on the let-through rows as they are
(ratchet.thresholds.contract_fit). Without a propensity column nothing changes.

Bootstrap (no production model): there is nothing to keep, so there are no
per-merchant suggestions; the global threshold blocks the contract's
`bootstrap_block_rate` of rows (else the contract's default threshold), exactly what the
contract judges a bootstrap at, and nothing waits for review.

    >>> s = suggest_thresholds(scored, policy)
    >>> s.global_threshold, s.thresholds().per_merchant, s.write(Path("evaluation"))
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ratchet.evaluate.metrics import slice_metrics, threshold_for_block_rate
from ratchet.evaluate.slices import OVERALL, SliceCodes, SliceFamily, assign
from ratchet.thresholds.constraints import RateClause
from ratchet.thresholds.contract_fit import ContractFit, fit_contract, row_columns
from ratchet.thresholds.optimise import group_rows, thresholds_at_budget
from ratchet.thresholds.policy import ThresholdPolicy, policy_from_dict
from ratchet.thresholds.weighted import COUNTS, IPW, MIN_EXPLORED, ipw_weights, label_array, positivity_note, stack, \
    weighted_table

FORMAT = "ratchet.thresholds.suggestions/1"
GLOBAL = "*"  # the name the global threshold goes by in approvals (--set '*'=0.6)
FILES = ("suggestions.csv", "suggestions.json", "suggestions.html")
#: With a contract: the scored rows it judges, so edits can be re-judged at approval (optional file).
SCORED_FILE = "suggestions-scored.parquet"
COLUMNS = ("merchant", "rows", "negatives", "positives", "current_threshold", "suggested_threshold", "source",
           "change", "before_fpr", "after_fpr", "before_recall", "after_recall", "before_block_rate",
           "after_block_rate", "unchanged_fpr", "unchanged_block_rate", "binding", "note")
#: The table's columns with IPW estimates: the explored rows each row's figures rest on, before binding.
IPW_COLUMNS = (*COLUMNS[:-2], "explored", *COLUMNS[-2:])


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


@dataclass
class Suggestions:
    """One release's suggestion table (JSON-able) plus, when just computed, the per-row
    thresholds it implies for the scored rows (`row_thresholds`, not serialised) and, with
    a contract, the scored rows to store for re-judging edits (`judged_rows`, written by write())."""

    objective: str
    policy: dict[str, Any]
    bootstrap: bool
    global_row: dict[str, Any]
    merchants: list[dict[str, Any]]
    fallback: dict[str, int]
    notes: list[str] = field(default_factory=list)
    baseline_version: int | None = None
    version: int | None = None
    generated_at: str = ""
    contract: dict[str, Any] | None = None  # the clauses honoured, what could not be held (contract_fit)
    estimator: str = COUNTS  # "ipw": figures weighted by 1 / propensity (censored data); "counts": as counted
    row_thresholds: np.ndarray | None = field(default=None, repr=False, compare=False)
    judged_rows: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    # ---- reading -------------------------------------------------------------------
    @property
    def global_threshold(self) -> float:
        return float(self.global_row["suggested_threshold"])

    @property
    def mode(self) -> str:
        return str(self.policy.get("mode", "suggest"))

    def own(self) -> list[dict[str, Any]]:
        """Merchants suggested their own threshold (source 'merchant')."""
        return [m for m in self.merchants if m["source"] == "merchant"]

    def reviewable(self) -> bool:
        """True when there is anything for a person to decide (not a bootstrap)."""
        return not self.bootstrap

    def thresholds(self) -> tuple[float, dict[str, float]]:
        """(global, per-merchant) if every suggestion were accepted unchanged."""
        return self.global_threshold, {m["merchant"]: float(m["suggested_threshold"]) for m in self.own()}

    def threshold_policy(self) -> ThresholdPolicy:
        return policy_from_dict(self.policy)

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns (with IPW estimates, `explored` too)."""
        return IPW_COLUMNS if self.estimator == IPW else COLUMNS

    # ---- renderings ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, "version": self.version, "baseline_version": self.baseline_version,
               "generated_at": self.generated_at, "objective": self.objective, "mode": self.mode,
               "bootstrap": self.bootstrap, "policy": self.policy, "global": self.global_row,
               "merchants": self.merchants, "fallback": self.fallback, "notes": self.notes,
               "contract": self.contract}
        if self.estimator != COUNTS:  # written when weighted only: files from plain counts stay as they were
            out["estimator"] = self.estimator
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Suggestions:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a suggestions file (format {d.get('format')!r}, expected {FORMAT})")
        return cls(objective=d["objective"], policy=d["policy"], bootstrap=bool(d["bootstrap"]),
                   global_row=d["global"], merchants=list(d["merchants"]), fallback=dict(d["fallback"]),
                   notes=list(d.get("notes", [])), baseline_version=d.get("baseline_version"),
                   version=d.get("version"), generated_at=d.get("generated_at", ""), contract=d.get("contract"),
                   estimator=d.get("estimator", COUNTS))

    def to_frame(self) -> pd.DataFrame:
        """The table: the global row first ('*'), then the merchants, largest first."""
        rows = [self.global_row, *self.merchants]
        cols = self.columns
        return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=list(cols))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_csv(self) -> str:
        return self.to_frame().to_csv(index=False, float_format="%.6g")

    def to_text(self, limit: int | None = 40) -> str:
        """The review table, for a terminal."""
        return render_text(self, limit=limit)

    def to_html(self) -> str:
        return render_html(self)

    def write(self, folder: Path) -> list[Path]:
        """suggestions.csv / .json / .html into `folder` (and, with a contract, the scored rows)."""
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for name, content in zip(FILES, (self.to_csv(), self.to_json(), self.to_html())):
            (folder / name).write_text(content, encoding="utf-8")
            out.append(folder / name)
        if self.judged_rows is not None:
            self.judged_rows.to_parquet(folder / SCORED_FILE, index=False)
            out.append(folder / SCORED_FILE)
        return out

    def apply(self, scored: pd.DataFrame) -> pd.DataFrame:
        """`scored` with a `candidate_threshold` column: the suggested threshold of each row
        (what the contract is judged at)."""
        if self.row_thresholds is None or len(self.row_thresholds) != len(scored):
            raise ValueError("apply() needs the suggestions computed from these very rows")
        out = scored.copy(deep=False)
        out["candidate_threshold"] = self.row_thresholds
        return out


def read_suggestions(path: str | Path) -> Suggestions:
    return Suggestions.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ---- computing -------------------------------------------------------------------------
def _metrics(tab: dict[str, np.ndarray], i: int, model: str) -> dict[str, float | None]:
    return {k: _num(tab[f"{model}_{k}"][i]) for k in ("fpr", "recall", "block_rate")}


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns}


def _rates(y: np.ndarray, w: np.ndarray | None, scores: dict[str, np.ndarray],
           thresholds: dict[str, np.ndarray | float], families: list[SliceCodes]) -> dict[str, np.ndarray]:
    """Per slice of `families` (one after the other): counts and each model's fp / blocked
    totals and FPR, recall, block rate -- counted (w None: the slice engine) or weighted."""
    if w is None:
        return _columns(slice_metrics(y, scores, thresholds, families, ranking=False))
    blocked = {m: scores[m] >= np.asarray(thresholds[m], dtype=float) for m in scores}
    return stack(*(weighted_table(y, w, blocked, f.codes, f.n_slices) for f in families))


def _with_positivity(note: str, tab: dict[str, np.ndarray], i: int) -> str:
    """With IPW figures: the note, plus what too few explored rows mean for them."""
    if "explored" not in tab:
        return note
    extra = positivity_note(int(tab["explored"][i]))
    return f"{note}; {extra}" if extra else note


def _row(name: str, tab: dict[str, np.ndarray], i: int, current: float | None, suggested: float, source: str,
         note: str, binding: str = "") -> dict[str, Any]:
    before, after, unchanged = _metrics(tab, i, "baseline"), _metrics(tab, i, "candidate"), _metrics(tab, i, "unchanged")
    note = _with_positivity(note, tab, i)
    row = {
        "merchant": name, "rows": int(tab["rows"][i]), "negatives": int(tab["negatives"][i]),
        "positives": int(tab["positives"][i]), "current_threshold": current,
        "suggested_threshold": float(suggested), "source": source,
        "change": None if current is None else float(suggested) - current,
        "before_fpr": before["fpr"], "after_fpr": after["fpr"], "before_recall": before["recall"],
        "after_recall": after["recall"], "before_block_rate": before["block_rate"],
        "after_block_rate": after["block_rate"], "unchanged_fpr": unchanged["fpr"],
        "unchanged_block_rate": unchanged["block_rate"], "binding": binding, "note": note,
    }
    if "explored" in tab:  # IPW figures: the explored rows they rest on
        row = {c: row[c] if c != "explored" else int(tab["explored"][i]) for c in IPW_COLUMNS}
    return row


def _clip(t: np.ndarray) -> np.ndarray:
    return np.clip(t, 0.0, 1.0)  # the decision service accepts thresholds in [0, 1] only


def suggest_thresholds(scored: pd.DataFrame, policy: ThresholdPolicy, *, default_threshold: float = 0.5,
                       bootstrap_block_rate: float | None = None, current_default: float | None = None,
                       current_per_merchant: dict[str, float] | None = None, baseline_version: int | None = None,
                       contract: Any = None) -> Suggestions:
    """Suggest thresholds from a scored test window (see the module doc).

    default_threshold: production's threshold when the rows carry no `baseline_threshold`
    (and the bootstrap fallback). current_default / current_per_merchant: production's
    global threshold and per-merchant map (its registry tags), so a
    merchant that loses its own threshold (too little support now) is listed and explained.
    contract (ratchet.contracts Contract): also honour its blocking block-rate clauses;
    None: the policy's objective only. A `propensity` column: IPW figures (module doc).
    """
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    w = ipw_weights(scored)
    y = label_array(scored, w)
    cand = scored["candidate_score"].to_numpy(dtype=float)
    n = len(y)
    current_per_merchant = {str(k): float(v) for k, v in (current_per_merchant or {}).items()}
    pdict = policy.to_dict()
    overall = assign(scored, OVERALL)
    estimator = COUNTS if w is None else IPW
    weighted_notes = [] if w is None else [_ipw_note(w)]

    if "baseline_score" not in scored.columns:
        if bootstrap_block_rate is not None:
            t = float(_clip(np.array([threshold_for_block_rate(cand, bootstrap_block_rate, w)]))[0])
            of = "of rows" if w is None else "of the rows weighted by 1 / propensity"
            how = f"bootstrap: blocks {bootstrap_block_rate:.2%} {of} (the contract's bootstrap_block_rate)"
        else:
            t, how = float(default_threshold), "bootstrap: the contract's default threshold"
        tab = _rates(y, w, {"baseline": cand, "candidate": cand, "unchanged": cand},
                     {"baseline": t, "candidate": t, "unchanged": t}, [overall])
        g = _row(GLOBAL, tab, 0, None, t, "global", how)
        g["before_fpr"] = g["before_recall"] = g["before_block_rate"] = None
        return Suggestions(objective=policy.objective, policy=pdict, bootstrap=True, global_row=g, merchants=[],
                           fallback={"merchants": 0, "rows": n}, baseline_version=baseline_version,
                           notes=["bootstrap release: no production model, so no per-merchant threshold to keep; "
                                  "every merchant uses the global threshold and nothing waits for review",
                                  *weighted_notes],
                           generated_at=now, row_thresholds=np.full(n, t), estimator=estimator)

    base = scored["baseline_score"].to_numpy(dtype=float)
    if "baseline_threshold" in scored.columns:
        base_thr: np.ndarray | float = scored["baseline_threshold"].to_numpy(dtype=float)
    else:
        base_thr = float(default_threshold)
    counted = (y == 0) if policy.objective == "keep_fpr" else np.ones(n, dtype=bool)
    budget_key = "baseline_fp" if policy.objective == "keep_fpr" else "baseline_blocked"
    notes: list[str] = list(weighted_notes)

    # the global threshold: the objective on the whole population
    tab0 = _rates(y, w, {"baseline": base}, {"baseline": base_thr}, [overall])
    glob = thresholds_at_budget(cand, counted, group_rows(None, 1, n), tab0[budget_key], weight=w)[0]
    if not np.isfinite(glob):  # keep_fpr with no negatives at all: fall back to production's block rate
        glob = threshold_for_block_rate(cand, float(tab0["baseline_block_rate"][0]), w)
        notes.append("the test window has no legitimate payments: the global threshold matches production's block rate")
    glob = float(_clip(np.array([glob]))[0])

    col = policy.merchant_column
    if col not in scored.columns:
        notes.append(f"the scored data has no '{col}' column: global threshold only"
                     + ("; the contract's slices were not taken into account" if contract is not None else ""))
        row_thr = np.full(n, glob)
        tab = _rates(y, w, {"baseline": base, "candidate": cand, "unchanged": cand},
                     {"baseline": base_thr, "candidate": row_thr, "unchanged": base_thr}, [overall])
        cur = float(current_default) if current_default is not None else float(np.median(base_thr))
        return Suggestions(objective=policy.objective, policy=pdict, bootstrap=False,
                           global_row=_row(GLOBAL, tab, 0, cur, glob, "global", _global_how(policy)), merchants=[],
                           fallback={"merchants": 0, "rows": n}, notes=notes, baseline_version=baseline_version,
                           generated_at=now, row_thresholds=row_thr, estimator=estimator)

    merchant = assign(scored, SliceFamily("merchant", (col,)))
    labels = [lab.split("=", 1)[1] for lab in merchant.labels]
    G = merchant.n_slices
    counts = _rates(y, w, {"baseline": base}, {"baseline": base_thr}, [merchant])
    rows, neg, pos = (counts[k] for k in ("rows", "negatives", "positives"))
    ms = policy.min_support
    grouped = group_rows(merchant.codes, G)
    supported = (rows >= ms.rows) & (neg >= ms.negatives) & (pos >= ms.positives)
    own = thresholds_at_budget(cand, counted, grouped, counts[budget_key], only=supported, weight=w)
    by_policy = eligible = supported & np.isfinite(own) & _explored_enough(counts)
    own = np.where(eligible, _clip(own), glob)
    fit = None
    if contract is not None and G:
        fit = fit_contract(scored, cand, base >= base_thr, merchant.codes, G, np.where(eligible, own, np.nan), glob,
                           contract, policy.contract_target, col)
        glob = float(_clip(np.array([fit.glob]))[0])
        eligible = ~np.isnan(fit.own)
        own = np.where(eligible, _clip(fit.own), glob)
        notes += fit.notes
    why = fit.why if fit is not None else [""] * G
    row_thr = own[merchant.codes] if G else np.full(n, glob)
    row_thr = np.where(merchant.codes >= 0, row_thr, glob)

    tab = _rates(y, w, {"baseline": base, "candidate": cand, "unchanged": cand},
                 {"baseline": base_thr, "candidate": row_thr, "unchanged": base_thr}, [overall, merchant])
    # production's threshold for each merchant today: the value its rows carry
    first_row = grouped.perm[np.minimum(grouped.start, max(n - 1, 0))]
    today = (np.asarray(base_thr)[first_row] if np.ndim(base_thr) else np.full(G, float(base_thr)))
    if current_default is not None:
        cur_global = float(current_default)
    else:  # the most common per-row value: what merchants without their own threshold get
        sample = np.asarray(base_thr, dtype=float).ravel()[:: max(1, n // 100_000)]
        vals, freq = np.unique(sample, return_counts=True)
        cur_global = float(vals[np.argmax(freq)])
    glob_why = fit.glob_why if fit is not None else ""
    global_row = _row(GLOBAL, tab, 0, cur_global, glob, "global",
                      _global_how(policy) + (f"; moved for the contract: {glob_why}" if glob_why else ""), glob_why)

    listed = np.flatnonzero((rows >= ms.rows) | np.isin(labels, list(current_per_merchant)) | eligible)
    merchants = []
    for gi in listed[np.lexsort((listed, -rows[listed]))]:
        name = labels[gi]
        note = _explain(policy, bool(by_policy[gi]), int(rows[gi]), int(neg[gi]), int(pos[gi]),
                        float(counts["baseline_fp"][gi]), name in current_per_merchant,
                        int(counts["explored"][gi]) if "explored" in counts else None)
        if why[gi]:
            note = _contract_note(bool(by_policy[gi]), why[gi], note)
        merchants.append(_row(name, tab, 1 + gi, float(today[gi]), float(own[gi]),
                              "merchant" if eligible[gi] else "global", note, why[gi]))
    for name in sorted(set(current_per_merchant) - set(labels)):
        blank = {c: None for c in (COLUMNS if w is None else IPW_COLUMNS)}
        merchants.append({**blank, "merchant": name, "rows": 0, "negatives": 0, "positives": 0,
                          "current_threshold": current_per_merchant[name], "suggested_threshold": glob,
                          "source": "global", "change": glob - current_per_merchant[name], "binding": "",
                          "note": "had its own threshold but made no payments in the test window: uses the global threshold"})
    fallback = {"merchants": int((~eligible).sum()), "rows": int(rows[~eligible].sum())}
    return Suggestions(objective=policy.objective, policy=pdict, bootstrap=False, global_row=global_row,
                       merchants=merchants, fallback=fallback, notes=notes, baseline_version=baseline_version,
                       generated_at=now, row_thresholds=row_thr, estimator=estimator,
                       contract=fit.section if fit is not None else None,
                       judged_rows=_judged_rows(scored, base_thr, fit, col) if fit is not None else None)


def _ipw_note(w: np.ndarray) -> str:
    """The note that says the figures are IPW estimates, and on how much exploration they rest."""
    seen = w > 0
    explored = int(np.sum(w > 1.0))
    unlabelled = int(np.sum(~seen))
    return (f"censored test window (propensity column): FPR, recall and block rates are IPW estimates "
            f"(self-normalised, each labelled row weighted by 1 / propensity, standing for every payment, blocked "
            f"ones included), and thresholds are chosen on them; {int(seen.sum()):,} labelled rows, {explored:,} of "
            f"them explored" + (f"; {unlabelled:,} rows without a label weigh 0" if unlabelled else "")
            + f"; a merchant with fewer than {MIN_EXPLORED} explored rows has uncertain figures (positivity)")


def _judged_rows(scored: pd.DataFrame, base_thr: np.ndarray | float, fit: ContractFit, col: str) -> pd.DataFrame:
    """The scored rows an approval re-judges edits on (SCORED_FILE): scores, production's
    per-row threshold, the merchant and the contract's slice columns."""
    clauses = tuple(RateClause.from_dict(c) for c in fit.section["clauses"])
    cols = [c for c in row_columns(clauses, col) if c in scored.columns and c != "baseline_threshold"]
    thr = np.broadcast_to(np.asarray(base_thr, dtype=float), (len(scored),))
    return scored[cols].assign(baseline_threshold=thr)


def _contract_note(by_policy: bool, binding: str, note: str) -> str:
    if by_policy:
        return f"{note}; moved for the contract: {binding}"
    return f"its own threshold for the contract (below the policy's min_support): {binding}"


def _global_how(policy: ThresholdPolicy) -> str:
    what = ("production's overall false-positive rate, maximising recall" if policy.objective == "keep_fpr"
            else "production's overall block rate")
    return f"global: keeps {what}; used by every merchant without its own threshold"


def _explored_enough(counts: dict[str, np.ndarray]) -> np.ndarray | bool:
    """With IPW figures, per merchant: any explored row (else its own threshold would be chosen
    blind to production's blocks there: it gets the global one); plain counts: True."""
    return counts["explored"] > 0 if "explored" in counts else True


def _explain(policy: ThresholdPolicy, eligible: bool, rows: int, neg: int, pos: int, base_fp: float,
             had_own: bool, explored: int | None = None) -> str:
    ms = policy.min_support
    lost = "had its own threshold; " if had_own else ""
    if not eligible:
        if rows < ms.rows:
            return f"{lost}support {rows} rows < min_support.rows {ms.rows}: uses the global threshold"
        if neg == 0:
            return (f"{lost}no legitimate payments in the test window: its false-positive rate is undefined, "
                    "so it uses the global threshold")
        if neg < ms.negatives:
            return f"{lost}{neg} legitimate payments < min_support.negatives {ms.negatives}: uses the global threshold"
        if pos < ms.positives:
            return f"{lost}{pos} fraud cases < min_support.positives {ms.positives}: uses the global threshold"
        if explored == 0:
            return (f"{lost}nothing explored here, so its own threshold would be chosen blind to the payments "
                    "production blocked: uses the global threshold")
        return f"{lost}objective undefined here: uses the global threshold"
    parts = []
    if policy.objective == "keep_fpr":
        parts.append("keeps production's false-positive rate, maximising recall")
        if base_fp == 0:
            parts.append("production blocks none of its legitimate payments, so neither does the suggestion")
    else:
        parts.append("keeps production's block rate")
    if pos == 0:
        parts.append("no fraud in the test window: recall cannot be measured")
    return "; ".join(parts)


# ---- renderings ------------------------------------------------------------------------
def _f(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{100 * x:.2f}%" if pct else f"{x:.4f}"


def _arrow(a: Any, b: Any, pct: bool = True) -> str:
    return f"{_f(a, pct)} -> {_f(b, pct)}"


def render_text(s: Suggestions, limit: int | None = 40) -> str:
    lines = []
    head = (f"threshold suggestions ({s.objective}, mode {s.mode})"
            + (f" for version {s.version}" if s.version is not None else "")
            + (f" vs production version {s.baseline_version}" if s.baseline_version is not None else "")
            + ("; figures are IPW estimates (censored data)" if s.estimator == IPW else ""))
    lines.append(head)
    for note in s.notes:
        lines.append(f"  note: {note}")
    rows = [s.global_row, *s.merchants]
    shown = rows if limit is None else rows[: limit + 1]
    width = max([7, *(len(r.get("binding") or "") for r in shown)])
    lines.append(f"{'merchant':<14} {'rows':>8} {'current':>8} {'suggest':>8} {'change':>8}  "
                 f"{'fpr before -> after':<20} {'recall before -> after':<22} {'block before -> after':<21} "
                 f"{'binding':<{width}} note")
    for r in shown:
        lines.append(f"{str(r['merchant'])[:14]:<14} {r['rows']:>8} {_f(r['current_threshold']):>8} "
                     f"{_f(r['suggested_threshold']):>8} {_f(r['change']):>8}  "
                     f"{_arrow(r['before_fpr'], r['after_fpr']):<20} {_arrow(r['before_recall'], r['after_recall']):<22} "
                     f"{_arrow(r['before_block_rate'], r['after_block_rate']):<21} {(r.get('binding') or '-'):<{width}} "
                     f"{r['note']}")
    if len(shown) < len(rows):
        lines.append(f"... and {len(rows) - len(shown)} more merchants (see suggestions.csv)")
    lines.append(f"{len(s.own())} merchants get their own threshold; {s.fallback['merchants']} merchants "
                 f"({s.fallback['rows']:,} test rows) use the global threshold {s.global_threshold:.4f}")
    return "\n".join(lines)


def render_html(s: Suggestions) -> str:
    e = html.escape
    ipw = s.estimator == IPW
    cells = []
    for r in [s.global_row, *s.merchants]:
        explored = f"<td>{'-' if r.get('explored') is None else format(r['explored'], ',')}</td>" if ipw else ""
        big = r["change"] is not None and abs(r["change"]) >= 0.05
        cells.append(
            f"<tr class='{'global' if r['merchant'] == GLOBAL else r['source']}'>"
            f"<td>{e(str(r['merchant']))}</td><td>{r['rows']:,}</td><td>{r['negatives']:,}</td><td>{r['positives']:,}</td>"
            f"<td>{_f(r['current_threshold'])}</td><td><b>{_f(r['suggested_threshold'])}</b></td>"
            f"<td class='{'big' if big else ''}'>{_f(r['change'])}</td>"
            f"<td>{_arrow(r['before_fpr'], r['after_fpr'])}</td><td>{_arrow(r['before_recall'], r['after_recall'])}</td>"
            f"<td>{_arrow(r['before_block_rate'], r['after_block_rate'])}</td>"
            f"<td>{_arrow(r['unchanged_fpr'], r['unchanged_block_rate'])}</td>{explored}"
            f"<td>{e(str(r.get('binding') or ''))}</td>"
            f"<td>{e(str(r['note']))}</td></tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in s.notes)
    title = f"Threshold suggestions{f' for version {s.version}' if s.version is not None else ''}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:last-child,td:first-child{{text-align:left}}
tr.global{{background:#eef}}tr.global td{{font-weight:bold}}td.big{{background:#fdd}}th{{background:#f4f4f4}}</style>
</head><body><h1>{e(title)}</h1>
<p>Objective <b>{e(s.objective)}</b>, mode <b>{e(s.mode)}</b>
{f", against production version {s.baseline_version}" if s.baseline_version is not None else ""}.
{len(s.own())} merchants get their own threshold; {s.fallback['merchants']:,} merchants ({s.fallback['rows']:,} test rows)
use the global threshold {s.global_threshold:.4f}. "Before" is production today; "after" is the candidate at the
suggested threshold; "unchanged" is the candidate at today's threshold (FPR / block rate): why thresholds are re-derived.
"Binding" names the contract clause (slice) that set a threshold; empty: the policy's objective did.</p>{_html_estimator(s)}
<ul>{notes}</ul>
<p>Review: <code>ratchet thresholds review VERSION</code>; approve: <code>ratchet thresholds approve VERSION
[--set MERCHANT=VALUE ...] [--reject MERCHANT ...]</code>.</p>
<table><tr><th>merchant</th><th>rows</th><th>negatives</th><th>positives</th><th>current</th><th>suggested</th>
<th>change</th><th>FPR before &rarr; after</th><th>recall before &rarr; after</th><th>block rate before &rarr; after</th>
<th>unchanged: FPR &rarr; block</th>{"<th>explored</th>" if ipw else ""}<th>binding</th><th>note</th></tr>
{''.join(cells)}</table></body></html>
"""


def _html_estimator(s: Suggestions) -> str:
    """With IPW figures: a paragraph that says so (nothing for plain counts)."""
    if s.estimator != IPW:
        return ""
    return ("\n<p class='estimator'>Estimator <b>ipw</b>: the test window is censored (production's blocks have no "
            "label), so every FPR, recall and block rate is a self-normalised inverse-propensity-weighted estimate "
            "(each labelled row weighted by 1 / propensity) and the thresholds were chosen on them. \"Explored\" "
            f"counts the explored rows each row's figures rest on; below {MIN_EXPLORED} they are uncertain "
            "(positivity).</p>")
