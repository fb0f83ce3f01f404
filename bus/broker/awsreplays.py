"""StartReplay, DescribeReplay, ListReplays, CancelReplay: replays as AWS shows them.

The replay itself runs in the broker holding the replay lease (bus.replay.runner); these
operations only create the record (STARTING), read it, and ask for a cancel (CANCELLING), all
through bus.store.replays. Errors follow AWS's (as moto and LocalStack reproduce them):
an unknown archive is a ValidationException on EventSourceArn, a Destination.Arn that is not
the archive's bus is "Cross event bus replay is not permitted.", a FilterArns rule that is not
there is a ResourceNotFoundException.
"""
from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from bus import identity
from bus.broker.awsapi import takes
from bus.broker.awsrules import _page, _Paged, _Request
from bus.broker.envelope import Origin, RequestError
from bus.config.model import DEFAULT_BUS
from bus.identity import Identity
from bus.store import replays
from bus.store.replays import ACTIVE, FINISHED, MAX_ACTIVE, Replay

REPLAY_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
MAX_DESCRIPTION = 512
STATES = ACTIVE + FINISHED
_ARCHIVE_ARN = re.compile(r"^arn:aws[\w-]*:events:[^:]*:[^:]*:archive/(.+)$")
_RULE_ARN = re.compile(r"^arn:aws[\w-]*:events:[^:]*:[^:]*:rule/(.+)$")


class _Destination(_Request):
    arn: str | None = None
    filter_arns: list[str] | None = None


class StartReplayRequest(_Request):
    replay_name: str | None = None
    description: str | None = None
    event_source_arn: str | None = None
    event_start_time: float | None = None
    event_end_time: float | None = None
    destination: _Destination | None = None


class ReplayRequest(_Request):
    """DescribeReplay, CancelReplay."""
    replay_name: str | None = None


class ListReplaysRequest(_Paged):
    name_prefix: str | None = None
    state: str | None = None
    event_source_arn: str | None = None


# --- ARNs ----------------------------------------------------------------------------------

def archive_arn(who: Identity, name: str) -> str:
    return f"arn:aws:events:{who.region}:{who.account}:archive/{name}"


def replay_arn(who: Identity, name: str) -> str:
    return f"arn:aws:events:{who.region}:{who.account}:replay/{name}"


def archive_of(arn: str) -> str | None:
    m = _ARCHIVE_ARN.match(arn)
    return m.group(1) if m else None


def rule_of(arn: str) -> tuple[str, str] | None:
    """(bus, rule) of a rule ARN: rule/<name> is on the default bus, rule/<bus>/<name> on <bus>."""
    m = _RULE_ARN.match(arn)
    if not m:
        return None
    bus, _, name = m.group(1).rpartition("/")
    return (bus or DEFAULT_BUS, name) if name else None


# --- views ---------------------------------------------------------------------------------

def _summary(who: Identity, r: Replay) -> dict[str, Any]:
    """A replay as ListReplays shows it (AWS's Replay shape)."""
    out: dict[str, Any] = {"ReplayName": r.name, "EventSourceArn": archive_arn(who, r.archive), "State": r.state}
    if r.state_reason:
        out["StateReason"] = r.state_reason
    out["EventStartTime"] = r.event_start_ms / 1000
    out["EventEndTime"] = r.event_end_ms / 1000
    if r.event_last_replayed_ms is not None:
        out["EventLastReplayedTime"] = r.event_last_replayed_ms / 1000
    out["ReplayStartTime"] = r.replay_start
    if r.replay_end is not None:
        out["ReplayEndTime"] = r.replay_end
    return out


def _described(who: Identity, r: Replay) -> dict[str, Any]:
    """A replay as DescribeReplay shows it: the summary, its ARN, description and destination."""
    destination: dict[str, Any] = {"Arn": identity.event_bus_arn(who, r.bus)}
    if r.rules is not None:
        destination["FilterArns"] = [identity.rule_arn(who, r.bus, rule) for rule in r.rules]
    out = {"ReplayName": r.name, "ReplayArn": replay_arn(who, r.name)}
    if r.description:
        out["Description"] = r.description
    out.update(_summary(who, r))
    out["Destination"] = destination
    return out


# --- operations ----------------------------------------------------------------------------

def _broker(request: web.Request):
    return request.app["broker"]


def _invalid(member: str, reason: str = "") -> RequestError:
    return RequestError("ValidationException", f"Parameter {member} is not valid." + (f" Reason: {reason}" if reason else ""))


def _name(body: dict) -> str:
    name = body.get("ReplayName")
    if not isinstance(name, str) or not REPLAY_NAME.match(name):
        raise _invalid("ReplayName", "Must be 1 to 64 characters from A-Z, a-z, 0-9, '.', '-' and '_'.")
    return name


def _window(body: dict, now: float) -> tuple[int, int]:
    start, end = body.get("EventStartTime"), body.get("EventEndTime")
    if start is None:
        raise _invalid("EventStartTime", "EventStartTime is a required argument.")
    if end is None:
        raise _invalid("EventEndTime", "EventEndTime is a required argument.")
    if not start < end:
        raise _invalid("EventEndTime", "EventStartTime must be before EventEndTime.")
    if end > now:
        raise _invalid("EventEndTime", "EventEndTime cannot be in the future.")
    if start < 0:
        raise _invalid("EventStartTime", "EventStartTime cannot be before 1970.")
    return int(start * 1000), int(end * 1000)


def _filter_rules(broker, bus: str, arns: list[str] | None) -> list[str] | None:
    """The rule names of FilterArns (None: every rule of the bus), each checked to be on `bus`."""
    if not arns:
        return None
    names: list[str] = []
    for arn in arns:
        parts = rule_of(arn)
        if parts is None or parts[0] != bus:
            raise _invalid("Destination.FilterArns", "Rule must be on the destination event bus.")
        if (bus, parts[1]) not in broker.router.config.rules:
            raise RequestError("ResourceNotFoundException", f"Rule {parts[1]} does not exist on EventBus {bus}.")
        if parts[1] not in names:
            names.append(parts[1])
    return names


@takes(StartReplayRequest)
async def start_replay(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    name = _name(body)
    description = body.get("Description") or ""
    if len(description) > MAX_DESCRIPTION:
        raise _invalid("Description", f"At most {MAX_DESCRIPTION} characters.")
    if await replays.get(broker.redis, name) is not None:
        raise RequestError("ResourceAlreadyExistsException", f"Replay {name} already exists.")
    now = time.time()
    start_ms, end_ms = _window(body, now)
    source = body.get("EventSourceArn")
    archive_name = archive_of(source) if isinstance(source, str) else None
    if archive_name is None:
        raise _invalid("EventSourceArn", "Must contain an archive ARN.")
    await broker.reload_resources()
    await broker.reload_api_rules()
    # The destination first, then the archive: the order AWS (as moto records it) checks them in.
    destination = body.get("Destination") or {}
    target = destination.get("Arn")
    target_bus = identity.bus_name(target) if isinstance(target, str) else None
    if target_bus is None:
        raise _invalid("Destination.Arn", "Must contain an event bus ARN.")
    if target_bus not in broker.declared.buses:
        raise RequestError("ResourceNotFoundException", f"Event bus {target_bus} does not exist.")
    archive = broker.declared.archives.get(archive_name)
    if archive is None:
        raise _invalid("EventSourceArn", f"Archive {archive_name} does not exist.")
    if target_bus != archive.bus:
        raise _invalid("Destination.Arn", "Cross event bus replay is not permitted.")
    rules = _filter_rules(broker, archive.bus, destination.get("FilterArns"))
    replay = Replay(name=name, archive=archive.name, bus=archive.bus, event_start_ms=start_ms, event_end_ms=end_ms,
                    rules=rules, description=description, replay_start=now)
    try:
        await replays.create(broker.redis, replay)
    except replays.Exists:
        raise RequestError("ResourceAlreadyExistsException", f"Replay {name} already exists.") from None
    except replays.OverCap:
        raise RequestError("LimitExceededException", f"The requested resource exceeds the maximum number allowed: "
                                                     f"at most {MAX_ACTIVE} active replays.") from None
    return {"ReplayArn": replay_arn(origin, name), "State": replay.state, "ReplayStartTime": now}


async def _get(broker, name: str) -> Replay:
    stored = await replays.get(broker.redis, name)
    if stored is None:
        raise RequestError("ResourceNotFoundException", f"Replay {name} does not exist.")
    return stored.replay


@takes(ReplayRequest)
async def describe_replay(request: web.Request, body: dict, origin: Origin) -> dict:
    return _described(origin, await _get(_broker(request), _name(body)))


@takes(ListReplaysRequest)
async def list_replays(request: web.Request, body: dict, origin: Origin) -> dict:
    prefix, state, source = body.get("NamePrefix"), body.get("State"), body.get("EventSourceArn")
    if sum(x is not None for x in (prefix, state, source)) > 1:
        raise RequestError("ValidationException", "At most one filter is allowed for ListReplays. "
                                                  "Use either : State, EventSourceArn, or NamePrefix.")
    if state is not None and state not in STATES:
        raise RequestError("ValidationException", f"1 validation error detected: Value '{state}' at 'state' failed "
                                                  f"to satisfy constraint: Member must satisfy enum value set: "
                                                  f"[{', '.join(STATES)}]")
    archive_name = None
    if source is not None:
        archive_name = archive_of(source)
        if archive_name is None:
            raise _invalid("EventSourceArn", "Must contain an archive ARN.")
    found = sorted((s.replay for s in (await replays.load(_broker(request).redis)).values()), key=lambda r: r.name)
    chosen = [r for r in found if (prefix is None or r.name.startswith(prefix)) and (state is None or r.state == state)
              and (archive_name is None or r.archive == archive_name)]
    return _page([_summary(origin, r) for r in chosen], body, "Replays")


@takes(ReplayRequest)
async def cancel_replay(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    name = _name(body)
    try:
        replay = await replays.request_cancel(broker.redis, name)
    except replays.NotFound:
        raise RequestError("ResourceNotFoundException", f"Replay {name} does not exist.") from None
    except replays.Finished:
        raise RequestError("IllegalStatusException", f"Replay {name} is not in a valid state for this operation.") from None
    except replays.Changed:
        raise RequestError("ConcurrentModificationException", f"Replay {name} was changed meanwhile; try again.") from None
    return {"ReplayArn": replay_arn(origin, name), "State": replay.state}


OPERATIONS = {
    "StartReplay": start_replay, "DescribeReplay": describe_replay, "ListReplays": list_replays,
    "CancelReplay": cancel_replay,
}
