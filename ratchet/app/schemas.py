"""JSON Schemas for editors, generated from the declared models of the YAML files users edit.

    python -m ratchet.app.schemas            # rewrites schemas/*.schema.json

One `<kind>.schema.json` per file kind: spec (specs/*.yaml), plan (contracts/rollout*.yaml),
policy (contracts/thresholds.yaml), monitor (contracts/monitor.yaml), contract
(contracts/fraud.yaml) and exploration (contracts/exploration.yaml). The loaders validate with the models themselves
(ratchet.yamlfile.validate); these files only let an editor check a file as it is typed
(``# yaml-language-server: $schema=...``). The contract's schema is also written to
ratchet/contracts/schema.json, the path the contract files name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ratchet.contracts.model import SCHEMA_PATH, ContractFile
from ratchet.exploration.file import ExplorationFile
from ratchet.monitor.config import MonitorFile
from ratchet.rollout.plan import PlanFile
from ratchet.thresholds.policy import PolicyFile
from ratchet.train.spec import SpecFile

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
#: File kind -> the model of that file.
MODELS: dict[str, Any] = {"spec": SpecFile, "plan": PlanFile, "policy": PolicyFile, "monitor": MonitorFile,
                          "contract": ContractFile, "exploration": ExplorationFile}


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one file kind."""
    body = MODELS[kind].model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://ratchet.dev/schemas/{kind}.schema.json", **body}


def schema_text(kind: str) -> str:
    return json.dumps(schema(kind), indent=2, sort_keys=False) + "\n"


def write_schemas(out_dir: str | Path = SCHEMA_DIR) -> list[Path]:
    """Write `<kind>.schema.json` for every file kind into out_dir; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in MODELS:
        p = out / f"{kind}.schema.json"
        p.write_text(schema_text(kind), encoding="utf-8")
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for p in write_schemas(args[0] if args else SCHEMA_DIR):
        print(p)
    SCHEMA_PATH.write_text(schema_text("contract"), encoding="utf-8")
    print(SCHEMA_PATH)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
