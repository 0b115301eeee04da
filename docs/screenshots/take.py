"""Screenshots of the MLflow UI showing versions that ratchet registered (issue 16).

    .venv/bin/python docs/screenshots/take.py            # everything, then stop and clean up
    .venv/bin/python docs/screenshots/take.py --hold     # ... and keep the servers up until Ctrl-C
    .venv/bin/python docs/screenshots/take.py --url http://127.0.0.1:PORT   # screenshots of a running server

What it does, in order:
 1. a throwaway PostgreSQL cluster and `mlflow server` on it (tests/mlflow_server.py, the same
    harness as tests/test_mlflow_server.py: initdb/pg_ctl, `python -m mlflow server --workers 1`,
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false);
 2. 150,000 synthetic transactions (seed 3, 365 days) and contracts/fraud.yaml with min_support 100,
    as tests/test_release_e2e.py uses them;
 3. `ratchet pipeline run --local --bootstrap --as-of 2025-09-01` then `--as-of 2026-01-01`, both
    against the server over HTTP (model name `fraud`);
 4. headless Chromium screenshots of the UI pages into docs/screenshots/*.png;
 5. stops mlflow and PostgreSQL and removes the temporary folder.

Needs: chromium (Debian: apt-get install chromium), PostgreSQL binaries (see tests/mlflow_server.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mlflow_server import MlflowServer, PostgresServer, find_pg_bin  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"


def ratchet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "ratchet.app.cli", *args]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def release(tmp: Path, url: str) -> list[dict]:
    from ratchet.data.synth import SynthConfig, write_transactions

    data = write_transactions(SynthConfig(rows=150_000, seed=3, days=365), tmp / "tx.parquet", progress=False)
    contract = tmp / "fraud.yaml"
    contract.write_text((ROOT / "contracts/fraud.yaml").read_text()
                        .replace("\n  min_support: 200\n", "\n  min_support: 100\n", 1))
    out = []
    for extra in (["--bootstrap", "--as-of", "2025-09-01"], ["--as-of", "2026-01-01"]):
        r = ratchet("pipeline", "run", "--local", "--data", str(data), "--spec", str(ROOT / "specs/fraud.yaml"),
                    "--contract", str(contract), "--tracking-uri", url, "--workdir", str(tmp / "runs"),
                    "--format", "json", *extra, cwd=tmp)
        print(f"exit {r.returncode}: {r.stdout.strip()[:2000]}", flush=True)
        if r.returncode not in (0, 1):
            raise SystemExit(f"release failed:\n{r.stdout}\n{r.stderr[-4000:]}")
        out.append(json.loads(r.stdout))
    return out


class Chrome:
    """Headless Chromium driven over the DevTools protocol (websocket-client, already in the venv):
    the MLflow UI is a single-page app, and some of what issue 16 asks to see is behind a click
    (the schema's "Inputs (N)" row) or inside a scrolling box (the version's tags table)."""

    def __init__(self, width: int = 1600, height: int = 1200):
        import httpx
        import websocket

        from mlflow_server import free_port

        self.width, self.height, self.port = width, height, free_port()
        self.profile = tempfile.mkdtemp(prefix="ratchet-chromium-")
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}",
               f"--window-size={width},{height}", "about:blank"]
        print("$", " ".join(cmd), flush=True)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                pages = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                ws = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.3)
        self.ws = websocket.create_connection(ws, timeout=120, suppress_origin=True)
        self.n = 0
        self.call("Page.enable")

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(f"document.body && document.body.innerText.includes({json.dumps(text)})"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the page never showed {text!r}")
            time.sleep(0.5)
        time.sleep(2)  # let the rest of the page's requests land

    def open(self, url: str, text: str) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)
        self.call("Page.navigate", url="about:blank")  # a fresh load: a hash change alone keeps the last page's state
        time.sleep(0.5)
        self.call("Page.navigate", url=url)
        self.wait_for(text)

    def click_text(self, text: str) -> None:
        """Click the innermost element whose whole text is `text`."""
        ok = self.js(f"""(() => {{
            const el = [...document.querySelectorAll('body *')].reverse()
                .find(e => e.innerText && e.innerText.trim() === {json.dumps(text)});
            if (!el) return false; el.click(); return true; }})()""")
        if not ok:
            raise RuntimeError(f"nothing to click reading {text!r}")
        time.sleep(1)

    def unclip_tables(self) -> None:
        """Lift the 280 px max-height of the tables' scrolling bodies, so every row is in the image."""
        self.js("""(() => { const s = document.createElement('style');
            s.textContent = '.du-bois-light-table-body { max-height: none !important; overflow: visible !important; }';
            document.head.appendChild(s); })()""")
        time.sleep(1)

    def shot(self, png: Path) -> None:
        """The whole page: the UI scrolls inside <main>, so grow the viewport to its scroll height."""
        need = self.js("Math.max(...[...document.querySelectorAll('main, body')].map(e => e.scrollHeight + "
                       "e.getBoundingClientRect().top))")
        height = max(self.height, int(need or 0) + 24)
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1,
                  mobile=False)
        time.sleep(2)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        png.write_bytes(base64.b64decode(data))
        print(f"wrote {png} ({self.width}x{height})", flush=True)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def screenshots(url: str) -> None:
    from ratchet.registry import Registry

    reg = Registry(url, "fraud")
    first, second = min(reg.versions()), max(reg.versions())
    run_id = reg.tags(second)["run_id"]
    experiment_id = reg.client.get_run(run_id).info.experiment_id
    c = Chrome()
    try:
        # MLflow 3.x opens its "MLflow Assistant" side panel on first load; keep it shut
        c.call("Page.navigate", url=f"{url}/")
        c.wait_for("MLflow")
        c.js("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
             "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")
        inputs = ("[...document.querySelectorAll('body *')].map(e => (e.innerText||'').trim())"
                  ".find(t => /^Inputs \\(\\d+\\)$/.test(t))")

        # the registered model: every version with its tags, aliases and description
        c.open(f"{url}/#/models/fraud", f"Version {second}")
        c.shot(HERE / "01-registered-model.png")

        # version 1 as the page shows it, the schema's "Inputs (N)" row clicked open
        c.open(f"{url}/#/models/fraud/versions/{first}", "Inputs (")
        c.click_text(c.js(inputs))
        c.shot(HERE / f"02-version-{first}-schema.png")
        # ... and with the tags table's 280 px scrolling box lifted (CSS), so every tag shows
        c.unclip_tables()
        c.shot(HERE / f"03-version-{first}-all-tags.png")

        # version 2 (gated against version 1) as the page shows it
        c.open(f"{url}/#/models/fraud/versions/{second}", "Inputs (")
        c.shot(HERE / f"04-version-{second}.png")
        # ... its tags box scrolled (as a person would) to the history rows
        c.js("""(() => { const td = [...document.querySelectorAll('td')].find(e => e.innerText.trim() === 'history.0001');
                 const box = td.closest('.du-bois-light-table-body');
                 box.scrollTop = td.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop - 8; })()""")
        time.sleep(1)
        c.shot(HERE / f"05-version-{second}-history-tags.png")

        # the release run's artifacts, release/verdict.html open in the preview
        c.open(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts", "release")
        c.click_text("release")
        c.click_text("verdict.html")
        time.sleep(3)
        c.shot(HERE / "06-run-artifacts-verdict.png")
    finally:
        c.close()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hold", action="store_true", help="keep the servers up after the screenshots, until Ctrl-C or SIGTERM")
    p.add_argument("--url", help="only take the screenshots, of this running server (model `fraud`)")
    args = p.parse_args()
    if args.url:
        return screenshots(args.url.rstrip("/"))
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops the servers and cleans up, as Ctrl-C does
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-screens-"))
    try:
        with PostgresServer.start(find_pg_bin()) as pg:
            uri = pg.create_database("mlflow")
            with MlflowServer.start(uri, tmp / "artifacts", tmp / "mlflow-server.log") as server:
                print("mlflow server:", server.url, "backend:", uri, flush=True)
                release(tmp, server.url)
                screenshots(server.url)
                if args.hold:
                    print("holding; Ctrl-C to stop", flush=True)
                    try:
                        while True:
                            time.sleep(3600)
                    except KeyboardInterrupt:
                        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
