"""Run the release pipeline on kfp's local SubprocessRunner (the embedded default).

Inputs are checked before anything starts (spec, contract, data path, registry state),
so bad input is refused in a second with a message naming it. After the run, the
summary comes from the report folder: release.json on success, failure.json naming the
step that broke otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ratchet.errors import RatchetError
from ratchet.app.steps.release import FAILURE_FILE, GATE_FILE, SUMMARY_FILE, check_release_preconditions
from ratchet.registry.store import absolute_tracking_uri, default_tracking_uri

EXIT_OK, EXIT_REJECTED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
SUMMARY_METRICS = ("auc", "average_precision", "recall_at_fpr", "block_rate", "rows")


class _ProgressLines(io.TextIOBase):
    """Passes on only ratchet's own progress lines from the components' chatty logs."""

    def __init__(self, sink: TextIO) -> None:
        self.sink, self.buffer = sink, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if "[ratchet]" in line:
                self.sink.write(line.strip() + "\n")
                self.sink.flush()
        return len(text)


@dataclass
class ReleaseOutcome:
    """What a release run ended with: a registered version and verdict, or the broken step."""

    report_dir: str
    summary: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.failure:
            return EXIT_BAD_INPUT if self.failure.get("user_error") else EXIT_INTERNAL
        if self.summary.get("exercise"):
            return EXIT_OK  # a rehearsal succeeds when every step ran; the verdict is in the summary
        return EXIT_OK if self.summary.get("passed") else EXIT_REJECTED

    def to_json(self) -> dict[str, Any]:
        if self.failure:
            return {"ok": False, "failed_step": self.failure.get("step"), "error": self.failure.get("message"),
                    "report_dir": self.report_dir}
        m = self.summary.get("metrics", {})
        return {
            "ok": True,
            "version": self.summary.get("version"),
            "verdict": "passed" if self.summary.get("passed") else "rejected",
            "exercise": bool(self.summary.get("exercise")),
            "reason": self.summary.get("reason"),
            "stage": self.summary.get("stage"),
            "baseline_version": self.summary.get("baseline_version"),
            "metrics": {k: m.get(k) for k in SUMMARY_METRICS},
            "baseline_metrics": {k: m.get(f"baseline_{k}") for k in SUMMARY_METRICS if f"baseline_{k}" in m},
            "windows": self.summary.get("windows"),
            "report_dir": self.report_dir,
            "seconds": round(self.seconds, 1),
        }


def init_local_run(kind: str, workdir: str) -> Path:
    """A fresh report folder `<workdir>/<kind>-<UTC time>` and kfp's local SubprocessRunner
    writing its outputs under it (the components run with this Python and environment)."""
    from kfp import local

    run_id = datetime.now(timezone.utc).strftime(f"{kind}-%Y%m%d-%H%M%S-%f")
    report_dir = (Path(workdir) / run_id).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(report_dir / "outputs"),
               raise_on_error=True)
    return report_dir


def preflight(data: str, spec_path: str, contract_path: str, tracking_uri: str, model_name: str,
              bootstrap: bool) -> tuple[str, str]:
    """Validate everything that can be validated before the pipeline starts; returns (spec, contract) text."""
    from ratchet.contracts import load_contract
    from ratchet.train.spec import load_spec

    from ratchet.data.dataset import preflight as data_preflight

    spec = load_spec(spec_path)
    load_contract(contract_path)
    if not Path(data).exists() and not glob.glob(data):
        raise RatchetError(f"--data {data}: no such file or directory; point it at Parquet transactions "
                           "(e.g. from `ratchet synth --out data.parquet`)")
    data_preflight(data, spec)
    check_release_preconditions(tracking_uri, model_name, bootstrap)
    return Path(spec_path).read_text(encoding="utf-8"), Path(contract_path).read_text(encoding="utf-8")


def run_release(data: str, spec_path: str, contract_path: str, *, tracking_uri: str | None = None,
                model_name: str = "fraud", as_of: str | None = None, bootstrap: bool = False,
                workdir: str = "runs", quiet: bool = False, exercise: bool = False) -> ReleaseOutcome:
    """Run one release on kfp's local runner and return its outcome (raises on bad input).

    exercise=True runs every step up to the gate and registers nothing."""
    uri = absolute_tracking_uri(tracking_uri) if tracking_uri else default_tracking_uri()
    spec_yaml, contract_yaml = preflight(data, spec_path, contract_path, uri, model_name, bootstrap)
    report_dir = init_local_run("release", workdir)

    from pipelines.release import release_pipeline

    started = time.perf_counter()
    verbose = os.environ.get("RATCHET_VERBOSE") == "1"
    sink: TextIO = open(os.devnull, "w") if quiet else (sys.stderr if verbose else _ProgressLines(sys.stderr))
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            release_pipeline(data_path=data if glob.has_magic(data) else str(Path(data).resolve()), spec_yaml=spec_yaml, spec_name=spec_path,
                             contract_yaml=contract_yaml, contract_name=contract_path, tracking_uri=uri,
                             report_dir=str(report_dir), model_name=model_name, as_of=as_of or "",
                             bootstrap=bootstrap, exercise=exercise)
    except RuntimeError as exc:
        failure_path = report_dir / FAILURE_FILE
        failure = json.loads(failure_path.read_text()) if failure_path.exists() else {
            "step": "pipeline", "message": str(exc), "user_error": False}
        return ReleaseOutcome(str(report_dir), failure=failure, seconds=time.perf_counter() - started)
    finally:
        if quiet:
            sink.close()
    if exercise:  # nothing registered: the gate's own record is the summary
        summary = {**json.loads((report_dir / GATE_FILE).read_text()), "version": None, "stage": None,
                   "exercise": True}
    else:
        summary = json.loads((report_dir / SUMMARY_FILE).read_text())
    return ReleaseOutcome(str(report_dir), summary=summary, seconds=time.perf_counter() - started)


def format_outcome(outcome: ReleaseOutcome, model_name: str) -> str:
    """A short human summary of one release."""
    j = outcome.to_json()
    if not j["ok"]:
        return f"release FAILED at step '{j['failed_step']}': {j['error']}\n  reports: {j['report_dir']}"
    m = j["metrics"]
    stage = f"@{j['stage']}" if j["stage"] else "no alias"
    head = (f"exercise run (nothing registered): gate {j['verdict']}" if j["exercise"]
            else f"{model_name} version {j['version']}: {j['verdict']} -> {stage}")
    lines = [f"{head}  ({j['reason']})",
             "  test metrics: " + ", ".join(f"{k}={_fmt(m.get(k))}" for k in SUMMARY_METRICS)]
    if j.get("baseline_metrics"):
        lines.append(f"  production v{j['baseline_version']}: " +
                     ", ".join(f"{k}={_fmt(v)}" for k, v in j["baseline_metrics"].items()))
    lines.append(f"  reports: {j['report_dir']}  ({j['seconds']}s)")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def run_release_cli(args: argparse.Namespace) -> int:
    """`ratchet pipeline run --local`: run, print text or JSON, exit 0/1/2/3."""
    from ratchet.files import project_file

    try:
        outcome = run_release(args.data, project_file(args.spec), project_file(args.contract), tracking_uri=args.tracking_uri,
                              model_name=args.model_name, as_of=args.as_of, bootstrap=args.bootstrap,
                              workdir=args.workdir, quiet=args.format == "json", exercise=args.exercise)
    except RatchetError as exc:
        if args.format == "json":  # scripts read stdout: tell them too
            print(json.dumps({"ok": False, "failed_step": "preflight", "error": str(exc)}, indent=2))
        raise
    if args.format == "json":
        print(json.dumps(outcome.to_json(), indent=2, default=str))
    else:
        print(format_outcome(outcome, args.model_name))
    return outcome.exit_code
