"""Every package ratchet imports is declared in pyproject.toml (deptry: missing, transitive
and unused dependencies), so a `pip install .` without the constraints file gets them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_import_is_a_declared_dependency() -> None:
    deptry = Path(sys.executable).with_name("deptry")
    r = subprocess.run([str(deptry), ".", "--no-ansi"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"deptry found dependency issues (declare them in pyproject.toml):\n{r.stdout}{r.stderr}"
    assert "Scanning" in r.stdout + r.stderr   # it really looked at the code
