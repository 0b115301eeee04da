"""The stage model: the bottom layer every other layer uses. Pure, standard library only.

    model.py   stage names (the MLflow aliases), version states, the allowed transitions,
               the approval keys, and the pure deciders of a person's moves (promote,
               rollback, approve): each returns an explained StageChange that the registry
               adapter applies
    wire.py    the one wire format of "what runs where" between the controller and the
               decision service: the fingerprint text, the env names, the cohort text

    >>> from ratchet.stages import Stage, State, fingerprint
    >>> fingerprint(6, 7, 25.0, None, None)
    'production=v6 canary=v7@25% shadow=none'
"""

from ratchet.stages.model import (
    LEFT_ROLLOUT, STAGES, STATES, AliasMove, Stage, StageChange, StageError, State, Transition,
    allowed, approval_key, approval_tag, approvals_from_tags, check_stage, move_to_stage, previous_production,
    rollback_change,
)
from ratchet.stages.wire import STAGE_ENV, Cohort, VersionRef, cohort_text, fingerprint, parse_cohort_text

__all__ = [
    "LEFT_ROLLOUT", "STAGES", "STAGE_ENV", "STATES", "AliasMove", "Cohort", "Stage",
    "StageChange", "StageError", "State", "Transition", "VersionRef", "allowed", "approval_key", "approval_tag",
    "approvals_from_tags", "check_stage", "cohort_text", "fingerprint", "move_to_stage", "parse_cohort_text", "previous_production", "rollback_change",
]
