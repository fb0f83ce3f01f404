"""PutEvents: validate entries, match them, and store their deliveries before answering.

The durability contract lives here: an entry gets an EventId only after every delivery it
produced, and its copy in every archive of its bus that matches it (matching a rule or not), is
in Redis (one Lua call, bus.store.queue.Queue.enqueue, for the whole request). If Redis
fails, the whole request fails with a retryable InternalException; since Redis runs the
script atomically, a client retry cannot half-duplicate a request.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import msgspec
from redis.exceptions import RedisError

from bus.broker.envelope import (
    Entry,
    EntryError,
    Origin,
    RequestError,
    build_envelope,
    bus_name,
    check_request,
)
from bus.broker.router import Router
from bus.events import time_ms
from bus.ids import derived_id
from bus.observe import metrics
from bus.observe.trace import Tracer
from bus.store.deliveries import Delivery, new_delivery
from bus.store.queue import Archived, Queue
from bus.store.scripts import NotReplicated

log = logging.getLogger("bus.ingest")
_encode = msgspec.json.Encoder().encode

# --- authorization hook (bus.auth) -------------------------------------------------------
# A bus name -> None if the caller may put events on it, else the AccessDeniedException message.
BusDenial = Callable[[str], "str | None"]
# Set per request by bus.auth.middleware (the routes need not pass it); unset: every bus allowed.
bus_denial: ContextVar[BusDenial | None] = ContextVar("bus_denial", default=None)


class Ingestor:
    def __init__(self, queue: Queue, router: Callable[[], Router], tracer: Tracer | None = None):
        self._queue = queue
        self._router = router  # a getter: YAML reloads swap the router between requests
        self.tracer = tracer or Tracer(queue.redis)

    async def put_events(self, entries: list[Entry], origin: Origin, deny: BusDenial | None = None,
                         request: str | None = None, body_size: int | None = None) -> list[dict[str, Any]]:
        """One result per entry, in order: {"EventId"} or {"ErrorCode", "ErrorMessage"}.

        `deny` (default: the request's bus_denial) fails the entries for buses it refuses alone.
        `request`: the client's id of this request, the same on its retries (routes.request_key).
        On Redis Cluster a retry then writes no slot twice and gets the same EventIds: they are
        made from it (bus.ids.derived_id) instead of at random. `body_size`: the length of the
        JSON body the entries came from (envelope.check_request), when there is one."""
        check_request(entries, body_size)
        deny = deny or bus_denial.get()
        router = self._router()
        received = time.time()
        results: list[dict[str, Any]] = []
        deliveries: list[Delivery] = []
        archived: list[Archived] = []
        counts = Tally()  # metric increments, applied once the request is stored
        derive = request is not None and self._queue.cluster
        for n, entry in enumerate(entries):
            try:
                bus, event = self._accept(router, entry, origin, received, deny)
                if derive and entry.id is None:
                    event["id"] = derived_id(request, n)
            except EntryError as err:
                metrics.EVENTS_REJECTED.labels(_bus_label(entry, router), err.code).inc()
                results.append({"ErrorCode": err.code, "ErrorMessage": err.message})
                self.tracer.event(_bus_label(entry, router), None, error=f"{err.code}: {err.message}")
                continue
            deliveries.extend(self._deliveries(router, bus, event, received, counts, archived=archived))
            results.append({"EventId": event["id"]})
            counts.add(metrics.EVENTS_INGESTED, bus)
        await self._store(deliveries, archived, request)
        counts.apply()
        return results

    async def publish(self, bus: str, event: dict[str, Any], received: float, hops: int = 0) -> int:
        """Route an already-built event (a destination record, or an event a bus target forwards
        after crossing `hops` buses); return the number of deliveries."""
        counts = Tally()
        archived: list[Archived] = []
        deliveries = self._deliveries(self._router(), bus, event, received, counts,
                                      via="bus" if hops else "destination", hops=hops, archived=archived)
        if hops:  # a bus target's event is ingested by this bus, as a PutEvents to it would be
            counts.add(metrics.EVENTS_INGESTED, bus)
        await self._store(deliveries, archived)
        counts.apply()
        return len(deliveries)

    def _accept(self, router: Router, entry: Entry, origin: Origin, received: float,
                deny: BusDenial | None = None) -> tuple[str, dict[str, Any]]:
        bus = bus_name(entry.bus)
        if deny and (why := deny(bus)):  # before the existence check, as IAM answers first
            raise EntryError("AccessDeniedException", why)
        if not router.has_bus(bus):
            raise EntryError("ResourceNotFoundException", f"Event bus {bus} does not exist.")
        return bus, build_envelope(entry, origin, received)

    def _deliveries(self, router: Router, bus: str, event: dict[str, Any], received: float,
                    counts: Tally, via: str = "put_events", hops: int = 0,
                    archived: list[Archived] | None = None) -> list[Delivery]:
        """The event's deliveries; its archive copies are appended to `archived` (a replayed
        event, which carries replay-name, is never archived again)."""
        names: list[str] = []
        if archived is not None and router.has_archives(bus) and "replay-name" not in event:
            routes, names = router.route_and_archives(bus, event)
        else:
            routes = router.route(bus, event)
        if self.tracer.enabled:
            self.tracer.event(bus, event, rules=[r for r, _ in routes],
                              targets=[r.key for _, records in routes for r in records], source=via)
        raw = None
        if names:
            raw = _encode(event)
            score = time_ms(event["time"])
            archived.extend(Archived(name, score, raw) for name in names)
            for name in names:
                counts.add(metrics.ARCHIVED_EVENTS, name)
        if not routes:
            return []
        raw = raw or _encode(event)
        counts.add(metrics.MATCHED_EVENTS, bus)
        out = []
        for rule, records in routes:
            counts.rule(bus, rule, records)
            for record in records:
                out.append(new_delivery(raw, record, received, hops=hops))
        return out

    async def _store(self, deliveries: list[Delivery], archived: list[Archived] = (), request: str | None = None) -> None:
        try:
            await self._queue.enqueue(deliveries, archived, step=None if request is None else f"put/{request}")
        except NotReplicated as exc:
            log.error("%d deliveries (%d archive copies) not confirmed by a replica: %s", len(deliveries), len(archived), exc)
            raise RequestError(
                "InternalException",
                "Events were written but no replica confirmed them in time (--durability replicated), so none "
                "of this request was accepted. Retry the request; its events may be delivered twice.",
                status=500,
            ) from exc
        except (RedisError, OSError) as exc:
            log.error("could not store %d deliveries (%d archive copies): %s", len(deliveries), len(archived), exc)
            raise RequestError(
                "InternalException",
                "Events could not be stored, so none of this request was accepted. Retry the request.",
                status=500,
            ) from exc


@functools.lru_cache(maxsize=8192)  # labels() takes a lock and a dict lookup; per event it adds up
def _counter(counter, *labels: str):
    return counter.labels(*labels)


class Tally:
    """One request's metric increments, applied once it is stored: counters move only for what
    was stored, by one inc() per series per request. A matched rule is counted once per event,
    and its targets' deliveries from that count when applied, not one by one per event."""

    __slots__ = ("series", "rules")

    def __init__(self) -> None:
        self.series: dict[tuple, int] = {}  # (counter, *labels) -> increment
        self.rules: dict[tuple[str, str], list] = {}  # (bus, rule) -> [matches, its target records]

    def add(self, counter, *labels: str) -> None:
        key = (counter, *labels)
        self.series[key] = self.series.get(key, 0) + 1

    def rule(self, bus: str, rule: str, records: list) -> None:
        hit = self.rules.get((bus, rule))
        if hit is None:
            self.rules[(bus, rule)] = [1, records]
        else:
            hit[0] += 1

    def apply(self) -> None:
        for (counter, *labels), n in self.series.items():
            _counter(counter, *labels).inc(n)
        for (bus, rule), (n, records) in self.rules.items():
            _counter(metrics.RULE_MATCHES, bus, rule).inc(n)
            for record in records:
                _counter(metrics.DELIVERIES_ENQUEUED, bus, rule, record.key).inc(n)


def _bus_label(entry: Entry, router: Router) -> str:
    # Unknown bus names are user input: never let them become label values.
    try:
        bus = bus_name(entry.bus)
    except EntryError:
        return "(invalid)"
    return bus if router.has_bus(bus) else "(unknown)"
