"""Bus resource policies as every broker holds them: reloaded when their version moves (at start
and every 1 s by the broker's watch, and at once by the broker that changed one), and looked up
per PutEvents entry (bus.auth.policy.bus_denial decides with bus.auth.buspolicy).

A stored policy that does not load (only a hand-written Redis value can be one: the API checks
every policy it stores) is logged and held as a policy with no statement: the bus stays closed
to non-admin principals rather than falling open to their `buses:` lists.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from bus.auth import buspolicy
from bus.store import policies as store

log = logging.getLogger("bus.broker")
_CLOSED: dict[str, Any] = {"Version": buspolicy.VERSION, "Statement": []}


class BusPolicies:
    """The stored bus policies, reloaded when their version moves."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self.by_bus: dict[str, dict[str, Any]] = {}  # bus -> its policy document
        self._version = -1
        self._loading = asyncio.Lock()  # two loads at once could finish out of order

    async def reload(self) -> bool:
        """Load the stored policies if their version moved. Whether it moved."""
        async with self._loading:
            if await store.version(self.redis) == self._version:
                return False
            version, texts = await store.load(self.redis)
            self.by_bus = {bus: _loaded(bus, text) for bus, text in texts.items()}
            self._version = version
            return True

    def get(self, bus: str) -> dict[str, Any] | None:
        """`bus`'s policy document; None if it has none."""
        return self.by_bus.get(bus)


def _loaded(bus: str, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
        buspolicy.check(doc)
        return doc
    except (ValueError, RecursionError) as exc:  # PolicyError is a ValueError
        log.error("stored policy of bus %s does not load (%s): the bus is closed to non-admin principals", bus, exc)
        return _CLOSED
