"""TestEventPattern: does this event match this pattern? Shared by the AWS API, HTTP and CLI."""
from __future__ import annotations

from typing import Any

import msgspec

from bus.broker.envelope import RequestError
from bus.patterns import PatternError, compile_pattern

REQUIRED_EVENT_FIELDS = ("id", "account", "source", "time", "region", "detail-type")


def event_matches_pattern(pattern: Any, event: Any) -> bool:
    """Raise RequestError (InvalidEventPatternException / ValidationException) on bad input."""
    try:
        compiled = compile_pattern(pattern)
    except PatternError as exc:
        raise RequestError("InvalidEventPatternException", str(exc)) from None
    return compiled.matches(_event(event))


def _event(event: Any) -> dict[str, Any]:
    if isinstance(event, (str, bytes)):
        try:
            event = msgspec.json.decode(event)
        except msgspec.DecodeError:
            raise RequestError("ValidationException", "Parameter Event is not valid.") from None
    if not isinstance(event, dict) or any(k not in event for k in REQUIRED_EVENT_FIELDS):
        missing = [k for k in REQUIRED_EVENT_FIELDS if not isinstance(event, dict) or k not in event]
        raise RequestError("ValidationException", f"Parameter Event is not valid. Missing: {', '.join(missing)}")
    return event
