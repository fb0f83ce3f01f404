"""Finishing a delivery: turn its outcome into store follow-ups, write them with the ack
(retried while Redis is unreachable), then count, trace and log what this worker wrote."""
from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from bus import identity
from bus.identity import Identity
from bus.observe import metrics
from bus.observe.trace import Tracer
from bus.store.connect import Reachability, unreachable, until_answered
from bus.store.deadletters import make_dead_letter
from bus.store.deliveries import Delivery, TargetRecord
from bus.store.keys import FIELD
from bus.store.followups import FollowUp, RetryAt, ToDeadLetters, ToInbox, ToReply
from bus.store.queue import Queue
from bus.store.replies import encode_reply
from bus.worker.destinations import invocation_record
from bus.worker.outcome import Ack, Answer, DeadLetter, Drop, Notify, Outcome, Retry, Throttle, give_up
from bus.worker.retry import ATTEMPTS_EXHAUSTED

log = logging.getLogger("bus.worker")


class Finisher:
    def __init__(self, queue: Queue, reach: Reachability, tracer: Tracer, who: Identity):
        self.queue = queue
        self.reach = reach
        self.tracer = tracer
        self.identity = who

    async def unreadable(self, record: TargetRecord, entry_id: bytes, fields: dict, why: Exception) -> None:
        """An entry that is no Delivery (written by hand, or by a busway of another format): dead-letter
        it (or drop it, with no DLQ) with its raw bytes in the message, instead of looping on it."""
        raw = fields.get(FIELD, b"") if isinstance(fields, dict) else b""
        now = time.time()
        stand_in = Delivery(id=entry_id.decode(), event=msgspec.Raw(b"{}"), bus=record.bus, rule=record.rule,
                            target=record.target.id, function=getattr(record.target, "function", ""),
                            first_enqueued=now, ingested=now)
        await self.conclude(record, entry_id, stand_in,
                            give_up(record, 0, ATTEMPTS_EXHAUSTED, "UNDECODABLE", f"{why}; entry: {raw[:512]!r}"))

    async def conclude(self, record: TargetRecord, entry_id: bytes, d: Delivery, outcome: Outcome) -> None:
        """Finish the entry with the outcome's follow-ups; count and log it if we finished it first."""
        if await self._finish(record, entry_id, d, self._follow_ups(d, outcome)):
            await self._account(record, d, outcome)

    async def _finish(self, record: TargetRecord, entry_id: bytes, d: Delivery, follow_ups: list[FollowUp]) -> bool:
        """FINISH, retried while Redis is unreachable, so an outcome reached during an outage is
        written once Redis answers. Retrying is safe: FINISH applies only if the entry is still
        pending, so a FINISH that ran but whose reply was lost, or another worker that reclaimed
        and finished the entry meanwhile, makes it False (first finisher wins)."""
        try:
            return await until_answered(lambda: self.queue.finish(record, entry_id, follow_ups), self.reach)
        except asyncio.CancelledError:  # SIGTERM's grace period ran out while Redis was away
            if not self.reach.ok:
                log.error("outcome of %s (event %s, target %s) not written: Redis unreachable; it is redelivered "
                          "when its lease lapses", entry_id.decode(), msgspec.json.decode(d.event).get("id"),
                          d.target_key)
            raise

    def _follow_ups(self, d: Delivery, outcome: Outcome) -> list[FollowUp]:
        out: list[FollowUp] = []
        if isinstance(outcome, (Retry, Throttle)):
            out.append(RetryAt(outcome.due, msgspec.structs.replace(d, retries=outcome.retries)))
        elif isinstance(outcome, DeadLetter):
            out.append(ToDeadLetters(outcome.dlq, make_dead_letter(d, outcome.code, outcome.message,
                                                                   outcome.attempts, outcome.condition)))
        notify = getattr(outcome, "notify", None)
        if notify is not None:
            out.append(ToInbox(self._record(d, notify)))
        if isinstance(outcome, Ack) and outcome.forward is not None:  # a bus target's event
            out.append(ToInbox(outcome.forward))
        if isinstance(outcome, Answer) and outcome.reply is not None and d.reply:
            out.append(ToReply(d.reply, encode_reply(outcome.reply)))
        return out

    async def _account(self, record: TargetRecord, d: Delivery, outcome: Outcome) -> None:
        """Metrics, trace and log of an outcome this worker wrote."""
        if isinstance(outcome, Ack):
            _log(logging.DEBUG, "delivered", d, outcome.attempt)
            self.trace(d, outcome.attempt, "success")
        elif isinstance(outcome, Answer):
            status = outcome.reply.status if outcome.reply is not None else "answered by the broker"
            _log(logging.DEBUG, f"invoked ({status})", d, outcome.attempt)
            self.trace(d, outcome.attempt, "success" if status == "ok" else "answered", status)
        elif isinstance(outcome, Retry):
            metrics.RETRIES.labels(record.key).inc()
            _log(logging.WARNING, f"failed ({outcome.message}); retry in {outcome.due - time.time():.1f}s", d,
                 outcome.retries)
            self.trace(d, outcome.retries, "retry", outcome.message)
        elif isinstance(outcome, DeadLetter):
            metrics.DEAD_LETTERS.labels(record.key, outcome.condition).inc()
            self.trace(d, outcome.attempts, "dead_letter", f"{outcome.condition}: {outcome.message}")
            await self._trim(outcome.dlq)
            _log(logging.ERROR, f"dead-lettered to {outcome.dlq} ({outcome.condition}; {outcome.message})", d,
                 outcome.attempts)
        elif isinstance(outcome, Drop):
            metrics.DROPPED.labels(record.key, outcome.condition).inc()
            self.trace(d, outcome.attempts, "dropped", f"{outcome.condition}: {outcome.message}")
            _log(logging.ERROR, f"dropped: no dead_letter configured ({outcome.condition}; {outcome.message})", d,
                 outcome.attempts)

    async def _trim(self, dlq: str) -> None:
        """Trim a DLQ after writing to it; skipped while Redis is away (the next dead letter trims)."""
        try:
            await self.queue.trim_dead_letters(dlq)
        except Exception as exc:
            if not unreachable(exc):
                raise

    def trace(self, d: Delivery, attempt: int, outcome: str, detail: str = "") -> None:
        if self.tracer.enabled:
            self.tracer.outcome(msgspec.json.decode(d.event).get("id"), d.target_key, attempt, outcome, detail)

    def _record(self, d: Delivery, notify: Notify) -> bytes:
        who = self.identity
        response = msgspec.json.decode(notify.response) if notify.response else None
        return invocation_record(d, function_arn=identity.function_arn(who, d.function), account=who.account,
                                 region=who.region,
                                 condition=notify.condition, attempts=notify.attempts, response=response,
                                 error=notify.error, to_bus=notify.to_bus)


def _log(level: int, what: str, d: Delivery, attempt: int) -> None:
    """One log line about a delivery, with event id, rule, target and attempt as fields."""
    if not log.isEnabledFor(level):
        return
    event_id = msgspec.json.decode(d.event).get("id")
    fields = {"event_id": event_id, "rule": d.rule, "target": d.target_key, "attempt": attempt, "request_id": d.id}
    log.log(level, "%s: event %s rule %s target %s attempt %d", what, event_id, d.rule, d.target_key, attempt,
            extra={"fields": fields})

