"""The slice engine agrees with scikit-learn computed slice by slice, degenerate slices included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from ratchet.evaluate.metrics import slice_metrics, threshold_for_block_rate
from ratchet.evaluate.slices import OVERALL, SliceFamily, assign


def _data(n: int, ties: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "country": rng.choice(["DE", "FR", "US", "BR"], n).astype(object),
        "merchant_category": rng.choice(["food", "travel", "games"], n).astype(object),
        "amount": rng.exponential(60, n),
    })
    y = (rng.random(n) < 0.08).astype(int)
    s0 = rng.random(n) + 0.4 * y
    s1 = rng.random(n) + 0.6 * y
    if ties:
        s0, s1 = np.round(s0, 1), np.round(s1, 2)
    # degenerate slices: no positives, no negatives, a single row
    df.loc[:4, "country"] = "ZZ_nopos"
    y[:5] = 0
    df.loc[5:9, "country"] = "ZZ_noneg"
    y[5:10] = 1
    df.loc[10, "country"] = "ZZ_one"
    df["label"], df["s0"], df["s1"] = y, s0, s1
    df["t1"] = np.where(df["merchant_category"] == "games", 0.9, 0.7)  # per-row thresholds
    return df


FAMILIES = [OVERALL, SliceFamily("country", ("country",)),
            SliceFamily("cross", ("country", "merchant_category")),
            SliceFamily("band", ("amount",), bands=(20.0, 100.0))]


def _mask(df: pd.DataFrame, fam: SliceFamily, label: str) -> np.ndarray:
    if fam.is_overall:
        return np.ones(len(df), dtype=bool)
    if fam.bands is not None:
        lo, hi = label.split("=", 1)[1].strip("[()").split(", ")
        x = df["amount"].to_numpy()
        return (x >= float(lo)) & (x < float(hi.rstrip(")")))
    m = np.ones(len(df), dtype=bool)
    for part in label.split(", "):
        col, val = part.split("=", 1)
        m &= (df[col] == val).to_numpy()
    return m


@pytest.mark.parametrize("ties", [False, True])
def test_every_slice_matches_sklearn(ties: bool) -> None:
    df = _data(6000, ties, seed=1 + ties)
    codes = [assign(df, f) for f in FAMILIES]
    tab = slice_metrics(df["label"].to_numpy(), {"baseline": df["s0"].to_numpy(), "candidate": df["s1"].to_numpy()},
                        {"baseline": 0.8, "candidate": df["t1"].to_numpy()}, codes, reference_fpr="baseline")
    assert len(tab) == sum(c.n_slices for c in codes) and len(tab) > 20
    checked = 0
    for _, r in tab.iterrows():
        fam = next(f for f in FAMILIES if f.name == r["family"])
        m = _mask(df, fam, r["slice"])
        y, s0, s1, t1 = df["label"][m].to_numpy(), df["s0"][m].to_numpy(), df["s1"][m].to_numpy(), df["t1"][m].to_numpy()
        assert r["rows"] == m.sum() and r["positives"] == y.sum()
        tn, fp, fn, tp = confusion_matrix(y, (s1 >= t1).astype(int), labels=[0, 1]).ravel()
        assert (r["candidate_tp"], r["candidate_fp"]) == (tp, fp)
        assert r["candidate_blocked"] == tp + fp
        assert r["baseline_blocked"] == (s0 >= 0.8).sum()
        if y.min() == y.max():  # degenerate: undefined, never a number
            assert np.isnan(r["candidate_auc"]) and np.isnan(r["baseline_auc"])
            assert np.isnan(r["candidate_recall_at_fpr"])
            if y.sum() == 0:
                assert np.isnan(r["candidate_average_precision"]) and np.isnan(r["candidate_recall"])
            else:
                assert np.isnan(r["candidate_fpr"])
            continue
        for name, s in (("baseline", s0), ("candidate", s1)):
            assert r[f"{name}_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert r[f"{name}_average_precision"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
            fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
            ref = (s0[y == 0] >= 0.8).mean()
            assert r["reference_fpr"] == pytest.approx(ref)
            assert r[f"{name}_recall_at_fpr"] == pytest.approx(tpr[fpr <= ref].max(), abs=1e-12)
        checked += 1
    assert checked > 15
    degenerate = tab.set_index("slice").loc[["country=ZZ_nopos", "country=ZZ_noneg", "country=ZZ_one"]]
    assert list(degenerate["rows"]) == [5, 5, 1]


def test_fixed_reference_fpr_and_no_ranking() -> None:
    df = _data(3000, ties=True, seed=5)
    codes = [assign(df, OVERALL)]
    tab = slice_metrics(df["label"].to_numpy(), {"candidate": df["s1"].to_numpy()}, {"candidate": 0.5}, codes,
                        reference_fpr=0.01)
    fpr, tpr, _ = roc_curve(df["label"], df["s1"], drop_intermediate=False)
    assert tab["candidate_recall_at_fpr"].iat[0] == pytest.approx(tpr[fpr <= 0.01].max())
    quick = slice_metrics(df["label"].to_numpy(), {"candidate": df["s1"].to_numpy()}, {"candidate": 0.5}, codes,
                          reference_fpr=0.01, ranking=False)
    assert np.isnan(quick["candidate_auc"].iat[0]) and quick["candidate_block_rate"].iat[0] == (df["s1"] >= 0.5).mean()


def test_assign_top_bands_cross_and_missing() -> None:
    df = pd.DataFrame({"merchant_id": [1, 1, 1, 2, 2, 3, 4, 4, 4, 4],
                       "amount": [5, 15, 25, 1000, 0, 9.99, 10, 50, 51, np.nan],
                       "country": ["A", "B", None, "A", "A", "B", "A", "A", "B", "B"],
                       "channel": ["web"] * 5 + ["pos"] * 5})
    top = assign(df, SliceFamily("m", ("merchant_id",), top=2))
    assert top.labels == ["merchant_id=1", "merchant_id=4"]
    assert list(top.codes) == [0, 0, 0, -1, -1, -1, 1, 1, 1, 1]
    bands = assign(df, SliceFamily("b", ("amount",), bands=(10, 50)))
    assert bands.labels == ["amount=(-inf, 10)", "amount=[10, 50)", "amount=[50, inf)"]
    assert list(bands.codes) == [0, 1, 1, 2, 0, 0, 1, 2, 2, -1]
    cross = assign(df, SliceFamily("x", ("country", "channel")))
    assert "country=(missing), channel=web" in cross.labels
    assert cross.labels[cross.codes[5]] == "country=B, channel=pos"
    cat = assign(df.astype({"country": "category"}), SliceFamily("c", ("country",)))
    assert cat.labels[cat.codes[0]] == "country=A" and cat.labels[cat.codes[2]] == "country=(missing)"


def test_threshold_for_block_rate() -> None:
    s = np.arange(1000) / 1000
    t = threshold_for_block_rate(s, 0.05)
    assert (s >= t).mean() == pytest.approx(0.05)
    assert threshold_for_block_rate(s, 0.0) == np.inf


def test_signed_scores_zero_ties_and_rows_in_no_slice_match_sklearn() -> None:
    """The radix sort's key mapping: negative scores, -0.0 tied with 0.0, huge and tiny magnitudes."""
    rng = np.random.default_rng(11)
    n = 5000
    y = (rng.random(n) < 0.1).astype(int)
    s = rng.choice([-1e300, -2.5, -1e-300, -0.0, 0.0, 1e-300, 3.0, 1e300], n) + 0 * y
    s = np.where(rng.random(n) < 0.5, s, rng.normal(size=n) + y)   # half tied, half continuous
    df = pd.DataFrame({"merchant_id": rng.integers(0, 50, n), "label": y})
    codes = [assign(df, OVERALL), assign(df, SliceFamily("top", ("merchant_id",), top=10))]
    assert (codes[1].codes == -1).any()
    tab = slice_metrics(y, {"m": s}, {"m": 0.0}, codes, reference_fpr=0.05)
    for _, r in tab.iterrows():
        m = np.ones(n, bool) if r["family"] == "overall" else (df["merchant_id"] == int(r["slice"].split("=")[1])).to_numpy()
        assert r["m_auc"] == pytest.approx(roc_auc_score(y[m], s[m]), abs=1e-12)
        assert r["m_average_precision"] == pytest.approx(average_precision_score(y[m], s[m]), abs=1e-12)
        fpr, tpr, _ = roc_curve(y[m], s[m], drop_intermediate=False)
        assert r["m_recall_at_fpr"] == pytest.approx(tpr[fpr <= 0.05].max(), abs=1e-12)
        assert r["m_blocked"] == (s[m] >= 0.0).sum()


def test_more_than_32k_slices_use_wide_codes() -> None:
    rng = np.random.default_rng(3)
    n = 40_000
    df = pd.DataFrame({"card": np.arange(n) // 1, "label": (rng.random(n) < 0.5).astype(int)})
    fam = assign(df, SliceFamily("card", ("card",)))
    assert fam.n_slices == n
    s = rng.random(n)
    tab = slice_metrics(df["label"].to_numpy(), {"m": s}, {"m": 0.5}, [assign(df, OVERALL), fam], reference_fpr=0.1)
    assert len(tab) == n + 1 and (tab["rows"].iloc[1:] == 1).all()
    assert tab["m_auc"].iloc[1:].isna().all()          # one row: never both classes
    assert tab["m_auc"].iat[0] == pytest.approx(roc_auc_score(df["label"], s), abs=1e-12)
    assert (tab["m_blocked"].iloc[1:].to_numpy() == (s >= 0.5)).all()
