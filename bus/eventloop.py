"""Which asyncio event loop busway's long-running processes (serve, worker, tail) run on.

BUS_EVENT_LOOP=asyncio (the default) is the standard library's loop; BUS_EVENT_LOOP=uvloop is
uvloop's (`pip install 'busway[speed]'`). On the issue-16 machine it made the broker's ingest
11-13 % faster before group commit and makes no difference since; a worker spends 5-10 % less
CPU per run on it (docs/benchmarks.md). Anything else, or uvloop asked for and not installed, is
refused with a clear message before the process starts serving.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

CHOICES = ("asyncio", "uvloop")


class EventLoopError(ValueError):
    """BUS_EVENT_LOOP names no loop this process can run."""


def loop_factory(env: Mapping[str, str] | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory BUS_EVENT_LOOP asks for; None: asyncio's default loop."""
    choice = ((os.environ if env is None else env).get("BUS_EVENT_LOOP") or "asyncio").strip().lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise EventLoopError(f"BUS_EVENT_LOOP must be one of {', '.join(CHOICES)}, not {choice!r}")
    try:
        import uvloop
    except ImportError:
        raise EventLoopError("BUS_EVENT_LOOP=uvloop, but uvloop is not installed: pip install 'busway[speed]'") from None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, Any], env: Mapping[str, str] | None = None) -> Any:
    """asyncio.run(main) on the loop BUS_EVENT_LOOP names."""
    try:
        factory = loop_factory(env)
    except EventLoopError:
        main.close()  # never awaited: no "coroutine was never awaited" warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
