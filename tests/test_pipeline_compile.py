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
    root = spec["root"]["dag"]["tasks"]
    assert {"training-set", "train", "evaluate", "condition-1"} <= set(root)
    deploy = root["condition-1"]
    assert "pipelinechannel--exercise" in deploy["triggerPolicy"]["condition"]
    inner = spec["components"][deploy["componentRef"]["name"]]["dag"]["tasks"]
    assert "register" in inner, "registration runs unless this is an exercise run"
    gate = inner["condition-2"]
    assert "evaluate-Output" in gate["triggerPolicy"]["condition"]
    promote = spec["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert list(promote) == ["promote"], "only the alias step may depend on the gate"
