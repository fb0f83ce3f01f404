"""BUS_EVENT_LOOP: which event loop serve, worker and tail run on (bus.eventloop)."""
import asyncio
import subprocess
import sys

import pytest
import uvloop

from bus.eventloop import EventLoopError, loop_factory, run


async def _loop_type():
    return type(asyncio.get_running_loop())


def test_the_default_is_asyncios_own_loop():
    assert loop_factory({}) is None
    assert not issubclass(run(_loop_type(), env={}), uvloop.Loop)


def test_bus_event_loop_uvloop_runs_on_uvloop():
    assert issubclass(run(_loop_type(), env={"BUS_EVENT_LOOP": "uvloop"}), uvloop.Loop)


def test_an_unknown_loop_name_is_refused_by_name():
    with pytest.raises(EventLoopError, match="must be one of asyncio, uvloop, not 'tokio'"):
        run(_loop_type(), env={"BUS_EVENT_LOOP": "tokio"})


def test_bus_tail_with_an_unknown_loop_exits_2_with_the_reason():
    out = subprocess.run([sys.executable, "-m", "bus", "tail", "--redis", "redis://127.0.0.1:1/0"],
                         env={"BUS_EVENT_LOOP": "nope", "PATH": ""}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "BUS_EVENT_LOOP must be one of" in out.stderr
