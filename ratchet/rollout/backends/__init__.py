"""Backends: where the decision service runs. The controller only reads and applies
DeploymentStates through this protocol; only modules in this package may import
`kubernetes` (or talk HTTP to a decision service).

Contract every backend must honour (the controller's crash safety depends on it):

read() -> DeploymentState
    What runs now: production, canary, canary_weight, shadow, cohort; `revision` (an
    opaque counter that changes with every change of what runs); `applied`, the
    fingerprint (DeploymentState.fingerprint()) of the last target ratchet applied,
    stored *outside* what a rollback restores; and `restored_revision` when the backend
    recognises that what runs is an older revision brought back (an undo).

apply(target, change_cause) -> DeploymentState
    Make `target.content()` run and record `applied = target.fingerprint()` in ONE
    atomic step, then return read(). Idempotent: applying what already runs creates no
    new revision (only `applied` is refreshed). `change_cause` is the human text of the
    change (kubectl's kubernetes.io/change-cause annotation).

Backends still to write (they plug into the same Controller):

* local process (ratchet/rollout/backends/local.py): the decision service started by
  `ratchet serve` exposes a hot-reload endpoint. read() GETs its routing state (the
  versions loaded, canary weight and cohort) plus a small state file next to the
  MLflow store holding `revision`, `applied` and the revision history; apply() POSTs
  the target (the service loads the versions from the registry and swaps atomically)
  and then rewrites the state file (write to a temp file, os.replace). A service
  restarted from an older config shows up as fingerprint != applied.

* Kubernetes (ratchet/rollout/backends/kubernetes.py): the decision service's
  Deployment carries the versions in its *pod template*: the decision container's env
  (RATCHET_PRODUCTION_VERSION, RATCHET_CANARY_VERSION, RATCHET_CANARY_WEIGHT,
  RATCHET_SHADOW_VERSION, RATCHET_CANARY_COHORT) mirrored as JSON in the template
  annotation ratchet.io/stages, so each change is a rollout and a revision.
  read(): parse the template; revision = metadata.annotations
  ["deployment.kubernetes.io/revision"]; applied = the metadata annotation
  ratchet.io/applied checked against a digest in the metadata *label* of the same name:
  `kubectl rollout undo` restores the old ReplicaSet's annotations but leaves labels, so
  a mismatch reveals the undo; restored_revision = the revision of the ReplicaSet whose
  template matches what runs. apply(): one strategic-merge PATCH that sets the template,
  the applied annotation and label and kubernetes.io/change-cause together (atomic), with
  resourceVersion for optimistic concurrency; a 409 from an unrelated write is retried,
  one from an outside change of the stages stops and lets the planner decide.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ratchet.rollout.state import DeploymentState


@runtime_checkable
class Backend(Protocol):
    """Reads and changes what the decision service runs."""

    def read(self) -> DeploymentState: ...

    def apply(self, target: DeploymentState, change_cause: str) -> DeploymentState: ...


from ratchet.rollout.backends.memory import MemoryBackend  # noqa: E402

__all__ = ["Backend", "MemoryBackend"]
