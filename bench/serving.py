"""Benchmark: the decision service vs `mlflow models serve` on the same model, one run.

    .venv/bin/python bench/serving.py [--seconds 5] [--connections 16]

Builds a throw-away MLflow SQLite store with a realistic booster (the 17 features of
specs/fraud.yaml, 150 trees of depth 6), then measures, for each target:
  max   closed loop: `connections` keep-alive connections, each sending the next request
        as soon as the answer arrives -> throughput, p50/p99;
  half  open loop at half of that target's max throughput, requests on a fixed schedule
        and latency measured from the *scheduled* send time (no coordinated omission).
Targets: ratchet with production only; + shadow; + shadow + canary 50 % (decision log
and metrics always on; configs switched by hot reload in one process); mlflow's
scoring server (/invocations, dataframe_split, one worker). The shadow's cost is also
measured at equal load: production only and + shadow at the same rate, interleaved in
`--ab-rounds` rounds (other jobs' load drifts; interleaving spreads it over both).

The load generator is a separate process: asyncio (uvloop) on raw sockets with
pre-encoded requests, about 30 us of CPU per request -- but it shares the machine's
cores with the server, so absolute figures understate a server on its own cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "seconds_since_card_prev", "amount_to_card_mean",
            "card_count_1h", "card_count_24h", "card_count_7d", "card_amount_1h", "card_amount_24h",
            "card_amount_7d", "merchant_count_1h", "merchant_count_24h", "merchant_count_7d",
            "merchant_amount_24h", "merchant_fraud_rate_30d"]


# ---- load generator (runs in its own process) ------------------------------------------------
def _requests(kind: str, n: int = 512) -> list[bytes]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        x = rng.random(len(FEATURES))
        feats = {f: round(float(v * (1000 if "amount" in f else 10 if "count" in f else 1)), 3)
                 for f, v in zip(FEATURES, x)}
        feats["hour_of_day"] = float(i % 24)
        if kind == "ratchet":
            body = json.dumps({"card_id": f"card-{i}", "merchant_id": f"m-{i % 50}", "country": "FR",
                               "channel": "web", "transaction_id": f"t-{i}", **feats}).encode()
            path = "/v1/decide"
        else:
            body = json.dumps({"dataframe_split": {"columns": FEATURES, "data": [[feats[f] for f in FEATURES]]}}).encode()
            path = "/invocations"
        out.append(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _closed(port: int, reqs: list[bytes], conns: int, seconds: float) -> dict:
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            if await _roundtrip(reader, writer, reqs[i % len(reqs)]) != 200:
                errors += 1
            lat.append(time.perf_counter() - t0)
            i += conns
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conns)))
    return _summary(lat, errors, time.perf_counter() - t0)


async def _open(port: int, reqs: list[bytes], conns: int, seconds: float, rate: float) -> dict:
    lat: list[float] = []
    errors = 0
    per_conn = rate / conns
    # connect first: the schedule starts once every connection is open (connecting is not a request)
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(conns)]
    start = time.perf_counter() + 0.05

    async def worker(k: int) -> None:
        nonlocal errors
        reader, writer = streams[k]
        n = 0
        while True:
            scheduled = start + (n + k / conns) / per_conn
            if scheduled - start > seconds:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if await _roundtrip(reader, writer, reqs[(n * conns + k) % len(reqs)]) != 200:
                errors += 1
            lat.append(time.perf_counter() - scheduled)
            n += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conns)))
    return _summary(lat, errors, time.perf_counter() - t0)


def _summary(lat: list[float], errors: int, elapsed: float) -> dict:
    a = np.array(lat) * 1000
    return {"n": len(a), "rps": len(a) / elapsed, "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "errors": errors, "lat_ms": a.tolist()}


PIN: dict[str, set[int]] = {}   # --pin: "server" and "loadgen" CPU sets


def _pin(role: str) -> None:
    if PIN.get(role):
        os.sched_setaffinity(0, PIN[role])


def _loadgen(port: int, kind: str, mode: str, conns: int, seconds: float, rate: float, out) -> None:  # noqa: ANN001
    _pin("loadgen")
    # forked from a parent that imported mlflow and xgboost: a full collection over that inherited
    # heap pauses this process ~100 ms, which showed up as the *server's* p99 in earlier runs
    gc.freeze()
    gc.disable()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    reqs = _requests(kind)
    if mode == "closed":
        res = asyncio.run(_closed(port, reqs, conns, seconds))
    else:
        res = asyncio.run(_open(port, reqs, conns, seconds, rate))
    out.put(res)


def measure(port: int, kind: str, mode: str, conns: int, seconds: float, rate: float = 0.0,
            keep_latencies: bool = False) -> dict:
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=_loadgen, args=(port, kind, mode, conns, seconds, rate, q))
    p.start()
    res = q.get(timeout=seconds + 60)
    p.join()
    lat = res.pop("lat_ms")
    if keep_latencies:
        res["lat_ms"] = lat
    return res


# ---- setup -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(tmp: Path) -> str:
    import xgboost as xgb

    from ratchet.registry import Registry, ReleaseRecord
    from ratchet.train.trainer import save_model

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    reg = Registry(uri, "fraud")
    rng = np.random.default_rng(0)
    x = rng.random((20_000, len(FEATURES))).astype(np.float32)
    y = ((x[:, 0] > 0.8) & (x[:, 2] > 0.5) | (x[:, 6] > 0.97)).astype(int)
    for seed in range(3):
        # specs/fraud.yaml: 150 rounds, depth 6, eta 0.1
        b = xgb.train({"tree_method": "hist", "objective": "binary:logistic", "max_depth": 6, "eta": 0.1,
                       "seed": seed, "subsample": 0.8}, xgb.DMatrix(x, label=y, feature_names=FEATURES), 150)
        path = save_model(b, tmp / f"m{seed}")
        reg.register(ReleaseRecord(model_path=str(path), spec_yaml="name: bench\n", spec_hash="b" * 64,
                                   snapshot={"rows": len(y)}, windows={}, metrics={}, verdict={"passed": True},
                                   passed=True, reason="bench"))
    reg.set_stage(1, "production", actor="bench", reason="bench")
    return uri


def wait_http(url: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--pin", default=os.environ.get("BENCH_PIN", ""),
                    help="CPU sets 'SERVER/LOADGEN', e.g. 0/1: the server (ratchet or mlflow, all its threads) "
                         "and the load generator each on their own cores (default: unpinned)")
    ap.add_argument("--ab-rounds", type=int, default=4,
                    help="shadow overhead: rounds of production-only vs + shadow at the same rate, interleaved")
    args = ap.parse_args()
    import httpx

    if args.pin:
        server_cpus, loadgen_cpus = args.pin.split("/")
        PIN.update(server={int(c) for c in server_cpus.split(",")}, loadgen={int(c) for c in loadgen_cpus.split(",")})
        print(f"pinned: server on CPUs {sorted(PIN['server'])}, load generator on CPUs {sorted(PIN['loadgen'])}")
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-bench-"))
    print(f"store and logs in {tmp}; {os.cpu_count()} CPUs")
    uri = build_store(tmp)
    # mlflow models serve execs `uvicorn` from PATH: put this interpreter's scripts first
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    svc = subprocess.Popen([sys.executable, "-m", "ratchet.serving", "--port", str(port), "--decision-log",
                            str(tmp / "decisions")], cwd=REPO, env=env, preexec_fn=lambda: _pin("server"),
                           stdout=(tmp / "service.out").open("wb"), stderr=subprocess.STDOUT)
    results: dict[str, dict] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        configs = {"ratchet production only": {"canary": None, "shadow": None},
                   "ratchet + shadow": {"shadow": 2},
                   "ratchet + shadow + canary 50%": {"shadow": 2, "canary": 3, "canary_weight": 50}}
        for name, cfg in configs.items():
            r = httpx.post(f"http://127.0.0.1:{port}/admin/reload", json=cfg, timeout=60)
            assert r.status_code == 200, r.text
            measure(port, "ratchet", "closed", args.connections, 1.0)  # warm up
            mx = measure(port, "ratchet", "closed", args.connections, args.seconds)
            half = measure(port, "ratchet", "open", 8, args.seconds, rate=mx["rps"] / 2)
            results[name] = {"max": mx, "half": half}
            _print(name, mx, half)
        # The shadow's cost at equal load: production only and + shadow at the same rate (half of
        # "+ shadow"'s max), interleaved in rounds so that drifting load from other jobs hits both alike.
        rate = results["ratchet + shadow"]["max"]["rps"] / 2
        pooled: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.ab_rounds):
            for key, cfg in (("off", {"canary": None, "shadow": None}), ("on", {"shadow": 2})):
                assert httpx.post(f"http://127.0.0.1:{port}/admin/reload", json=cfg, timeout=60).status_code == 200
                measure(port, "ratchet", "closed", args.connections, 0.3)  # warm up after the reload
                pooled[key] += measure(port, "ratchet", "open", 8, args.seconds / 2, rate=rate,
                                       keep_latencies=True)["lat_ms"]
        ab = {key: {"n": len(v), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
              for key, v in pooled.items()}
        results["shadow at equal load"] = {"rate": rate, "rounds": args.ab_rounds, **ab}
        print(f"{'shadow A/B at ' + format(rate, '.0f') + ' req/s':32s} off: p50 {ab['off']['p50']:.2f} p99 "
              f"{ab['off']['p99']:.2f} ms | on: p50 {ab['on']['p50']:.2f} p99 {ab['on']['p99']:.2f} ms "
              f"({args.ab_rounds} interleaved rounds of {args.seconds / 2:g} s each)")
        # the scrape's own cost (the page is built on the event loop, between requests): idle, median of 50
        scrapes = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as scraper:
            for _ in range(50):
                t0 = time.perf_counter()
                metrics = scraper.get("/metrics").text
                scrapes.append((time.perf_counter() - t0) * 1000)
        results["metrics scrape"] = {"p50_ms": float(np.median(scrapes)), "bytes": len(metrics)}
        print(f"{'GET /metrics (idle, 50 scrapes)':32s} p50 {np.median(scrapes):.2f} ms, {len(metrics):,} bytes")
        print("  service:", ", ".join(line for line in metrics.splitlines()
                                       if line.startswith(("ratchet_shadow_dropped", "ratchet_shadow_scored",
                                                           "ratchet_decision_log_dropped"))))
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(30)
    if not args.skip_mlflow:
        mport = _free_port()
        ml = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/fraud/1",
                               "--env-manager", "local", "-p", str(mport), "-h", "127.0.0.1"], cwd=tmp, env=env,
                              preexec_fn=lambda: _pin("server"),
                              stdout=(tmp / "mlflow.out").open("wb"), stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{mport}/ping", timeout=180)
            measure(mport, "mlflow", "closed", args.connections, 1.0)
            mx = measure(mport, "mlflow", "closed", args.connections, args.seconds)
            half = measure(mport, "mlflow", "open", 8, args.seconds, rate=mx["rps"] / 2)
            results["mlflow models serve"] = {"max": mx, "half": half}
            _print("mlflow models serve", mx, half)
        finally:
            ml.terminate()
            ml.wait(30)
    full = results["ratchet + shadow + canary 50%"]
    base = results["ratchet production only"]
    print("\ntargets:")
    if "mlflow models serve" in results:
        ratio = full["max"]["rps"] / results["mlflow models serve"]["max"]["rps"]
        print(f"  throughput vs mlflow (prod+shadow+canary): {ratio:.1f}x  (target >= 8x) "
              f"{'MET' if ratio >= 8 else 'NOT MET'}")
    print(f"  p99 at half max (prod+shadow+canary): {full['half']['p99']:.2f} ms  (target <= 3 ms) "
          f"{'MET' if full['half']['p99'] <= 3 else 'NOT MET'}")
    ab = results["shadow at equal load"]
    add = ab["on"]["p99"] / ab["off"]["p99"] - 1
    print(f"  shadow adds to p99 at equal load: {add:+.0%}  ({ab['off']['p99']:.2f} -> {ab['on']['p99']:.2f} ms at "
          f"{ab['rate']:.0f} req/s; target < 10%) {'MET' if add < 0.10 else 'NOT MET'}")
    sh, base = results["ratchet + shadow"], results["ratchet production only"]
    print(f"  (each at its own half max: {base['half']['p99']:.2f} ms at {base['half']['rps']:.0f} req/s -> "
          f"{sh['half']['p99']:.2f} ms at {sh['half']['rps']:.0f} req/s)")
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    print(f"raw figures: {tmp / 'results.json'}")


def _print(name: str, mx: dict, half: dict) -> None:
    print(f"{name:32s} max {mx['rps']:7.0f} req/s  p50 {mx['p50']:6.2f} ms  p99 {mx['p99']:6.2f} ms  "
          f"| at {half['rps']:6.0f} req/s: p50 {half['p50']:5.2f} ms  p99 {half['p99']:6.2f} ms  "
          f"errors {mx['errors'] + half['errors']}")


if __name__ == "__main__":
    main()
