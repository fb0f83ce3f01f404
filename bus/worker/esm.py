"""Event source mappings (Lambda's SQS pull model): a worker polls each mapping's queue, invokes the
function with batches of records in Lambda's SQS event shape, and deletes what succeeded.

Per mapping, one poller per worker: it takes a run slot of the worker (its --concurrency), gathers
up to batch_size messages (waiting up to maximum_batching_window_seconds for a full batch), and
runs the batch through the function invoker, so timeouts, reserved concurrency, environments and
the invocation metrics are the rule targets' own. What the function says decides (`settle`, pure):
every record is deleted on success; with ReportBatchItemFailures only those it does not list in
`batchItemFailures`; on an error, a timeout or a throttle none, and the queue makes them visible
again after its visibility timeout, then moves them to its dead-letter queue after its
maxReceiveCount (bus.store.sqs). A worker that dies holding a batch loses nothing: the messages
reappear the same way (at least once, as on Lambda).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import msgspec

from bus import identity
from bus.config.model import FunctionTarget, RetryPolicy
from bus.ids import new_id
from bus.store.connect import unreachable
from bus.store.deliveries import INVOKE_BUS, Delivery, MappingRecord, TargetRecord
from bus.store.sqs import QueueAttributes, Received, SqsStore
from bus.worker.attempt_metrics import AttemptMetrics, target_metrics
from bus.worker.invoker import Invocation, Result
from bus.worker.invokers.function import FunctionInvoker

log = logging.getLogger("bus.worker")

ESM_RULE = "esm"  # the Invoke "bus" of bus.store.deliveries: metrics and logs name a mapping $lambda/esm/<queue>
IDLE_MAX_SECONDS = 0.2  # an empty queue is looked at again after at most this long
RECEIVE_MAX = 10  # messages per receive call, as SQS hands them out
PAYLOAD_MAX = 6 * 1024 * 1024  # Lambda's invocation payload limit, which also bounds an SQS batch (reference §4.2)


def sqs_event(batch: list[Received], arn: str, region: str) -> bytes:
    """Lambda's SQS event for a batch (../shared/reference/aws-auth-invoke-sqs.md §4.1)."""
    return event_of([sqs_record(r, arn, region) for r in batch])


def sqs_record(r: Received, arn: str, region: str) -> bytes:
    """One record of Lambda's SQS event, encoded: a batch's payload size is the sum of its records'."""
    m = r.message
    attributes = {"ApproximateReceiveCount": str(r.receive_count), "SentTimestamp": str(m.sent),
                  "SenderId": m.sender, "ApproximateFirstReceiveTimestamp": str(r.first_received)}
    if m.trace_header:
        attributes["AWSTraceHeader"] = m.trace_header
    return msgspec.json.encode({
        "messageId": m.id, "receiptHandle": r.receipt, "body": m.body, "attributes": attributes,
        "messageAttributes": {name: _lambda_attribute(v) for name, v in m.attributes.items()},
        "md5OfBody": m.md5, "md5OfMessageAttributes": m.attributes_md5 or None,
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": region,
    })


def event_of(records: list[bytes]) -> bytes:
    return b'{"Records":[' + b",".join(records) + b"]}"


def records_that_fit(records: list[bytes], limit: int = PAYLOAD_MAX) -> int:
    """How many of the encoded records, from the first, make an event of at most `limit` bytes;
    never fewer than one (a lone record over the limit is the function's to refuse, as on Lambda)."""
    size = len(event_of([]))
    for n, record in enumerate(records):
        size += len(record) + (1 if n else 0)
        if size > limit and n:
            return n
    return len(records)


def _lambda_attribute(value: Any) -> dict[str, Any]:
    value = value if isinstance(value, dict) else {}
    out = {"stringValue": value.get("StringValue"), "binaryValue": value.get("BinaryValue"),
           "stringListValues": [], "binaryListValues": [], "dataType": value.get("DataType")}
    return {k: v for k, v in out.items() if v is not None or k in ("stringListValues", "binaryListValues")}


def settle(ids: list[str], result: Result, report_failures: bool) -> list[str]:
    """The message ids to delete after a batch's invocation (the rest become visible again)."""
    if not result.ok:
        return []  # an error, a timeout, a throttle: the whole batch again
    if not report_failures:
        return list(ids)
    try:
        answer = msgspec.json.decode(result.result) if result.result else None
    except msgspec.DecodeError:
        return []
    if answer is None:
        return list(ids)
    if not isinstance(answer, dict):
        return []
    failures = answer.get("batchItemFailures")
    if failures is None or failures == []:
        return list(ids) if set(answer) <= {"batchItemFailures"} else []
    if not isinstance(failures, list):
        return []
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier or identifier not in ids:
            return []  # Lambda: an unreadable report fails the whole batch
        failed.add(identifier)
    return [i for i in ids if i not in failed]


class MappingPoller:
    """One mapping's poller in one worker."""

    def __init__(self, record: MappingRecord, store: SqsStore, functions: FunctionInvoker,
                 take_slot: Callable[[], Awaitable[bool]], give_slot: Callable[[], None]):
        self.record, self.store, self.functions = record, store, functions
        self.take_slot, self.give_slot = take_slot, give_slot
        m = record.mapping
        self.target = TargetRecord(bus=INVOKE_BUS, rule=ESM_RULE,
                                   target=FunctionTarget(id=m.queue, function=m.function,
                                                         retry_policy=RetryPolicy(maximum_retry_attempts=0)),
                                   function=record.function)
        self.report_failures = "ReportBatchItemFailures" in m.function_response_types
        self.running: set[asyncio.Task] = set()
        self.limit = m.maximum_concurrency or 1_000_000
        self.who = identity.from_env()
        self.arn = f"arn:aws:sqs:{self.who.region}:{self.who.account}:{m.queue}"

    async def run(self, stopping: Callable[[], bool]) -> None:
        idle = 0.01
        while not stopping():
            try:
                attrs = await self.store.get(self.record.mapping.queue)
                if attrs is None or len(self.running) >= self.limit:
                    await asyncio.sleep(IDLE_MAX_SECONDS)
                    continue
                if not await self.take_slot():
                    return
                batch = await self._gather(attrs, stopping)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not unreachable(exc):
                    log.warning("event source mapping %s -> %s: polling failed", self.record.mapping.queue,
                                self.record.mapping.function, exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if not batch:
                self.give_slot()
                await asyncio.sleep(idle)
                idle = min(IDLE_MAX_SECONDS, idle * 2)
                continue
            idle = 0.01
            task = asyncio.create_task(self._invoke(batch))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def drain(self, timeout: float) -> None:
        if self.running:
            await asyncio.wait(set(self.running), timeout=timeout)

    async def _gather(self, attrs: QueueAttributes, stopping: Callable[[], bool]) -> list[tuple[Received, bytes]]:
        """Up to batch_size messages, each with its encoded record, and no more than one invocation
        payload holds: what is there now, and for a batching window, more as they come. Messages
        received past the payload limit are made visible again at once, for the next batch."""
        m = self.record.mapping
        batch: list[tuple[Received, bytes]] = []
        deadline = time.monotonic() + m.maximum_batching_window_seconds
        while len(batch) < m.batch_size and not stopping():
            got = await self.store.receive(m.queue, attrs, min(RECEIVE_MAX, m.batch_size - len(batch)), None)
            batch += [(r, sqs_record(r, self.arn, self.who.region)) for r in got]
            fit = records_that_fit([record for _, record in batch])
            if fit < len(batch):
                await self.store.change_visibility(m.queue, [tuple(r.receipt.rsplit(".", 1)) for r, _ in batch[fit:]], 0)
                return batch[:fit]
            if len(batch) >= m.batch_size or time.monotonic() >= deadline or (not got and not batch):
                break
            if not got:
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return batch

    async def _invoke(self, gathered: list[tuple[Received, bytes]]) -> None:
        m = self.record.mapping
        batch = [r for r, _ in gathered]
        now = time.time()
        d = Delivery(id=new_id(), event=msgspec.Raw(
            event_of([record for _, record in gathered])), bus=INVOKE_BUS, rule=ESM_RULE, target=m.queue,
            function=m.function, first_enqueued=now, ingested=min(r.message.sent for r in batch) / 1000)
        run = AttemptMetrics(target_metrics(m.function, self.target.key), d.ingested)
        call = Invocation(self.target, d, 1, f"esm:{d.id}", run.begin)
        released = False

        def give_once() -> None:
            nonlocal released
            if not released:
                released = True
                self.give_slot()
        try:
            try:
                result = await self.functions.invoke(call, self.functions.place(call, True))
            finally:
                run.end()
                give_once()
            run.complete(result.ok)
            ids = [r.message.id for r in batch]
            done = set(settle(ids, result, self.report_failures))
            if not result.ok:
                log.warning("event source mapping %s -> %s: the batch of %d failed (%s: %s); its messages "
                            "return after the visibility timeout", m.queue, m.function, len(batch),
                            result.error_type, result.message)
            receipts = [r.receipt.rsplit(".", 1) for r in batch if r.message.id in done]
            if receipts:
                await self.store.delete_messages(m.queue, [(i, t) for i, t in receipts])
        except Exception:
            give_once()
            log.warning("event source mapping %s -> %s: a batch was not settled; its messages return after the "
                        "visibility timeout", m.queue, m.function, exc_info=True)



class Pollers:
    """A worker's pollers, one per event source mapping, replaced whole when the mappings change
    (a batch in flight finishes; its poller stops taking new ones)."""

    def __init__(self, store: SqsStore, functions: FunctionInvoker, take_slot: Callable[[], Awaitable[bool]],
                 give_slot: Callable[[], None], stopping: Callable[[], bool]):
        self.store, self.functions, self.stopping = store, functions, stopping
        self.take_slot, self.give_slot = take_slot, give_slot
        self.records: list[MappingRecord] = []
        self._running: list[tuple[MappingPoller, asyncio.Task]] = []

    def update(self, records: list[MappingRecord]) -> None:
        if records == self.records:
            return
        self.cancel()
        self.records = records
        self._running = []
        for record in records:
            poller = MappingPoller(record, self.store, self.functions, self.take_slot, self.give_slot)
            self._running.append((poller, asyncio.create_task(poller.run(self.stopping))))
        if records:
            log.info("polling %d event source mappings: %s", len(records),
                     ", ".join(f"{r.mapping.queue} -> {r.mapping.function}" for r in records))

    def cancel(self) -> None:
        """Stop taking batches (the ones in flight go on)."""
        for _, task in self._running:
            task.cancel()

    async def drain(self, timeout: float) -> None:
        """SIGTERM: stop taking batches and give those in flight up to `timeout` each."""
        self.cancel()
        for poller, _ in self._running:
            await poller.drain(timeout)
