"""Child processes that cannot outlive `bus up`, even when it is killed with SIGKILL.

Each child gets its own session (so a terminal's Ctrl-C reaches only `bus up`, which stops the
children in order) and, on Linux, a parent-death signal: prctl(PR_SET_PDEATHSIG) set in the
forked child before exec, so it applies to redis-server as much as to `python -m bus` (the
setting survives execve; no wrapper or watchdog process is needed). The kernel sends it when
the *thread* that forked the child exits: `bus up` spawns from its main thread only.

Elsewhere (macOS) there is no such signal: the children are still stopped on SIGINT/SIGTERM,
but a SIGKILL of `bus up` leaves them running.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import Callable

_PR_SET_PDEATHSIG = 1

# Resolved here, in the parent: the forked child should not dlopen anything before exec.
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None

DIES_WITH_PARENT = _prctl is not None


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn: `sig` reaches the child when this process dies (None where unsupported)."""
    if _prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal would come
            os.kill(os.getpid(), sig)
    return preexec


def spawn(args: list[str], sig: signal.Signals = signal.SIGTERM, **popen: object) -> subprocess.Popen:
    """Popen in a session of its own, signalled with `sig` (SIGTERM: a graceful stop) if we die."""
    return subprocess.Popen(args, start_new_session=True, preexec_fn=die_with_parent(sig), **popen)
