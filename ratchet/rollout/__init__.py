"""Rollout: the plan (YAML), the pure planner, guards, the controller and its backends.

    >>> from ratchet.rollout import Controller, MemoryBackend, load_plan
    >>> Controller(registry, MemoryBackend(), load_plan("contracts/rollout.yaml"), observe).run_once()
"""

from ratchet.rollout.actions import (
    Action, AdoptOutsideChange, Advance, AwaitApproval, Deploy, Promote, Rollback, StartCanary, StartShadow, Wait,
)
from ratchet.rollout.backends import Backend, MemoryBackend
from ratchet.rollout.controller import Controller, read_intent
from ratchet.rollout.plan import RolloutPlan, load_plan, plan_from_text
from ratchet.rollout.planner import plan_next
from ratchet.rollout.state import DeploymentState, Intent, Observations, Progress, VersionInfo

__all__ = [
    "Action", "AdoptOutsideChange", "Advance", "AwaitApproval", "Backend", "Controller", "Deploy",
    "DeploymentState", "Intent", "MemoryBackend", "Observations", "Progress", "Promote", "Rollback",
    "RolloutPlan", "StartCanary", "StartShadow", "VersionInfo", "Wait", "load_plan", "plan_from_text",
    "plan_next", "read_intent",
]
