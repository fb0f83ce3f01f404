"""Redis clients for busway's processes: redis-py's asyncio client with hiredis packing commands.

redis-py parses replies with hiredis but packs commands in Python for asyncio connections;
for the broker's XADDs of ~1 KB events that was a quarter of its ingest CPU. Arguments are
still encoded by redis-py's own encoder, so what reaches Redis is byte-for-byte the same.

Outages: `unreachable` tells a lost Redis from a refusing one, `Backoff` paces reconnecting,
`Reachability` is what a process knows of Redis right now (the worker's /healthz), and
`Watched` makes a Queue report every call's fate to it.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from hiredis import pack_command as _hiredis_pack  # redis[hiredis] is a dependency
from redis.asyncio.connection import Connection
from redis.exceptions import ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("bus.store")

_PLAIN = frozenset((bytes, str, int))  # encoded by hiredis exactly as redis-py would (str as UTF-8)


class HiredisPackingConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # "XINFO CONSUMERS": Redis wants the words as separate arguments
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        if not all(type(arg) in _PLAIN for arg in args):  # floats, memoryviews, bad types: redis-py's rules
            args = tuple(map(self.encoder.encode, args))
        return [_hiredis_pack(args)]


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio Redis client for `url`: redis://, rediss:// or unix:// (one Redis);
    redis+cluster://[user:password@]host:port[,host:port...] (rediss+cluster:// for TLS), a
    Redis Cluster known by any of its nodes: redis-py's cluster client, which follows MOVED and
    ASK and reloads the topology after a failover; or
    redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/db], the primary that
    those Sentinels name for <service>, asked again after a failover."""
    if is_cluster_url(url):
        return _cluster(url, **kwargs)
    if url.startswith(SENTINEL_SCHEMES):
        return _sentinel(url, **kwargs)
    if url.startswith("redis://"):  # TLS and unix sockets keep redis-py's own connection classes
        kwargs.setdefault("connection_class", HiredisPackingConnection)
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_SECONDS)
    return aioredis.from_url(url, **kwargs)


def _addresses(url: str) -> tuple[str, list[tuple[str, int]], list[str], dict[str, Any]]:
    """(scheme, [(host, port)], the path's parts, username/password) of a multi-host URL."""
    scheme, rest = url.split("://", 1)
    auth, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    addresses = []
    for address in filter(None, hosts.split(",")):
        host, _, port = address.rpartition(":")
        addresses.append((host or "127.0.0.1", int(port or 6379)))
    if not addresses:
        raise ValueError(f"{url}: no host:port to reach Redis by")
    creds: dict[str, Any] = {}
    if auth:
        user, _, password = auth.rpartition(":")
        creds = {"username": user or None, "password": password or None}
    return scheme, addresses, [p for p in path.split("/") if p], creds


def _sentinel(url: str, **kwargs: Any) -> aioredis.Redis:
    scheme, addresses, path, creds = _addresses(url)
    if not path:
        raise ValueError(f"{url}: name the Sentinel service: redis+sentinel://host:port/<service>")
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_SECONDS)
    if scheme.startswith("rediss"):
        creds["ssl"] = True
    sentinel = Sentinel(addresses, sentinel_kwargs={"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS}, **creds)
    return sentinel.master_for(path[0], db=int(path[1]) if len(path) > 1 else 0, **kwargs)


def _cluster(url: str, **kwargs: Any) -> RedisCluster:
    scheme, addresses, _, creds = _addresses(url)  # a cluster has only database 0
    nodes = [ClusterNode(host, port) for host, port in addresses]
    for key, value in creds.items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_SECONDS)
    # A failover takes cluster-node-timeout plus an election: keep asking the topology rather than
    # failing the call after redis-py's 3 tries (callers retry on top, with their own backoff).
    kwargs.setdefault("cluster_error_retry_attempts", 5)
    return _Cluster(startup_nodes=nodes, ssl=scheme.startswith("rediss"), **kwargs)


class _Cluster(RedisCluster):
    """redis-py's cluster client, with one fix for its 5.x asyncio pipeline (arq, a benchmark peer
    in our venv, pins redis < 6): when a node is lost, the call that sees it closes the client,
    which forgets its default node, while other calls' pipelines are still finishing; their
    "was the default node involved" check then fails on None (AttributeError) after their commands
    ran. Any known node answers that check correctly (it was not involved)."""

    def get_default_node(self):
        return self.nodes_manager.default_node or next(iter(self.nodes_manager.startup_nodes.values()), None)


def is_cluster(redis: Any) -> bool:
    """Whether `redis` is a Redis Cluster client: the store then writes slot by slot."""
    return isinstance(redis, RedisCluster)


def snapshot_pipeline(redis: Any):
    """A pipeline for reading keys of one hash tag together: MULTI on one Redis; on a cluster
    (no MULTI in redis-py's cluster pipeline) the commands go in order to the tag's one node, so
    a reader that reads a version before the data it covers is never older than what it read."""
    return redis.pipeline(transaction=not is_cluster(redis))


# --- outages: how a process notices Redis went away, waits for it, and knows it is back -------

# Errors that mean "Redis did not answer", not "Redis refused": the call may be retried as is.
# BusyLoadingError (a restarted Redis still reading its AOF) is a ConnectionError; a cluster
# failing over answers CLUSTERDOWN (MASTERDOWN is one) or TRYAGAIN for a while.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError)
T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 2.0  # a host that is down (no RST) would otherwise hang each connect for minutes


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` means Redis could not be reached (retry later) rather than a refusal."""
    return isinstance(exc, UNREACHABLE)


class Backoff:
    """Capped exponential backoff with jitter: 50 ms doubling to 1 s, each wait drawn from
    [d/2, d] so many workers reconnecting to one Redis do not all knock at the same moment."""

    def __init__(self, first: float = 0.05, cap: float = 1.0):
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._next = self.first


class Reachability:
    """Whether Redis answered this process's last calls: what its /healthz reports.

    Every call that reaches Redis says `answered()`, every one that cannot says `failed()`;
    only the transitions are logged. Code waiting to retry `pause()`s: it wakes at the end of
    its backoff or as soon as any other call got an answer, so the first success (often a
    chore, which retry more often than the read loop) lets everyone resume at once.
    """

    def __init__(self) -> None:
        self.ok = False  # unknown until the first answer: /healthz says 503 until Redis answered once
        self.since = time.monotonic()  # of the last transition
        self._told = False  # whether the log has said it is unreachable since it last answered
        self._answered = asyncio.Event()

    def answered(self) -> None:
        if self.ok:
            return
        self.ok, self._told = True, False
        log.info("Redis answers (after %.1fs)", time.monotonic() - self.since)
        self.since = time.monotonic()
        self._answered.set()

    def failed(self, exc: BaseException) -> None:
        self._answered.clear()
        if self._told:
            return
        if self.ok:
            self.ok, self.since = False, time.monotonic()
        self._told = True
        log.warning("Redis unreachable (%s: %s); retrying with backoff, handlers keep running",
                    type(exc).__name__, exc)

    async def pause(self, seconds: float, stop: asyncio.Event | None = None) -> None:
        """Sleep `seconds`, or less: until Redis answered someone else's call, or `stop` is set."""
        waits = [asyncio.ensure_future(self._answered.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


async def until_answered(op: Callable[[], Awaitable[T]], reach: Reachability | None = None) -> T:
    """`await op()`, again with capped backoff for as long as Redis cannot be reached (woken early by
    `reach` when another call got an answer); any other error is raised at once. Only for calls
    that are safe to repeat."""
    backoff = Backoff()
    while True:
        try:
            return await op()
        except Exception as exc:
            if not unreachable(exc):
                raise
        if reach is not None:
            await reach.pause(backoff.next())
        else:
            await asyncio.sleep(backoff.next())


class Watched:
    """`target` (a Queue) whose coroutine methods tell a Reachability what each call found.

    Only methods that make a Redis call on every invocation belong behind it: one that returns
    early without a call would claim an answer Redis never gave.
    """

    def __init__(self, target: Any, reach: Reachability):
        self._target = target
        self._reach = reach

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        reach = self._reach

        @functools.wraps(attr)
        async def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await attr(*args, **kwargs)
            except UNREACHABLE as exc:
                reach.failed(exc)
                raise
            reach.answered()
            return result
        setattr(self, name, watched)  # built once per method: __getattr__ is not asked again
        return watched
