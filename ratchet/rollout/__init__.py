"""Rollout: the plan (YAML), the pure planner, guards, the controller and its backends.

Layer: top of the library, beside monitor. Reads the decision log through serving's one
schema, speaks the stage model's vocabulary (ratchet.stages), and is handed a Registry.

Modules: plan (contracts/rollout.yaml), state (fact, intent, observations: plain values),
planner (pure: intent + fact + observations -> one explained action; also the approval
decider), guards (confidence sequences on live decisions), actions (what the planner
returns), controller (read, plan, execute one step; crash-safe journal), observe (live
observations from the decision log), ramp_plot, backends/ (memory, local process,
Kubernetes).

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
