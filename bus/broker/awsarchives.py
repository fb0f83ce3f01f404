"""CreateArchive, DescribeArchive, ListArchives, UpdateArchive, DeleteArchive (being written)."""
from __future__ import annotations

OPERATIONS: dict = {}
