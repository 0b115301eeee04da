"""Evidently reports logged with each candidate, for people to open from MLflow.

- data drift: the training set (reference) against the test window (current), per feature;
- classification comparison: on each of the worst slices the contract engine found,
  the candidate's decisions (current) against production's (reference) on the same rows;
- the verdict page's chart: a forest plot of the failed comparisons and those closest to
  their allowance, each difference with its interval against the band the clause allows.

Decisions are given to Evidently as labels at the real thresholds (per row), because
Evidently 0.7 reads probabilities at a fixed 0.5 cut-off; ranking metrics (AUC) come
from the slice engine, not from here. Frames are sampled so a report stays a few seconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
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

    reference, current = drift_inputs(reference, current, columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset()]).run(current, reference)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out_html))
    return out_html


def drift_inputs(reference: pd.DataFrame, current: pd.DataFrame,
                 columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the drift report reads: the `columns` both frames have, at most MAX_ROWS of each,
    the same sample every time (a sample of its own output is itself, so a process handed
    the samples builds the same report)."""
    cols = [c for c in columns if c in reference.columns and c in current.columns]
    return _sample(reference[cols], seed=2), _sample(current[cols], seed=1)


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


#: Metrics that are not rates: their differences are drawn in their own units, not in points.
_NOT_RATES = {"auc": "AUC", "average_precision": "average precision"}
_STATUS_RANK = {"fail": 0, "inconclusive": 1, "pass": 2}
_COLOURS = {"fail": "#cf222e", "warn": "#bf8700", "inconclusive": "#8250df", "pass": "#0969da"}
_BAND = "#2da44e"


@dataclass(frozen=True)
class ForestRow:
    """One comparison clause on one slice as the verdict's chart draws it (metric units)."""

    clause: str
    rule: str
    metric: str
    severity: str
    status: str
    slice: str
    support: int
    difference: float                     # candidate - baseline
    interval: tuple[float, float] | None  # on the difference, at the clause's confidence
    confidence: float
    band: tuple[float, float]             # the allowed differences; an open side is ±inf
    margin: float                         # how far the difference lies inside the band (< 0: beyond it)

    @property
    def colour_key(self) -> str:
        return "warn" if self.status == "fail" and self.severity == "warn" else self.status

    @property
    def beyond(self) -> bool:
        """The whole interval (the point, without one) lies outside the allowed band."""
        lo, hi = self.interval or (self.difference, self.difference)
        return hi < self.band[0] or lo > self.band[1]


def allowed_band(result) -> tuple[float, float]:  # noqa: ANN001 - a ClauseResult of a comparison
    """The allowed region of a comparison's difference, recovered from the engine's `excess`
    (how far the point estimate lies beyond the allowance), so the chart draws the band judged."""
    from ratchet.evaluate.metrics import DIRECTION

    d, e = result.difference, result.excess
    if result.kind == "rate_stability":
        tol = max(0.0, abs(d) - e)
        return -tol, tol
    if DIRECTION[result.metric] > 0:  # higher is better: the difference may not fall below the edge
        return d + e, math.inf
    return -math.inf, d - e


def forest_rows(verdict, n: int = 12) -> list[ForestRow]:  # noqa: ANN001 - a ratchet.contracts Verdict
    """The chart's rows, worst first: failed comparisons (blocking, then warnings), then the
    inconclusive and passed ones closest to their allowance; n at most. Bounds (no baseline)
    and slices not judged are left to the tables."""
    rows = [ForestRow(clause=r.name, rule=r.rule, metric=r.metric, severity=r.severity, status=r.status,
                      slice=r.slice, support=r.support, difference=r.difference, interval=r.interval,
                      confidence=r.confidence, band=allowed_band(r), margin=-r.excess)
            for r in verdict.results
            if r.kind != "bound" and r.status in _STATUS_RANK and r.difference is not None and r.excess is not None]
    rows.sort(key=lambda x: (_STATUS_RANK[x.status], x.severity != "block", x.margin, x.clause, x.slice))
    return rows[:n]


def _unit(metric: str) -> tuple[float, str, str]:
    """(scale, axis unit, short unit): rates in percentage points, the rest in their own units."""
    if metric in _NOT_RATES:
        return 1.0, _NOT_RATES[metric], ""
    return 100.0, "percentage points", " pp"


def _decimals(values: list[float]) -> int:
    """Decimals that show the smallest non-zero magnitude among `values` with two significant digits."""
    small = min((abs(v) for v in values if math.isfinite(v) and v != 0), default=1.0)
    return min(6, max(1, 1 - math.floor(math.log10(small))))


def _signed(x: float, k: int) -> str:
    return f"{round(x, k) + 0.0:+.{k}f}"  # + 0.0: no "-0.00" for a difference that rounds to zero


def _band_words(band: tuple[float, float], k: int) -> str:
    lo, hi = band
    if math.isfinite(lo) and math.isfinite(hi):
        return f"±{hi:.{k}f}" if math.isclose(-lo, hi) else f"[{_signed(lo, k)}, {_signed(hi, k)}]"
    return f"≥ {_signed(lo, k)}" if math.isfinite(lo) else f"≤ {_signed(hi, k)}"


def _short(text: str, n: int = 44) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _panel(ax, group: list[ForestRow]) -> None:  # noqa: ANN001 - a matplotlib Axes
    """One clause's rows: the allowed band shaded per row, the difference with its interval."""
    scale, unit, short = _unit(group[0].metric)
    xs = [0.0]
    for r in group:
        xs += [r.difference, *(r.interval or ()), *(b for b in r.band if math.isfinite(b))]
    lo, hi = min(xs) * scale, max(xs) * scale
    pad = 0.12 * (hi - lo) or 0.01 * scale
    xmin, xmax = lo - pad, hi + pad
    k = _decimals([(hi - lo)] + [b * scale for r in group for b in r.band])
    y = np.arange(len(group))[::-1]  # the worst row on top
    for yi, r in zip(y, group):
        b0, b1 = max(r.band[0] * scale, xmin), min(r.band[1] * scale, xmax)
        if b1 > b0:
            ax.barh(yi, b1 - b0, left=b0, height=0.8, color=_BAND, alpha=0.16, linewidth=0, zorder=0)
        for edge in (b for b in r.band if math.isfinite(b)):
            ax.vlines(edge * scale, yi - 0.4, yi + 0.4, color=_BAND, linewidth=1.4, zorder=1)
        colour = _COLOURS[r.colour_key]
        d = r.difference * scale
        word = {"fail": "FAIL", "warn": "WARN"}.get(r.colour_key, r.status)  # as the page's tables say it
        text = f"{word}  {_signed(d, k)}"
        if r.interval:
            i0, i1 = r.interval[0] * scale, r.interval[1] * scale
            ax.hlines(yi, i0, i1, color=colour, linewidth=2.0, zorder=2)
            ax.plot([i0, i1], [yi, yi], "|", color=colour, markersize=9, markeredgewidth=2.0, zorder=2)
            text += f" [{_signed(i0, k)}, {_signed(i1, k)}]"
        ax.plot([d], [yi], "o", color=colour, markersize=6, zorder=3)
        text += f"{short}, allowed {_band_words((r.band[0] * scale, r.band[1] * scale), k)}"
        ax.text(1.01, yi, text, transform=ax.get_yaxis_transform(), va="center", fontsize=7.5, color=colour)
    ax.axvline(0.0, color="#57606a", linewidth=0.8, linestyle=":", zorder=1)
    ax.set_yticks(y, [f"{_short(r.slice)}  n={r.support:,}" for r in group], fontsize=8)
    ax.set_ylim(-0.6, len(group) - 0.4)
    ax.set_xlim(xmin, xmax)
    ax.tick_params(axis="x", labelsize=7.5)
    ax.grid(axis="x", color="#eaeef2", zorder=0)
    ax.set_xlabel(f"candidate − production, {unit}; bars: {group[0].confidence:.0%} interval", fontsize=8)
    ax.set_title(f"{group[0].clause} ({group[0].severity}): {group[0].rule}", loc="left", fontsize=9,
                 fontweight="bold")


def worst_slices_plot(verdict, out_png: Path, n: int = 12) -> Path | None:  # noqa: ANN001 - a Verdict
    """Forest plot of the worst comparisons (forest_rows): per slice, candidate minus production
    with its interval against the clause's allowed band, one panel (and scale) per clause;
    rates in percentage points. None when nothing compares (a bootstrap)."""
    return forest_plot(forest_rows(verdict, n), out_png)


def forest_plot(rows: list[ForestRow], out_png: Path) -> Path | None:
    """worst_slices_plot's drawing, from its rows (so another process can draw it); None without rows."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups: dict[str, list[ForestRow]] = {}
    for row in rows:
        groups.setdefault(row.clause, []).append(row)
    heights = [len(g) + 1.6 for g in groups.values()]  # its rows, then its title and axis
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 0.34 * sum(heights) + 0.9), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, layout="constrained")
    for ax, group in zip(axes[:, 0], groups.values()):
        _panel(ax, group)
    dot = {"marker": "o", "linestyle": "-", "linewidth": 2.0, "markersize": 6}
    handles = [Line2D([], [], color=_COLOURS["fail"], label="failed (blocking)", **dot),
               Line2D([], [], color=_COLOURS["warn"], label="failed (warning)", **dot),
               Line2D([], [], color=_COLOURS["inconclusive"], label="inconclusive", **dot),
               Line2D([], [], color=_COLOURS["pass"], label="passed", **dot),
               Patch(facecolor=_BAND, alpha=0.3, edgecolor=_BAND, label="allowed"),
               Line2D([], [], color="#57606a", linestyle=":", label="no change")]
    fig.legend(handles=handles, loc="outside upper center", ncols=6, fontsize=8, frameon=False)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out_png
