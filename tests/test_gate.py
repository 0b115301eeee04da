"""`ratchet gate`: exit codes 0/1/2, every output format, one real subprocess run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ratchet.app.cli import main
from tests.test_contracts import FRAUD, ROOT, scenario


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gate")
    out = {}
    good = scenario("better", n=60_000)
    out["good"] = d / "good.parquet"
    good.to_parquet(out["good"])
    out["bad"] = d / "bad.csv"
    scenario("blocks_category", n=120_000).to_csv(out["bad"], index=False)
    out["nolabel"] = d / "nolabel.parquet"
    good.drop(columns=["label"]).to_parquet(out["nolabel"])
    out["noslice"] = d / "noslice.parquet"
    good.drop(columns=["country"]).to_parquet(out["noslice"])
    out["empty"] = d / "empty.csv"
    out["empty"].write_text("")
    out["header_only"] = d / "header.csv"
    good.iloc[:0].to_csv(out["header_only"], index=False)
    out["strings"] = d / "strings.csv"
    good.head(500).assign(candidate_score="x").to_csv(out["strings"], index=False)
    out["badcontract"] = d / "bad.yaml"
    out["badcontract"].write_text(FRAUD.read_text().replace("metric: fpr\n", "metric: fpr_typo\n", 1))
    return out


def _gate(capsys: pytest.CaptureFixture[str], scores: Path, contract: Path = FRAUD, fmt: str = "text") -> tuple[int, str, str]:
    rc = main(["gate", "--scores", str(scores), "--contract", str(contract), "--format", fmt])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_pass_is_0_and_json_has_the_documented_shape(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _gate(capsys, files["good"], fmt="json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["passed"] is True and doc["clauses"]
    keys = {"name", "severity", "status", "slice", "baseline", "candidate", "difference", "interval", "support", "source"}
    assert all(keys <= set(c) for c in doc["clauses"])
    assert {c["status"] for c in doc["clauses"]} <= {"pass", "fail", "inconclusive", "not_judged"}
    assert isinstance(doc["open_questions"], list) and "Holm" in doc["method"]["fail"]


def test_blocking_failure_is_1_in_every_format(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _gate(capsys, files["bad"])
    assert rc == 1
    first = out.splitlines()[0]
    assert first.startswith("FAILED") and "merchant_category=podcasts" in out
    rc, out, _ = _gate(capsys, files["bad"], fmt="json")
    doc = json.loads(out)
    assert rc == 1 and doc["passed"] is False
    assert doc["clauses"][0]["status"] == "fail" and doc["clauses"][0]["slice"] == "merchant_category=podcasts"
    assert doc["clauses"][0]["source"].startswith(str(FRAUD))
    rc, out, _ = _gate(capsys, files["bad"], fmt="markdown")
    assert rc == 1 and "| `category_approval_rate` | block | merchant_category=podcasts |" in out
    rc, out, _ = _gate(capsys, files["bad"], fmt="html")
    assert rc == 1 and out.lstrip().startswith("<!doctype html>") and "Worst offenders" in out
    assert out.index("merchant_category=podcasts") < out.index("<h2>Clauses</h2>")


@pytest.mark.parametrize("case,words", [
    ("nolabel", "missing column 'label'"),
    ("noslice", "needs column 'country'"),
    ("empty", "empty"),
    ("header_only", "no rows"),
    ("strings", "must be numeric"),
])
def test_unusable_input_is_2_with_a_message(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                             case: str, words: str) -> None:
    rc, out, err = _gate(capsys, files[case])
    assert rc == 2 and out == ""
    assert words in err and str(files[case]) in err


def test_bad_contract_is_2_with_file_and_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _gate(capsys, files["good"], contract=files["badcontract"])
    assert rc == 2
    assert f"{files['badcontract']}:" in err and "fpr_typo" in err
    rc, _, err = _gate(capsys, files["good"], contract=files["good"].parent / "missing.yaml")
    assert rc == 2 and "file not found" in err


def test_subprocess_exit_code(files: dict[str, Path]) -> None:
    proc = subprocess.run([sys.executable, "-m", "ratchet.app.cli", "gate", "--scores", str(files["bad"]),
                           "--contract", str(FRAUD), "--format", "json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["passed"] is False
