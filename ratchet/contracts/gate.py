"""`ratchet gate`: judge a file of scored rows against a contract, independent of training.

    ratchet gate --scores scored.parquet --contract contracts/fraud.yaml --format json

Exit codes (an interface): 0 no blocking clause failed, 1 one did, 2 unusable input
(missing or mistyped column, empty file, unknown slice column, bad contract).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ratchet.contracts.evaluate import ScoresError, evaluate_contract
from ratchet.contracts.model import load_contract
from ratchet.contracts.verdict import Verdict

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read Parquet or CSV scored rows; unreadable or empty files are ScoresError."""
    p = Path(path)
    if not p.exists():
        raise ScoresError(f"{p}: file not found")
    try:
        if p.suffix.lower() in (".csv", ".txt") or p.name.lower().endswith(".csv.gz"):
            df = pd.read_csv(p)
        else:
            df = pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise ScoresError(f"{p}: the file is empty") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure is unusable input
        raise ScoresError(f"{p}: cannot read scores as {'CSV' if p.suffix.lower() == '.csv' else 'Parquet'} ({exc})") from None
    if len(df) == 0:
        raise ScoresError(f"{p}: the file has no rows")
    return df


def render(verdict: Verdict, fmt: str) -> str:
    """The verdict in one of text, json, markdown, html."""
    return {"text": verdict.to_text, "json": verdict.to_json, "markdown": verdict.to_markdown,
            "html": verdict.to_html}[fmt]()


def run_gate(scores_path: str | Path, contract_path: str | Path, fmt: str = "text") -> int:
    """Print the verdict in `fmt` and return the exit code (0 pass, 1 blocking failure).

    Unusable input raises a RatchetError (SpecError / ScoresError); the CLI prints it and
    exits 2.
    """
    contract = load_contract(contract_path)
    try:
        scored = read_scores(scores_path)
        verdict = evaluate_contract(contract, scored)
    except ScoresError as exc:
        raise ScoresError(f"{scores_path}: {exc}" if not str(exc).startswith(str(scores_path)) else str(exc)) from None
    out = render(verdict, fmt)
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return EXIT_PASS if verdict.passed else EXIT_FAIL
