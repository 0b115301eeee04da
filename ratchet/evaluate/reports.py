"""Evidently reports logged with each candidate, for people to open from MLflow.

- data drift: the training set (reference) against the test window (current), per feature;
- classification comparison: on each of the worst slices the contract engine found,
  the candidate's decisions (current) against production's (reference) on the same rows.

Decisions are given to Evidently as labels at the real thresholds (per row), because
Evidently 0.7 reads probabilities at a fixed 0.5 cut-off; ranking metrics (AUC) come
from the slice engine, not from here. Frames are sampled so a report stays a few seconds.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

MAX_ROWS = 50_000


def _sample(df: pd.DataFrame, n: int = MAX_ROWS, seed: int = 0) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=seed)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:80]


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], out_html: Path) -> Path:
    """Evidently data-drift report of `columns` between reference and current; writes HTML."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    cols = [c for c in columns if c in reference.columns and c in current.columns]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset()]).run(_sample(current[cols], seed=1), _sample(reference[cols], seed=2))
    out_html.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out_html))
    return out_html


def _decisions(scores: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    return (scores >= thresholds).astype(int)


def slice_masks(scored: pd.DataFrame, contract, slices: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Row masks of (family, label) slices, using the engine's own slice assignment."""
    from ratchet.evaluate.slices import assign

    families = {f.name: f for f in contract.families()}
    masks: dict[str, np.ndarray] = {}
    for family, label in slices:
        if family not in families:
            continue
        codes = assign(scored, families[family])
        if label in codes.labels:
            masks[label] = codes.codes == codes.labels.index(label)
    return masks


def slice_comparison_reports(scored: pd.DataFrame, thresholds: dict[str, np.ndarray | float],
                             masks: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
    """One Evidently classification report per slice: the candidate's decisions (current)
    against production's (reference) on that slice's rows."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    if "baseline_score" not in scored.columns:
        return []
    definition = DataDefinition(classification=[BinaryClassification(target="label", prediction_labels="decision",
                                                                      pos_label=1)])
    cand = _decisions(scored["candidate_score"].to_numpy(), thresholds["candidate"])
    base = _decisions(scored["baseline_score"].to_numpy(), thresholds["baseline"])
    y_all = scored["label"].to_numpy()
    written = []
    for label, mask in masks.items():
        # Evidently's classification metrics need both outcomes in the slice (TPR, TNR)
        if not mask.any() or len(np.unique(y_all[mask])) < 2:
            print(f"[ratchet] no Evidently report for slice {label}: it holds only one outcome", flush=True)
            continue
        current = pd.DataFrame({"label": y_all[mask], "decision": cand[mask]})
        reference = pd.DataFrame({"label": y_all[mask], "decision": base[mask]})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                snapshot = Report([ClassificationPreset()]).run(
                    Dataset.from_pandas(_sample(current), data_definition=definition),
                    Dataset.from_pandas(_sample(reference), data_definition=definition))
        except ValueError as exc:  # a report is evidence for people; it must never fail a release
            print(f"[ratchet] no Evidently report for slice {label}: {exc}", flush=True)
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"slice-{_safe_name(label)}.html"
        snapshot.save_html(str(path))
        written.append(path)
    return written


def worst_slices_plot(verdict, out_png: Path, n: int = 12) -> Path | None:
    """Bar chart of the worst per-slice results: production's and the candidate's value of
    each clause's metric on that slice, failures in red. None when nothing compares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in verdict.results if r.family != "overall" and r.baseline is not None
            and r.candidate is not None and (r.excess or 0) > 0]
    rank = {"fail": 0, "inconclusive": 1, "pass": 2, "not_judged": 3}
    rows = sorted(rows, key=lambda r: (rank[r.status], -(r.excess or 0.0)))[:n]
    if not rows:
        return None
    labels = [f"{r.name}\n{r.slice}"[:80] for r in rows][::-1]
    base = [r.baseline for r in rows][::-1]
    cand = [r.candidate for r in rows][::-1]
    colors = ["#cf222e" if r.status == "fail" else "#0969da" for r in rows][::-1]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.2))
    ax.barh(y + 0.2, base, height=0.4, color="#8c959f", label="production")
    ax.barh(y - 0.2, cand, height=0.4, color=colors, label="candidate (red: failed)")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("value of the clause's metric on the slice")
    ax.set_title("Worst slices: candidate vs production")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
