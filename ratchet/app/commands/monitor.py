"""Entry points of `ratchet drift`, `ratchet staleness`, `ratchet estimate` and `ratchet monitor run`.

Each takes the parsed arguments and returns the exit code: 0 fine, 1 an alert (drift rule
hit, a re-checked promotion failed its contract), 2 unusable input (RatchetError, printed
by ratchet.app.cli.main), 3 an internal failure. With --format json the summary goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

EXIT_OK, EXIT_ALERT = 0, 1
#: `ratchet staleness` flags that override the config's staleness section (None: keep the config's).
STALENESS_FLAGS = ("n_cutoffs", "horizon_weeks", "age_bin_weeks", "metric", "loss", "tolerance", "confidence",
                   "replicates")


@contextlib.contextmanager
def _progress_off_stdout(fmt: str) -> Iterator[None]:
    """With --format json, stdout carries the JSON alone: the steps' progress lines go to stderr."""
    if fmt != "json":
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _print(summary: dict[str, Any], fmt: str, lines: list[str]) -> None:
    if fmt == "json":
        print(json.dumps(summary, indent=2, default=str))
    else:
        print("\n".join(lines))
    if summary.get("alert"):
        print(f"ratchet: {summary.get('event')}", file=sys.stderr)


def drift_cli(args: argparse.Namespace) -> int:
    from ratchet.app.steps.monitor import drift_step

    with _progress_off_stdout(args.format):
        s = drift_step(args.out, current=args.current, reference=args.reference, config=args.config,
                       role=args.role, since=args.since, until=args.until, days=args.days,
                       tracking_uri=args.tracking_uri, model_name=args.model_name, version=args.version)
    lines = [s["event"], f"  {s['current_rows']:,} current rows vs {s['reference_rows']:,} reference rows; "
             f"{s['drifted_share']:.0%} of features drifted"]
    lines += [f"  {c['feature']:<28} {c['test']:<32} score {c['score']}  {'DRIFTED' if c['drifted'] else ''}"
              for c in s["columns"][:10]]
    lines.append(f"  report: {s['html']}")
    _print(s, args.format, lines)
    return EXIT_ALERT if s["alert"] else EXIT_OK


def staleness_cli(args: argparse.Namespace) -> int:
    from ratchet.app.steps.monitor import staleness_step

    overrides = {k: getattr(args, k, None) for k in STALENESS_FLAGS}
    if getattr(args, "cutoffs", None):
        overrides["cutoffs"] = tuple(c.strip() for c in args.cutoffs.split(",") if c.strip())
    with _progress_off_stdout(args.format):
        s = staleness_step(args.out, data=args.data, spec=args.spec, config=args.config,
                           features=args.features.split(",") if args.features else None,
                           tracking_uri=args.tracking_uri, model_name=args.model_name,
                           overrides={k: v for k, v in overrides.items() if v is not None})
    lines = [s["event"], "  age  mean loss  interval            judged"]
    for k, v in s["mean_loss"].items():
        lo, hi = s["mean_loss_interval"].get(k, [None, None])
        band = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "-"
        lines.append(f"  {k:>3}  {v if v is None else format(v, '.3f'):>9}  {band:<18}  "
                     f"{s['judgement'].get(k, 'baseline')}")
    lines.append(f"  plot: {args.out}/staleness.png  table: {args.out}/staleness.csv")
    _print(s, args.format, lines)
    return EXIT_OK


def estimate_cli(args: argparse.Namespace) -> int:
    from ratchet.app.steps.monitor import estimate_step, recheck_step

    if args.recheck is not None:
        with _progress_off_stdout(args.format):
            s = recheck_step(args.out, decision_log=args.decision_log, labels=args.labels, version=args.recheck,
                             contract=args.contract, config=args.config, stage=args.stage, since=args.since,
                             until=args.until, tracking_uri=args.tracking_uri, model_name=args.model_name)
        _print(s, args.format, [s["event"]] + [f"  - {f}" for f in s.get("failures", [])])
        return EXIT_ALERT if s["alert"] else EXIT_OK
    with _progress_off_stdout(args.format):
        s = estimate_step(args.out, decision_log=args.decision_log, reference=args.reference, labels=args.labels,
                          config=args.config, role=args.role, version=args.version, since=args.since,
                          until=args.until, tracking_uri=args.tracking_uri, model_name=args.model_name)
    lines = [s["event"], "  window start               recall [interval]        realised   FPR [interval]            realised"]
    for w in s["windows"]:
        lines.append(f"  {w['window_start'][:19]}  {w['recall']:.3f} [{w['recall_low']:.3f}, {w['recall_high']:.3f}]"
                     f"  {w.get('realised_recall') if w.get('realised_recall') is not None else '-':<9}"
                     f"  {w['fpr']:.4f} [{w['fpr_low']:.4f}, {w['fpr_high']:.4f}]  {w.get('realised_fpr', '-')}")
    _print(s, args.format, lines)
    return EXIT_OK


def monitor_pipeline_cli(args: argparse.Namespace) -> int:
    from pipelines.monitor import run_monitor

    outcome = run_monitor(current=args.current, reference=args.reference, data=args.data, decision_log=args.decision_log,
                          labels=args.labels, estimate_reference=args.estimate_reference, config=args.config,
                          spec=args.spec, tracking_uri=args.tracking_uri, model_name=args.model_name,
                          workdir=args.workdir, quiet=args.format == "json")
    if args.format == "json":
        print(json.dumps(outcome, indent=2, default=str))
    else:
        for step, s in outcome.get("steps", {}).items():
            print(f"{step}: {s.get('event', s)}")
        if outcome.get("failure"):
            print(f"monitoring FAILED at step '{outcome['failure'].get('step')}': {outcome['failure'].get('message')}")
        print(f"  reports: {outcome['report_dir']}")
    if outcome.get("failure"):
        return 2 if outcome["failure"].get("user_error") else 3
    return EXIT_ALERT if outcome.get("alert") else EXIT_OK


def add_monitor_arguments(sub: argparse._SubParsersAction) -> None:
    """The argparse wiring for ratchet/cli.py (it owns the parser; this is a helper it may call)."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="contracts/monitor.yaml", help="monitor config (default contracts/monitor.yaml)")
        p.add_argument("--out", default="monitor-out", help="output folder (default monitor-out)")
        p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; given: results are logged there")
        p.add_argument("--model-name", default="fraud")
        p.add_argument("--format", choices=["text", "json"], default="text")

    d = sub.add_parser("drift", help="feature drift of recent traffic vs the production training set (Evidently)")
    d.add_argument("--current", required=True, help="decision log folder or a feature table (Parquet)")
    d.add_argument("--reference", default=None, help="training-set table (default: rebuilt for @production)")
    d.add_argument("--role", default="production", help="decision-log role to read (default production)")
    d.add_argument("--since", default=None)
    d.add_argument("--until", default=None)
    d.add_argument("--days", type=float, default=None, help="only the last N days of the current data")
    d.add_argument("--version", type=int, default=None, help="the version judged (default @production)")
    common(d)
    d.set_defaults(func=drift_cli)

    s = sub.add_parser("staleness", help="backtest model decay and recommend a retraining cadence")
    s.add_argument("--data", required=True, help="feature table (ts, label, features) or raw transactions")
    s.add_argument("--spec", default=None, help="training spec for features and XGBoost params")
    s.add_argument("--features", default=None, help="comma-separated features (default: the spec's)")
    s.add_argument("--cutoffs", default=None, metavar="DATES",
                   help="comma-separated ISO cut-off dates (default: the config's, else --n-cutoffs spread over the data)")
    s.add_argument("--n-cutoffs", type=int, default=None, metavar="N",
                   help="number of cut-offs spread over the data (more cut-offs narrow the mean curve's band)")
    s.add_argument("--horizon-weeks", type=int, default=None, metavar="W", help="weeks each model is followed")
    s.add_argument("--age-bin-weeks", type=int, default=None, metavar="W",
                   help="pool W weeks per age bin (4: a month), trading resolution for precision")
    s.add_argument("--metric", choices=["recall_at_fpr", "auc", "average_precision"], default=None,
                   help="the metric whose loss is judged (default the config's, recall_at_fpr); "
                        "AUC and average precision are smoother")
    s.add_argument("--loss", choices=["relative", "absolute"], default=None,
                   help="loss from the first age bin: relative (share of it) or absolute (points)")
    s.add_argument("--tolerance", type=float, default=None, help="the loss a model may reach before it is retrained")
    s.add_argument("--confidence", type=float, default=None,
                   help="two-sided level of the bootstrap intervals (default 0.95)")
    s.add_argument("--replicates", type=int, default=None, help="bootstrap replicates (default 400; seeded)")
    common(s)
    s.set_defaults(func=staleness_cli)

    e = sub.add_parser("estimate", help="label-free recall/FPR of live decisions; --recheck VERSION re-judges a promotion")
    e.add_argument("--decision-log", required=True)
    e.add_argument("--reference", default=None, help="scored rows with matured labels (score, label) for calibration")
    e.add_argument("--labels", default=None, help="matured labels (request_id, label)")
    e.add_argument("--role", default="shadow")
    e.add_argument("--version", type=int, default=None)
    e.add_argument("--since", default=None)
    e.add_argument("--until", default=None)
    e.add_argument("--recheck", type=int, default=None, metavar="VERSION", help="re-check VERSION's promotion")
    e.add_argument("--stage", default="production", help="the stage the re-checked version was promoted to")
    e.add_argument("--contract", default=None, help="contract for --recheck (default from the monitor config)")
    common(e)
    e.set_defaults(func=estimate_cli)


def add_monitor_run_arguments(sub: argparse._SubParsersAction) -> None:
    """`ratchet monitor run --local`."""
    m = sub.add_parser("monitor", help="the Kubeflow monitoring pipeline (drift, shadow estimates, staleness)")
    msub = m.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    r = msub.add_parser("run", help="run the monitoring pipeline")
    r.add_argument("--local", action="store_true", required=True, help="run on kfp's local SubprocessRunner")
    r.add_argument("--current", required=True, help="decision log folder or recent feature table (drift)")
    r.add_argument("--reference", default="", help="training-set table (drift; default rebuilt for @production)")
    r.add_argument("--data", default="", help="feature table or raw transactions (staleness; empty: skipped)")
    r.add_argument("--decision-log", default="", help="decision log (shadow estimates; empty: skipped)")
    r.add_argument("--labels", default="", help="matured labels (request_id, label)")
    r.add_argument("--estimate-reference", default="", help="scored rows with labels for calibration")
    r.add_argument("--spec", default="", help="training spec (staleness)")
    r.add_argument("--config", default="contracts/monitor.yaml")
    r.add_argument("--tracking-uri", default=None)
    r.add_argument("--model-name", default="fraud")
    r.add_argument("--workdir", default="runs")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.set_defaults(func=monitor_pipeline_cli)
