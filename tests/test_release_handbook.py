"""The release pipeline end to end on third-party data: the Fraud Detection Handbook's
transactions (../shared/data) through specs/handbook.yaml's column mapping, on real Spark,
kfp's local runner and an MLflow store. A module of its own so that a parallel test run
(pytest -n 2) can run it beside tests/test_release_e2e.py's shared releases."""

from __future__ import annotations

import json
import re

import pytest

from ratchet.registry import Registry
from tests.conftest import HANDBOOK
from tests.test_release_e2e import ROOT, ratchet

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not HANDBOOK.exists(), reason="third-party dataset not present at ../shared/data")
def test_pipeline_on_third_party_data_through_a_column_mapping(tmp_path):
    """The Fraud Detection Handbook's data (other column names, no category/country/channel,
    no chargeback times) goes through specs/handbook.yaml's mapping to a registered version."""
    spec = (ROOT / "specs/handbook.yaml").read_text()
    windows = re.search(r"^windows:\n(  .*\n)+", spec, re.M)
    assert windows, "specs/handbook.yaml has a windows: block"
    spec = spec.replace(windows.group(0), "windows:\n  train_start: 2018-06-01\n  train_end: 2018-07-01\n"
                        "  test_start: 2018-07-08\n  test_end: 2018-07-25\n  as_of: 2018-08-01\n")
    (tmp_path / "handbook.yaml").write_text(spec)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = ratchet("pipeline", "run", "--local", "--data", str(HANDBOOK / "transactions-2018-0[567].parquet"),
                  "--spec", str(tmp_path / "handbook.yaml"), "--contract", str(ROOT / "contracts/handbook.yaml"),
                  "--tracking-uri", uri, "--workdir", str(tmp_path / "runs"), "--bootstrap", "--format", "json",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    j = json.loads(out.stdout)
    assert j["verdict"] == "passed" and j["stage"] == "production"
    assert j["metrics"]["auc"] > 0.8 and j["metrics"]["rows"] > 50_000
    tags = Registry(uri, "fraud").tags(j["version"])
    assert tags["data_path"].endswith("transactions-2018-0[567].parquet")


@pytest.mark.skipif(not HANDBOOK.exists(), reason="third-party dataset not present at ../shared/data")
def test_a_feature_needing_a_missing_column_is_named(tmp_path):
    """Asking for cross_border on data without country columns stops the run, naming both."""
    spec = (ROOT / "specs/handbook.yaml").read_text().replace("  - amount\n", "  - amount\n  - cross_border\n", 1)
    (tmp_path / "handbook.yaml").write_text(spec)
    out = ratchet("pipeline", "run", "--local", "--data", str(HANDBOOK / "transactions-2018-07.parquet"),
                  "--spec", str(tmp_path / "handbook.yaml"), "--contract", str(ROOT / "contracts/handbook.yaml"),
                  "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--workdir", str(tmp_path / "runs"),
                  "--bootstrap", "--format", "json", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    j = json.loads(out.stdout)
    assert j["failed_step"] == "preflight"
    err = j["error"]
    assert "cross_border" in err and "country" in err and "card_country" in err
    assert Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "fraud").versions() == []
