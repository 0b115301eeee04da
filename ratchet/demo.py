"""`ratchet demo`: the main job on the embedded default, no cluster needed.

Generates synthetic transactions, runs a bootstrap release (version 1 -> @production),
then a regular release on later data (version 2, gated against version 1 -> @staging),
and prints what happened and how to look at it in the MLflow UI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

MARKER = ".ratchet-demo"
ROOT = Path(__file__).resolve().parent.parent


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


def project_file(relative: str) -> str:
    """A file shipped with the project (specs/, contracts/), found from any working directory."""
    for base in (Path.cwd(), ROOT):
        if (base / relative).exists():
            return str(base / relative)
    return relative


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when both releases ended as planned."""
    from pipelines.local import format_outcome, run_release
    from ratchet.data.synth import SynthConfig, write_transactions
    from ratchet.registry import Registry

    started = time.perf_counter()
    out = Path(args.out).resolve()
    prepare_folder(out)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    spec, contract = project_file("specs/fraud.yaml"), project_file("contracts/fraud.yaml")

    config = SynthConfig(rows=args.rows, seed=args.seed)
    _say(f"1/3 generating {config.rows:,} synthetic transactions over {config.days} days (seed {config.seed})")
    data = write_transactions(config, out / "data" / "transactions.parquet", progress=True)
    start = date.fromisoformat(config.start)
    first_as_of = (start + timedelta(days=int(config.days * 0.66))).isoformat()
    second_as_of = (start + timedelta(days=config.days)).isoformat()

    _say(f"2/3 bootstrap release as of {first_as_of}: Spark -> XGBoost -> absolute bounds -> MLflow @production")
    first = run_release(str(data), spec, contract, tracking_uri=uri, as_of=first_as_of, bootstrap=True,
                        workdir=str(out / "runs"))
    _say(format_outcome(first, "fraud"))
    if first.exit_code != 0:
        return first.exit_code

    _say(f"3/3 release on later data, as of {second_as_of}: candidate vs @production, contract gate, @staging if it passes")
    second = run_release(str(data), spec, contract, tracking_uri=uri, as_of=second_as_of, workdir=str(out / "runs"))
    _say(format_outcome(second, "fraud"))
    if second.failure:
        return second.exit_code

    reg = Registry(uri, "fraud")
    print("\n" + "=" * 78)
    print(f"ratchet demo finished in {time.perf_counter() - started:.0f}s")
    print(f"{'version':>7}  {'state':<10} {'verdict':<8} {'auc':>7} {'pr_auc':>7} {'recall@fpr':>10} {'block':>7}  reason")
    for outcome in (first, second):
        j = outcome.to_json()
        m = j["metrics"]
        state = reg.tags(j["version"]).get("state", "?")
        print(f"{j['version']:>7}  {state:<10} {j['verdict']:<8} {m['auc']:>7.4f} {m['average_precision']:>7.4f} "
              f"{m['recall_at_fpr']:>10.4f} {m['block_rate']:>7.4f}  {j['reason']}")
    print(f"aliases: {', '.join(f'@{a} -> v{v}' for a, v in sorted(reg.aliases().items()))}")
    print(f"MLflow store: {out / 'mlflow.db'} (artifacts in {out / 'mlartifacts'})")
    print(f"open the MLflow UI:  {Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {uri} --port 5000")
    print("=" * 78)
    return 0
