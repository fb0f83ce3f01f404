"""The bus invoker: a BusTarget sends the event on to another bus of this broker.

A worker cannot route (rules live with the brokers), so the attempt succeeds with the event
as an inbox item for the target bus (`Result.forward`); the finisher writes it to the inbox
in the same atomic step that acknowledges the delivery, and a broker matches it against that
bus's rules (bus.broker.inbox). A bus that does not exist by then is dead-lettered there
(UNKNOWN_BUS).

The event goes on unchanged unless the target has an input option: then what the option
makes of it is the event sent on (the issue's reading; AWS offers input transformation for
service and API destination targets only, see README), and it must be a JSON object, since the
other bus's rules match an event's fields; anything else fails the delivery, not retryable.

Loop guard: the item carries how many buses the event crossed (`hops`); a delivery whose
event already crossed MAX_HOPS is not forwarded again but fails, not retryable, with kind
"loop" (so its target's DLQ, if any, keeps it), counted in busway_bus_loops_total.
"""
from __future__ import annotations

from typing import Any

from bus.observe import metrics
from bus.worker.destinations import forward_item
from bus.worker.invoker import Invocation, Result

MAX_HOPS = 5  # buses an event may cross; the bound (AWS forwards an event once: see README)
LOOP = "loop"


class BusInvoker:
    def place(self, call: Invocation, may_run: bool) -> Any | None:
        return True if may_run else None

    async def invoke(self, call: Invocation, placed: Any) -> Result:
        call.begin()
        d, target = call.delivery, call.record.target
        if d.hops >= MAX_HOPS:
            metrics.BUS_LOOPS.labels(call.record.key).inc()
            return Result(False, LOOP, "EventBusLoop",
                          f"the event crossed {d.hops} buses (at most {MAX_HOPS}); not forwarded to bus {target.bus}",
                          retryable=False)
        event = d.event if call.payload is None else call.payload
        if call.payload is not None and not _is_object(call.payload, call.payload_is_json):
            return Result(False, "input", "InputNotAnEvent",
                          f"the target's input option made no JSON object, so nothing an event bus can match; "
                          f"not forwarded to bus {target.bus}", retryable=False)
        return Result(True, forward=forward_item(target.bus, event, d.hops + 1))

    async def close(self) -> None:
        pass


def _is_object(payload: bytes, is_json: bool) -> bool:
    return is_json and payload.lstrip()[:1] == b"{"
