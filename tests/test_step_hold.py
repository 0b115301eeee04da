"""A canary step's hold, decisions and guard window count from when its weight really served
(issue 14, item 1): the decision log's config_generation, not the time the step was planned.

The case from the issue: "advance to 50%" is journaled, the controller is down for a while,
then the reload happens. Planned time is long ago; the 50% weight has served only a moment.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from ratchet.rollout.observe import DecisionLogFile, live_observer, serving_window
from ratchet.rollout.plan import plan_from_text
from ratchet.rollout.planner import plan_next
from ratchet.rollout.state import DeploymentState, Intent, Observations, Progress, RoleStats, VersionInfo, iso

PLAN_PATH = str(Path(__file__).resolve().parents[1] / "contracts" / "rollout.yaml")
PLAN = plan_from_text("""
mode: auto
canary:
  steps:
    - {weight: 25, hold: 20s, min_decisions: 10}
    - {weight: 50, hold: 20s, min_decisions: 10}
    - {weight: 100, hold: 20s, min_decisions: 10}
guards:
  error_rate: {max: 0.05}
""", PLAN_PATH)
T0 = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
PLANNED = T0                                   # "advance to 50%" journaled here
APPLIED = T0 + timedelta(seconds=15)           # ... and applied after a 15 s outage


def _rows(start: datetime, seconds: int, generation: int, per_second: int = 20) -> list[dict]:
    out = []
    for s in range(seconds):
        for k in range(per_second):
            i = len(out)
            role = "canary" if k % 2 else "production"
            out.append({"request_id": f"g{generation}-{s}-{k}", "transaction_id": f"t{generation}-{s}-{k}",
                        "ts": start + timedelta(seconds=s, milliseconds=k), "role": role,
                        "version": 2 if role == "canary" else 1, "score": 0.1, "threshold": 0.5,
                        "decision": "allow", "status": "ok", "error": None, "latency_ms": 1.0,
                        "config_generation": generation, "country": "FR", "card_id": f"c{generation}-{i}"})
    return out


def _log(tmp_path: Path) -> Path:
    """25% (generation 5) served until the 50% reload 15 s after it was planned; 50% = generation 6."""
    rows = _rows(PLANNED - timedelta(seconds=30), 45, generation=5) + _rows(APPLIED, 3, generation=6)
    path = tmp_path / "decisions.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


FACT = DeploymentState(production=1, canary=2, canary_weight=50.0, revision="6", generation=6)


def _intent(since: datetime = PLANNED) -> Intent:
    st = FACT.content()
    return Intent(aliases={"production": 1, "canary": 2},
                  versions={1: VersionInfo("production", Progress(1, "production", 0, iso(T0 - timedelta(hours=1)))),
                            2: VersionInfo("canary", Progress(1, "canary", 1, iso(since)))}), \
        replace(st, revision="6", applied=st.fingerprint(), generation=6)


def test_window_is_cut_to_the_generation_now_serving(tmp_path: Path) -> None:
    observe = live_observer(DecisionLogFile(_log(tmp_path)), PLAN)
    obs = observe(FACT, {"canary": PLANNED, "shadow": None})
    # only the 3 s of generation 6: 60 decisions, half of them canary
    assert obs.role("canary").decisions == 30
    assert obs.role("production").decisions == 30
    assert obs.served_from["canary"] == APPLIED.isoformat()


def test_without_a_generation_the_planned_time_counts(tmp_path: Path) -> None:
    """A backend that cannot tell the generation (None): the old window, from the planned time."""
    observe = live_observer(DecisionLogFile(_log(tmp_path)), PLAN)
    obs = observe(replace(FACT, generation=None), {"canary": PLANNED, "shadow": None})
    assert "canary" not in obs.served_from
    assert obs.role("canary").decisions == (15 + 3) * 10


def test_step_holds_from_when_it_served_not_from_when_it_was_planned(tmp_path: Path) -> None:
    plan_ = PLAN
    observe = live_observer(DecisionLogFile(_log(tmp_path)), plan_)
    intent, fact = _intent()
    obs = observe(fact, {"canary": PLANNED, "shadow": None})
    # 22 s after planning: planned time would say the 20 s hold is over; it served 7 s
    a = plan_next(intent, fact, obs, plan_, APPLIED + timedelta(seconds=7))
    assert a.kind == "Wait", a.event
    assert "holding 7s of 20s" in a.event and "30 of 10 decisions" in a.event
    # 20 s after the weight first served: it advances, and the evidence says what it held
    a = plan_next(intent, fact, obs, plan_, APPLIED + timedelta(seconds=20))
    assert a.kind == "Advance", a.event
    ev = a.records[0].evidence
    assert ev["held_s"] == 20 and ev["held_from"] == APPLIED.isoformat() and ev["generation"] == 6


def test_nothing_decided_under_the_new_generation_yet_means_no_hold() -> None:
    intent, fact = _intent()
    obs = Observations(roles={"canary": RoleStats(5000, 0, 1.0), "production": RoleStats(5000, 0, 1.0)},
                       served_from={"canary": None})
    a = plan_next(intent, fact, obs, PLAN, PLANNED + timedelta(hours=1))
    assert a.kind == "Wait" and "holding 0s of 20s" in a.event, a.event


def test_shadow_hold_counts_from_its_first_shadow_decision() -> None:
    t = pd.Timestamp(APPLIED)
    sw = pd.DataFrame({"ts": [t - pd.Timedelta(seconds=5), t, t + pd.Timedelta(seconds=1)],
                       "role": ["production", "shadow", "shadow"], "version": [1, 3, 3],
                       "config_generation": [4, 4, 4]})
    cw, served = serving_window(sw.iloc[:0], sw, DeploymentState(production=1, shadow=3, generation=4))
    assert served == {"shadow": APPLIED.isoformat()}
    assert len(cw) == 0


def test_a_restarted_service_counting_generations_from_1_again_is_not_mixed_up(tmp_path: Path) -> None:
    """The dead process served 25% as generation 2; the restarted one serves 50% as generation 2
    too, since `serving_since`: only the new process's rows count."""
    restart = APPLIED + timedelta(seconds=10)
    rows = _rows(PLANNED, 20, generation=2) + _rows(restart, 3, generation=2)
    for r in rows[: 20 * 20]:
        r["request_id"] = "old-" + r["request_id"]
        r["transaction_id"] = "old-" + r["transaction_id"]
    path = tmp_path / "decisions.parquet"
    pd.DataFrame(rows).to_parquet(path)
    fact = replace(FACT, generation=2, serving_since=restart.isoformat())
    obs = live_observer(DecisionLogFile(path), PLAN)(fact, {"canary": PLANNED, "shadow": None})
    assert obs.served_from["canary"] == restart.isoformat()
    assert obs.role("canary").decisions == 30
