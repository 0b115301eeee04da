"""Files shipped with the project (specs/, contracts/), found from any working directory."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project_file(relative: str) -> str:
    """`relative` under the working directory if it is there, else under the project root."""
    for base in (Path.cwd(), ROOT):
        if (base / relative).exists():
            return str(base / relative)
    return relative
