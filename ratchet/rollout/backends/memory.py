"""An in-memory backend for tests and dry runs; keeps a revision history like a Deployment.

    >>> b = MemoryBackend()
    >>> b.apply(DeploymentState(production=1), "first").revision
    '1'
    >>> b.undo()          # what `kubectl rollout undo` does: the previous template comes back
"""

from __future__ import annotations

from dataclasses import replace

from ratchet.rollout.state import DeploymentState


class MemoryBackend:
    """Revisions are contents; `applied` lives outside them, as a Deployment's metadata annotation would."""

    def __init__(self, initial: DeploymentState | None = None) -> None:
        self.revisions: list[tuple[DeploymentState, str]] = []  # (content, change cause), revision = index + 1
        self.current: int = 0          # revision number running (0: nothing yet)
        self.applied: str | None = None
        self.restored: str | None = None
        self.applies = 0               # calls to apply (for tests)
        if initial is not None:
            self.revisions.append((initial.content(), "initial"))
            self.current = 1

    def read(self) -> DeploymentState:
        content = self.revisions[self.current - 1][0] if self.current else DeploymentState()
        return replace(content, revision=str(self.current), applied=self.applied, restored_revision=self.restored)

    def apply(self, target: DeploymentState, change_cause: str) -> DeploymentState:
        self.applies += 1
        content = target.content()
        running = self.read().content()
        if content != running or not self.current:
            self.revisions.append((content, change_cause))
            self.current = len(self.revisions)
            self.restored = None
        self.applied = content.fingerprint()
        return self.read()

    # ---- outside changes, as a person would make them -----------------------------------
    def undo(self, to_revision: int | None = None) -> DeploymentState:
        """`kubectl rollout undo [--to-revision N]`: bring an older template back as a new revision."""
        n = to_revision if to_revision is not None else self.current - 1
        if not 1 <= n <= len(self.revisions) or n == self.current:
            raise ValueError(f"no revision {n} to undo to (have 1..{len(self.revisions)}, running {self.current})")
        content = self.revisions[n - 1][0]
        self.revisions.append((content, f"kubectl rollout undo --to-revision={n}"))
        self.current = len(self.revisions)
        self.restored = str(n)
        return self.read()

    def edit(self, content: DeploymentState, cause: str = "kubectl edit") -> DeploymentState:
        """Any other outside change (kubectl edit / apply of an old manifest)."""
        self.revisions.append((content.content(), cause))
        self.current = len(self.revisions)
        self.restored = None
        return self.read()

    def history(self) -> list[str]:
        """`kubectl rollout history`: one line per revision."""
        return [f"{i + 1}\t{c.fingerprint()}\t{cause}" for i, (c, cause) in enumerate(self.revisions)]
