"""The editors' JSON Schemas are generated from the file models, committed, and accept the shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from ratchet.app.schemas import MODELS, write_schemas
from ratchet.contracts.model import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[1]
#: Every example file users edit, by kind (the manifests carry copies of some).
EXAMPLES: dict[str, list[str]] = {
    "spec": ["specs/fraud.yaml", "specs/handbook.yaml"],
    "plan": ["contracts/rollout.yaml", "contracts/rollout-demo.yaml", "manifests/base/config/rollout.yaml"],
    "policy": ["contracts/thresholds.yaml"],
    "monitor": ["contracts/monitor.yaml"],
    "contract": ["contracts/fraud.yaml", "contracts/handbook.yaml", "manifests/base/config/fraud.yaml"],
    "exploration": ["contracts/exploration.yaml"],
}


def test_committed_schemas_are_generated_from_the_models(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{k}.schema.json" for k in MODELS)
    for p in paths:
        committed = ROOT / "schemas" / p.name
        assert committed.read_text() == p.read_text(), f"{committed} is stale: run python -m ratchet.app.schemas"
        jsonschema.Draft202012Validator.check_schema(json.loads(p.read_text()))
    # the path the contract files name for their editors
    assert SCHEMA_PATH.read_text() == (tmp_path / "contract.schema.json").read_text()


def test_every_example_file_is_listed() -> None:
    listed = {f for files in EXAMPLES.values() for f in files}
    found = {str(p.relative_to(ROOT)) for d in ("specs", "contracts", "manifests/base/config")
             for p in (ROOT / d).glob("*.yaml")}
    assert found == listed


@pytest.mark.parametrize("kind, path", [(k, f) for k, files in EXAMPLES.items() for f in files])
def test_example_files_validate_against_their_schema(kind: str, path: str) -> None:
    schema = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text())
    # as an editor sees it: JSON values (an unquoted YAML date is a string there)
    data = json.loads(json.dumps(yaml.safe_load((ROOT / path).read_text()), default=str))
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    assert not errors, errors
