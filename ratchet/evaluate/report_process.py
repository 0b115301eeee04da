"""The Evidently reports and the worst-slices chart, built here or in a process of their own.

Importing Evidently and running its reports takes seconds (about 7 s of a 1M-row release's
evaluate step on the 2-core box) and decides nothing. The release's evaluate step therefore
starts `ReportProcess` first; the process imports Evidently and matplotlib while the step
reads and scores, gets the drift frames as soon as they are read and the slice frames and
the chart's rows once the verdict names the worst slices, and is waited for at the end.
`InProcess` builds the same reports with the same calls in the caller (tests, scripts).

Jobs go to the process as pickle files in its folder, named one per line on its stdin (a
pipe's buffer is small, and the process reads nothing while it imports). It writes the path
of each file made to `written.txt`; a failure is its exit status, with the traceback on
stderr, and the step fails with it as it would have in-process.
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the step imports this module before it needs pandas
    import numpy as np
    import pandas as pd

WRITTEN_FILE = "written.txt"


class ReportBuilder(Protocol):
    """Where the reports are built; each call may return before its files exist."""

    def drift(self, reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], out_html: Path) -> None: ...

    def slices(self, scored: pd.DataFrame, thresholds: dict[str, Any], masks: dict[str, np.ndarray],
               out_dir: Path) -> None: ...

    def chart(self, rows: list[Any], out_png: Path) -> None: ...

    def finish(self) -> list[Path]:
        """Wait for every report; the files made, in the order they were asked for."""
        ...


def _run(kind: str, args: tuple) -> list[Path]:
    from ratchet.evaluate.reports import drift_report, forest_plot, slice_comparison_reports

    if kind == "drift":
        return [drift_report(*args)]
    if kind == "slices":
        return slice_comparison_reports(*args)
    chart = forest_plot(*args)
    return [chart] if chart is not None else []


def _slim(scored: pd.DataFrame) -> pd.DataFrame:
    """The columns slice_comparison_reports reads (the rest of the scored table stays here)."""
    return scored[[c for c in ("label", "candidate_score", "baseline_score") if c in scored.columns]]


class InProcess:
    """Builds each report when asked, in this process."""

    def __init__(self) -> None:
        self._written: list[Path] = []

    def drift(self, reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], out_html: Path) -> None:
        self._written += _run("drift", (reference, current, columns, out_html))

    def slices(self, scored: pd.DataFrame, thresholds: dict[str, Any], masks: dict[str, np.ndarray],
               out_dir: Path) -> None:
        self._written += _run("slices", (scored, thresholds, masks, out_dir))

    def chart(self, rows: list[Any], out_png: Path) -> None:
        self._written += _run("chart", (rows, out_png))

    def finish(self) -> list[Path]:
        return list(self._written)


class ReportProcess:
    """Builds the reports in a child process (`python -m ratchet.evaluate.report_process`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / WRITTEN_FILE).write_text("")
        self._jobs = 0
        self._proc = subprocess.Popen([sys.executable, "-m", "ratchet.evaluate.report_process", str(self.folder)],
                                      stdin=subprocess.PIPE, text=True)

    def _submit(self, kind: str, args: tuple) -> None:
        path = self.folder / f"job-{self._jobs}.pkl"
        self._jobs += 1
        with path.open("wb") as f:
            pickle.dump((kind, args), f, protocol=pickle.HIGHEST_PROTOCOL)
        assert self._proc.stdin is not None
        self._proc.stdin.write(path.name + "\n")
        self._proc.stdin.flush()

    def drift(self, reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], out_html: Path) -> None:
        from ratchet.evaluate.reports import drift_inputs

        reference, current = drift_inputs(reference, current, columns)
        self._submit("drift", (reference, current, list(reference.columns), out_html))

    def slices(self, scored: pd.DataFrame, thresholds: dict[str, Any], masks: dict[str, np.ndarray],
               out_dir: Path) -> None:
        self._submit("slices", (_slim(scored), thresholds, masks, out_dir))

    def chart(self, rows: list[Any], out_png: Path) -> None:
        self._submit("chart", (rows, out_png))

    def finish(self) -> list[Path]:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        code = self._proc.wait()
        if code != 0:
            raise RuntimeError(f"the Evidently report process failed (exit status {code}); its error is printed "
                               f"above (jobs in {self.folder})")
        return [Path(line) for line in (self.folder / WRITTEN_FILE).read_text().splitlines() if line]

    def close(self) -> None:
        """Stop the process if it is still running (the step failed before finish)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> ReportProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def report_process() -> Iterator[ReportProcess]:
    """A ReportProcess in a temporary folder, stopped and removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="ratchet-reports-") as folder, ReportProcess(Path(folder)) as process:
        yield process


def main(folder: str) -> int:
    """The child: import the report libraries at once, then run each job named on stdin."""
    import warnings

    with warnings.catch_warnings():  # the imports the jobs need, while the parent is busy
        warnings.simplefilter("ignore")
        import evidently.presets  # noqa: F401
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401

        import ratchet.evaluate.reports  # noqa: F401
    out = Path(folder)
    for line in sys.stdin:
        job = out / line.strip()
        with job.open("rb") as f:
            kind, args = pickle.load(f)
        written = _run(kind, args)
        job.unlink()
        with (out / WRITTEN_FILE).open("a") as f:
            f.writelines(f"{p}\n" for p in written)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
