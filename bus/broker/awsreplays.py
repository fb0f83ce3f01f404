"""StartReplay, DescribeReplay, ListReplays, CancelReplay (being written)."""
from __future__ import annotations

OPERATIONS: dict = {}
