"""The ramp history as a picture: each version's traffic share over time, from the
transitions the controller recorded on the versions (MLflow tags history.NNNN)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ratchet.stages.model import State

STAGE_SHARE = {State.SHADOW: 0.0, State.PRODUCTION: 100.0}
#: states in which a version decides no traffic
NO_SHARE = frozenset({State.ROLLED_BACK, State.RETIRED, State.CANDIDATE, State.STAGING, State.REJECTED})


def ramp_points(history: list[dict[str, Any]]) -> list[tuple[datetime, float, str]]:
    """(time, percent of traffic acted on by this version, event) for one version's history.

    Canary steps carry their weight in the evidence; production is 100%; shadow, a
    rollback, retirement or withdrawal is 0% (a shadow is scored but never acts)."""
    points: list[tuple[datetime, float, str]] = []
    for e in history:
        at = e.get("at")
        if not at:
            continue
        to = e.get("to")
        weight = (e.get("evidence") or {}).get("weight")
        if to == State.CANARY and isinstance(weight, (int, float)):
            share = float(weight)
        elif to in STAGE_SHARE:
            share = STAGE_SHARE[to]
        elif to in NO_SHARE:
            share = 0.0
        else:
            continue
        points.append((datetime.fromisoformat(str(at).replace("Z", "+00:00")), share, f"{e.get('from')} -> {to}"))
    return points


def plot_ramp(histories: dict[int, list[dict[str, Any]]], out_png: Path) -> Path | None:
    """Step plot of every version's traffic share; rollbacks marked. None when nothing ramped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {v: ramp_points(h) for v, h in histories.items()}
    series = {v: p for v, p in series.items() if any(share > 0 for _, share, _ in p)}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    for v, pts in sorted(series.items()):
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.step(xs, ys, where="post", marker="o", label=f"v{v}")
        for x, y, ev in pts:
            if ev.endswith(State.ROLLED_BACK):
                ax.annotate("rollback", (x, y), textcoords="offset points", xytext=(4, 8), color="#cf222e",
                            fontsize=8)
    ax.set_ylabel("% of traffic decided by the version")
    ax.set_ylim(-5, 105)
    ax.set_title("Ramp history")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
