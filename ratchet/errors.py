"""Errors every part of ratchet raises: each message says what is wrong and what to change."""

from __future__ import annotations


class RatchetError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a traceback."""


class SpecError(RatchetError):
    """A training spec, contract or plan file is unreadable or invalid."""


class DataCheckError(RatchetError):
    """A data check failed; the message names the check, the observed value and the bound."""

    def __init__(self, check: str, observed: object, bound: str, hint: str = "") -> None:
        self.check, self.observed, self.bound = check, observed, bound
        msg = f"data check '{check}' failed: observed {observed}, expected {bound}"
        super().__init__(msg + (f". {hint}" if hint else ""))


class MissingColumnError(RatchetError):
    """Something needs a column the dataset does not have."""


class RegistryError(RatchetError):
    """The model registry refused or lacks something (unknown version, no production model)."""
