"""Every Lua script busway runs, and the one way to run them: EVALSHA, sending the body only
when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH), alone or in a pipeline.

The scripts are the files of bus/store/lua/, each opening with what its KEYS and ARGV are;
`lua(name)` loads one. `run_script` makes one call, `run_pipelined` several in one round
trip, and `FinishBatcher` gathers the workers' FINISH calls into such pipelines.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from bus.observe import metrics
from bus.store.connect import is_cluster
from bus.store.keys import GROUP, key_slot


class Lua(NamedTuple):
    """A script's source and the SHA1 Redis knows it by."""

    name: str
    body: str
    sha: str

    @classmethod
    def of(cls, body: str, name: str = "inline") -> Lua:
        return cls(name, body, hashlib.sha1(body.encode()).hexdigest())


@functools.cache
def lua(name: str) -> Lua:
    """The script bus/store/lua/<name>.lua (read through importlib, so it works installed too)."""
    return Lua.of(resources.files("bus.store").joinpath("lua", f"{name}.lua").read_text(), name)


# Deliveries (the worker and the broker)
FINISH = lua("finish")
RENEW = lua("renew")
MOVE_DUE = lua("move_due")
ACQUIRE = lua("acquire")
INVOKE_CLAIM = lua("invoke_claim")
SQS_SEND = lua("sqs_send")
SQS_RECEIVE = lua("sqs_receive")
SQS_SETTLE = lua("sqs_settle")
ENQUEUE = lua("enqueue")
# The scheduler: its leader lock and its fenced writes
LEADER_ACQUIRE = lua("leader_acquire")
LEADER_RENEW = lua("leader_renew")
LEADER_RELEASE = lua("leader_release")
SCHEDULE_FIRE = lua("schedule_fire")
SCHEDULE_SAVE = lua("schedule_save")
# Dead letters
REDRIVE = lua("redrive")
INBOX_DEAD_LETTER = lua("inbox_dead_letter")
API_RULE_SAVE = lua("api_rule_save")
API_RULE_DELETE = lua("api_rule_delete")
# API destinations (http targets): the invocation rate limit
RATE_TAKE = lua("rate_take")
# Buses, connections and API destinations made through the AWS API (bus.store.resources)
API_RESOURCE_SAVE = lua("api_resource_save")
API_RESOURCE_DELETE = lua("api_resource_delete")
# Archives (bus.store.archives): retention trimming with the byte count kept
ARCHIVE_TRIM = lua("archive_trim")
# Replays (bus.store.replays): a fenced step (deliveries + checkpoint) and a state change
REPLAY_STEP = lua("replay_step")
REPLAY_SAVE = lua("replay_save")
# Bus policies and tags (bus.store.policies, bus.store.tags)
POLICY_SAVE = lua("policy_save")
TAGS_SAVE = lua("tags_save")

Call = tuple[Lua, Sequence[Any], Sequence[Any]]  # (script, keys, args)


def _as_lua(script: Lua | str) -> Lua:
    return script if isinstance(script, Lua) else Lua.of(script)


async def run_script(redis: aioredis.Redis, script: Lua | str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """Call a script by SHA, sending its body only if Redis forgot it."""
    script = _as_lua(script)
    try:
        return await redis.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await redis.eval(script.body, len(keys), *keys, *args)


class NotReplicated(RedisError):
    """WAIT found fewer replicas than asked with the writes within its timeout (--durability
    replicated): the writes are on the primary, but not yet safe from losing it."""


async def run_pipelined(redis: aioredis.Redis, calls: Sequence[Call], replicas: int = 0,
                        wait_ms: int = 1000) -> list[Any]:
    """Make every call in one round trip; a call's error is its result (an Exception), a lost
    connection raises. Calls Redis answered NOSCRIPT go again by body, and only those: the
    others have already run, and running a script twice would do its writes twice.

    `replicas` > 0: each node that ran calls is then sent WAIT `replicas` `wait_ms` on the same
    connection, after them; NotReplicated if a node's replicas did not all confirm in time."""
    results = await _pipeline(redis, calls, by_body=False, replicas=replicas, wait_ms=wait_ms)
    again = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if again:
        redone = await _pipeline(redis, [calls[i] for i in again], by_body=True, replicas=replicas, wait_ms=wait_ms)
        for i, result in zip(again, redone):
            results[i] = result
    return results


async def _pipeline(redis: aioredis.Redis, calls: Sequence[Call], by_body: bool, replicas: int = 0,
                    wait_ms: int = 1000) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            # execute_command: redis-py's cluster pipeline refuses its own evalsha() method, but
            # routes the command by its first key like any other.
            if by_body:
                pipe.execute_command("EVAL", script.body, len(keys), *keys, *args)
            else:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        waits = _add_waits(redis, pipe, calls, replicas, wait_ms) if replicas > 0 else 0
        results = await pipe.execute(raise_on_error=False)
    if waits:
        results, acked = results[:-waits], results[-waits:]
        short = [a for a in acked if isinstance(a, Exception) or int(a) < replicas]
        # Calls answered NOSCRIPT wrote nothing: their redo by body WAITs again, and decides.
        if short and not any(isinstance(r, NoScriptError) for r in results):
            raise NotReplicated(f"WAIT {replicas} {wait_ms}: {short[0]!r} replicas confirmed the write in time")
    return results


def _add_waits(redis: Any, pipe: Any, calls: Sequence[Call], replicas: int, wait_ms: int) -> int:
    """WAIT on each connection the calls went to: one on one Redis; one per node on a cluster (a
    pipeline sends a node's commands in order on one connection, and WAIT counts that connection's
    writes)."""
    if not is_cluster(redis):
        pipe.execute_command("WAIT", replicas, wait_ms)
        return 1
    nodes = {}
    for _, keys, _ in calls:
        node = redis.get_node_from_key(keys[0])
        nodes[node.name] = node
    for node in nodes.values():
        pipe.execute_command("WAIT", replicas, wait_ms, target_nodes=node)
    return len(nodes)


class Script:
    """A script bound to a client: `await script(keys, args)`."""

    def __init__(self, redis: aioredis.Redis, script: Lua | str):
        self.redis = redis
        self.lua = _as_lua(script)

    @property
    def body(self) -> str:
        return self.lua.body

    @property
    def sha(self) -> str:
        return self.lua.sha

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return await run_script(self.redis, self.lua, keys, args)


FollowUp = tuple[str, str, Any, Any]  # (op, key, a, b): see finish.lua
FLUSH_DELAY = 0.001
REPLY_TTL_MS = 600000  # a reply stream no broker reads goes away (finish.lua says the same)


class FinishBatcher:
    """Finishes deliveries in batches: one FINISH call per stream per millisecond at most.

    Deliveries finish at nearly the same moment; one round trip (and one AOF fsync) and one
    script call for all of a stream's finished entries, instead of one each, is most of the
    worker's speed. Waiting FLUSH_DELAY after the first outcome (instead of one loop turn)
    also gathers sync handlers' replies, which arrive from their slots one wakeup at a time:
    half the FINISH calls per delivery, for 1 ms more before the ack (handlers never wait on it).
    """

    def __init__(self, script: Script, group: str = GROUP, cluster: bool = False):
        self.script = script
        self.group = group
        self.cluster = cluster  # follow-ups on another slot than their stream are written first
        self._pending: list[tuple[str, Any, list[FollowUp], asyncio.Future]] = []
        self._flushes: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def __call__(self, stream: str, entry_id: Any, follow_ups: list[FollowUp]) -> asyncio.Future:
        """Finish one entry; the future says whether it was still ours (acked now)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_later(FLUSH_DELAY, self._start_flush)
        self._pending.append((stream, entry_id, follow_ups, future))
        return future

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self.cluster:
            batch = await self._write_remote_follow_ups(batch)
        by_stream: dict[str, list] = {}
        for item in batch:
            by_stream.setdefault(item[0], []).append(item)
        calls: list[Call] = [(self.script.lua, *self._call(stream, items)) for stream, items in by_stream.items()]
        try:
            results = await run_pipelined(self.script.redis, calls)
        except Exception as exc:  # the connection failed: every caller sees it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for items, result in zip(by_stream.values(), results):
            for (*_, future), acked in zip(items, result if isinstance(result, list) else [result] * len(items)):
                if future.done():
                    continue
                if isinstance(acked, Exception):
                    future.set_exception(acked)
                else:
                    future.set_result(bool(acked))

    async def _write_remote_follow_ups(self, batch: list) -> list:
        """Redis Cluster: write the follow-ups whose keys lie on another slot than their stream (a
        shared DLQ, the inbox) before the FINISH that acks the entry, which keeps the rest. A crash in
        between leaves the entry pending: it is attempted again (at least once, never lost). If
        another worker finished the entry first, what was written here is a counted duplicate."""
        remote: list[tuple[int, FollowUp]] = []
        kept = []
        for n, (stream, entry_id, follow_ups, future) in enumerate(batch):
            slot = key_slot(stream)
            local = [f for f in follow_ups if key_slot(f[1]) == slot]
            remote += [(n, f) for f in follow_ups if key_slot(f[1]) != slot]
            kept.append((stream, entry_id, local, future))
        if not remote:
            return kept
        try:
            async with self.script.redis.pipeline(transaction=False) as pipe:
                for _, (op, key, a, b) in remote:
                    if op == "Z":
                        pipe.zadd(key, {b: a})
                    else:
                        pipe.xadd(key, {a: b})
                        if op == "R":  # a broker's reply stream (finish.lua)
                            pipe.pexpire(key, REPLY_TTL_MS)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            results = [exc] * len(remote)
        failed = {n: r for (n, _), r in zip(remote, results) if isinstance(r, Exception)}
        for n, exc in failed.items():  # not finished: the entry stays pending and is attempted again
            kept[n][3].set_exception(exc)
        for n in {n for n, _ in remote} - failed.keys():
            kept[n][3].add_done_callback(_count_duplicate)
        return [item for n, item in enumerate(kept) if n not in failed]

    def _call(self, stream: str, items: list) -> tuple[list, list]:
        keys: list[Any] = [stream]
        args: list[Any] = [self.group]
        for _, entry_id, follow_ups, _ in items:
            args += [entry_id, len(follow_ups)]
            for op, key, a, b in follow_ups:
                keys.append(key)
                args += [op, a, b]
        return keys, args


def _count_duplicate(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is None and future.result() is False:
        metrics.CROSS_SLOT_DUPLICATES.labels("follow_up").inc()


class Scripts:
    """The delivery scripts bound to one client, as the worker's queue calls them."""

    def __init__(self, redis: aioredis.Redis, cluster: bool = False):
        self.finish = FinishBatcher(Script(redis, FINISH), group=GROUP, cluster=cluster)
        self.renew = Script(redis, RENEW)
        self.move_due = Script(redis, MOVE_DUE)
        self.acquire = Script(redis, ACQUIRE)
        self.invoke_claim = Script(redis, INVOKE_CLAIM)
        self.rate_take = Script(redis, RATE_TAKE)
