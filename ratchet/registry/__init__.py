"""The model registry: the only code that talks to MLflow.

Aliases are the stages (`staging`, `shadow`, `canary`, `production`); a version's tags
carry its state, verdict, data snapshot, spec hash and code revision, and every
transition is appended to its history.
"""

from ratchet.registry.store import (
    ReleaseRecord,
    Registry,
    default_tracking_uri,
)

__all__ = ["ReleaseRecord", "Registry", "default_tracking_uri"]
