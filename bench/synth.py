"""Benchmark of `ratchet synth`: rows, wall seconds, rows per minute and peak RSS.

    .venv/bin/python bench/synth.py                 # 1M rows: generate() and write_transactions()
    .venv/bin/python bench/synth.py --ten-million   # also 10M rows
    .venv/bin/python bench/synth.py --rows 500000 --mode generate

Each measurement runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _single(rows: int, mode: str, seed: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from ratchet.data.synth import SynthConfig, generate, write_transactions

    config = SynthConfig(rows=rows, seed=seed)
    t0 = time.perf_counter()
    size = None
    if mode == "generate":
        frame = generate(config)
        assert len(frame) == rows
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_transactions(config, Path(tmp) / "transactions.parquet")
            size = path.stat().st_size
    wall = time.perf_counter() - t0
    return {"mode": mode, "rows": rows, "wall_s": round(wall, 2), "rows_per_min": round(rows / wall * 60),
            "peak_rss_mib": round(_peak_rss_mib(), 1),
            "parquet_mib": None if size is None else round(size / 2**20, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (default 1000000)")
    p.add_argument("--ten-million", action="store_true", help="also run 10,000,000 rows")
    p.add_argument("--mode", choices=["both", "generate", "write"], default="both",
                   help="generate(): DataFrame in memory; write: Parquet file, streamed by chunk")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.single:
        print(json.dumps(_single(args.rows, args.mode, args.seed)))
        return 0

    sizes = [args.rows] + ([10_000_000] if args.ten_million else [])
    modes = ["generate", "write"] if args.mode == "both" else [args.mode]
    print(f"bench/synth.py  cpus={os.cpu_count()}  python={sys.version.split()[0]}")
    print(f"{'mode':<9} {'rows':>11} {'wall s':>8} {'rows/min':>13} {'peak RSS MiB':>13} {'file MiB':>9}")
    for rows in sizes:
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--single", "--rows", str(rows), "--mode", mode,
                                  "--seed", str(args.seed)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            file_mib = "" if r["parquet_mib"] is None else f"{r['parquet_mib']:.1f}"
            print(f"{mode:<9} {rows:>11,} {r['wall_s']:>8.2f} {r['rows_per_min']:>13,} "
                  f"{r['peak_rss_mib']:>13.1f} {file_mib:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
