"""Archive retention: trims every archive's events older than its retention (being written)."""
from __future__ import annotations

import asyncio


async def trim_archives(broker, interval: float = 60.0) -> None:
    """Run in every broker until cancelled (a trim is one atomic script call, so brokers may race)."""
    while True:
        await asyncio.sleep(interval)
