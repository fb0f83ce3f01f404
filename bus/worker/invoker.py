"""The invoker protocol: how a worker runs one delivery for one kind of target.

The worker chooses an invoker by the type of `record.target` (bus.config.model's tagged
union) and knows nothing else about the kind: it asks the invoker for room (`place`), then
awaits the `Result` (`invoke`). A new target kind is one invoker module and one entry in
`invokers_for`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import msgspec

from bus.store.deliveries import Delivery, TargetRecord
from bus.worker.slot import Reply

# An attempt's result: ok with the return value as JSON, or failed with kind ("exception",
# "timeout", "import", "crash", or THROTTLED when it never ran), error type and message.
Result = Reply
THROTTLED = "throttled"


@dataclass
class Invocation:
    """One attempt of one delivery, as the worker hands it to an invoker."""

    record: TargetRecord
    delivery: Delivery
    attempt: int
    token: str  # unique to this attempt in this worker: names its concurrency lease
    begin: Callable[[], None]  # call when the handler starts (a queued call: at its turn)
    # What the target receives: the event after the target's input options (bus.transform);
    # None: the event as stored. Text that is not JSON (an input template's) has is_json False.
    payload: bytes | None = None
    payload_is_json: bool = True

    def body(self) -> bytes:
        return bytes(self.delivery.event) if self.payload is None else self.payload

    def json_body(self) -> bytes:
        """The input as JSON: text that is not JSON becomes a JSON string (what a handler's `event` is then)."""
        if self.payload_is_json:
            return self.body()
        return msgspec.json.encode(self.body().decode("utf-8", errors="replace"))


class Invoker(Protocol):
    def place(self, call: Invocation, may_run: bool) -> Any | None:
        """Room for `call` now: a placement to pass to invoke(), or None if it must wait.

        `may_run` is False when the worker already runs --concurrency handlers; an invoker
        may still queue the call behind a running one (sync handlers, in a slot) and accept it.
        """

    async def invoke(self, call: Invocation, placed: Any) -> Result:
        """Run the attempt and say how it ended. Never raises for the target's own failures."""

    async def close(self) -> None:
        """Stop whatever the invoker started (slot processes, connection pools)."""


def throttled(message: str = "over reserved concurrency") -> Result:
    return Result(False, THROTTLED, "Throttled", message)
