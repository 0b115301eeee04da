"""The local-process backend: the decision service (`ratchet serve`) on this machine,
changed by hot reload (POST /admin/reload swaps the loaded models atomically; no request
is dropped).

    >>> b = LocalProcessBackend("http://127.0.0.1:8080", state_dir="demo-out")
    >>> b.apply(DeploymentState(production=6, canary=7, canary_weight=5), "ratchet: v7 canary 5%").fingerprint()
    'production=v6 canary=v7@5% shadow=none'

What runs is read from the service (GET /admin/config). What ratchet did is kept in a
small state file, ratchet-local-<host>-<port>.json, next to the MLflow store (or in
`state_dir`): the revision counter, the fingerprint ratchet last `applied`, and the
revision history (like `kubectl rollout history`). The file is replaced atomically
(temp file + os.replace). Someone reloading the service by hand, or restarting it from
other flags, changes what runs but not the file: read() shows fingerprint != applied and
an unrecorded revision ("3+g7": three recorded, the service at its 7th configuration),
and the controller adopts the change as a person's decision. A service that restarted
(it reports reason "start-up") on a configuration other than the last one ratchet
applied is a crash, not a decision: read() reloads it to that last revision first. When what runs is an older
recorded revision brought back by hand, read() names it in `restored_revision` (as the
Kubernetes backend does after `kubectl rollout undo`), so the adoption is recorded as an undo.

apply() is one atomic step as far as the controller can tell: it writes the target as
`pending` first, then reloads the service, then commits (revision + 1, applied, history).
Killed in between, the next read() finds the service running the pending target (commit
it) or not (drop it), so ratchet's own change is never mistaken for an outside one.

Starting the service. With `serve=ServeCommand(...)`, a backend that finds nothing
answering at its URL starts `python -m ratchet.serving` there itself (tracking URI,
model name, decision log, port), from the last revision ratchet recorded or, with no
history, from @production; it waits until /readyz answers and stop() ends it (SIGTERM:
the decision log is flushed). Such a service lives as long as the process that started
it. Without `serve`, a missing service is a BackendUnavailable error (the controller
prints it and retries next pass): run `ratchet serve` yourself, e.g. under systemd.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from ratchet.errors import RatchetError
from ratchet.rollout.state import DeploymentState

HISTORY_KEEP = 200
RESTART_REASON = "start-up"           # the reason a service reports for the configuration it started with
RESTORE_REASON = "ratchet: restored after a restart to revision"


class BackendUnavailable(RatchetError):
    """The decision service does not answer, or is not ready; the controller retries next pass."""


class ReloadFailed(RatchetError):
    """The service refused or failed the reload; it keeps serving its previous configuration."""


def default_state_dir(tracking_uri: str | None) -> Path:
    """Next to the MLflow store for a SQLite or file store, else ./.ratchet."""
    if tracking_uri:
        if tracking_uri.startswith("sqlite:///"):
            return Path(urlparse(tracking_uri).path).resolve().parent
        if tracking_uri.startswith("file://"):
            return Path(urlparse(tracking_uri).path).resolve()
        if "://" not in tracking_uri:
            return Path(tracking_uri).resolve()
    return Path.cwd() / ".ratchet"


@dataclass(frozen=True)
class ServeCommand:
    """How to start the decision service when nothing answers at the backend's URL."""

    tracking_uri: str
    model_name: str = "fraud"
    decision_log: str | None = None
    extra_args: tuple[str, ...] = ()     # e.g. ("--log-rotate-seconds", "2")
    log_file: str | None = None          # service output (default: <state_dir>/serve-<port>.log)
    ready_timeout: float = 180.0         # importing mlflow and loading models on a busy laptop
    env: tuple[tuple[str, str], ...] = ()


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def state_from_config(cfg: dict[str, Any]) -> DeploymentState:
    """A DeploymentState (content only) from GET /admin/config's answer."""
    cohort = cfg.get("cohort")
    if cohort:
        items = cohort.items() if isinstance(cohort, dict) else cohort
        cohort = tuple(sorted((str(k), tuple(str(v) for v in vals)) for k, vals in items))
    return DeploymentState(production=cfg.get("production"), canary=cfg.get("canary"),
                           canary_weight=float(cfg.get("canary_weight") or 0.0), shadow=cfg.get("shadow"),
                           cohort=cohort or None).content()


def reload_body(target: DeploymentState, reason: str) -> dict[str, Any]:
    """POST /admin/reload body that makes the service run exactly `target` (every key explicit)."""
    c = target.content()
    return {"production": c.production, "canary": c.canary, "canary_weight": c.canary_weight if c.canary else 0.0,
            "shadow": c.shadow, "cohort": {k: list(v) for k, v in c.cohort} if c.cohort else None,
            "reason": reason[:2000]}


def restored_revision(history: list[dict[str, Any]], fingerprint: str) -> str | None:
    """The newest older recorded revision that ran `fingerprint`: what runs now was brought
    back by hand (the local `kubectl rollout undo`), not something new. None otherwise."""
    for h in reversed(history[:-1]):
        if h["fingerprint"] == fingerprint:
            return str(h["revision"])
    return None


class LocalProcessBackend:
    """Backend for a decision service on this machine, reached over HTTP (see module docstring)."""

    def __init__(self, url: str, state_dir: str | Path, *, admin_token: str | None = None,
                 reload_timeout: float = 120.0, serve: ServeCommand | None = None) -> None:
        u = urlsplit(url if "://" in url else f"http://{url}")
        self.url = f"{u.scheme or 'http'}://{u.hostname}:{u.port or 80}{u.path.rstrip('/')}"
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.state_dir = Path(state_dir)
        self.state_path = self.state_dir / f"ratchet-local-{self.host}-{self.port}.json"
        self.admin_token = admin_token
        self.reload_timeout = reload_timeout
        self.serve = serve
        self.process: subprocess.Popen | None = None
        self._client = None

    # ---- HTTP ----------------------------------------------------------------------------
    @property
    def client(self):  # noqa: ANN201 - httpx.Client
        if self._client is None:
            import httpx

            headers = {"authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
            self._client = httpx.Client(base_url=self.url, headers=headers, timeout=10.0)
        return self._client

    def _config(self) -> dict[str, Any]:
        import httpx

        try:
            r = self.client.get("/admin/config")
        except httpx.TransportError as exc:
            if self.serve is None:
                raise BackendUnavailable(f"no decision service answers at {self.url} ({type(exc).__name__}); "
                                         "start one with `ratchet serve --port "
                                         f"{self.port} ...` or let the backend start it (--serve)") from None
            self.start()
            r = self.client.get("/admin/config")
        if r.status_code == 401:
            raise BackendUnavailable(f"{self.url}/admin/config: wrong or missing admin token (--admin-token)")
        if r.status_code != 200:
            raise BackendUnavailable(f"{self.url}/admin/config answered {r.status_code}: {r.text[:300]}")
        return r.json()

    # ---- state file ------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            st = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"url": self.url, "revision": 0, "applied": None, "pending": None, "history": []}
        except ValueError as exc:
            raise RatchetError(f"{self.state_path} is not valid JSON ({exc}); move it away to start a new "
                               "history (the next pass then applies the registry's stages again)") from None
        st.setdefault("history", [])
        st.setdefault("pending", None)
        return st

    def _save(self, st: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        st["history"] = st["history"][-HISTORY_KEEP:]
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(st, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    @staticmethod
    def _commit(st: dict[str, Any], revision: int, state: DeploymentState, cause: str) -> None:
        fp = state.fingerprint()
        st["revision"] = revision
        st["applied"] = fp
        st["pending"] = None
        st["history"].append({"revision": revision, "fingerprint": fp, "content": state.content().to_dict(),
                              "cause": cause, "at": _utc()})

    # ---- Backend protocol ------------------------------------------------------------------
    def read(self) -> DeploymentState:
        cfg = self._config()
        if not cfg.get("ready"):
            # a (re)started service still loading its models: wait for /readyz before reading
            # what it runs or reloading it (it answers /v1/decide with 503 until then)
            self._wait_ready()
            cfg = self._config()
            if not cfg.get("ready"):
                raise BackendUnavailable(f"the decision service at {self.url} is not ready: {cfg.get('reason')}")
        running = state_from_config(cfg)
        st = self._load()
        pending = st.get("pending")
        if pending:
            # an apply was interrupted after writing its intent: did the reload happen?
            if running.fingerprint() == pending["fingerprint"]:
                self._commit(st, int(pending["revision"]), running, pending.get("cause", ""))
            else:
                st["pending"] = None
            self._save(st)
        last = st["history"][-1] if st["history"] else None
        generation, since = cfg.get("generation"), cfg.get("serving_since")
        if self._restarted_elsewhere(cfg, running, st, last):
            # a crashed and restarted service came back on its start-up flags, not on what
            # ratchet applied: a crash is not a decision, so bring back the last revision
            running, generation, since = self._restore(DeploymentState.from_dict(last["content"]), last["revision"])
        restored = None
        if last is not None and last["fingerprint"] == running.fingerprint():
            revision = str(last["revision"])
        else:
            revision = f"{st['revision']}+g{cfg.get('generation')}"  # a change ratchet did not make
            restored = restored_revision(st["history"], running.fingerprint())
        return DeploymentState(running.production, running.canary, running.canary_weight, running.shadow,
                               running.cohort, revision=revision, applied=st.get("applied"),
                               restored_revision=restored, generation=generation, serving_since=since)

    @staticmethod
    def _restarted_elsewhere(cfg: dict[str, Any], running: DeploymentState, st: dict[str, Any],
                             last: dict[str, Any] | None) -> bool:
        """The service (re)started on a configuration other than the last one ratchet applied."""
        return (cfg.get("reason") == RESTART_REASON and last is not None and st.get("applied") == last["fingerprint"]
                and running.fingerprint() != last["fingerprint"] and last.get("content") is not None)

    def _restore(self, want: DeploymentState, revision: int) -> tuple[DeploymentState, int | None, str | None]:
        """Reload a restarted service to revision `revision` (what ratchet last applied); what it
        runs then, its configuration generation and since when it serves it."""
        r = self.client.post("/admin/reload", json=reload_body(want, f"{RESTORE_REASON} {revision}"),
                             timeout=self.reload_timeout)
        if r.status_code != 200:
            raise BackendUnavailable(f"{self.url} restarted on other flags and refused the reload back to revision "
                                     f"{revision} ({want.fingerprint()}): {r.status_code} {r.text[:300]}")
        body = r.json()
        return state_from_config(body), body.get("generation"), body.get("serving_since")

    def apply(self, target: DeploymentState, change_cause: str) -> DeploymentState:
        want = target.content()
        fp = want.fingerprint()
        if want.production is None:
            raise RatchetError(f"cannot apply {fp}: the decision service needs a production version")
        running = self.read()
        st = self._load()
        if running.content() == want:
            if not running.revision or "+" in running.revision:
                # what runs came from outside and ratchet now agrees with it: record it as a revision
                self._commit(st, int(st["revision"]) + 1, want, f"outside change, adopted ({change_cause})")
            st["applied"] = fp
            self._save(st)
            return self.read()
        revision = int(st["revision"]) + 1
        st["pending"] = {"revision": revision, "fingerprint": fp, "cause": change_cause, "at": _utc()}
        self._save(st)
        import httpx

        try:
            r = self.client.post("/admin/reload", json=reload_body(want, change_cause), timeout=self.reload_timeout)
        except httpx.TransportError as exc:
            # the reload may or may not have happened: `pending` stays, the next read() settles it
            raise BackendUnavailable(f"reload of {self.url} to {fp} got no answer "
                                     f"({type(exc).__name__}: {exc})") from None
        if r.status_code != 200:
            st["pending"] = None
            self._save(st)
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:500]
            raise ReloadFailed(f"{self.url} refused the reload to {fp} ({r.status_code}): {detail}; "
                               "it keeps serving its previous configuration")
        got = state_from_config(r.json())
        if got.fingerprint() != fp:  # pragma: no cover - the service reports what it loaded
            raise ReloadFailed(f"{self.url} reloaded to {got.fingerprint()}, not {fp}")
        self._commit(st, revision, want, change_cause)
        self._save(st)
        return self.read()

    # ---- history, like `kubectl rollout history` --------------------------------------------
    def history(self) -> list[str]:
        return [f"{h['revision']}\t{h['fingerprint']}\t{h['cause']}" for h in self._load()["history"]]

    # ---- the service process -----------------------------------------------------------------
    def running(self) -> bool:
        """Something answers /healthz at the URL."""
        import httpx

        try:
            return self.client.get("/healthz", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def serve_argv(self) -> list[str]:
        """The command that starts the service, from the last recorded revision (else @production)."""
        if self.serve is None:
            raise RatchetError("no ServeCommand: this backend does not start the service")
        s = self.serve
        argv = [sys.executable, "-m", "ratchet.serving", "--host", self.host, "--port", str(self.port),
                "--tracking-uri", s.tracking_uri, "--model-name", s.model_name]
        if s.decision_log:
            argv += ["--decision-log", str(s.decision_log)]
        hist = self._load()["history"]
        if hist:
            c = DeploymentState.from_dict(hist[-1]["content"]) or DeploymentState()
            argv += ["--production", str(c.production)]
            if c.canary is not None:
                argv += ["--canary", str(c.canary), "--canary-weight", f"{c.canary_weight:g}"]
                if c.cohort:
                    argv += ["--canary-cohort", ";".join(f"{k}={','.join(v)}" for k, v in c.cohort)]
            if c.shadow is not None:
                argv += ["--shadow", str(c.shadow)]
        return argv + list(s.extra_args)

    def start(self) -> bool:
        """Start the service unless something answers at the URL; wait until it is ready.
        True when this call started it."""
        if self.running():
            self._wait_ready()
            return False
        if self.serve is None:
            raise BackendUnavailable(f"no decision service answers at {self.url}")
        log_file = Path(self.serve.log_file or self.state_dir / f"serve-{self.port}.log")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = self.serve_argv()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(self.serve.env)}
        with open(log_file, "ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(log_file)
        return True

    def _wait_ready(self, log_file: Path | None = None) -> None:
        import httpx

        timeout = self.serve.ready_timeout if self.serve else 60.0
        deadline = time.monotonic() + timeout
        reason = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = log_file.read_text(errors="replace")[-2000:] if log_file and log_file.exists() else ""
                raise BackendUnavailable(f"the decision service exited with {self.process.returncode}:\n{tail}")
            try:
                r = self.client.get("/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
                reason = r.json().get("reason", reason)
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        raise BackendUnavailable(f"the decision service at {self.url} was not ready after {timeout:.0f}s: {reason}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the service this backend started (SIGTERM: in-flight requests finish, the decision
        log is flushed); its exit code, or None when it did not start one."""
        p, self.process = self.process, None
        if self._client is not None:
            self._client.close()
            self._client = None
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def __enter__(self) -> LocalProcessBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
