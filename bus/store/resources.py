"""Buses, connections, API destinations and archives created through the AWS API, kept in Redis for every broker.

Like the API rules (bus.store.apirules): YAML declares its own, the API adds more; each change
bumps one version number and every broker reloads when it sees a new one. A connection is
stored with its secret sealed (bus.secrets) and never in clear. Creating checks the name is
free and the quota in the same Lua call as the write; updating writes only over the value the
caller changed (another broker's change in between is a Conflict); deleting a connection an API
destination uses, or a bus an API rule is on, is refused in the same call.
"""
from __future__ import annotations

import logging
from typing import Literal

import msgspec
import redis.asyncio as aioredis

from bus.config.model import ApiDestination, Archive, Bus, Connection
from bus.store.connect import snapshot_pipeline
from bus.store.keys import (
    API_ARCHIVES,
    API_BUSES,
    API_CONNECTIONS,
    API_DESTINATIONS,
    API_RESOURCES_VERSION,
    API_RULES,
)
from bus.store.scripts import API_RESOURCE_DELETE, API_RESOURCE_SAVE, run_script

log = logging.getLogger("bus.store")

Kind = Literal["bus", "connection", "api_destination", "archive"]
Resource = Bus | Connection | ApiDestination | Archive

_HASH: dict[str, str] = {"bus": API_BUSES, "connection": API_CONNECTIONS, "api_destination": API_DESTINATIONS,
                         "archive": API_ARCHIVES}
_TYPE: dict[str, type] = {"bus": Bus, "connection": Connection, "api_destination": ApiDestination, "archive": Archive}
# What must not use a resource for it to be deleted: (hash of the users, the Lua script's check).
_USERS: dict[str, tuple[str, str]] = {"bus": (API_RULES, "bus"), "connection": (API_DESTINATIONS, "connection"),
                                      "api_destination": (API_DESTINATIONS, ""), "archive": (API_ARCHIVES, "")}


class Resources(msgspec.Struct, frozen=True):
    """Everything stored, by name."""

    buses: dict[str, Bus] = {}
    connections: dict[str, Connection] = {}
    api_destinations: dict[str, ApiDestination] = {}
    archives: dict[str, Archive] = {}


class Exists(Exception):
    """Create: the name is taken."""


class NotFound(Exception):
    """Update or delete: no such stored resource."""


class OverQuota(Exception):
    """Create: the kind already holds as many as its cap allows."""


class Conflict(Exception):
    """Update: another writer changed the resource since the caller read it."""


class InUse(Exception):
    """Delete: an API destination uses the connection, or an API rule is on the bus."""


_KIND_OF: dict[type, Kind] = {Bus: "bus", Connection: "connection", ApiDestination: "api_destination", Archive: "archive"}


def _kind_of(value: Resource) -> Kind:
    return _KIND_OF[type(value)]


async def version(redis: aioredis.Redis) -> int:
    return int(await redis.get(API_RESOURCES_VERSION) or 0)


async def load(redis: aioredis.Redis) -> Resources:
    """Every stored resource that decodes; one that does not is logged and skipped (one bad
    value must not stop a broker or hide the others). Its text is never logged: it may hold a
    sealed secret, and sealed is still not for logs."""
    async with snapshot_pipeline(redis) as pipe:
        for kind in _HASH:
            pipe.hgetall(_HASH[kind])
        raw = await pipe.execute()
    found = {kind: _decode_all(kind, values) for kind, values in zip(_HASH, raw)}
    return Resources(buses=found["bus"], connections=found["connection"], api_destinations=found["api_destination"],
                     archives=found["archive"])


def _decode_all(kind: str, values: dict) -> dict:
    out = {}
    for field, raw in values.items():
        try:
            value = msgspec.json.decode(raw, type=_TYPE[kind])
        except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError is a DecodeError
            log.error("stored %s skipped: %s in %s does not load (%s)", kind, _text(field), _HASH[kind], type(exc).__name__)
            continue
        out[value.name] = value
    return out


def _text(field: bytes | str) -> str:
    return field.decode(errors="replace") if isinstance(field, bytes) else field


async def create(redis: aioredis.Redis, value: Resource, cap: int = 0) -> None:
    """Store a new resource; Exists if its name is taken, OverQuota if its kind holds `cap` (0: no cap)."""
    kind = _kind_of(value)
    got = await run_script(redis, API_RESOURCE_SAVE, [_HASH[kind], API_RESOURCES_VERSION],
                           [value.name, msgspec.json.encode(value), "create", cap, ""])
    if got == -1:
        raise Exists(value.name)
    if got == -2:
        raise OverQuota(kind)


async def update(redis: aioredis.Redis, old: Resource, new: Resource) -> None:
    """Replace `old` (as the caller read it) by `new`; NotFound if gone, Conflict if changed meanwhile."""
    kind = _kind_of(new)
    got = await run_script(redis, API_RESOURCE_SAVE, [_HASH[kind], API_RESOURCES_VERSION],
                           [new.name, msgspec.json.encode(new), "update", 0, msgspec.json.encode(old)])
    if got == -1:
        raise NotFound(new.name)
    if got == -3:
        raise Conflict(new.name)


async def delete(redis: aioredis.Redis, kind: Kind, name: str) -> None:
    """Delete one resource; NotFound if there is none, InUse if something still uses it."""
    users, check = _USERS[kind]
    got = await run_script(redis, API_RESOURCE_DELETE, [_HASH[kind], API_RESOURCES_VERSION, users], [name, check])
    if got == -1:
        raise NotFound(name)
    if got == -2:
        raise InUse(name)
