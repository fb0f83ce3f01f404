"""PutPermission, RemovePermission: bus policies (being written)."""
from __future__ import annotations

OPERATIONS: dict = {}
