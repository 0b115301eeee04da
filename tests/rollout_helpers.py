"""Shared set-up of the controller tests (memory and Kubernetes backends): the plan, a
controllable clock, a cheap registry template and a loop that drives to a settled state."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ratchet.registry import Registry
from ratchet.rollout.actions import Wait

PLAN = """
mode: auto
interval: 1s
shadow: {min_duration: 1h, min_decisions: 1000, contract: fraud.yaml}
canary:
  steps:
    - {weight: 1, hold: 10m, min_decisions: 100}
    - {weight: 5, hold: 10m, min_decisions: 100}
    - {weight: 25, hold: 10m, min_decisions: 100}
    - {weight: 50, hold: 10m, min_decisions: 100}
    - {weight: 100, hold: 10m, min_decisions: 100}
guards:
  block_rate: {per: country, tolerance: {relative: 0.10, absolute: 0.0005}, min_support: 500}
  error_rate: {max: 0.01}
  p99_latency_ms: {max: 50, min_decisions: 100}
"""
T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 3600) -> None:
        self.now += timedelta(seconds=seconds)


def make_template_db(folder: Path) -> Path:
    """A store with versions 1-3 tagged candidate: cheap versions, no model files needed."""
    reg = Registry(f"sqlite:///{folder / 'mlflow.db'}", "fraud")
    reg.client.create_registered_model("fraud")
    for _ in range(3):
        mv = reg.client.create_model_version("fraud", source=str(folder / "model"))
        reg.client.set_model_version_tag("fraud", mv.version, "state", "candidate")
    return folder / "mlflow.db"


def drive(ctrl, clock: Clock, max_passes: int = 40) -> list:  # noqa: ANN001 - a Controller
    """Run passes (an hour apart) until the controller settles; fail if it never does."""
    actions = []
    for _ in range(max_passes):
        a = ctrl.run_once()
        clock.tick()
        actions.append(a)
        if isinstance(a, Wait) and a.settled:
            return actions
    raise AssertionError(f"did not settle: {[x.event for x in actions[-5:]]}")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test's decision service."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive_live(controller, until: Callable[[], bool], *, timeout: float, every: float = 2.0,  # noqa: ANN001
          say: Callable[[str], None] = print, quiet_waits: float = 15.0) -> bool:
    """Run controller passes until `until()` holds (True) or `timeout` seconds pass (False).

    Each action's one-line event is said; waits (holding, counting decisions) at most
    every `quiet_waits` seconds so the log stays readable. A failed pass is said and retried."""
    from ratchet.errors import RatchetError

    deadline = time.monotonic() + timeout
    last_wait = 0.0
    while time.monotonic() < deadline:
        try:
            action = controller.run_once()
        except RatchetError as exc:
            say(f"pass failed: {exc}")
            time.sleep(every)
            continue
        stamp = controller.clock().strftime("%H:%M:%S")
        if action.acts:
            say(f"{stamp} {action.event}")
        elif time.monotonic() - last_wait >= quiet_waits:
            last_wait = time.monotonic()
            say(f"{stamp} {action.event}")
        if until():
            return True
        if not action.acts:
            time.sleep(every)
    return until()
