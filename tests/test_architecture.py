"""The house plan in .importlinter holds, and a new import against it fails the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
CONTRACTS = ("Layers:", "The library never imports the application layer", "Only the registry adapter imports mlflow",
             "Only the Kubernetes backend imports kubernetes", "Only components/ and pipelines/ import kfp",
             "The stage model imports no third-party package")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([str(LINT), "--config", str(root / ".importlinter"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_contract_of_the_house_plan_is_kept():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in CONTRACTS:
        assert any(line.startswith(name) and " KEPT" in line
                   for line in proc.stdout.splitlines()), f"contract {name!r} not reported kept:\n{proc.stdout}"


@pytest.mark.parametrize("module, line, broken", [
    ("ratchet/data/_upward.py", "import ratchet.app.cli\n", "The library never imports the application layer"),
    ("ratchet/evaluate/_upward.py", "from ratchet.rollout import plan\n", "Layers:"),
    ("ratchet/serving/_mlflow.py", "import mlflow\n", "Only the registry adapter imports mlflow"),
    ("ratchet/rollout/_k8s.py", "import kubernetes\n", "Only the Kubernetes backend imports kubernetes"),
    ("ratchet/stages/_numpy.py", "import numpy\n", "The stage model imports no third-party package"),
])
def test_an_import_against_the_plan_breaks_it(tmp_path, module, line, broken):
    for pkg in ("ratchet", "components", "pipelines"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "*.json"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    (tmp_path / module).write_text(line)
    proc = _lint(tmp_path)
    assert proc.returncode != 0, proc.stdout
    out = " ".join(proc.stdout.split())
    assert any(l.startswith(broken) and " BROKEN" in l for l in proc.stdout.splitlines()), proc.stdout
    assert Path(module).with_suffix("").as_posix().replace("/", ".") in out
