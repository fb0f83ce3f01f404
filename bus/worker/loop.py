"""The worker process: run handlers for queued deliveries the way Lambda runs async invocations.

Per delivery: check its age and attempts, take a reserved-concurrency lease, run the handler
(async in this event loop, sync in a killable slot process) under its timeout, then finish it
atomically: ack and delete, plus a retry, a dead letter or a destination record.

Crash safety comes from leases: this worker renews its in-flight entries every second; any
worker reclaims entries idle longer than the lease (XAUTOCLAIM), and the stream's delivery
counter makes an attempt that died with its worker count like any other.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import socket
import time
import uuid
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from bus.observe import metrics
from bus.worker.context import make_context
from bus.store.deadletters import encode_dead_letter, make_dead_letter, trim_min_id
from bus.worker.destinations import INBOX, invocation_record
from bus.worker.functions import FunctionLoader, FunctionLoadError
from bus.worker.held import Held, HeldDelivery, give_back
from bus.store.connect import connect
from bus.store.deliveries import (
    FIELD, GROUP, PREFIX, WORKERS, Delivery, TargetInfo, as_str, decode_delivery, delayed_key, dlq_key,
    encode_delivery, read_targets,
)
from bus.worker.retry import AGE_EXCEEDED, ATTEMPTS_EXHAUSTED, GiveUp, after_failure, too_old
from bus.store.scripts import Scripts
from bus.worker.slot import Call, Reply
from bus.worker.slots import SlotPool, Ticket
from bus.observe.trace import Tracer

log = logging.getLogger("bus.worker")

REFRESH_SECONDS = 2.0
BLOCK_MS = 1000
HEARTBEAT_SECONDS = 1.0
PRUNE_SECONDS = 60.0
DEAD_CONSUMER_IDLE_MS = 10 * 60 * 1000  # only consumers with nothing pending are removed
MOVE_SECONDS = 0.1
HOLD_CHECK_SECONDS = 0.25
FINISHING_BATCHES = 3  # handler returned, outcome not yet in Redis: at most this many x concurrency
THROTTLE_DELAY = (0.05, 0.5)


class WorkerSettings(msgspec.Struct):
    concurrency: int = 10
    prefetch: int | None = None  # deliveries read ahead of free slots (bus.worker.held); None: = concurrency
    lease_seconds: float = 3.0  # an entry idle this long is reclaimed: the crash-recovery bound
    grace_seconds: float = 30.0  # SIGTERM: how long in-flight handlers may finish


class Worker:
    def __init__(self, redis: aioredis.Redis, functions_dir: str | None,
                 settings: WorkerSettings | None = None, consumer: str | None = None):
        self.redis = redis
        self.settings = settings or WorkerSettings()
        self.loader = FunctionLoader(functions_dir)
        self.slots = SlotPool(self.loader)
        self.scripts = Scripts(redis)
        self.tracer = Tracer(redis)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.targets: dict[str, TargetInfo] = {}  # stream key -> target
        self._leases: dict[str, set[bytes]] = {}  # stream key -> entry ids in flight here
        self._inflight: set[asyncio.Task] = set()  # deliveries not yet finished in Redis
        self._active = 0  # deliveries started and not yet past their handler: what --concurrency limits
        self._slot_free = asyncio.Event()  # set whenever a handler returns or a delivery finishes
        prefetch = self.settings.prefetch
        self._held = Held(self.settings.concurrency if prefetch is None else prefetch)
        self._stopping = False
        self._refreshed = 0.0
        self.account = os.environ.get("BUS_ACCOUNT", "000000000000")
        self.region = os.environ.get("BUS_REGION", "us-east-1")

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        metrics.CONCURRENCY_LIMIT.set(self.settings.concurrency)
        log.info("worker %s started (concurrency %d, prefetch %d, lease %.1fs)", self.consumer,
                 self.settings.concurrency, self._held.limit, self.settings.lease_seconds)
        chores = [asyncio.create_task(c) for c in (
            self._every(HEARTBEAT_SECONDS, self._heartbeat), self._every(self.settings.lease_seconds / 3, self._renew),
            self._every(MOVE_SECONDS, self._move_due), self._every(self.settings.lease_seconds / 6, self._reclaim),
            self._every(PRUNE_SECONDS, self._prune), self._every(HOLD_CHECK_SECONDS, self._give_back_stale),
            self.tracer.watch(), self._notice_stop(stop))]
        try:
            await self._read_loop(stop)
            self._stopping = True
            await self._give_back(self._held.take_all())
            await self._drain()
        finally:
            for chore in chores:
                chore.cancel()
            await self.slots.close()
            await self.redis.zrem(WORKERS, self.consumer)
        log.info("worker %s stopped", self.consumer)

    async def _notice_stop(self, stop: asyncio.Event) -> None:
        """SIGTERM: from now on start nothing new, even while the read loop waits for a slot."""
        await stop.wait()
        self._stopping = True
        self._slot_free.set()

    async def _drain(self) -> None:
        """SIGTERM: take no new work, give in-flight deliveries the grace period, then leave.

        Whatever is still running is abandoned; its leases lapse and another worker retries it.
        """
        if not self._inflight:
            return
        log.info("finishing %d in-flight deliveries (grace %.0fs)", len(self._inflight), self.settings.grace_seconds)
        _, late = await asyncio.wait(set(self._inflight), timeout=self.settings.grace_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            log.warning("%d deliveries did not finish in the grace period; they will be redelivered", len(late))

    async def _every(self, seconds: float, chore) -> None:
        while True:
            try:
                await chore()
            except asyncio.CancelledError:
                raise
            except Exception:  # a chore must survive Redis hiccups; the next round retries
                log.warning("%s failed", chore.__name__, exc_info=True)
            await asyncio.sleep(seconds)

    async def _heartbeat(self) -> None:
        await self.redis.zadd(WORKERS, {self.consumer: time.time()})

    async def _prune(self) -> None:
        """Forget dead workers: every restart is a new consumer name, and groups would grow forever.

        Only consumers with no pending entries go (deleting one with pending entries would make
        them unclaimable); a live one that is merely idle is recreated by its next read.
        """
        await self.redis.zremrangebyscore(WORKERS, "-inf", time.time() - 60)
        for stream in list(self.targets):
            for consumer in await self.redis.xinfo_consumers(stream, GROUP):
                name = as_str(consumer["name"])
                if consumer["pending"] == 0 and consumer["idle"] > DEAD_CONSUMER_IDLE_MS and name != self.consumer:
                    await self.redis.xgroup_delconsumer(stream, GROUP, name)

    async def _refresh_targets(self) -> None:
        if time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        infos = await read_targets(self.redis)
        self.targets = {info.stream: info for info in infos.values()}
        self._refreshed = time.monotonic()

    # --- taking work ----------------------------------------------------------------------

    def _room(self) -> int:
        """How many deliveries to read now: free slots plus read-ahead room.

        A slot frees when its handler returns, so reading the next deliveries overlaps with
        recording the last outcomes (a batched FINISH: up to 1 ms plus an fsync-bound round
        trip). Deliveries still finishing are capped at FINISHING_BATCHES x concurrency, so
        a slow Redis stops the reading instead of piling them up. (At one batch, the cap was
        what bounded a busy worker: it waited about 1 ms per read cycle for finishes.)
        """
        if self._stopping:
            return 0
        concurrency = self.settings.concurrency
        finishing_cap = ((1 + FINISHING_BATCHES) * concurrency + self._held.limit
                         - len(self._inflight) - len(self._held))
        return min(concurrency - self._active + self._held.room(), finishing_cap)

    async def _read_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._refresh_targets()
            if not self.targets:
                await _sleep_or_stop(stop, 0.2)
                continue
            await asyncio.sleep(0)  # let handlers that return in this loop turn free their slots first
            room = self._room()
            if room <= 0 or ((len(self._held) or self.slots.queued) and room < self._held.limit // 2):
                # While deliveries wait (held, or queued in a slot) behind busy slots, read in
                # batches: fewer round trips (and AOF fsyncs) per delivery, and no free slot waits
                # for the read.
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            streams = {s: ">" for s in self.targets}
            replies = await self.redis.xreadgroup(GROUP, self.consumer, streams, count=room, block=BLOCK_MS)
            for stream, entries in replies or []:
                for entry_id, fields in entries:
                    self._take(HeldDelivery(as_str(stream), entry_id, fields, times_delivered=1))

    async def _reclaim(self) -> None:
        """Take over entries whose worker stopped renewing them (it died or hung)."""
        idle_ms = int(self.settings.lease_seconds * 1000)
        for stream in list(self.targets):
            if self._room() <= 0:
                return
            _, entries, *_ = await self.redis.xautoclaim(stream, GROUP, self.consumer, idle_ms, "0-0", count=self._room())
            for entry_id, fields in entries:
                if not fields:  # deleted meanwhile (Redis < 7 returns it with no fields)
                    await self.redis.xack(stream, GROUP, entry_id)
                    continue
                pending = await self.redis.xpending_range(stream, GROUP, entry_id, entry_id, 1)
                times = pending[0]["times_delivered"] if pending else 1
                log.info("reclaimed %s (delivery %d): its worker went silent or gave it back", entry_id.decode(), times)
                self._take(HeldDelivery(stream, entry_id, fields, times_delivered=times))

    def _take(self, delivery: HeldDelivery) -> None:
        """Start a delivery just read, or hold it until a slot frees."""
        self._leases.setdefault(delivery.stream, set()).add(delivery.entry_id)
        self._held.add(delivery)
        self._dispatch()

    def _dispatch(self) -> None:
        """Start held deliveries, oldest first, while a handler may run or a sync call may queue.

        Running handlers (started minus the sync calls queued in a slot) never exceed
        --concurrency: a queued call begins only when the calls ahead of it in its slot are done.
        """
        concurrency = self.settings.concurrency
        while not self._stopping and (held := self._held.first()) is not None:
            if not self._start(held, may_run=self._active - self.slots.queued < concurrency):
                return
            self._held.next()

    def _start(self, held: HeldDelivery, may_run: bool = True) -> bool:
        """Start a delivery, or say False: it may not run now and its call cannot queue in a slot."""
        stream, entry_id = held.stream, held.entry_id
        info = self.targets[stream]
        slotted = self._runs_in_slot(info)
        if not may_run and not (slotted and self.slots.can_queue(info.function)):
            return False
        d = decode_delivery(held.fields[FIELD])
        attempt = d.retries + held.times_delivered
        early = self._give_up_early(info, entry_id, d, attempt)
        if early is None:
            run, ticket = _Run(_target_metrics(info.function, info.key), d.ingested), None
            if slotted:  # placed now, so the next calls can queue behind it in the same slot
                call = Call(info.function, bytes(d.event), self._context_fields(info, d, attempt), info.settings.timeout)
                if (ticket := self.slots.place(call, may_run, run.begin)) is None:
                    return False
            self._active += 1  # given back in _process once the handler has returned
            early = self._process(info, entry_id, d, attempt, run, ticket)
        task = asyncio.create_task(early)
        self._inflight.add(task)
        task.add_done_callback(lambda t: self._done(t, stream, entry_id))
        return True

    def _runs_in_slot(self, info: TargetInfo) -> bool:
        """A sync handler without reserved concurrency (whose lease is taken before the call)."""
        if info.settings.reserved_concurrency is not None:
            return False
        try:
            return not self.loader.load(info.function).is_async
        except FunctionLoadError:
            return False

    def _slot_returned(self) -> None:
        """A handler returned: held deliveries take its place at once."""
        self._active -= 1
        self._slot_free.set()
        self._dispatch()

    async def _give_back_stale(self) -> None:
        await self._give_back(self._held.take_stale())

    async def _give_back(self, deliveries: list[HeldDelivery]) -> None:
        if not deliveries:
            return
        for held in deliveries:
            self._leases.get(held.stream, set()).discard(held.entry_id)
        try:
            await give_back(self.redis, self.consumer, deliveries)
        except Exception:  # e.g. Redis is down: the leases lapse and they are redelivered anyway
            log.warning("could not give back %d held deliveries; they are redelivered when their lease lapses",
                        len(deliveries), exc_info=True)
            return
        log.info("gave back %d deliveries held ahead of free slots", len(deliveries))

    def _done(self, task: asyncio.Task, stream: str, entry_id: bytes) -> None:
        self._inflight.discard(task)
        self._slot_free.set()
        self._leases.get(stream, set()).discard(entry_id)
        if not task.cancelled() and task.exception():
            log.error("delivery %s crashed the worker's bookkeeping; it will be redelivered", entry_id,
                      exc_info=task.exception())

    async def _renew(self) -> None:
        for stream, ids in list(self._leases.items()):
            if ids:
                lost = await self.scripts.renew([stream], [GROUP, self.consumer, *ids])
                if lost:
                    log.warning("lost the lease of %d deliveries on %s to another worker", len(lost), stream)

    async def _move_due(self) -> None:
        now_ms = int(time.time() * 1000)
        for info in list(self.targets.values()):
            await self.scripts.move_due([delayed_key(info.key), info.stream], [now_ms, 100, FIELD])

    # --- one delivery ---------------------------------------------------------------------

    def _give_up_early(self, info: TargetInfo, entry_id: bytes, d: Delivery, attempt: int):
        """The give-up that needs no handler run (and so no slot), as a coroutine, or None."""
        if attempt > info.retry_policy.maximum_retry_attempts + 1:  # earlier attempts died with their workers
            return self._give_up(info, entry_id, d, attempt - 1, GiveUp(ATTEMPTS_EXHAUSTED), "KILLED",
                                 "the worker holding this delivery died during (or just before) its last attempt")
        if too_old(info.retry_policy, d.first_enqueued, time.time()):
            return self._give_up(info, entry_id, d, attempt - 1, GiveUp(AGE_EXCEEDED),
                                 "EVENT_AGE", "the event is older than maximum_event_age_seconds")
        return None

    async def _process(self, info: TargetInfo, entry_id: bytes, d: Delivery, attempt: int, run: "_Run",
                       ticket: Ticket | None) -> None:
        limit = info.settings.reserved_concurrency
        token = f"{self.consumer}:{entry_id.decode()}"
        try:
            if limit is not None and not await self._acquire(info.function, limit, token):
                reply = None
            else:
                try:
                    reply = await self._invoke(info, d, attempt, run, ticket)
                finally:
                    if limit is not None:
                        await self.redis.zrem(_concurrency_key(info.function), token)
        finally:
            self._slot_returned()
        if reply is None:
            await self._throttle(info, entry_id, d, attempt, zero=limit == 0)
            return
        if reply.ok:
            await self._succeed(info, entry_id, d, attempt, reply)
        else:
            await self._fail(info, entry_id, d, attempt, reply)
        m = run.m
        (m.complete_success if reply.ok else m.complete_failure).observe(max(0.0, time.time() - d.ingested))

    async def _invoke(self, info: TargetInfo, d: Delivery, attempt: int, run: "_Run", ticket: Ticket | None) -> Reply:
        try:
            reply = await self._call(info, d, attempt, run, ticket)
        finally:
            run.end()
        if not reply.ok:
            metrics.ERRORS.labels(info.function, info.key, reply.kind).inc()
        return reply

    def _context_fields(self, info: TargetInfo, d: Delivery, attempt: int) -> dict[str, Any]:
        return dict(request_id=d.id, function=info.function, rule=info.rule, target=info.target,
                    bus=info.bus, attempt=attempt, memory=info.settings.memory_limit_in_mb, worker=self.consumer)

    async def _call(self, info: TargetInfo, d: Delivery, attempt: int, run: "_Run", ticket: Ticket | None) -> Reply:
        if ticket is not None:
            return await self.slots.run_ticket(ticket)
        timeout = info.settings.timeout
        fields = self._context_fields(info, d, attempt)
        try:
            function = self.loader.load(info.function)
        except FunctionLoadError as exc:
            run.begin()
            return Reply(False, "import", "Runtime.ImportModuleError", str(exc))
        if not function.is_async:
            return await self.slots.run(info.function, bytes(d.event), fields, timeout, run.begin)
        context = make_context(timeout=timeout, **fields)
        run.begin()
        try:
            async with asyncio.timeout(timeout):  # no extra task per call, unlike wait_for
                result = await function.handler(msgspec.json.decode(d.event), context)
        except TimeoutError:
            return Reply(False, "timeout", "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
        except Exception as exc:  # the handler's failure is the delivery's outcome
            return Reply(False, "exception", type(exc).__name__, str(exc))
        try:
            return Reply(True, result=msgspec.json.encode(result))
        except (TypeError, msgspec.EncodeError):
            return Reply(True)

    async def _acquire(self, function: str, limit: int, token: str) -> bool:
        if limit <= 0:
            return False
        now_ms = int(time.time() * 1000)
        expiry = now_ms + int(self.settings.lease_seconds * 1000) + int(3600 * 1000)
        # A lease outlives any handler (timeout <= 900 s); a dead worker's lease is freed by
        # expiry. Renewal is not needed because release happens in `finally`.
        got = await self.scripts.acquire([_concurrency_key(function)], [now_ms, expiry, limit, token])
        return bool(got)

    # --- finishing --------------------------------------------------------------------------

    async def _finish(self, info: TargetInfo, entry_id: bytes, follow_ups: list[tuple[str, str, Any, Any]]) -> bool:
        """Ack + delete + follow-ups, atomically; False if another worker finished it first."""
        return await self.scripts.finish(info.stream, entry_id, follow_ups)

    async def _succeed(self, info: TargetInfo, entry_id: bytes, d: Delivery, attempt: int, reply: Reply) -> None:
        follow = []
        if info.on_success:
            result = msgspec.json.decode(reply.result) if reply.result else None
            follow.append(self._record(info, d, "Success", attempt, result, None, info.on_success))
        if await self._finish(info, entry_id, follow):
            _log(logging.DEBUG, "delivered", d, attempt)
            self._trace(d, attempt, "success")

    async def _fail(self, info: TargetInfo, entry_id: bytes, d: Delivery, attempt: int, reply: Reply) -> None:
        code, message = reply.kind.upper() if reply.kind != "import" else "IMPORT_ERROR", f"{reply.error_type}: {reply.message}"
        decision = after_failure(info.retry_policy, attempt, d.first_enqueued, time.time())
        if isinstance(decision, GiveUp):
            await self._give_up(info, entry_id, d, attempt, decision, code, message)
            return
        retry = msgspec.structs.replace(d, retries=attempt)
        follow = [("Z", delayed_key(info.key), int(decision.due * 1000), encode_delivery(retry))]
        if await self._finish(info, entry_id, follow):
            metrics.RETRIES.labels(info.key).inc()
            _log(logging.WARNING, f"failed ({message}); retry in {decision.due - time.time():.1f}s", d, attempt)
            self._trace(d, attempt, "retry", message)

    async def _give_up(self, info: TargetInfo, entry_id: bytes, d: Delivery, attempts: int, decision: GiveUp,
                       code: str, message: str) -> None:
        follow = []
        dlq = info.dlq_name
        if dlq:
            letter = make_dead_letter(d, code, message, attempts, decision.condition)
            follow.append(("X", dlq_key(dlq), FIELD, encode_dead_letter(letter)))
        if info.on_failure:
            condition = "EventAgeExceeded" if decision.condition == AGE_EXCEEDED else "RetriesExhausted"
            error = {"errorType": code, "errorMessage": message}
            follow.append(self._record(info, d, condition, attempts, None, error, info.on_failure))
        if not await self._finish(info, entry_id, follow):
            return
        if dlq:
            metrics.DEAD_LETTERS.labels(info.key, decision.condition).inc()
            self._trace(d, attempts, "dead_letter", f"{decision.condition}: {message}")
            await self.redis.xtrim(dlq_key(dlq), minid=trim_min_id(), approximate=True)
            _log(logging.ERROR, f"dead-lettered to {dlq} ({decision.condition}; {message})", d, attempts)
        else:
            metrics.DROPPED.labels(info.key, decision.condition).inc()
            self._trace(d, attempts, "dropped", f"{decision.condition}: {message}")
            _log(logging.ERROR, f"dropped: no dead_letter configured ({decision.condition}; {message})", d, attempts)

    async def _throttle(self, info: TargetInfo, entry_id: bytes, d: Delivery, attempt: int, zero: bool) -> None:
        """Over reserved concurrency: the delivery waits, it is not failed, and no attempt is used."""
        metrics.THROTTLES.labels(info.function, info.key).inc()
        self._trace(d, attempt, "throttled")
        if zero:  # Lambda: reserved concurrency 0 sends async events straight to the DLQ
            await self._give_up(info, entry_id, d, attempt - 1, GiveUp(ATTEMPTS_EXHAUSTED),
                                "THROTTLED", "reserved_concurrency is 0")
            return
        due = time.time() + random.uniform(*THROTTLE_DELAY)
        again = msgspec.structs.replace(d, retries=attempt - 1)
        await self._finish(info, entry_id, [("Z", delayed_key(info.key), int(due * 1000), encode_delivery(again))])

    def _trace(self, d: Delivery, attempt: int, outcome: str, detail: str = "") -> None:
        if self.tracer.enabled:
            self.tracer.outcome(msgspec.json.decode(d.event).get("id"), d.target_key, attempt, outcome, detail)

    def _record(self, info: TargetInfo, d: Delivery, condition: str, attempts: int, response: Any,
                error: dict | None, to_bus: str) -> tuple[str, str, Any, Any]:
        arn = f"arn:aws:lambda:{self.region}:{self.account}:function:{info.function}"
        record = invocation_record(d, function_arn=arn, account=self.account, region=self.region,
                                   condition=condition, attempts=attempts, response=response, error=error,
                                   to_bus=to_bus)
        return ("X", INBOX, FIELD, record)


def _concurrency_key(function: str) -> str:
    return f"{PREFIX}:concurrency:{{{function}}}"


class _TargetMetrics(msgspec.Struct):
    invocations: Any
    ingestion_to_start: Any
    concurrent: Any
    duration: Any
    complete_success: Any
    complete_failure: Any


class _Run:
    """One handler run's metrics, from when it begins (a queued sync call: at its turn) to its end."""

    __slots__ = ("m", "ingested", "started")

    def __init__(self, m: _TargetMetrics, ingested: float):
        self.m, self.ingested, self.started = m, ingested, 0.0

    def begin(self) -> None:
        self.m.invocations.inc()
        self.m.ingestion_to_start.observe(max(0.0, time.time() - self.ingested))
        self.m.concurrent.inc()
        self.started = time.perf_counter()

    def end(self) -> None:
        if self.started:
            self.m.concurrent.dec()
            self.m.duration.observe(time.perf_counter() - self.started)


@functools.lru_cache(maxsize=4096)  # labels() is a locked dict lookup; once per target is enough
def _target_metrics(function: str, target: str) -> _TargetMetrics:
    return _TargetMetrics(
        metrics.INVOCATIONS.labels(function, target), metrics.INGESTION_TO_START.labels(target),
        metrics.CONCURRENT.labels(function), metrics.HANDLER_DURATION.labels(function),
        metrics.INGESTION_TO_COMPLETE.labels(target, "success"), metrics.INGESTION_TO_COMPLETE.labels(target, "failure"),
    )


def _log(level: int, what: str, d: Delivery, attempt: int) -> None:
    """One log line about a delivery, with event id, rule, target and attempt as fields."""
    if not log.isEnabledFor(level):
        return
    event_id = msgspec.json.decode(d.event).get("id")
    fields = {"event_id": event_id, "rule": d.rule, "target": d.target_key, "attempt": attempt, "request_id": d.id}
    log.log(level, "%s: event %s rule %s target %s attempt %d", what, event_id, d.rule, d.target_key, attempt,
            extra={"fields": fields})


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def metrics_app_runner(host: str, port: int) -> web.AppRunner:
    async def get_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_worker(redis_url: str, functions_dir: str | None, settings: WorkerSettings,
                     metrics_port: int | None, stop: asyncio.Event, host: str = "127.0.0.1") -> None:
    redis = connect(redis_url)
    runner = await metrics_app_runner(host, metrics_port) if metrics_port else None
    if metrics_port:
        log.info("worker metrics on http://%s:%d/metrics", host, metrics_port)
    try:
        await Worker(redis, functions_dir, settings).run(stop)
    finally:
        if runner:
            await runner.cleanup()
        await redis.aclose()
