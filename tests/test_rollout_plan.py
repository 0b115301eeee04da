"""Rollout plan YAML: the shipped plans load; every error names file:line: key."""

from pathlib import Path

import pytest

from ratchet.errors import SpecError
from ratchet.rollout.plan import load_plan, parse_duration, plan_from_text

ROOT = Path(__file__).resolve().parents[1]
BASE = """
mode: auto
shadow: {min_duration: 1h, min_decisions: 10}
canary:
  steps:
    - {weight: 1, hold: 10m, min_decisions: 5}
    - {weight: 100, hold: 1h}
"""


def test_shipped_plans_load():
    plan = load_plan(ROOT / "contracts/rollout.yaml")
    assert plan.mode == "suggest" and [s.weight for s in plan.steps] == [1, 5, 25, 50, 100]
    assert plan.steps[0].hold == 1800 and plan.steps[0].min_decisions == 1000
    assert plan.shadow.contract and Path(plan.shadow.contract).exists()
    assert plan.guards.block_rate.relative == 0.10 and plan.guards.max_p99_latency_ms == 50
    demo = load_plan(ROOT / "contracts/rollout-demo.yaml")
    assert demo.mode == "auto" and max(s.hold for s in demo.steps) <= 60 and demo.interval == 5


def test_durations_and_time_scale():
    assert parse_duration("30s") == 30 and parse_duration("10m") == 600 and parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400 and parse_duration(45) == 45 and parse_duration("250ms") == 0.25
    plan = plan_from_text(BASE + "time_scale: 0.01\n")
    assert plan.steps[0].hold == pytest.approx(6) and plan.shadow.min_duration == pytest.approx(36)
    assert plan.interval == 30  # not scaled


def test_cohort():
    plan = plan_from_text(BASE.replace("canary:\n", "canary:\n  cohort: {country: [FR, BE]}\n"))
    assert plan.canary.cohort == (("country", ("BE", "FR")),)
    assert plan.canary.cohort_text() == "country in BE/FR"


@pytest.mark.parametrize("text, where, words", [
    (BASE.replace("mode: auto", "mode: yolo"), "p.yaml:2: mode:", "expected one of suggest, auto"),
    (BASE.replace("hold: 10m", "hold: ten minutes"), "p.yaml:6: canary.steps[0].hold:", "duration"),
    (BASE.replace("weight: 100", "weight: 1"), "p.yaml:7: canary.steps[1].weight:", "must increase"),
    (BASE.replace("weight: 100", "weight: 150"), "p.yaml:7: canary.steps[1].weight:", "between 0 and 100"),
    (BASE + "guards: {error_rate: {max: 2}}\n", "p.yaml:8: guards.error_rate.max:", "between 0 and 1"),
    (BASE + "guards: {block_rate: {tolerance: {relativ: 0.1}}}\n", "p.yaml:8: guards.block_rate.tolerance.relativ:",
     "unknown key"),
    (BASE + "surprise: 1\n", "p.yaml:8: surprise:", "unknown key"),
    (BASE.replace("canary:\n", "canary:\n  cohort: {country: FR, channel: web}\n"), "p.yaml:5: canary.cohort:",
     "exactly one column"),
    ("mode: auto\n", "p.yaml: canary:", "is required"),
    (BASE.replace("shadow: {", "shadow: {guards: [auc], "), "p.yaml:3: shadow.guards:", "guard names"),
])
def test_errors_name_file_line_and_key(text, where, words):
    with pytest.raises(SpecError) as exc:
        plan_from_text(text, "p.yaml")
    assert str(exc.value).startswith(where), str(exc.value)
    assert words in str(exc.value)


def test_missing_contract_file_is_named(tmp_path):
    f = tmp_path / "rollout.yaml"
    f.write_text(BASE.replace("shadow: {", "shadow: {contract: nope.yaml, "))
    with pytest.raises(SpecError, match=r"rollout.yaml:3: shadow.contract: contract file .*nope.yaml not found"):
        load_plan(f)
