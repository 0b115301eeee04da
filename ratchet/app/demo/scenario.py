"""`ratchet demo`: the main job on the embedded default, no cluster needed.

Generates synthetic transactions, runs a bootstrap release (version 1 -> @production),
censors every later payment by version 1's policy (its blocks get no label, 5% of them
explored; ratchet.app.demo.counterfactual), a regular release on that data (version 2,
gated against version 1 -> @staging), and a release trained on it with a label bug in
one small merchant category, which the contract rejects naming the clause and the slice;
then prints what happened and how to look at it in the MLflow UI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

MARKER = ".ratchet-demo"


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def prepare_folder(out: Path) -> None:
    """Start from a clean demo folder; refuse to wipe a folder the demo did not make."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            from ratchet.errors import RatchetError

            raise RatchetError(f"{out} exists and was not made by `ratchet demo`; pass --out to an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by ratchet demo; the demo empties this folder on each run\n")


def inject_label_bug(data: Path, out: Path, category: str, until: str) -> Path:
    """Copy the data with an upstream label bug: every `category` payment before `until`
    is marked as a chargeback a few days later. A model trained on it looks fine overall
    and blocks that category; the contract must catch it."""
    import pandas as pd

    df = pd.read_parquet(data)
    hit = (df["merchant_category"] == category) & (df["ts"] < pd.Timestamp(until))
    df.loc[hit, "is_fraud"] = 1
    df.loc[hit, "label_available_at"] = df.loc[hit, "ts"] + pd.Timedelta(days=3)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out, index=False)
    return out


def _day(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def decided_features(data: Path, spec_path: str, start: datetime, end: datetime, out: Path) -> Path:
    """Point-in-time features (Spark, local mode) of the payments from `start` to `end`:
    the ones production decides, and the rollout's live traffic among them."""
    from ratchet.data.trainingset import build_recent_traffic
    from ratchet.train.spec import load_spec

    return build_recent_traffic(data, load_spec(spec_path), out, start=start, end=end)


def live_traffic(features: Path, windows: dict, out: Path) -> Path:
    """The rollout's live traffic: the payments after release 2's test window up to its
    as_of, cut from the decided payments' features (rows in (ts, transaction_id) order).
    Neither model was trained or judged on them; their labels, the world's truth, stand for
    the ones that mature during the shadow phase."""
    import pandas as pd

    _say(f"live traffic for the rollout: transactions from {windows['test_end']} to {windows['as_of']} "
         "(after the test window)")
    frame = pd.read_parquet(features)
    ts = pd.to_datetime(frame["ts"])
    start, end = (pd.Timestamp(_day(windows[k])).tz_localize(None) for k in ("test_end", "as_of"))
    frame[(ts >= start) & (ts < end)].reset_index(drop=True).to_parquet(out, index=False)
    return out


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every release ended as planned."""
    from pipelines.local import format_outcome, run_release
    from ratchet.files import project_file
    from ratchet.data.synth import SynthConfig, write_transactions
    from ratchet.registry import Registry
    from ratchet.app.demo.counterfactual import FEATURES_FILE

    started = time.perf_counter()
    out = Path(args.out).resolve()
    prepare_folder(out)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    spec, contract = project_file("specs/fraud.yaml"), project_file("contracts/fraud.yaml")
    runs = str(out / "runs")

    # A fraud pattern emerges at 40% of the period: release 1 never sees it, release 2 does.
    # Brazil launches after both test windows (day 300): its traffic is there for drift
    # monitoring, not for these gates.
    config = SynthConfig(rows=args.rows, seed=args.seed, new_country_day=300, new_pattern_day=int(365 * 0.4))
    _say(f"1/4 generating {config.rows:,} synthetic transactions over {config.days} days (seed {config.seed})")
    data = write_transactions(config, out / "data" / "transactions.parquet", progress=True)
    start = date.fromisoformat(config.start)
    first_as_of = (start + timedelta(days=int(config.days * 0.66))).isoformat()
    second_as_of = (start + timedelta(days=config.days)).isoformat()

    _say(f"2/4 bootstrap release as of {first_as_of}: Spark -> XGBoost -> absolute bounds -> MLflow @production")
    first = run_release(str(data), spec, contract, tracking_uri=uri, as_of=first_as_of, bootstrap=True, workdir=runs)
    _say(format_outcome(first, "fraud"))
    if first.exit_code != 0:
        return first.exit_code

    # Features from release 2's test window on (it starts before v1's release: those payments
    # were decided by no model) to its as_of: v1 decides, the truth is read, the rollout replays.
    from ratchet.train.spec import load_spec

    test_start = load_spec(spec).windows.resolve(as_of=second_as_of).test_start
    features = decided_features(data, spec, min(test_start, _day(first_as_of)), _day(second_as_of),
                                out / "data" / FEATURES_FILE)
    world = None
    if not args.no_censoring:
        from ratchet.app.demo.counterfactual import DEMO_SHARE, censor_world

        world = censor_world(data, features, _day(first_as_of), Registry(uri, "fraud"), first.summary["version"],
                             out / "data" / "transactions-censored.parquet")
        _say(f"censoring: v{world.production} decided the {world.decided:,} payments after {first_as_of} "
             f"and blocked {world.blocked:,} (no label: no chargeback for a blocked payment); "
             f"{world.explored:,} would-be blocks allowed by {DEMO_SHARE:.0%} exploration, propensity logged")
        data = world.data

    _say(f"3/4 release on later data, as of {second_as_of}: candidate vs @production on the same test window, "
         "contract gate, @staging if it passes")
    second = run_release(str(data), spec, contract, tracking_uri=uri, as_of=second_as_of, workdir=runs)
    _say(format_outcome(second, "fraud"))
    if second.failure:
        return second.exit_code

    if second.summary.get("passed"):
        from ratchet.registry import Registry as _Registry
        from ratchet.app.demo.thresholds import demo_cycle

        _say(f"per-merchant thresholds for v{second.summary['version']}: review the suggestions, approve with "
             "one edit and one rejection (a person's call, recorded in the ledger)")
        demo_cycle(_Registry(uri, "fraud"), second.summary["version"], out)

    _say("4/4 a release trained on data with an upstream label bug (every 'podcasts' payment marked as fraud): "
         "better or equal on average, but the contract judges every merchant category")
    buggy = inject_label_bug(data, out / "data" / "transactions-labelbug.parquet", "podcasts",
                             (start + timedelta(days=config.days - 90)).isoformat())
    third = run_release(str(buggy), spec, contract, tracking_uri=uri, as_of=second_as_of, workdir=runs)
    _say(format_outcome(third, "fraud"))
    if third.failure:
        return third.exit_code

    censored_line = None
    if world is not None and second.summary.get("passed"):
        from ratchet.app.demo.counterfactual import release_recall_line

        censored_line = release_recall_line(world, Registry(uri, "fraud"), second.report_dir,
                                            second.summary.get("windows") or {},
                                            float(second.summary["metrics"]["threshold"]), second.summary["version"])
        _say(censored_line)

    rollout_code = 0
    if second.summary.get("passed") and not args.skip_rollout:
        from ratchet.app.demo.rollout import run_rollout_demo

        _say(f"rollout: v{second.summary['version']} through shadow and the canary ramp on live traffic, "
             "then a bad candidate that a live guard rolls back")
        live = live_traffic(features, second.summary.get("windows") or {}, out / "data" / "live-traffic.parquet")
        rollout_code = run_rollout_demo(uri, "fraud", out, live, second.summary["version"])

    reg = Registry(uri, "fraud")
    print("\n" + "=" * 100)
    print(f"ratchet demo finished in {time.perf_counter() - started:.0f}s")
    print(f"{'version':>7}  {'state':<10} {'verdict':<9} {'auc':>7} {'pr_auc':>7} {'recall@fpr':>10} {'block':>7}  reason")
    for outcome in (first, second, third):
        j = outcome.to_json()
        m = j["metrics"]
        state = reg.tags(j["version"]).get("state", "?")
        print(f"{j['version']:>7}  {state:<10} {j['verdict']:<9} {m['auc']:>7.4f} {m['average_precision']:>7.4f} "
              f"{m['recall_at_fpr']:>10.4f} {m['block_rate']:>7.4f}  {j['reason'][:160]}")
    print(f"aliases: {', '.join(f'@{a} -> v{v}' for a, v in sorted(reg.aliases().items()))}")
    if censored_line:
        print(censored_line)
    print(f"verdicts (HTML): {out / 'runs'}/*/outputs/*/evaluate/evaluation/verdict.html, and in MLflow under "
          "each run's release/ artifacts")
    print(f"MLflow store: {out / 'mlflow.db'} (artifacts in {out / 'mlartifacts'})")
    print(f"open the MLflow UI:  {Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {uri} --port 5000")
    bug_caught = not third.summary.get("passed") and "podcasts" in str(third.summary.get("reason", ""))
    story = [f"v{first.summary.get('version')} bootstrap -> @production",
             f"v{second.summary.get('version')} gate {'passed' if second.summary.get('passed') else 'failed'}"
             + ("" if args.skip_rollout else f", rollout {'as expected' if rollout_code == 0 else 'NOT as expected'}"),
             f"v{third.summary.get('version')} (label bug) "
             + ("rejected offline naming podcasts" if bug_caught else "NOT rejected for podcasts")]
    print("story: " + "; ".join(story))
    print("=" * 100)
    if not bug_caught:
        return 1
    return rollout_code
