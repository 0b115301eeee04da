"""The stage model: one vocabulary, one wire format, pure deciders of a person's moves."""

import pytest

from ratchet.rollout.state import DeploymentState
from ratchet.serving.config import ENV, StageConfig, parse_cohort
from ratchet.stages import (
    LEFT_ROLLOUT, STAGE_ENV, STAGES, STATES, Stage, StageError, State, allowed, approval_key, approval_tag,
    approvals_from_tags, cohort_text, fingerprint, move_to_stage, parse_cohort_text, previous_production,
    rollback_change,
)


def test_names_are_the_mlflow_aliases_and_state_tags():
    assert STAGES == ("staging", "shadow", "canary", "production")
    assert set(STATES) == set(STAGES) | {"candidate", "rejected", "retired", "rolled_back"}
    assert State.ROLLED_BACK == "rolled_back" and f"{State.ROLLED_BACK}" == "rolled_back"
    assert LEFT_ROLLOUT == {"rolled_back", "retired", "rejected"}


def test_transitions_rejected_is_final_and_only_production_retires():
    assert not any(allowed(State.REJECTED, s) for s in STATES)
    assert allowed(State.PRODUCTION, State.RETIRED)
    assert not allowed(State.CANARY, State.RETIRED)
    assert allowed(State.RETIRED, State.PRODUCTION) and allowed(State.ROLLED_BACK, State.STAGING)
    assert not allowed("nonsense", State.STAGING)


def test_moving_production_retires_the_holder_and_is_idempotent():
    change = move_to_stage(2, "production", state="canary", holder=1, reason="ramp done")
    assert [(a.stage, a.version, a.remove) for a in change.aliases] == [("production", 2, False)]
    assert dict(change.tags) == {2: {"state": "production"}, 1: {"state": "retired"}}
    assert [(t.version, t.from_state, t.to_state, t.reason) for t in change.transitions] == [
        (2, "canary", "production", "ramp done"), (1, "production", "retired", "replaced by version 2")]
    assert move_to_stage(2, "production", state="production", holder=2, reason="again") is None
    staging = move_to_stage(3, "staging", state="candidate", holder=2, reason="gate passed")
    assert [t.version for t in staging.transitions] == [3]  # only production retires its holder


def test_refused_moves_name_the_problem():
    with pytest.raises(StageError, match=r"rejected by its gate \(auc too low\)"):
        move_to_stage(4, "staging", state="rejected", holder=None, reason="try", gate_reason="auc too low")
    with pytest.raises(StageError, match="unknown stage 'prod'; stages are staging, shadow"):
        move_to_stage(4, "prod", state="candidate", holder=None, reason="x")
    with pytest.raises(StageError, match="nothing to roll back: no version holds @canary or @shadow or @production"):
        rollback_change({}, {}, reason="x")
    with pytest.raises(StageError, match="no retired version to roll production v2 back to"):
        rollback_change({"production": 2}, {2: "production"}, reason="x")


def test_rollback_withdraws_the_latest_step_first():
    aliases = {"production": 1, "canary": 2, "shadow": 3}
    states = {1: "production", 2: "canary", 3: "shadow"}
    c = rollback_change(aliases, states, reason="too many blocks")
    assert c.summary == "@canary removed from v2 (rolled back: too many blocks)"
    assert [(a.stage, a.version, a.remove) for a in c.aliases] == [("canary", 2, True)]
    assert dict(c.tags) == {2: {"state": "rolled_back", "rollback.reason": "too many blocks"}}
    s = rollback_change(aliases, states, reason="x", stage="shadow")
    assert [(t.version, t.from_state, t.to_state) for t in s.transitions] == [(3, "shadow", "rolled_back")]


def test_production_rollback_brings_back_the_version_it_replaced():
    assert previous_production(3, {1: "2025-01-01T00:00:00+00:00", 2: "2025-02-01T00:00:00+00:00", 3: "z"}) == 2
    assert previous_production(3, {}) is None
    c = rollback_change({"production": 3}, {3: "production", 2: "retired"}, reason="bad week", previous=2)
    assert c.summary == "@production -> v2 (v3 rolled back: bad week)"
    assert [(t.version, t.from_state, t.to_state) for t in c.transitions] == [
        (2, "retired", "production"), (3, "production", "retired"), (3, "retired", "rolled_back")]
    assert c.tags[-1] == (3, {"state": "rolled_back", "rollback.reason": "bad week"})


def test_approval_keys_round_trip_through_version_tags():
    tag = approval_tag(2, "canary:3")
    assert tag == "approval.r2.canary-3" and ":" not in tag
    assert approvals_from_tags({tag: "{}", approval_tag(1, "shadow"): "{}", "state": "shadow"}) == {
        approval_key(2, "canary:3"), approval_key(1, "shadow")}


@pytest.mark.parametrize("st", [
    DeploymentState(production=6),
    DeploymentState(production=6, canary=7, canary_weight=25.0, shadow=8),
    DeploymentState(production=6, canary=7, canary_weight=0.5, cohort=(("channel", ("web",)), ("country", ("FR", "BE")))),
    DeploymentState(production=None, shadow=3, cohort=(("country", ("FR",)),)),  # no canary: no cohort
])
def test_controller_and_service_write_the_same_fingerprint(st):
    c = st.content()
    served = StageConfig(production=c.production, canary=c.canary, canary_weight=c.canary_weight, shadow=c.shadow,
                         cohort=c.cohort)
    assert served.fingerprint() == st.fingerprint() == fingerprint(c.production, c.canary, c.canary_weight,
                                                                   c.shadow, c.cohort)
    assert StageConfig(production="production").fingerprint() == "production=@production canary=none shadow=none"


def test_cohort_text_and_env_names_are_one_format():
    cohort = (("channel", ("web",)), ("country", ("FR", "BE")))
    assert cohort_text(cohort) == "channel=web;country=FR,BE"
    assert parse_cohort_text(cohort_text(cohort)) == cohort
    assert parse_cohort(cohort_text(cohort)) == cohort  # the service reads what backends write
    assert parse_cohort_text("") is None
    with pytest.raises(ValueError, match="expected KEY=V1,V2"):
        parse_cohort_text("country")
    assert all(ENV[k] == v for k, v in STAGE_ENV.items())
