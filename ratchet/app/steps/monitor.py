"""The monitoring steps as plain functions of paths and strings: what the CLI and the
Kubeflow components call. Each writes its files into `out_dir`, logs them to MLflow
with the version they judged when a tracking URI is given, and returns a summary dict
(also written as <step>.json) whose `alert` says whether a person must look.

    summary = drift_step("runs/mon", current="decisions/", reference="train.parquet")
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ratchet.errors import RatchetError
from ratchet.files import read_table
from ratchet.monitor.config import MonitorConfig, load_monitor_config

if TYPE_CHECKING:
    from ratchet.registry import Registry


EVENTS_FILE = "events.jsonl"


def _config(config: str | MonitorConfig | None) -> MonitorConfig:
    if isinstance(config, MonitorConfig):
        return config
    return load_monitor_config(config) if config else MonitorConfig()


def _read(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise RatchetError(f"{path}: no such file or directory")
    return read_table(p)


def _emit(out_dir: Path, event: str, kind: str, alert: bool) -> None:
    print(f"[ratchet] {event}", flush=True)
    with open(out_dir / EVENTS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, "alert": alert, "event": event}) + "\n")


def _write(out_dir: Path, name: str, summary: dict[str, Any]) -> Path:
    path = out_dir / name
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path


def _registry(tracking_uri: str | None, model_name: str):  # noqa: ANN202
    if not tracking_uri:
        return None
    from ratchet.registry import Registry

    return Registry(tracking_uri, model_name)


def load_current(path: str, role: str = "production", since: str | None = None, until: str | None = None,
                 days: float | None = None) -> pd.DataFrame:
    """Recent traffic: a decision log (features map spread into columns) or a feature table."""
    from ratchet.monitor.drift import features_from_decision_log, window

    frame = _read(path)
    if "features" in frame.columns:
        frame = features_from_decision_log(frame, role)
    return window(frame, since, until, days)


def reference_from_registry(registry: Registry, version: int, sample_rows: int = 50_000) -> pd.DataFrame:
    """The training window of a registered version, rebuilt with the Spark feature job from
    the data path, windows and spec its release recorded (a sample of `sample_rows` rows)."""
    from datetime import datetime

    from ratchet.data.dataset import filter_condition, read_transactions
    from ratchet.data.spark import get_spark
    from ratchet.data.trainingset import add_features
    from ratchet.train.spec import load_spec

    tags = registry.tags(version)
    windows = json.loads(tags.get("windows") or "{}")
    if not tags.get("data_path") or not windows.get("train_start"):
        raise RatchetError(f"version {version} records no data path or training window; pass --reference")
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(registry.release_artifact(version, "release/spec.yaml", tmp))
    spark = get_spark()
    tx = read_transactions(spark, tags["data_path"], spec)
    start, end = (datetime.fromisoformat(windows[k]) for k in ("train_start", "train_end"))
    feats = add_features(tx.df.where(filter_condition(spec.filters)), list(spec.features), start=start, until=end,
                         risk_delay_days=spec.feature_options.risk_delay(spec.dataset))
    frame = feats.toPandas()
    return frame.sample(n=sample_rows, random_state=0) if len(frame) > sample_rows else frame


# ---------------------------------------------------------------------------------------------
def drift_step(out_dir: str, *, current: str, reference: str | None = None, config: str | MonitorConfig | None = None,
               role: str = "production", since: str | None = None, until: str | None = None,
               days: float | None = None, tracking_uri: str | None = None, model_name: str = "fraud",
               version: int | None = None) -> dict[str, Any]:
    """Drift of recent traffic against the production version's training set; drift.html + drift.json."""
    from ratchet.monitor.drift import judge_drift, measure_drift

    cfg = _config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry = _registry(tracking_uri, model_name)
    if registry is not None and version is None:
        version = registry.alias_version("production")
    cur = load_current(current, role, since, until, days)
    if reference:
        ref = _read(reference)
    elif registry is not None and version is not None:
        ref = reference_from_registry(registry, version, cfg.drift.sample_rows)
    else:
        raise RatchetError("drift needs a reference: --reference TRAINING_SET.parquet, or a registry with @production")
    features = list(cfg.drift_features)
    if not features and registry is not None and version is not None:
        features = list(registry.load_booster(version).feature_names or [])
    if not features:
        skip = {"label", "is_fraud", "score", "threshold", "latency_ms", "version", "config_generation",
                "transaction_id", "request_id"}
        features = [c for c in ref.columns if c in cur.columns and c not in skip
                    and pd.api.types.is_numeric_dtype(ref[c]) and pd.api.types.is_numeric_dtype(cur[c])]
    result = measure_drift(ref, cur, features, cfg.drift, html_path=out / "drift.html")
    alert = judge_drift(result, cfg.drift.rule)
    summary = {"step": "drift", "version": version, "alert": alert.alert, "event": alert.event,
               "reasons": alert.reasons, "worst": alert.worst[:10], **result.to_dict()}
    path = _write(out, "drift.json", summary)
    _emit(out, alert.event, "drift", alert.alert)
    if registry is not None:
        summary["mlflow_run"] = registry.log_monitoring(
            "drift", version, artifacts={str(path): "drift", str(out / "drift.html"): "drift"},
            metrics={"drifted_share": result.drifted_share, "alert": float(alert.alert)},
            tags={"alert": str(alert.alert).lower(), "event": alert.event})
    return summary


def staleness_step(out_dir: str, *, data: str, spec: str | None = None, config: str | MonitorConfig | None = None,
                   features: list[str] | None = None, tracking_uri: str | None = None, model_name: str = "fraud",
                   version: int | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Backtest decay with intervals and the cadence the bands support; staleness.csv/.json/.png.

    `data`: a feature table (ts, label, features; e.g. a training set built by the Spark
    job) or raw canonical transactions, whose features are then computed in memory (every
    feature but merchant_fraud_rate_30d; with --spec naming it, build the table with Spark).
    `overrides`: staleness settings that replace the config's (the CLI's --n-cutoffs,
    --metric, --age-bin-weeks, ...), e.g. {"n_cutoffs": 8}.
    """
    from dataclasses import fields, replace

    from ratchet.monitor.features import PANDAS_FEATURES, point_in_time_features
    from ratchet.monitor.staleness import StalenessSettings, backtest, plot_staleness

    cfg = _config(config)
    settings = cfg.staleness
    if overrides:
        known = {f.name for f in fields(StalenessSettings)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise RatchetError(f"unknown staleness setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {}
    feats = list(features or [])
    if spec:
        from ratchet.train.spec import load_spec

        s = load_spec(spec)
        feats = feats or list(s.features)
        params = {k: v for k, v in s.xgboost.params.items() if k != "seed"}
    table = _read(data)
    if "label" not in table.columns:  # raw transactions
        if not feats:
            feats = sorted(PANDAS_FEATURES)
        dropped = [f for f in feats if f not in PANDAS_FEATURES]
        feats = [f for f in feats if f in PANDAS_FEATURES]
        if dropped:
            print(f"[ratchet] staleness: computing features in memory without {', '.join(dropped)} "
                  "(pass a Spark-built feature table to include them)", flush=True)
        table = point_in_time_features(table, feats)
    elif not feats:
        feats = [c for c in table.columns if c in PANDAS_FEATURES or c == "merchant_fraud_rate_30d"]
    result = backtest(table, feats, settings, params)
    result.table.to_csv(out / "staleness.csv", index=False)
    png = plot_staleness(result, out / "staleness.png")
    alert = False
    summary = {"step": "staleness", "alert": alert, "event": result.cadence_text(), "features": feats,
               **result.to_dict()}
    path = _write(out, "staleness.json", summary)
    _emit(out, result.cadence_text(), "staleness", alert)
    registry = _registry(tracking_uri, model_name)
    if registry is not None:
        version = version if version is not None else registry.alias_version("production")
        metrics = {f"mean_loss_week_{k}": v for k, v in result.mean_loss.items()}
        for k, (lo, hi) in result.mean_loss_interval.items():
            metrics.update({f"mean_loss_low_week_{k}": lo, f"mean_loss_high_week_{k}": hi})
        if result.cadence_weeks is not None:  # no number is logged for no decay or cannot tell
            metrics["cadence_weeks"] = float(result.cadence_weeks)
        summary["mlflow_run"] = registry.log_monitoring(
            "staleness", version,
            artifacts={str(path): "staleness", str(png): "staleness", str(out / "staleness.csv"): "staleness"},
            metrics={k: v for k, v in metrics.items() if np.isfinite(v)},
            tags={"cadence": result.cadence_text()[:4000], "recommendation": result.recommendation})
    return summary


def estimate_step(out_dir: str, *, decision_log: str, reference: str | None = None, labels: str | None = None,
                  config: str | MonitorConfig | None = None, role: str = "shadow", version: int | None = None,
                  since: str | None = None, until: str | None = None, tracking_uri: str | None = None,
                  model_name: str = "fraud") -> dict[str, Any]:
    """Label-free recall and FPR of a role's decisions per window, next to the realised values
    where labels have matured; estimates.csv/.json/.png.

    `reference`: scored rows with matured labels for calibration (columns score, label; e.g.
    the version's scores on its release test window). Without it, the version's own logged
    decisions whose labels (`labels`: request_id, label) have matured before the window are used.
    """
    from ratchet.monitor.drift import window
    from ratchet.monitor.estimation import fit_calibration, plot_estimates, weekly_estimates

    cfg = _config(config).estimation
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _read(decision_log)
    rows = log[log["role"].astype(str) == role] if "role" in log.columns else log
    if "status" in rows.columns:
        rows = rows[rows["status"].astype(str) == "ok"]
    if version is None and len(rows):
        version = int(rows["version"].iloc[-1])
    if version is not None and "version" in rows.columns:
        rows = rows[rows["version"] == version]
    lab = _read(labels) if labels else None
    if lab is not None:
        rows = rows.merge(lab[["request_id", "label"]], on="request_id", how="left")
    if reference:
        ref = _read(reference)
        if "score" not in ref.columns and "candidate_score" in ref.columns:
            ref = ref.rename(columns={"candidate_score": "score"})
    else:
        if lab is None or not since:
            raise RatchetError("estimation needs a calibration reference: --reference SCORED.parquet "
                               "(score, label), or --labels with --since (earlier labelled decisions)")
        ref = window(rows, until=since).dropna(subset=["label"])
    ref_ts = pd.to_datetime(ref["ts"], utc=True).dt.floor("D").to_numpy() if "ts" in ref.columns else None
    cal = fit_calibration(ref["score"].to_numpy(), ref["label"].to_numpy(), cfg.calibration,
                          replicates=cfg.replicates, seed=0, groups=ref_ts)
    live = window(rows, since=since, until=until)
    if not len(live):
        raise RatchetError(f"no {role} decisions of version {version} in the window")
    frame = pd.DataFrame({"ts": live["ts"].to_numpy(), "score": live["score"].to_numpy(dtype=float),
                          "blocked": (live["decision"].astype(str) == "block").to_numpy() if "decision" in live
                          else live["score"].to_numpy() >= live["threshold"].to_numpy()})
    if "label" in live.columns:
        frame["label"] = live["label"].to_numpy(dtype=float)
    table = weekly_estimates(cal, frame, confidence=cfg.confidence, freq=f"{cfg.window_days}D")
    table.to_csv(out / "estimates.csv", index=False)
    png = plot_estimates(table, str(out / "estimates.png"), title=f"v{version} {role}")
    covered = table[[c for c in ("recall_covered", "fpr_covered") if c in table.columns]]
    last = table.iloc[-1].to_dict() if len(table) else {}
    event = (f"v{version} {role}: estimated recall {last.get('recall', float('nan')):.3f} "
             f"[{last.get('recall_low', float('nan')):.3f}, {last.get('recall_high', float('nan')):.3f}], "
             f"FPR {last.get('fpr', float('nan')):.4f} [{last.get('fpr_low', float('nan')):.4f}, "
             f"{last.get('fpr_high', float('nan')):.4f}] (last window, no labels needed)") if last else "no windows"
    summary = {"step": "estimate", "alert": False, "event": event, "version": version, "role": role,
               "calibration": cal.method, "dispersion": cal.dispersion, "reference_rows": cal.reference_rows,
               "coverage": {c: float(covered[c].dropna().mean()) for c in covered.columns} if len(covered.columns) else {},
               "windows": json.loads(table.to_json(orient="records"))}
    path = _write(out, "estimates.json", summary)
    _emit(out, event, "estimate", False)
    registry = _registry(tracking_uri, model_name)
    if registry is not None and version is not None:
        summary["mlflow_run"] = registry.log_monitoring(
            "estimate", version, artifacts={str(path): "estimate", str(png): "estimate",
                                            str(out / "estimates.csv"): "estimate"},
            metrics={k: float(last[k]) for k in ("recall", "recall_low", "recall_high", "fpr", "fpr_low", "fpr_high")
                     if isinstance(last.get(k), (int, float, np.floating))},
            tags={"role": role})
    return summary


def recheck_step(out_dir: str, *, decision_log: str, labels: str, version: int, contract: str | None = None,
                 config: str | MonitorConfig | None = None, stage: str = "production", since: str | None = None,
                 until: str | None = None, tracking_uri: str | None = None, model_name: str = "fraud") -> dict[str, Any]:
    """Re-judge a past promotion on matured labels; a failure is an alert, an event and MLflow tags."""
    from ratchet.monitor.recheck import recheck_promotion, review_window

    cfg = _config(config)
    contract = contract or cfg.estimation.recheck_contract
    if not contract:
        raise RatchetError("recheck needs a contract: --contract or estimation.recheck_contract in the monitor config")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry = _registry(tracking_uri, model_name)
    if registry is not None and not (since or until):
        since, until = review_window(registry.history(version), stage)
    result = recheck_promotion(_read(decision_log), _read(labels), contract, version, since=since, until=until)
    alert = result.status == "failed"
    summary = {"step": "recheck", "alert": alert, "event": result.event(stage), **result.to_dict()}
    path = _write(out, "recheck.json", summary)
    _emit(out, summary["event"], "recheck", alert)
    if registry is not None:
        registry.set_tags(version, {"recheck.status": result.status, "recheck.summary": result.summary[:4000]})
        if alert:
            registry.record_transition_once(
                version, registry.tags(version).get("state"), registry.tags(version).get("state") or stage,
                actor="monitor recheck", reason=result.event(stage)[:2000],
                key=f"recheck:{result.since}:{result.until}", evidence={"failures": result.failures})
        summary["mlflow_run"] = registry.log_monitoring(
            "recheck", version, artifacts={str(path): "recheck"}, metrics={"rows": result.rows},
            tags={"status": result.status})
    return summary
