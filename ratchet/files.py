"""Files shipped with the project (specs/, contracts/), found from any working directory, and
the tables people hand to commands (Parquet, CSV or JSON lines)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project_file(relative: str) -> str:
    """`relative` under the working directory if it is there, else under the project root."""
    for base in (Path.cwd(), ROOT):
        if (base / relative).exists():
            return str(base / relative)
    return relative


def read_table(path: str | Path):  # noqa: ANN201 - pandas DataFrame
    """A Parquet, CSV or JSON-lines table, by suffix (.csv; .jsonl/.ndjson; Parquet otherwise)."""
    import pandas as pd

    p = Path(path)
    if p.suffix == ".csv":
        return pd.read_csv(p)
    if p.suffix in (".jsonl", ".ndjson"):
        return pd.read_json(p, lines=True)
    return pd.read_parquet(p)
