"""The worker loop: take queued deliveries and run each through its target kind's invoker.

Per delivery: decide whether it may still run (bus.worker.outcome.before_attempt), let the
invoker of its target's kind run the attempt (bus.worker.invokers), decide what follows
(after_attempt), then finish it in the store: ack and delete plus a retry, a dead letter or
a destination record, atomically. Every Redis operation goes through bus.store.queue.Queue.

Crash safety comes from leases: this worker renews its in-flight entries every
lease/3 seconds; any worker reclaims entries idle longer than the lease, and the stream's
delivery counter makes an attempt that died with its worker count like any other.

Redis outages: a call that cannot reach Redis is retried with capped backoff
(bus.store.connect), never fatal. Running handlers keep running; an outcome that cannot be
written waits for Redis and is written when it answers (first finisher wins, as always);
/healthz says 503 meanwhile. Only SIGTERM's grace period ends that wait: then the lease
lapses and the delivery is redelivered.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

import msgspec

from bus import identity
from bus.observe import metrics
from bus.observe.trace import Tracer
from bus.store.connect import Backoff, Reachability, Watched, unreachable
from bus.store.deliveries import TargetRecord, decode_delivery, secret_env_names
from bus.store.sqs import SqsStore
from bus.store.keys import FIELD
from bus.store.queue import Queue
from bus.transform import TransformFailed, shaper_for
from bus.worker.attempt_metrics import AttemptMetrics, target_metrics
from bus.worker.finisher import Finisher
from bus.worker.functions import FunctionLoader
from bus.worker.held import Held, HeldDelivery
from bus.worker.invoke_reply import NOT_CLAIMED
from bus.worker.invoker import THROTTLED, Invocation, Invoker
from bus.worker.invokers import invokers_for
from bus.worker.invokers.function import FunctionInvoker
from bus.worker.esm import Pollers
from bus.worker.slot import hide_env
from bus.worker.reload import CHECK_SECONDS as RELOAD_CHECK_SECONDS, CodeWatch
from bus.worker.outcome import after_attempt, after_sync_attempt, before_attempt, give_up
from bus.worker.retry import NOT_RETRYABLE

log = logging.getLogger("bus.worker")

# A new target is served within ~100 ms of its publishing (issue 16): the registry's counter is
# looked at (one GET) every TARGETS_CHECK_SECONDS, the registry is read when it moved (and every
# REFRESH_SECONDS anyway), and a read blocked on the old targets is ended at once (Queue.wake_reader).
# (Short blocks would not do: Redis ends a blocked read's timeout only on its next cron tick,
# every 100 ms at its default hz 10.)
TARGETS_CHECK_SECONDS = 0.05
REFRESH_SECONDS = 30.0
BLOCK_MS = 1000
HEARTBEAT_SECONDS = 1.0
PRUNE_SECONDS = 60.0
MOVE_SECONDS = 0.1
HOLD_CHECK_SECONDS = 0.25
FINISHING_BATCHES = 3  # handler returned, outcome not yet in Redis: at most this many x concurrency


class WorkerSettings(msgspec.Struct):
    concurrency: int = 10
    prefetch: int | None = None  # deliveries read ahead of free slots (bus.worker.held); None: = concurrency
    lease_seconds: float = 3.0  # an entry idle this long is reclaimed: the crash-recovery bound
    grace_seconds: float = 30.0  # SIGTERM: how long in-flight handlers may finish
    reload: bool = False  # restart the slots when a file in the functions directory changes


class Worker:
    def __init__(self, queue: Queue, functions_dir: str | None,
                 settings: WorkerSettings | None = None, consumer: str | None = None):
        self.reach = Reachability()  # what /healthz says: did Redis answer our last calls?
        self.queue = queue = Watched(queue, self.reach)
        self.settings = settings or WorkerSettings()
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.functions = FunctionInvoker(queue, FunctionLoader(functions_dir), self.consumer,
                                         self.settings.lease_seconds)
        self.invokers: dict[type, Invoker] = invokers_for(self.functions, queue)
        self.tracer = Tracer(queue.redis)
        self.targets: dict[str, TargetRecord] = {}  # stream key -> target
        self._leases: dict[str, set[bytes]] = {}  # stream key -> entry ids in flight here
        self._inflight: set[asyncio.Task] = set()  # deliveries not yet finished in Redis
        self._active = 0  # deliveries started and not yet past their handler: what --concurrency limits
        self._slot_free = asyncio.Event()  # set whenever a handler returns or a delivery finishes
        prefetch = self.settings.prefetch
        self._held = Held(self.settings.concurrency if prefetch is None else prefetch)
        self._stopping = False
        self._refreshed = 0.0  # monotonic time of the last registry read
        self._targets_version: int | None = None
        self._renewed = 0.0  # monotonic time of the last renewal round that reached Redis
        self.finisher = Finisher(queue, self.reach, self.tracer, identity.from_env())
        self.code = CodeWatch(functions_dir) if self.settings.reload and functions_dir else None
        self._hidden_env: frozenset[str] | None = None  # connection secrets' variables (hide_env)
        self.pollers = Pollers(SqsStore(queue.redis), self.functions, self._take_run_slot, self._slot_returned,
                               lambda: self._stopping)  # event source mappings (bus.worker.esm)
    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        metrics.CONCURRENCY_LIMIT.set(self.settings.concurrency)
        log.info("worker %s started (concurrency %d, prefetch %d, lease %.1fs)", self.consumer,
                 self.settings.concurrency, self._held.limit, self.settings.lease_seconds)
        lease = self.settings.lease_seconds
        chores = [asyncio.create_task(c) for c in (
            self._every(HEARTBEAT_SECONDS, self._heartbeat), self._every(lease / 3, self._renew),
            self._every(MOVE_SECONDS, self._move_due), self._every(lease / 6, self._reclaim),
            self._every(PRUNE_SECONDS, self._prune), self._every(HOLD_CHECK_SECONDS, self._give_back_stale),
            self._every(TARGETS_CHECK_SECONDS, self._watch_targets),
            self.tracer.watch(), self._notice_stop(stop))]
        if self.code is not None:
            chores.append(asyncio.create_task(self._watch_code()))
        try:
            await self._read_loop(stop)
            self._stopping = True
            await self._give_back(self._held.take_all())
            await self._drain()
        finally:
            self.pollers.cancel()
            for chore in chores:
                chore.cancel()
            for invoker in set(self.invokers.values()):
                await invoker.close()
            if self.code is not None:
                self.code.close()
            await self._leave()
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
        await self.pollers.drain(self.settings.grace_seconds)
        if not self._inflight:
            return
        log.info("finishing %d in-flight deliveries (grace %.0fs)", len(self._inflight), self.settings.grace_seconds)
        _, late = await asyncio.wait(set(self._inflight), timeout=self.settings.grace_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            log.warning("%d deliveries did not finish in the grace period; they will be redelivered", len(late))

    async def _leave(self) -> None:
        try:
            await self.queue.leave(self.consumer)
        except Exception as exc:
            if not unreachable(exc):
                raise
            log.warning("could not leave the workers' set (Redis unreachable); the entry expires")

    async def _every(self, seconds: float, chore) -> None:
        """Run `chore` every `seconds`; while Redis is unreachable, back off instead (quietly:
        Reachability logs the outage once), and resume as soon as any call is answered."""
        backoff = Backoff()
        while True:
            try:
                await chore()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a chore must survive Redis hiccups; the next round retries
                if unreachable(exc):
                    await self.reach.pause(max(seconds, backoff.next()))
                    continue
                log.warning("%s failed", chore.__name__, exc_info=True)
            backoff.reset()
            await asyncio.sleep(seconds)

    async def _watch_code(self) -> None:
        """--reload: a change in the functions directory restarts the slots (bus.worker.reload)."""
        while True:
            await asyncio.sleep(RELOAD_CHECK_SECONDS)
            if self.code.changed():
                self.code.new_generation()
                retired = self.functions.slots.retire()
                log.info("functions changed in %s: %d slots restarted, the next calls run the new code",
                         self.code.root, retired)

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(self.consumer)

    async def _prune(self) -> None:
        await self.queue.prune(self.consumer, list(self.targets))

    async def _refresh_targets(self) -> None:
        """Read the registry when its counter moved or REFRESH_SECONDS after the last read."""
        now = time.monotonic()
        version = await self.queue.targets_version()
        if version == self._targets_version and now - self._refreshed < REFRESH_SECONDS:
            return
        self.targets = await self.queue.targets()  # after the GET: a publish between the two is read now or next time
        mappings = await self.queue.mappings()
        self._targets_version, self._refreshed = version, time.monotonic()
        self._hide_secrets()
        self.pollers.update(mappings)

    def _hide_secrets(self) -> None:
        """Handlers never see the variables connections read their secrets from: slots forked
        with an older set of them are retired (like --reload does)."""
        names = secret_env_names(self.targets.values())
        if names != self._hidden_env:
            first = self._hidden_env is None
            self._hidden_env = names
            hide_env(names)
            if not first:
                self.functions.slots.retire()

    async def _take_run_slot(self) -> bool:
        """A handler's place under --concurrency for a mapping's batch; False when stopping."""
        while not self._stopping and self._active - self._queued() >= self.settings.concurrency:
            self._slot_free.clear()
            await self._slot_free.wait()
        if self._stopping:
            return False
        self._active += 1
        return True

    async def _watch_targets(self) -> None:
        """Every TARGETS_CHECK_SECONDS (the one place targets are refreshed): a target published
        meanwhile is read, and the read blocked without it ended."""
        streams = self.targets.keys()
        await self._refresh_targets()
        if self.targets.keys() != streams:
            await self.queue.wake_reader()

    # --- taking work ----------------------------------------------------------------------

    def _queued(self) -> int:
        """Calls accepted by an invoker whose handler has not begun (queued in a slot)."""
        return self.functions.queued

    def _room(self) -> int:
        """How many deliveries to read now: free slots plus read-ahead room.

        A slot frees when its handler returns, so reading the next deliveries overlaps with
        recording the last outcomes (a batched FINISH: up to 1 ms plus an fsync-bound round
        trip). Deliveries still finishing are capped at FINISHING_BATCHES x concurrency, so
        a slow Redis stops the reading instead of piling them up.
        """
        if self._stopping:
            return 0
        concurrency = self.settings.concurrency
        finishing_cap = ((1 + FINISHING_BATCHES) * concurrency + self._held.limit
                         - len(self._inflight) - len(self._held))
        return min(concurrency - self._active + self._held.room(), finishing_cap)

    async def _read_loop(self, stop: asyncio.Event) -> None:
        """Read until SIGTERM. Redis going away pauses the reading (capped backoff), never ends it:
        the targets last read stay known, and in-flight deliveries carry on meanwhile."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self._read_once(stop)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                await self.reach.pause(backoff.next(), stop)
                continue
            backoff.reset()

    async def _read_once(self, stop: asyncio.Event) -> None:
        if not self.targets:  # none yet: _watch_targets looks again within TARGETS_CHECK_SECONDS
            await _sleep_or_stop(stop, TARGETS_CHECK_SECONDS)
            return
        await asyncio.sleep(0)  # let handlers that return in this loop turn free their slots first
        room = self._room()
        if room <= 0 or ((len(self._held) or self._queued()) and room < self._held.limit // 2):
            # While deliveries wait (held, or queued in a slot) behind busy slots, read in
            # batches: fewer round trips (and AOF fsyncs) per delivery, and no free slot waits
            # for the read.
            self._slot_free.clear()
            await self._slot_free.wait()
            return
        for taken in await self.queue.read(self.consumer, self.targets, room, BLOCK_MS):
            self._take(HeldDelivery(taken.stream, taken.entry_id, taken.fields, taken.times_delivered))

    async def _reclaim(self) -> None:
        """Take over entries whose worker stopped renewing them (it died or hung)."""
        idle_ms = int(self.settings.lease_seconds * 1000)
        if self._renewed < self.reach.since:  # Redis is back: renew ours first, their leases look lapsed
            await self._renew()
        for stream in list(self.targets):
            if self._room() <= 0:
                return
            # Ours when the claim began: still running, or finished while the claim was on its way.
            # After an outage their leases look lapsed, and claiming them merely renewed them;
            # starting them again would run their handlers twice here.
            ours = set(self._leases.get(stream, ()))
            for taken in await self.queue.claim(self.consumer, stream, idle_ms, self._room()):
                if taken.entry_id in ours or taken.entry_id in self._leases.get(stream, ()):
                    continue
                log.info("reclaimed %s (delivery %d): its worker went silent or gave it back",
                         taken.entry_id.decode(), taken.times_delivered)
                self._take(HeldDelivery(taken.stream, taken.entry_id, taken.fields, taken.times_delivered))

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
            if not self._start(held, may_run=self._active - self._queued() < concurrency):
                return
            self._held.next()

    def _start(self, held: HeldDelivery, may_run: bool = True) -> bool:
        """Start a delivery, or say False: it may not run now and its invoker cannot queue it."""
        record = self.targets[held.stream]
        if held.delivery is None:
            try:
                held.delivery = decode_delivery(held.fields[FIELD])
            except (msgspec.DecodeError, KeyError) as exc:  # a poison entry must not stop the worker
                self._spawn(held, self.finisher.unreadable(record, held.entry_id, held.fields, exc))
                return True
        d = held.delivery
        attempt = d.retries + held.times_delivered
        # A synchronous Invoke has one attempt, and its claim (not a count) says whether it ran.
        early = None if d.reply else before_attempt(record, d, attempt, time.time())
        if early is not None:  # no attempt, so no slot is needed
            self._spawn(held, self.finisher.conclude(record, held.entry_id, d, early))
            return True
        shaped = self._shape(record, d)
        if isinstance(shaped, str):  # the input options cannot make this event's input: no attempt helps
            outcome = give_up(record, attempt, NOT_RETRYABLE, "INPUT_TRANSFORMATION", shaped)
            self._spawn(held, self.finisher.conclude(record, held.entry_id, d, outcome))
            return True
        invoker = self.invokers[type(record.target)]
        run = AttemptMetrics(target_metrics(record.name, record.key), d.ingested)
        call = Invocation(record, d, attempt, f"{self.consumer}:{held.entry_id.decode()}", run.begin, *shaped)
        placed = invoker.place(call, may_run)
        if placed is None:
            return False
        self._active += 1  # given back in _attempt once the handler has returned
        self._spawn(held, self._attempt(invoker, call, placed, run, held.entry_id))
        return True

    def _shape(self, record: TargetRecord, d) -> tuple[bytes | None, bool] | str:
        """The target's input (payload, is_json) after its input options; (None, True) without any;
        or why the event cannot be shaped (a message)."""
        shaper = shaper_for(record.target)
        if shaper.identity:
            return None, True
        try:
            shaped = shaper.apply(bytes(d.event), rule_arn=identity.rule_arn(self.finisher.identity, record.bus, record.rule),
                                  rule_name=record.rule, ingestion_time=d.ingested)
        except TransformFailed as exc:
            return f"input transformation failed: {exc}"
        return shaped.body, shaped.is_json

    def _spawn(self, held: HeldDelivery, work) -> None:
        task = asyncio.create_task(work)
        self._inflight.add(task)
        stream, entry_id = held.stream, held.entry_id
        task.add_done_callback(lambda t: self._done(t, stream, entry_id))

    def _slot_returned(self) -> None:
        """A handler returned: held deliveries take its place at once."""
        self._active -= 1
        self._slot_free.set()
        self._dispatch()

    async def _give_back_stale(self) -> None:
        if not self.reach.ok:  # no other worker can take them either: keep them for our next free slot
            return
        await self._give_back(self._held.take_stale())

    async def _give_back(self, deliveries: list[HeldDelivery]) -> None:
        if not deliveries:
            return
        for held in deliveries:
            self._leases.get(held.stream, set()).discard(held.entry_id)
        try:
            await self.queue.give_back(self.consumer, deliveries)
        except Exception as exc:  # e.g. Redis is down: the leases lapse and they are redelivered anyway
            log.warning("could not give back %d held deliveries; they are redelivered when their lease lapses",
                        len(deliveries), exc_info=not unreachable(exc))
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
                lost = await self.queue.renew(self.consumer, stream, ids)
                if lost:
                    log.warning("lost the lease of %d deliveries on %s to another worker", len(lost), stream)
        self._renewed = time.monotonic()

    async def _move_due(self) -> None:
        if self.targets:  # with none, move_due makes no call, and Watched would take that for an answer
            await self.queue.move_due(list(self.targets.values()))

    # --- one attempt ----------------------------------------------------------------------

    async def _attempt(self, invoker: Invoker, call: Invocation, placed, run: AttemptMetrics, entry_id: bytes) -> None:
        try:
            try:
                result = await invoker.invoke(call, placed)
            finally:
                run.end()
        finally:
            self._slot_returned()
        record, d = call.record, call.delivery
        if result.kind == THROTTLED:
            metrics.THROTTLES.labels(record.name, record.key).inc()
            self.finisher.trace(d, call.attempt, "throttled")
        elif not result.ok and result.kind != NOT_CLAIMED:  # not run: the broker answered its caller
            metrics.ERRORS.labels(record.name, record.key, result.kind).inc()
        outcome = (after_sync_attempt(record, d, call.attempt, result) if d.reply
                   else after_attempt(record, d, call.attempt, result, time.time()))
        await self.finisher.conclude(record, entry_id, d, outcome)
        if result.kind not in (THROTTLED, NOT_CLAIMED):
            run.complete(result.ok)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
