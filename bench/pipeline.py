"""Benchmark: wall time of each release step and of the whole release.

    .venv/bin/python bench/pipeline.py                  # 100k and 1M transactions
    .venv/bin/python bench/pipeline.py --rows 100000
    .venv/bin/python bench/pipeline.py --rows 1000000 --add-features card_mean_amount_7d merchant_risk_7d ...

For each size: generate synthetic transactions (not counted), then run a bootstrap
release on kfp's local runner from raw Parquet to a gated, registered version in a
fresh MLflow store, and print per-step and total seconds. Target: 1M rows under 180 s
on 2 cores. --add-features appends feature-library names to specs/fraud.yaml's list (a
copy of the spec in the temporary folder) to measure what richer features cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def spec_with(extra: list[str], folder: Path) -> Path:
    """specs/fraud.yaml, or a copy of it with `extra` appended to its features."""
    import yaml

    base = ROOT / "specs/fraud.yaml"
    if not extra:
        return base
    doc = yaml.safe_load(base.read_text())
    doc["features"] = list(doc["features"]) + [f for f in extra if f not in doc["features"]]
    out = folder / "fraud-extra.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def bench(rows: int, days: int, extra: list[str]) -> dict:
    from pipelines.local import run_release
    from ratchet.data.synth import SynthConfig, write_transactions

    with tempfile.TemporaryDirectory(prefix="ratchet-bench-") as tmp:
        t = Path(tmp)
        config = SynthConfig(rows=rows, seed=11, days=days)
        data = write_transactions(config, t / "tx.parquet", progress=False)
        spec = spec_with(extra, t)
        started, epoch = time.perf_counter(), time.time()
        outcome = run_release(str(data), str(spec), str(ROOT / "contracts/fraud.yaml"),
                              tracking_uri=f"sqlite:///{t / 'mlflow.db'}", bootstrap=True,
                              workdir=str(t / "runs"), quiet=True)
        total = time.perf_counter() - started
        if outcome.failure:
            raise SystemExit(f"release failed: {outcome.failure}")
        timings = json.loads((Path(outcome.report_dir) / "timings.json").read_text())
        timeline = json.loads((Path(outcome.report_dir) / "timeline.json").read_text())
        return {"rows": rows, "total_s": round(total, 1), "steps_s": timings,
                "phases": phases(timeline, epoch, epoch + total),
                "train_rows": outcome.summary.get("snapshot", {}).get("rows"),
                "verdict": outcome.to_json()["verdict"], "auc": outcome.to_json()["metrics"]["auc"]}


def phases(timeline: dict, start: float, end: float) -> list[tuple[str, float]]:
    """The release's wall time cut into consecutive phases: before each step's process
    started (the launcher's checks, kfp's runner between steps), the step's start-up
    (Python, kfp's executor, imports: from its process start to its work) and its work;
    then what came after the last step. The phases add up to the whole release."""
    out, t = [], start
    for step, tl in sorted(timeline.items(), key=lambda kv: kv[1]["began"]):
        proc = tl.get("process_started") or tl["began"]
        out.append((f"{step}: before its process", max(proc - t, 0.0)))
        out.append((f"{step}: start-up", tl["began"] - proc))
        out.append((f"{step}: work", tl["ended"] - tl["began"]))
        t = tl["ended"]
    out.append(("after the last step", max(end - t, 0.0)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000])
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--add-features", nargs="*", default=[], metavar="NAME",
                   help="feature-library names to add to specs/fraud.yaml's features")
    args = p.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    if args.add_features:
        print(f"specs/fraud.yaml + {len(args.add_features)} features: {' '.join(args.add_features)}")
    for n in args.rows:
        r = bench(n, args.days, args.add_features)
        steps = "  ".join(f"{k}={v:.1f}s" for k, v in r["steps_s"].items())
        print(f"{n:>9,} rows: release {r['total_s']:.1f}s  [{steps}]  verdict={r['verdict']} auc={r['auc']:.4f}",
              flush=True)
        starts = sum(v for k, v in r["phases"] if not k.endswith(": work"))
        print(f"  phases (work {r['total_s'] - starts:.1f}s, start-up and orchestration {starts:.1f}s):")
        for name, seconds in r["phases"]:
            print(f"    {name:<34} {seconds:6.1f}s", flush=True)


if __name__ == "__main__":
    main()
