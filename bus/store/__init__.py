"""The storage layer: every Redis key, Lua script and delivery operation busway has."""
