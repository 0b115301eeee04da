"""The committed pipeline YAML is what the code compiles to, and names the project image."""

import yaml

from components.image import RATCHET_IMAGE
from pipelines.release import COMPILED, compile_pipeline


def test_compiling_again_gives_the_committed_file(tmp_path):
    fresh = compile_pipeline(tmp_path / "release.yaml")
    assert fresh.read_text() == COMPILED.read_text(), "run `python -m pipelines.release` and commit the YAML"


def test_every_component_runs_in_the_project_image():
    spec = yaml.safe_load(COMPILED.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 5
    assert {e["container"]["image"] for e in executors.values()} == {RATCHET_IMAGE}


def test_gate_decides_promotion_with_a_condition():
    spec = yaml.safe_load(COMPILED.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    cond = tasks["condition-1"]
    assert "evaluate-Output" in cond["triggerPolicy"]["condition"]
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["promote"], "only the alias step may depend on the gate"
    assert "promote" not in tasks and "register" in tasks, "registration always runs; promotion only if passed"
