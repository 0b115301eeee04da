"""The `ratchet` command: thin argument parsing; every subcommand calls the library.

Exit codes: 0 success, 1 a gate or check said no, 2 unusable input (the message says
what to change), 3 an unexpected internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ratchet.errors import RatchetError

EXIT_OK, EXIT_REJECTED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _cmd_synth(args: argparse.Namespace) -> int:
    from ratchet.data.synth import SynthConfig, write_transactions

    config = SynthConfig(
        rows=args.rows, seed=args.seed, start=args.start, days=args.days,
        new_country=args.new_country, new_country_day=args.new_country_day,
        new_pattern_day=args.new_pattern_day, seasonality=args.seasonality,
    )
    path = write_transactions(config, args.out, progress=not args.quiet)
    print(f"wrote {config.rows:,} transactions to {path}")
    return EXIT_OK


def _cmd_gate(args: argparse.Namespace) -> int:
    from ratchet.contracts.gate import run_gate

    return run_gate(args.scores, args.contract, args.format)


def _cmd_pipeline_run(args: argparse.Namespace) -> int:
    from pipelines.local import run_release_cli

    return run_release_cli(args)


def _cmd_pipeline_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit_cli

    return submit_cli(args)


def _cmd_pipeline_schedule(args: argparse.Namespace) -> int:
    from pipelines.submit import schedule_cli

    return schedule_cli(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ratchet.serving.app import serve
    from ratchet.serving.config import options_from_args

    return serve(options_from_args(args))


def _cmd_replay(args: argparse.Namespace) -> int:
    from ratchet.serving.replay import replay_cli

    return replay_cli(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ratchet.app.demo.scenario import run_demo

    return run_demo(args)


def _registry_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--model-name", default="fraud", help="registered model name (default fraud)")


def _rollout(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from ratchet.app.commands import rollout as rollout_cli

        return getattr(rollout_cli, name)(args)

    return run


def _add_rollout_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("controller", help="reconcile the deployment with the registry aliases",
                       description="Plan and apply the next rollout step from the registry aliases (intent), "
                       "the deployment (fact) and guard observations; record every action in MLflow.")
    _registry_arguments(c)
    c.add_argument("--once", action="store_true", help="one pass, then exit")
    c.add_argument("--interval", type=float, default=None, help="seconds between passes (default: the plan's)")
    c.add_argument("--plan", default=os.environ.get("RATCHET_ROLLOUT_PLAN", "contracts/rollout.yaml"),
                   help="rollout plan YAML (default $RATCHET_ROLLOUT_PLAN or contracts/rollout.yaml)")
    c.add_argument("--decision-log", default=None, help="decision log folder the guards read")
    c.add_argument("--labels", default=None, help="matured labels (Parquet) for the shadow review")
    c.add_argument("--backend", choices=["memory", "local", "kubernetes"],
                   default=os.environ.get("RATCHET_BACKEND", "memory"),
                   help="where versions run: memory (a dry run), local (the decision service at --service-url, "
                   "changed by hot reload) or kubernetes (the decision Deployment; default $RATCHET_BACKEND or memory)")
    c.add_argument("--service-url", default="http://127.0.0.1:8080", help="--backend local: the decision service")
    c.add_argument("--state-dir", default=None,
                   help="--backend local: folder of its state file (default: next to the MLflow SQLite store)")
    c.add_argument("--serve", action="store_true",
                   help="--backend local: start the service at --service-url when none answers; it stops with the controller")
    c.add_argument("--admin-token", default=None, help="bearer token of the service's /admin endpoints (env RATCHET_ADMIN_TOKEN)")
    c.add_argument("--namespace", default=os.environ.get("RATCHET_NAMESPACE"),
                   help="--backend kubernetes: namespace of the decision Deployment (default $RATCHET_NAMESPACE, "
                   "the in-cluster namespace, the kubeconfig context's)")
    c.add_argument("--deployment", default=os.environ.get("RATCHET_DEPLOYMENT", "ratchet-decision"))
    c.add_argument("--container", default="decision", help="--backend kubernetes: container whose env carries the stages")
    c.add_argument("--kubeconfig", default=None,
                   help="--backend kubernetes: kubeconfig file (default: in-cluster ServiceAccount, else $KUBECONFIG)")
    c.add_argument("--context", default=None, help="--backend kubernetes: kubeconfig context")
    c.set_defaults(func=_rollout("controller_cli"))
    p = sub.add_parser("promote", help="move a version to shadow, canary or production (sets the alias)")
    _registry_arguments(p)
    p.add_argument("version", type=int)
    p.add_argument("--to", required=True, choices=["shadow", "canary", "production"])
    p.add_argument("--reason", default=None)
    p.set_defaults(func=_rollout("promote_cli"))
    r = sub.add_parser("rollback", help="withdraw the canary, else the shadow, else go back to the previous production")
    _registry_arguments(r)
    r.add_argument("--reason", default=None)
    r.add_argument("--stage", choices=["canary", "shadow", "production"], default=None,
                   help="which stage to roll back (default: the most recent change)")
    r.set_defaults(func=_rollout("rollback_cli"))
    s = sub.add_parser("status", help="stages, versions, weights and last events")
    _registry_arguments(s)
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw the ramp history (each version's traffic share over time) to this PNG")
    s.set_defaults(func=_rollout("status_cli"))
    a = sub.add_parser("approve", help="approve the pending rollout step (plans in mode: suggest), or waive "
                       "open questions of a version in shadow",
                       description="Approve the version's next rollout gate; with --waive, waive open questions of "
                       "its offline verdict (inconclusive or not-judged blocking slices the shadow could not "
                       "resolve) instead. A waiver needs --reason and is kept in the version's history.")
    _registry_arguments(a)
    a.add_argument("version", type=int, nargs="?")
    a.add_argument("--plan", default="contracts/rollout.yaml")
    a.add_argument("--waive", action="append", default=None, metavar="KEY",
                   help="an open question to waive, as 'clause[slice]' (see `ratchet status`), or 'all'; repeatable")
    a.add_argument("--reason", default=None, help="why (required with --waive; recorded in the history)")
    a.set_defaults(func=_rollout("approve_cli"))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (also used to render --help)."""
    p = argparse.ArgumentParser(
        prog="ratchet",
        description="Continuous deployment for critical ML models: build, gate, register and roll out.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("synth", help="generate synthetic card transactions (Parquet)",
                       description="Generate synthetic card transactions with fraud patterns, "
                       "label delays and scenario knobs. Deterministic per seed.")
    s.add_argument("--rows", type=int, default=200_000, help="number of transactions (default 200000)")
    s.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    s.add_argument("--out", required=True, help="output Parquet file")
    s.add_argument("--start", default="2025-01-01", help="first day, ISO date (default 2025-01-01)")
    s.add_argument("--days", type=int, default=365, help="number of days covered (default 365)")
    s.add_argument("--new-country", default="BR", help="country that launches mid-period ('' for none)")
    s.add_argument("--new-country-day", type=int, default=None,
                   help="day index the new country launches (default: half-way)")
    s.add_argument("--new-pattern-day", type=int, default=None,
                   help="day index a new fraud pattern emerges (default: two thirds in; -1 for never)")
    s.add_argument("--seasonality", type=float, default=0.25,
                   help="amplitude of weekly/yearly volume seasonality, 0..1 (default 0.25)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=_cmd_synth)

    g = sub.add_parser("gate", help="judge scored data against a contract",
                       description="Gate scored data (label, baseline_score, candidate_score, "
                       "optional thresholds and slice columns) against a contract. Exit 0 when "
                       "no blocking clause fails, 1 when one does, 2 for unusable input.")
    g.add_argument("--scores", required=True, help="Parquet or CSV of scored rows")
    g.add_argument("--contract", required=True, help="contract YAML (e.g. contracts/fraud.yaml)")
    g.add_argument("--format", choices=["text", "json", "markdown", "html"], default="text")
    g.set_defaults(func=_cmd_gate)

    pl = sub.add_parser("pipeline", help="the Kubeflow release pipeline")
    plsub = pl.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    r = plsub.add_parser("run", help="run the release pipeline",
                         description="Run the release pipeline: Spark training set, data checks, "
                         "XGBoost training, evaluation against @production, contract gate, "
                         "registration in MLflow (@staging only if the gate passes).")
    r.add_argument("--local", action="store_true", required=True,
                   help="run on kfp's local SubprocessRunner (the only mode so far)")
    r.add_argument("--data", required=True, help="raw transactions (Parquet file or directory)")
    r.add_argument("--spec", default="specs/fraud.yaml", help="training spec YAML (default specs/fraud.yaml)")
    r.add_argument("--contract", default="contracts/fraud.yaml", help="contract YAML (default contracts/fraud.yaml)")
    r.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    r.add_argument("--model-name", default="fraud", help="registered model name (default fraud)")
    r.add_argument("--as-of", default=None, help="release date, ISO (default: from the spec or the data)")
    r.add_argument("--bootstrap", action="store_true",
                   help="no production model yet: pass on absolute bounds alone and go to @production")
    r.add_argument("--exercise", action="store_true",
                   help="rehearsal: run every step up to the gate, register nothing (exit 0 when all steps ran)")
    r.add_argument("--workdir", default="runs", help="where pipeline outputs go (default ./runs)")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.set_defaults(func=_cmd_pipeline_run)

    from pipelines.submit import add_arguments as add_kfp_arguments

    su = plsub.add_parser("submit", help="run the compiled release pipeline on a Kubeflow Pipelines server",
                          description="Start one run of pipelines/release.yaml on a Kubeflow Pipelines "
                          "server (kfp.Client). Spec and contract are sent inline; data and MLflow must be "
                          "reachable from the pipeline's pods. Prints the run id and its UI link.")
    add_kfp_arguments(su, schedule=False)
    su.set_defaults(func=_cmd_pipeline_submit)
    sc = plsub.add_parser("schedule", help="create or replace the recurring release run on Kubeflow Pipelines",
                          description="Create the recurring run NAME of the release pipeline, or replace "
                          "it when it exists (a new one is created, then the old one deleted: never two). "
                          "The cron has the usual 5 fields; KFP's seconds field is added.")
    add_kfp_arguments(sc, schedule=True)
    sc.set_defaults(func=_cmd_pipeline_schedule)

    _add_rollout_commands(sub)

    from ratchet.app.commands.monitor import add_monitor_arguments, add_monitor_run_arguments

    add_monitor_arguments(sub)  # ratchet drift | staleness | estimate [--recheck VERSION]
    add_monitor_run_arguments(sub)  # ratchet monitor run --local

    from ratchet.app.commands.thresholds import add_thresholds_command

    add_thresholds_command(sub, _registry_arguments)  # ratchet thresholds review|approve|status

    d = sub.add_parser("demo", help="the main job: synthetic data, a bootstrap release, gated releases",
                       description="Generate synthetic data, run a bootstrap release (v1 -> production), "
                       "a second release on later data (v2 -> gated -> @staging) and a release with a "
                       "label bug in one small category (rejected by the contract), then print a summary.")
    d.add_argument("--rows", type=int, default=300_000, help="transactions to generate (default 300000)")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--out", default="demo-out", help="demo folder: data, MLflow store, runs (default demo-out)")
    d.add_argument("--skip-rollout", action="store_true",
                   help="stop after the releases (no decision service, shadow, canary ramp or rollback)")
    d.add_argument("--no-censoring", action="store_true",
                   help="label every payment, blocked or not (default: the payments v1 blocks after its release "
                   "get no label, 5%% of its would-be blocks are explored, and later releases are judged on that)")
    d.set_defaults(func=_cmd_demo)

    from ratchet.serving.config import add_serve_arguments  # stdlib-only: keeps --help fast

    sv = sub.add_parser("serve", help="run the decision service (production, canary, shadow, decision log)",
                        description="Serve allow/block decisions over HTTP: production model, sticky canary, "
                        "shadow, Parquet decision log, Prometheus metrics, hot reload via POST /admin/reload. "
                        "Each flag falls back to its environment variable.")
    add_serve_arguments(sv)
    sv.set_defaults(func=_cmd_serve)

    from ratchet.serving.replay import add_replay_arguments  # stdlib-only at import

    rp = sub.add_parser("replay", help="send held-out transactions to the decision service at a chosen rate",
                        description="POST /v1/decide for each row at --rate/s (0 = as fast as possible) over "
                        "keep-alive connections; prints progress and a summary; exit 1 if any request got no 2xx.")
    add_replay_arguments(rp)
    rp.set_defaults(func=_cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ratchet` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RatchetError as exc:
        print(f"ratchet: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ratchet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
