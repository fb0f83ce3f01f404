"""Bus resource policies as every broker holds them (being written)."""
from __future__ import annotations

from typing import Any


class BusPolicies:
    """The stored bus policies, reloaded when their version moves."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self.by_bus: dict[str, Any] = {}

    async def reload(self) -> bool:
        """Load the stored policies if their version moved. Whether it moved."""
        return False
