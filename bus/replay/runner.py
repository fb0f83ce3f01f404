"""The replay runner: the broker holding the replay lease runs every started replay (being written)."""
from __future__ import annotations

import asyncio
from typing import Callable

import redis.asyncio as aioredis

from bus.broker.router import Router


class ReplayRunner:
    def __init__(self, redis: aioredis.Redis, router: Callable[[], Router], *, lock_ttl: float = 10.0) -> None:
        self._redis = redis
        self._router = router

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
