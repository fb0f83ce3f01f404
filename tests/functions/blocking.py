"""Async handlers that misbehave where asyncio cannot stop them: they block their event loop or
end their process. Each records its call (bus: probe) first."""
import os
import time

from probe import _record


async def sleep_blocking(event, context):
    """time.sleep in an async handler: its event loop does nothing else for 30 s."""
    _record("sleep_blocking", event, context, t=time.time())
    time.sleep(30)
    return {"slept": True}


async def hard_exit(event, context):
    """Ends its process at once: no exception, no cleanup, as a C extension's abort would."""
    _record("hard_exit", event, context)
    os._exit(3)


async def stamp(event, context):
    """A well-behaved async handler that records when it ran."""
    _record("stamp", event, context, t=time.time())
    return {"ok": True}
