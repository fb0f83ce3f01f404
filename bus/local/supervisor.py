"""Keep `bus up`'s children running: restart one that exits, with backoff; stop them in order.

A child that exits is started again after a delay that doubles from 0.5 s to 10 s and goes back
to 0.5 s once a run lasted 30 s, so a crash loop costs little and a rare crash is repaired
fast. Exit code 2 is the `bus` command's "bad usage or configuration" (bad rules YAML, say):
the same command would fail the same way, so that child is not restarted and `bus up` stops.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

CONFIG_ERROR = 2  # the `bus` command's exit code for bad usage or configuration


@dataclass
class Backoff:
    """Restart delays: `first` doubling to `cap`; a run of `reset_after` seconds starts over."""
    first: float = 0.5
    cap: float = 10.0
    reset_after: float = 30.0
    _next: float = field(default=0.0, init=False)

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after or not self._next:
            self._next = self.first
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay


@dataclass
class Child:
    """One supervised process: its role ("redis", "broker", "worker") names it in every message."""
    role: str
    spawn: Callable[[], subprocess.Popen]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)
    restarts: int = 0

    def launch(self) -> None:
        self.proc, self.started, self.restart_at = self.spawn(), time.monotonic(), None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Children in start order; `say` prints one line (to the `bus up` terminal)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.children: list[Child] = []

    def add(self, role: str, spawn: Callable[[], subprocess.Popen],
            running: subprocess.Popen | None = None) -> Child:
        """Start `role` now, or adopt `running` (a process already started and checked)."""
        child = Child(role, spawn)
        if running is not None:
            child.proc, child.started = running, time.monotonic()
        else:
            child.launch()
        self.children.append(child)
        return child

    def check(self) -> int | None:
        """Restart what is due, note what exited; an exit code for `bus up` if it must stop."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    child.launch()
                    self.say(f"busway: {child.role} restarted (PID {child.proc.pid})")
                continue
            code = child.proc.poll() if child.proc else None
            if code is None:
                continue
            if code == CONFIG_ERROR:
                self.say(f"busway: {child.role} exited with code {code} (bad configuration); stopping")
                return 1
            delay = child.backoff.delay(now - child.started)
            child.restart_at = now + delay
            self.say(f"busway: {child.role} (PID {child.proc.pid}) exited with {_describe(code)}; "
                     f"restarting it in {delay:g}s")
        return None

    def run(self, stopping: Callable[[], bool], interval: float = 0.2) -> int:
        """Supervise until `stopping()` (a signal arrived) or a child cannot be restarted."""
        while not stopping():
            code = self.check()
            if code is not None:
                return code
            time.sleep(interval)
        return 0

    def stop(self, grace: float) -> None:
        """SIGTERM in reverse start order, each waited for: the worker finishes its deliveries
        while Redis still answers. Whoever outstays `grace` is killed with its process group
        (a worker's handler slots included)."""
        for child in reversed(self.children):
            child.restart_at = None
            if not child.running:
                continue
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.say(f"busway: {child.role} did not stop within {grace:g}s; killing it")
                _kill_group(child.proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # each child leads its own session (children.spawn)
    except ProcessLookupError:
        pass
    proc.wait()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
