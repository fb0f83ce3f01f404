"""PutEvents entries in, EventBridge envelopes out: validation with AWS's per-entry errors.

Both ingest routes (native `POST /events` and AWS `PutEvents`) turn their input into
`Entry` values; everything after this module trusts an Envelope.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec

from bus import identity
from bus.events import format_time, new_event
from bus.identity import Identity

# format_time: moved to bus.events, importable here until callers move
__all__ = ["MAX_JSON_DEPTH", "Entry", "EntryError", "Origin", "RequestError", "TooDeep", "build_envelope", "bus_name",
           "check_request", "decode_json", "may_nest_deeper", "entry_size", "format_time"]

MAX_ENTRIES = 10
MAX_REQUEST_BYTES = 1024 * 1024  # AWS: total entry size under 1 MB (since 2026-01)
MAX_DETAIL_TYPE = 128
_TIME_SIZE = 14  # AWS counts a present Time as 14 bytes
# A request body at most MAX_REQUEST_BYTES / SIZE_GROWTH long cannot hold entries over the limit,
# so its entries are not measured (a tenth of ingest's time per event went there): an entry's
# counted size is at most 4.5 times the JSON text it came from (re-encoding the number 1e15 gives
# 18 characters for 4, found the worst by trying every number up to 6 characters; strings only
# shrink when decoded; a present Time counts 14 for its `"time":""` of at least 9).
SIZE_GROWTH = 5
# Not an AWS limit: JSON (a request body, a Detail, a pattern) nested deeper than this is refused
# as such. Without it the decoder's recursion limit would decide, at a depth that depends on the
# call stack, and raise RecursionError (a 500). Patterns have the same guard (bus.patterns.syntax).
MAX_JSON_DEPTH = 100
# An event's Time must fall in years 1000..9999: a four-digit RFC 3339 year, and a datetime can hold it.
MIN_EVENT_TIME = datetime(1000, 1, 1, tzinfo=timezone.utc).timestamp()
MAX_EVENT_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


class RequestError(Exception):
    """A whole-request error in AWS's shape: __type and message, HTTP 400."""

    def __init__(self, type_: str, message: str, status: int = 400):
        super().__init__(message)
        self.type = type_
        self.message = message
        self.status = status


class TooDeep(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH; each caller answers it in its own words."""

    def __init__(self) -> None:
        super().__init__(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")


def decode_json(raw: bytes | str) -> Any:
    """msgspec's decode, with JSON deeper than MAX_JSON_DEPTH raising TooDeep (DecodeError as before)."""
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        raise TooDeep() from None
    if may_nest_deeper(raw) and _deeper_than(value, MAX_JSON_DEPTH):
        raise TooDeep()
    return value


def may_nest_deeper(raw: bytes | str) -> bool:
    # Cheap first: text with no more brackets than the limit cannot nest past it (brackets inside
    # strings count too, which only errs towards walking), so the common event skips the walk.
    opening = (b"{", b"[") if isinstance(raw, bytes) else ("{", "[")
    return raw.count(opening[0]) + raw.count(opening[1]) > MAX_JSON_DEPTH


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests more than `limit` containers deep; iterative, so any depth is safe."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class EntryError(Exception):
    """One entry's failure: ErrorCode + ErrorMessage in the PutEvents result."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Entry:
    """One PutEvents entry as received; fields are None when absent."""

    source: Any = None
    detail_type: Any = None
    detail: Any = None  # JSON text (AWS) or an already-parsed object (native)
    resources: Any = None
    time: Any = None
    bus: Any = None
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # the event's id when the sender gives one (CloudEvents in); None: a fresh id


Origin = Identity  # who a request speaks for: the account, and the region it signed for (bus.identity)


def bus_name(value: Any) -> str:
    """EventBusName as given: absent means the default bus; a bus ARN means the bus it names."""
    if value is None or value == "":
        return "default"
    if not isinstance(value, str):
        raise EntryError("InvalidArgument", "Parameter EventBusName is not valid.")
    return identity.bus_name(value) or value


def entry_size(e: Entry) -> int:
    """AWS's PutEvents size: Time 14 bytes, then UTF-8 lengths of the text fields."""
    size = _TIME_SIZE if e.time is not None else 0
    for text in (e.source, e.detail_type):
        if isinstance(text, str):
            size += len(text.encode())
    if isinstance(e.detail, str):
        size += len(e.detail.encode())
    elif e.detail is not None:
        size += len(msgspec.json.encode(e.detail))
    if isinstance(e.resources, list):
        size += sum(len(r.encode()) for r in e.resources if isinstance(r, str))
    return size


def check_request(entries: list[Entry], body_size: int | None = None) -> None:
    """The request's entry count and total size (AWS's limits); `body_size`, the length of the
    JSON body they came from, spares measuring entries that cannot be too large (SIZE_GROWTH)."""
    if not entries:
        raise RequestError("ValidationException", "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length greater than or equal to 1")
    if len(entries) > MAX_ENTRIES:
        raise RequestError(
            "ValidationException",
            f"1 validation error detected: Value '{len(entries)} entries' at 'entries' failed to satisfy "
            f"constraint: Member must have length less than or equal to {MAX_ENTRIES}",
        )
    if body_size is not None and body_size * SIZE_GROWTH <= MAX_REQUEST_BYTES:
        return
    if sum(entry_size(e) for e in entries) > MAX_REQUEST_BYTES:
        raise RequestError("ValidationException", "Total size of the entries in the request is over the limit.")


def build_envelope(e: Entry, origin: Origin, received: float) -> dict[str, Any]:
    """Validate one entry and return the EventBridge event; raise EntryError."""
    if e.extra.get("unknown"):
        raise EntryError("InvalidArgument", f"Unknown field(s) in event: {', '.join(e.extra['unknown'])}.")
    source, detail_type = e.source, e.detail_type
    # This runs once per event: the usual case (two non-empty str) is tested inline, and only
    # an entry that fails it pays for the calls that find which field to blame.
    if not (type(source) is str and type(detail_type) is str and source and detail_type):
        _require(source, "Source")
        _require(detail_type, "DetailType")
    if e.detail is None or e.detail == "":  # AWS answers an empty Detail as a missing one
        raise EntryError("InvalidArgument", "Parameter Detail is not valid. Reason: Detail is a required argument.")
    if len(detail_type) > MAX_DETAIL_TYPE:
        raise EntryError("InvalidArgument", f"Parameter DetailType is not valid. Reason: DetailType is longer than {MAX_DETAIL_TYPE} characters.")
    if source.startswith("aws."):
        raise EntryError("NotAuthorizedForSourceException", f"Not authorized for the source {source}.")
    # Time, then resources, then detail: the order they were always checked in, so an entry with
    # several faults is blamed for the same one. Absent Time and Resources skip a call each.
    time = format_time(received) if e.time is None else _event_time(e.time, received)
    resources = [] if e.resources is None else _resources(e.resources)
    event = new_event(origin, source, detail_type, time, resources, _detail(e.detail))
    if e.id is not None:  # a CloudEvent keeps its producer's id: it is what the producer dedups by
        event["id"] = e.id  # same key, same place in the envelope
    return event


def _require(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise EntryError("InvalidArgument", f"Parameter {name} is not valid. Reason: {name} is a required argument.")


def _detail(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = decode_json(value)
        except msgspec.DecodeError:
            raise EntryError("MalformedDetail", "Detail is malformed.") from None
        except TooDeep as exc:
            raise EntryError("MalformedDetail", f"Detail is malformed. Reason: {exc}.") from None
    if not isinstance(value, dict):
        raise EntryError("MalformedDetail", "Detail is malformed. Reason: Detail must be a JSON object.")
    return value


def _resources(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        for r in value:  # a plain loop: all() over a generator costs more than the check itself
            if not isinstance(r, str):
                break
        else:
            return value
    raise EntryError("InvalidArgument", "Parameter Resources is not valid. Reason: Resources must be a list of strings.")


def _event_time(value: Any, received: float) -> str:
    if value is None:
        return format_time(received)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_time(_in_range(value))  # not float(value) first: 10**400 would overflow
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EntryError("InvalidArgument", "Parameter Time is not valid. Reason: Time must be RFC3339 or epoch seconds.") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        try:
            epoch = parsed.timestamp()
        except (OverflowError, ValueError):  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            epoch = MIN_EVENT_TIME - 1
        return format_time(_in_range(epoch))
    raise EntryError("InvalidArgument", "Parameter Time is not valid.")


def _in_range(epoch: float | int) -> float | int:
    """Epoch seconds a datetime can format; anything else is the client's error, not an overflow."""
    if not MIN_EVENT_TIME <= epoch <= MAX_EVENT_TIME:
        raise EntryError("InvalidArgument", "Parameter Time is not valid. Reason: Time must be between "
                                            "1000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.")
    return epoch

