"""Evidently reports: feature drift and candidate-vs-production on the worst slices."""

import os

import numpy as np
import pandas as pd
import pytest

from ratchet.contracts import evaluate_contract, load_contract
from ratchet.evaluate.scoring import write_reports
from tests.test_contracts import FRAUD, scenario


def test_reports_cover_drift_and_the_worst_slice(tmp_path):
    scored = scenario("blocks_category", n=60_000)
    contract = load_contract(FRAUD)
    verdict = evaluate_contract(contract, scored)
    assert verdict.worst_slices(1) == [("merchant_category", "merchant_category=podcasts")]
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"amount": rng.exponential(80, 5000), "hour": rng.integers(0, 24, 5000)})
    test = pd.DataFrame({"amount": rng.exponential(160, 5000), "hour": rng.integers(0, 24, 5000)})
    written = write_reports(scored, verdict, contract, (train, test), ["amount", "hour"], tmp_path)
    names = sorted(p.name for p in written)
    assert "worst-slices.png" in names
    png = tmp_path / "worst-slices.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = verdict.to_html({"Worst slices": png.read_bytes()})
    assert "data:image/png;base64," in html and "<h2>Worst slices</h2>" in html
    assert "data-drift.html" in names
    assert "slice-merchant_category_podcasts.html" in names
    for p in (p for p in written if p.suffix == ".html"):
        text = p.read_text()
        assert "<html" in text[:200] and len(text) > 10_000


def test_no_comparison_without_a_baseline(tmp_path):
    scored = scenario("better", n=20_000).drop(columns=["baseline_score"])
    contract = load_contract(FRAUD)
    verdict = evaluate_contract(contract, scored)
    assert write_reports(scored, verdict, contract, None, [], tmp_path) == []


def _reports(builder, scored, verdict, contract, train, test, folder):
    from ratchet.evaluate.scoring import DRIFT_REPORT, verdict_reports

    builder.drift(train, test, ["amount", "hour"], folder / DRIFT_REPORT)
    verdict_reports(builder, scored, verdict, contract, folder)
    return builder.finish()


def test_the_report_process_builds_what_the_step_would_build_in_process(tmp_path):
    """The release's evaluate step hands the reports to a child process: same files, the same
    chart to the byte, the same sampled drift input, and the slices' one-outcome notes."""
    from ratchet.evaluate.report_process import InProcess, report_process

    scored = scenario("blocks_category", n=60_000)
    contract = load_contract(FRAUD)
    verdict = evaluate_contract(contract, scored)
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"amount": rng.exponential(80, 80_000), "hour": rng.integers(0, 24, 80_000)})
    test = pd.DataFrame({"amount": rng.exponential(160, 5000), "hour": rng.integers(0, 24, 5000)})
    here = _reports(InProcess(), scored, verdict, contract, train, test, tmp_path / "here")
    with report_process() as process:
        pid = process._proc.pid
        there = _reports(process, scored, verdict, contract, train, test, tmp_path / "there")
    assert pid != os.getpid()
    assert [p.name for p in there] == [p.name for p in here]
    assert {"data-drift.html", "worst-slices.png", "slice-merchant_category_podcasts.html"} <= {p.name for p in there}
    assert all(p.parent == tmp_path / "there" for p in there)
    assert (tmp_path / "there/worst-slices.png").read_bytes() == (tmp_path / "here/worst-slices.png").read_bytes()
    for name in ("data-drift.html", "slice-merchant_category_podcasts.html"):
        assert len((tmp_path / "there" / name).read_text()) > 10_000


def test_a_failed_report_fails_the_step_with_the_process_status(tmp_path):
    from ratchet.evaluate.report_process import report_process

    frame = pd.DataFrame({"amount": [1.0, 2.0]})
    with pytest.raises(RuntimeError, match="report process failed"):
        with report_process() as process:
            # not a folder it can write: the drift report's HTML cannot be saved
            (tmp_path / "file").write_text("")
            process.drift(frame, frame, ["amount"], tmp_path / "file" / "drift.html")
            process.finish()


def test_a_step_that_fails_first_leaves_no_report_process_behind(tmp_path):
    from ratchet.evaluate.report_process import report_process

    with pytest.raises(ValueError):
        with report_process() as process:
            child = process._proc
            raise ValueError("the step failed before its reports")
    assert child.poll() is not None
