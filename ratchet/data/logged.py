"""Logged decisions in a dataset: which rows are censored (blocked, so never labelled) and
which were explored (allowed with propensity < 1), for the training-set job.

A dataset that carries the production policy's `decision` ("allow" / "block") and its
`propensity` (ratchet.exploration: the probability of that decision given the score) is
censored data: a blocked payment's label is unknown, whatever its is_fraud column says.
The job keeps such rows as history for other payments' features, never tests on them, and
trains on them only when the spec asks (censoring.censored: genuine). Labelled rows keep
their propensity (column `propensity` in train/test) so that training can weight them
(censoring.explored: inverse_propensity) and evaluation can estimate other policies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import Column
from pyspark.sql import functions as F

from ratchet.data import columns as C
from ratchet.data.checks import CheckResult

#: Columns the job writes to train/test when the dataset logs decisions.
CENSORED_COLUMN = C.CENSORED        # 1: a blocked payment trained on as genuine (censoring.censored: genuine)
PROPENSITY_COLUMN = C.PROPENSITY    # the logged decision's propensity (for labelled rows: of the allow)
DECISIONS = ("allow", "block")


def _decision() -> Column:
    return F.lower(F.trim(F.col(C.DECISION)))


def logged_block(columns: tuple[str, ...] | list[str]) -> Column | None:
    """True for rows logged as blocked (censored); None when the dataset logs no decisions."""
    if C.DECISION not in columns:
        return None
    return F.coalesce(_decision() == C.BLOCK, F.lit(False))


def logged_columns(keep: Column, has_propensity: bool, censored: Column) -> list[Column]:
    """Aggregates for the raw pass (aliases lg_*): censored, explored, bad decision and bad
    propensity rows among the rows the spec keeps."""
    aggs = [F.sum(F.when(keep & censored, 1).otherwise(0)).alias("lg_censored"),
            F.sum(F.when(keep & (F.col(C.DECISION).isNull() | ~_decision().isin(*DECISIONS)), 1).otherwise(0))
            .alias("lg_bad_decision")]
    if has_propensity:
        p = F.col(C.PROPENSITY)
        bad = p.isNull() | F.isnan(p) | (p <= 0) | (p > 1)
        aggs += [F.sum(F.when(keep & ~censored & (p < 1), 1).otherwise(0)).alias("lg_explored"),
                 F.sum(F.when(keep & bad, 1).otherwise(0)).alias("lg_bad_propensity")]
    return aggs


def check_logged(row: Any, has_propensity: bool) -> list[CheckResult]:
    """The logged columns' checks from the raw pass's row (see logged_columns)."""
    bad = int(row["lg_bad_decision"] or 0)
    out = [CheckResult("logged_decision[raw]", bad == 0, f"{bad} rows", "decision in {allow, block}",
                       "the decision column must say what the production policy did with each payment: "
                       "allow or block (a blocked payment is censored: never labelled)")]
    if has_propensity:
        badp = int(row["lg_bad_propensity"] or 0)
        out.append(CheckResult("logged_propensity[raw]", badp == 0, f"{badp} rows", "0 < propensity <= 1",
                               "propensity is the probability of the logged decision given the score: 1.0 for a "
                               "payment the model decided, the exploration share for an explored one; "
                               "fix the feed or drop the column"))
    return out


def logged_counts(censored_split: Any, train_path: str, test_path: str, logged: bool) -> dict[str, int]:
    """rows_censored and rows_explored of the written training set (0 when nothing is logged)."""
    if not logged:
        return {}
    censored = censored_split.rows if censored_split is not None else 0
    explored = 0
    for path in (train_path, test_path):
        files = sorted(Path(path).rglob("*.parquet"))
        if not files:
            continue
        names = [n for n in (CENSORED_COLUMN, PROPENSITY_COLUMN) if n in pq.read_schema(files[0]).names]
        table = pq.read_table(path, columns=names)
        cens = table.column(CENSORED_COLUMN).to_numpy(zero_copy_only=False)
        censored += int((cens == 1).sum())
        if PROPENSITY_COLUMN in names:
            prop = table.column(PROPENSITY_COLUMN).to_numpy(zero_copy_only=False)
            explored += int(((prop < 1) & (cens == 0)).sum())
    return {"rows_censored": censored, "rows_explored": explored}
