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
  Deployment carries the versions in its *pod template* (env or annotations such as
  ratchet.dev/production: "6", ratchet.dev/canary: "7", ratchet.dev/canary-weight: "25",
  ratchet.dev/shadow, ratchet.dev/cohort), so each change is a rollout and a revision.
  read(): parse the template; revision = metadata.annotations
  ["deployment.kubernetes.io/revision"]; applied = a *metadata* annotation
  (ratchet.dev/applied), which `kubectl rollout undo` does not restore; restored_revision
  = the revision of an older ReplicaSet whose pod-template-hash equals the current one
  (that is how an undo looks). apply(): one strategic-merge PATCH that sets the template
  annotations, metadata ratchet.dev/applied and kubernetes.io/change-cause together
  (atomic), with resourceVersion for optimistic concurrency; a 409 means someone else
  changed it: re-read and let the planner decide. Wait for nothing: the next pass reads
  the rollout status.
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
