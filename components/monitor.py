"""The monitoring pipeline's components: drift, shadow estimates, staleness.

Thin typed wrappers over ratchet.app.steps.monitor; each writes its summary and figures into
the run's report folder and returns True when a person must look (an alert). An empty
input path skips the step (the summary says so), so one compiled pipeline serves
installations that have no decision log or no labels yet.
"""

from kfp import dsl
from kfp.dsl import HTML, Output

from components.image import RATCHET_IMAGE


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def drift(current: str, reference: str, config_yaml: str, tracking_uri: str, model_name: str, report_dir: str,
          report: Output[HTML]) -> bool:
    """Feature drift of recent traffic against the production training set (Evidently)."""
    import os
    import shutil
    import tempfile

    from ratchet.monitor.config import monitor_config_from_text
    from ratchet.app.steps.monitor import drift_step
    from ratchet.app.steps.release import reporting

    with reporting("drift", report_dir):
        cfg = monitor_config_from_text(config_yaml, "monitor.yaml")
        s = drift_step(os.path.join(report_dir, "drift"), current=current, reference=reference or None, config=cfg,
                       tracking_uri=tracking_uri or None, model_name=model_name)
    shutil.copyfile(os.path.join(report_dir, "drift", "drift.html"), report.path)
    return bool(s["alert"])


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def shadow_review(decision_log: str, labels: str, reference: str, config_yaml: str, tracking_uri: str,
                  model_name: str, report_dir: str) -> bool:
    """Label-free recall/FPR of the shadow's decisions, next to realised values where labels matured."""
    import json
    import os

    from ratchet.monitor.config import monitor_config_from_text
    from ratchet.app.steps.monitor import estimate_step
    from ratchet.app.steps.release import reporting

    out = os.path.join(report_dir, "estimate")
    with reporting("shadow_review", report_dir):
        if not decision_log:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "estimates.json"), "w") as f:
                json.dump({"step": "estimate", "alert": False, "event": "skipped: no decision log"}, f)
            return False
        cfg = monitor_config_from_text(config_yaml, "monitor.yaml")
        s = estimate_step(out, decision_log=decision_log, labels=labels or None, reference=reference or None,
                          config=cfg, role="shadow", tracking_uri=tracking_uri or None, model_name=model_name)
    return bool(s["alert"])


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def staleness(data: str, spec_yaml: str, config_yaml: str, tracking_uri: str, model_name: str, report_dir: str) -> int:
    """Backtest decay; returns the recommended cadence in weeks (0: beyond the horizon, or skipped)."""
    import json
    import os
    import tempfile

    from ratchet.monitor.config import monitor_config_from_text
    from ratchet.app.steps.monitor import staleness_step
    from ratchet.app.steps.release import reporting

    out = os.path.join(report_dir, "staleness")
    with reporting("staleness", report_dir):
        if not data:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "staleness.json"), "w") as f:
                json.dump({"step": "staleness", "alert": False, "event": "skipped: no data"}, f)
            return 0
        spec_path = None
        if spec_yaml:
            spec_path = os.path.join(tempfile.mkdtemp(), "spec.yaml")
            with open(spec_path, "w") as f:
                f.write(spec_yaml)
        cfg = monitor_config_from_text(config_yaml, "monitor.yaml")
        s = staleness_step(out, data=data, spec=spec_path, config=cfg, tracking_uri=tracking_uri or None,
                           model_name=model_name)
    return int(s["cadence_weeks"] or 0)
