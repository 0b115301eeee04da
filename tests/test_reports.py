"""Evidently reports: feature drift and candidate-vs-production on the worst slices."""

import numpy as np
import pandas as pd

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
