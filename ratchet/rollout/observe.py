"""Observations for the controller from the decision service's log: a live folder or one file.

`live_observer(decision_log_source(path), plan, labels)` is the `observe(fact, windows)`
the Controller calls each pass, the same for the folder `ratchet serve` writes
(DecisionLogTail) and for a single exported log file (DecisionLogFile): guards per role from the start of its current step (block
rates counted per card, the unit the canary is routed by), and the shadow review on
matured labels, pending until the labelled shadow decisions can judge the whole
population the contract judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ratchet.files import read_table
from ratchet.rollout.plan import RolloutPlan
from ratchet.rollout.state import DeploymentState, Observations
from ratchet.serving.log_schema import LATER_COLUMNS, SCALAR_COLUMNS, SCHEMA

#: Decision-log columns the guards and the shadow review read: the log schema's scalar columns
#: (ratchet.serving.log_schema, the one schema the service writes). The slice keys are read
#: besides; the `features` map is not loaded: only the features a contract slices on are pulled
#: out of it.
LOG_COLUMNS: tuple[str, ...] = SCALAR_COLUMNS


# ---- reading the live decision log -----------------------------------------------------------
class DecisionLogTail:
    """The decision log folder as one DataFrame, reading each Parquet file once.

    The service writes a file per rotation under a dot-name and renames it, so a listed
    file is complete and never changes: files already read are kept in memory and only
    new ones are read on each call. `features` names values pulled out of the log's
    `features` map into columns (e.g. amount, which the contract's amount bands need).
    """

    def __init__(self, folder: str | Path, features: Sequence[str] = ("amount",)) -> None:
        self.folder = Path(folder)
        self.features = tuple(features)
        self._parts: dict[str, Any] = {}
        self._frame = None

    def want(self, features: Sequence[str]) -> None:
        """Also pull these features out of the log (files already read are read again)."""
        more = tuple(f for f in features if f not in self.features)
        if more:
            self.features += more
            self._parts, self._frame = {}, None

    def frame(self):  # noqa: ANN201 - pandas DataFrame
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from ratchet.serving.schema import SLICE_KEYS

        new = sorted(p for p in self.folder.glob("decisions-*.parquet") if p.name not in self._parts) \
            if self.folder.exists() else []
        for p in new:
            with pq.ParquetFile(p) as f:
                have = set(f.schema_arrow.names)
                t = f.read(columns=[c for c in (*LOG_COLUMNS, *SLICE_KEYS, "features") if c in have])
            for name, value in LATER_COLUMNS.items():   # a file written before the column: its default
                if name not in have:
                    t = t.append_column(name, pa.array([value] * t.num_rows, SCHEMA.field(name).type))
            for name in self.features:
                t = t.append_column(name, pc.map_lookup(t["features"], name, "first"))
            self._parts[p.name] = t.drop_columns(["features"]).to_pandas()
        if new or self._frame is None:
            parts = [self._parts[k] for k in sorted(self._parts)]
            self._frame = (pd.concat(parts, ignore_index=True) if parts else
                           pd.DataFrame(columns=[*LOG_COLUMNS, *SLICE_KEYS, *self.features]))
        return self._frame


class DecisionLogFile:
    """One decision log file (Parquet, CSV or JSON lines), re-read whenever it changes.

    For logs exported or collected by other tools; the same columns as the service's
    folder (request_id, ts, role, version, decision, status/error, latency_ms, slice keys).
    A missing file is an empty log (nothing observed yet), not an error.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._frame = None

    def frame(self):  # noqa: ANN201 - pandas DataFrame
        import pandas as pd

        if not self.path.is_file():
            return pd.DataFrame(columns=list(LOG_COLUMNS))
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._frame, self._stamp = read_table(self.path), stamp
        return self._frame


def decision_log_source(path: str | Path) -> DecisionLogTail | DecisionLogFile:
    """A folder (what `ratchet serve --decision-log` writes) or a single log file."""
    p = Path(path)
    return DecisionLogTail(p) if p.is_dir() or not p.suffix else DecisionLogFile(p)


def per_card(log, keys: Sequence[str]):  # noqa: ANN001, ANN201 - pandas DataFrame in and out
    """One row per (role, card): blocked when any of the card's answered decisions was.

    The canary is assigned by card and fraud comes in bursts on one card, so decisions
    of one card are not independent: a single compromised card in the canary can move a
    country's transaction block rate by several times within a step window, and an
    interval that counts its ten blocks as ten pieces of evidence calls that credible.
    Counting cards -- the unit the canary randomises -- keeps the block-rate guard's
    interval honest. Error rate and latency stay per decision."""
    import numpy as np
    import pandas as pd

    from ratchet.rollout.guards import _errors

    if "card_id" not in log.columns:   # a log without cards: every decision is its own unit
        return log[~_errors(log)] if len(log) else log
    ok = log[~_errors(log) & log["card_id"].notna().to_numpy()]
    if not len(ok):
        return ok
    ok = ok.assign(_blk=(ok["decision"].astype(str) == "block").to_numpy())
    agg = {"_blk": ("_blk", "max"), "ts": ("ts", "max"), **{k: (k, "first") for k in keys if k in ok.columns}}
    g = ok.groupby(["role", "card_id"], sort=False, observed=True).agg(**agg).reset_index()
    g["decision"] = np.where(g["_blk"].to_numpy(), "block", "allow")
    g["status"] = "ok"
    return pd.DataFrame(g.drop(columns=["_blk"]))


def once_per_payment(log):  # noqa: ANN001, ANN201 - pandas DataFrame in and out
    """Each payment counted once per role: the first row of every (role, transaction_id).

    A replay that loops (`ratchet replay --loop`) or a client that retries sends a payment
    again under a new request id; evidence must not grow with it. Rows without a
    transaction_id fall back to their request id."""
    if not len(log) or "transaction_id" not in log.columns:
        return log
    key = log["transaction_id"].astype(object).where(log["transaction_id"].notna(), log["request_id"])
    first = ~log.assign(_k=key.to_numpy())[["role", "_k"]].duplicated(keep="first").to_numpy()
    return log if first.all() else log[first]


def model_decisions(log):  # noqa: ANN001, ANN201 - pandas DataFrame in and out
    """The log with each explored allow read as the block its model decided.

    Exploration lets a share of production's would-be blocks through (logged decision allow,
    explored true); the guards compare models, and read as served, production's block rate
    would look lower by the exploration share and the canary's relatively higher."""
    import numpy as np

    if "explored" not in log.columns or not len(log):
        return log
    explored = log["explored"].fillna(False).astype(bool).to_numpy()
    if not explored.any():
        return log
    return log.assign(decision=np.where(explored, "block", log["decision"].astype(object).to_numpy()))


def live_observer(tail: DecisionLogTail | DecisionLogFile, plan: RolloutPlan, labels=None):  # noqa: ANN001, ANN201
    """observe(fact, windows) for the Controller from a live decision log: guards per role
    from the start of its current step (each payment once, see once_per_payment; block
    rates counted per card, see per_card), and
    the shadow review on matured `labels` (request_id, label) when the plan names a
    contract, pending until the labelled shadow decisions can judge the whole population."""
    import pandas as pd

    from ratchet.rollout.guards import _errors, observe_decisions, review_shadow

    per = plan.guards.block_rate.per if plan.guards.block_rate is not None else "country"
    cohort = plan.canary.cohort
    keys = [per, *(k for k, _ in cohort or ())]
    needs = review_needs(plan.shadow.contract) if plan.shadow.contract else (0, 0, 0)
    guarded = plan.guards.missing_features
    if guarded and isinstance(tail, DecisionLogTail):
        tail.want(guarded)

    def since(log, t: datetime | None):  # noqa: ANN001, ANN202
        return log if t is None else log[(pd.to_datetime(log["ts"], utc=True) >= pd.Timestamp(t)).to_numpy()]

    def observe(fact: DeploymentState, windows: dict[str, datetime | None]) -> Observations:
        log = model_decisions(once_per_payment(tail.frame()))
        if not len(log):
            return Observations(per=per, served_from=serving_window(log, log, fact)[1])
        cw, sw = since(log, windows.get("canary")), since(log, windows.get("shadow"))
        cw, served_from = serving_window(cw, sw, fact)
        canary = observe_decisions(cw, per=per, cohort=cohort)
        shadow = observe_decisions(sw, per=per)
        canary_cards = observe_decisions(per_card(cw, keys), per=per, cohort=cohort)
        shadow_cards = observe_decisions(per_card(sw, keys), per=per)
        review = None
        if fact.shadow is not None and plan.shadow.contract and labels is not None:
            lab = labels() if callable(labels) else labels
            if lab is not None:
                # a shadow scoring that timed out or failed has no score: judge the scored ones
                scored = sw[~_errors(sw)] if len(sw) else sw
                review = _enough_labels(scored, lab, needs) or review_shadow(scored, lab, plan.shadow.contract)
        roles = {"production": canary.role("production"), "canary": canary.role("canary"),
                 "shadow": shadow.role("shadow")}
        blocks = {k: v for k, v in (("canary", canary_cards.block_counts.get("canary")),
                                    ("shadow", shadow_cards.block_counts.get("shadow"))) if v}
        return Observations(roles=roles, block_counts=blocks, shadow_review=review,
                            window_start=windows["canary"].isoformat() if windows.get("canary") else None, per=per,
                            served_from=served_from, missing=missing_counts(cw, guarded))

    return observe


def missing_counts(window, features: Sequence[str]) -> dict[str, tuple[int, dict[str, int]]]:  # noqa: ANN001
    """Per served role: (answered decisions, {feature: those whose request had no value for it}).
    A log without a feature's values (an exported file without the column) says nothing about it."""
    from ratchet.rollout.guards import _errors

    have = [f for f in features if f in window.columns]
    if not have or not len(window):
        return {}
    ok = window[~_errors(window)]
    out: dict[str, tuple[int, dict[str, int]]] = {}
    for role in ("production", "canary"):
        rows = ok[(ok["role"] == role).to_numpy()]
        if len(rows):
            out[role] = (len(rows), {f: int(rows[f].isna().sum()) for f in have})
    return out


def serving_window(cw, sw, fact: DeploymentState):  # noqa: ANN001, ANN201 - pandas DataFrames
    """The canary window cut to the configuration generation now serving, and when each role's
    current step first decided (Observations.served_from).

    A step is planned, journaled and then applied; after a crash or an outage in between, the
    planned time can be long before the weight really served. The service stamps each decision
    with its config_generation and the backend reports the generation serving now, so the
    canary's evidence (both roles: the guards compare them on the same traffic) is the rows of
    that generation only, and its hold counts from the first of them. The shadow's evidence is
    not cut (a canary step of another version reloads the service, the shadow model stays): its
    hold counts from its version's first shadow decision in its window. A service restarted on
    the same configuration starts a new generation (numbered from 1 again: the rows must also be
    decided after the backend's `serving_since`): its step's hold starts again (the stricter
    reading). Without generations (a backend that cannot tell, an exported log without the
    column) the windows stay as given and served_from is empty."""
    import pandas as pd

    if fact.generation is None or "config_generation" not in cw.columns:
        return cw, {}
    served: dict[str, str | None] = {}

    def first(rows) -> str | None:  # noqa: ANN001
        return pd.to_datetime(rows["ts"], utc=True).min().isoformat() if len(rows) else None

    if fact.canary is not None and len(cw):
        keep = pd.to_numeric(cw["config_generation"], errors="coerce") == fact.generation
        if fact.serving_since is not None:  # a restarted process counts from 1 again: not its rows
            keep &= pd.to_datetime(cw["ts"], utc=True) >= pd.Timestamp(fact.serving_since)
        cw = cw[keep.to_numpy()]
        served["canary"] = first(cw)
    elif fact.canary is not None:
        served["canary"] = None
    if fact.shadow is not None:
        mine = sw[((sw["role"] == "shadow") & (pd.to_numeric(sw["version"], errors="coerce") == fact.shadow))
                  .to_numpy()] if len(sw) else sw
        served["shadow"] = first(mine)
    return cw, served


_POSITIVES = frozenset({"recall", "recall_at_fpr", "auc", "average_precision"})
_NEGATIVES = frozenset({"fpr"})


def review_needs(contract_path: str) -> tuple[int, int, int]:
    """(frauds, non-frauds, rows) the contract's whole-population blocking clauses need.

    A gate fails such a clause below its min_support (never pass without evidence); a
    live review has not failed then, it has not seen enough yet, so it stays pending."""
    from ratchet.contracts import load_contract

    pos = neg = rows = 0
    for c in load_contract(contract_path).clauses:
        if c.per is not None or not c.blocking:
            continue
        if c.metric in _POSITIVES:
            pos = max(pos, c.min_support)
        elif c.metric in _NEGATIVES:
            neg = max(neg, c.min_support)
        else:
            rows = max(rows, c.min_support)
    return pos, neg, rows


def _enough_labels(window, labels, needs: tuple[int, int, int]):  # noqa: ANN001, ANN202
    """A pending ShadowReview while the labelled shadow decisions are too few, else None."""
    from ratchet.rollout.state import ShadowReview

    ids = window.loc[window["role"] == "shadow", "request_id"]
    lab = labels.loc[labels["request_id"].isin(ids), "label"]
    n, pos = len(lab), int(lab.sum())
    need_pos, need_neg, need_rows = needs
    if pos >= need_pos and n - pos >= need_neg and n >= need_rows:
        return None
    return ShadowReview("pending", f"{n:,} labelled shadow decisions with {pos} frauds; the contract judges the "
                                   f"whole population from {need_pos} frauds, {need_neg} non-frauds")
