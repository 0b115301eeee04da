"""The monitoring pipeline: drift, shadow estimates (with realised figures once labels land)
and the staleness backtest, on a schedule like the release pipeline.

Run it locally with `ratchet monitor run --local` (kfp's SubprocessRunner), or compile
it (`python -m pipelines.monitor` writes pipelines/monitor.yaml) and schedule that on
Kubeflow with the same submit/schedule code as the release pipeline. Steps are
independent: one broken step does not hide the others' results, and the run summary
says which one broke and why.
"""


import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from kfp import compiler, dsl

from components.monitor import drift, shadow_review, staleness

COMPILED = Path(__file__).with_name("monitor.yaml")
STEP_FILES = {"drift": "drift/drift.json", "shadow_review": "estimate/estimates.json",
              "staleness": "staleness/staleness.json"}


@dsl.pipeline(name="ratchet-monitor", description="Drift vs the training set, label-free shadow estimates, staleness backtest.")
def monitor_pipeline(current: str, config_yaml: str, report_dir: str, reference: str = "", tracking_uri: str = "",
                     model_name: str = "fraud", decision_log: str = "", labels: str = "",
                     estimate_reference: str = "", data: str = "", spec_yaml: str = ""):
    d = drift(current=current, reference=reference, config_yaml=config_yaml, tracking_uri=tracking_uri,
              model_name=model_name, report_dir=report_dir)
    d.set_display_name("drift (Evidently)")
    sr = shadow_review(decision_log=decision_log, labels=labels, reference=estimate_reference, config_yaml=config_yaml,
                       tracking_uri=tracking_uri, model_name=model_name, report_dir=report_dir)
    sr.set_display_name("shadow review: label-free estimates")
    st = staleness(data=data, spec_yaml=spec_yaml, config_yaml=config_yaml, tracking_uri=tracking_uri,
                   model_name=model_name, report_dir=report_dir)
    st.set_display_name("staleness backtest")
    for task in (d, sr, st):
        task.set_caching_options(False)


def compile_pipeline(path: Path = COMPILED) -> Path:
    compiler.Compiler().compile(monitor_pipeline, str(path))
    return path


def _abs(p: str | None) -> str:
    return str(Path(p).resolve()) if p else ""


def run_monitor(*, current: str, config: str = "contracts/monitor.yaml", reference: str = "", data: str = "",
                decision_log: str = "", labels: str = "", estimate_reference: str = "", spec: str = "",
                tracking_uri: str | None = None, model_name: str = "fraud", workdir: str = "runs",
                quiet: bool = False) -> dict[str, Any]:
    """Run the monitoring pipeline on kfp's local runner; the summary of every step."""
    from ratchet.monitor.config import load_monitor_config
    from ratchet.registry.store import absolute_tracking_uri
    from ratchet.app.steps.release import FAILURE_FILE

    load_monitor_config(config)  # bad config: refused before anything starts, with file:line
    config_yaml = Path(config).read_text(encoding="utf-8")
    spec_yaml = Path(spec).read_text(encoding="utf-8") if spec else ""
    from pipelines.local import init_local_run

    report_dir = init_local_run("monitor", workdir)
    started = time.perf_counter()
    failure = None
    sink = open(os.devnull, "w") if quiet else sys.stderr
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monitor_pipeline(current=_abs(current), config_yaml=config_yaml, report_dir=str(report_dir),
                             reference=_abs(reference), tracking_uri=absolute_tracking_uri(tracking_uri) if tracking_uri else "",
                             model_name=model_name, decision_log=_abs(decision_log), labels=_abs(labels),
                             estimate_reference=_abs(estimate_reference), data=_abs(data), spec_yaml=spec_yaml)
    except RuntimeError as exc:
        path = report_dir / FAILURE_FILE
        failure = json.loads(path.read_text()) if path.exists() else {"step": "pipeline", "message": str(exc),
                                                                       "user_error": False}
    finally:
        if quiet:
            sink.close()
    steps = {}
    for step, rel in STEP_FILES.items():
        p = report_dir / rel
        if p.exists():
            s = json.loads(p.read_text())
            steps[step] = {k: s.get(k) for k in ("alert", "event", "cadence", "worst", "coverage", "html") if k in s}
    return {"ok": failure is None, "alert": any(s.get("alert") for s in steps.values()), "steps": steps,
            "failure": failure, "report_dir": str(report_dir), "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    print(compile_pipeline())
