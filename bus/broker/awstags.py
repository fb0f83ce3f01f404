"""TagResource, UntagResource, ListTagsForResource (being written)."""
from __future__ import annotations

OPERATIONS: dict = {}
