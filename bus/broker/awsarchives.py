"""The AWS archive operations: CreateArchive, DescribeArchive, ListArchives, UpdateArchive and
DeleteArchive, answered in AWS's shapes.

An archive belongs to one bus (EventSourceArn) and keeps every event accepted on it that its
pattern matches (all of them without one), written by ingest in the same atomic call as the
event's deliveries (bus.broker.ingest). Archives declared in YAML are described and listed but
read-only here (ManagedRuleException, as for YAML rules and buses). EventCount and SizeBytes are
read from Redis at the call, so they are exact where AWS's lag.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import msgspec
from aiohttp import web

from bus import identity
from bus.broker.awsapi import takes
from bus.broker.awsresources import broker_of, not_yaml, read
from bus.broker.awsrules import _page, _Paged, _pattern, _Request
from bus.broker.envelope import Origin, RequestError
from bus.config.model import Archive
from bus.config.validate import Problem, validate_archive
from bus.store import archives as stored
from bus.store import resources, tags

MAX_API_ARCHIVES = int(os.environ.get("BUS_MAX_API_ARCHIVES", "200"))  # AWS's default quota is 200 per Region
STATE = "ENABLED"  # an archive keeps events from the moment it exists: never CREATING or UPDATING
STATES = ("ENABLED", "DISABLED", "CREATING", "UPDATING", "CREATE_FAILED", "UPDATE_FAILED")  # AWS's ArchiveState


class ArchiveRequest(_Request):
    """CreateArchive, DescribeArchive, UpdateArchive, DeleteArchive."""
    archive_name: str | None = None
    event_source_arn: str | None = None
    description: str | None = None
    event_pattern: str | None = None
    retention_days: int | None = None
    kms_key_identifier: str | None = None


class ListArchivesRequest(_Paged):
    name_prefix: str | None = None
    event_source_arn: str | None = None
    state: str | None = None


def _created(broker, a: Archive) -> float:
    return a.created or broker.started  # a YAML archive: as far as the API knows, since the broker started


def _summary(broker, origin: Origin, a: Archive, counts: tuple[int, int]) -> dict[str, Any]:
    """AWS's Archive shape (ListArchives)."""
    return {"ArchiveName": a.name, "EventSourceArn": identity.event_bus_arn(origin, a.bus), "State": STATE,
            "RetentionDays": a.retention_days, "EventCount": counts[0], "SizeBytes": counts[1],
            "CreationTime": _created(broker, a)}


def _description(broker, origin: Origin, a: Archive, counts: tuple[int, int]) -> dict[str, Any]:
    out = {"ArchiveArn": identity.archive_arn(origin, a.name), **_summary(broker, origin, a, counts)}
    if a.description:
        out["Description"] = a.description
    if a.event_pattern is not None:
        out["EventPattern"] = json.dumps(a.event_pattern)  # as DescribeRule writes a rule's
    return out


def _answer(origin: Origin, a: Archive, created: float) -> dict[str, Any]:
    """What CreateArchive and UpdateArchive answer."""
    return {"ArchiveArn": identity.archive_arn(origin, a.name), "State": STATE, "CreationTime": created}


def _found(broker, name: Any) -> Archive:
    archive = broker.declared.archives.get(name) if isinstance(name, str) else None
    if archive is None:
        raise RequestError("ResourceNotFoundException", f"Archive {name} does not exist.")
    return archive


def _api_archive(broker, name: Any) -> Archive:
    archive = _found(broker, name)
    not_yaml(broker.yaml_config.archives, archive.name, "Archive")
    return archive


def _bus_of(broker, arn: Any) -> str:
    bus = identity.bus_name(arn) if isinstance(arn, str) else None
    if bus is None:
        raise RequestError("ValidationException", f"Parameter EventSourceArn is not valid: {arn!r} is not an event bus ARN.")
    if bus not in broker.declared.buses:
        raise RequestError("ResourceNotFoundException", f"Event bus {bus} does not exist.")
    return bus


def _refuse(req: ArchiveRequest) -> None:
    if req.kms_key_identifier is not None:
        raise RequestError("ValidationException", "Parameter KmsKeyIdentifier is not supported by busway.")
    if req.retention_days is not None and req.retention_days < 0:
        raise RequestError("ValidationException", "Parameter RetentionDays is not valid: it must be 0 (forever) or more.")


def _check(broker, a: Archive) -> None:
    """validate_archive's first problem in AWS's words."""
    problems = validate_archive(a, broker.declared.buses)
    if problems:
        raise _aws_error(problems[0])


_MEMBER = {"archive_name": "ArchiveName", "retention_days": "RetentionDays", "description": "Description"}


def _aws_error(p: Problem) -> RequestError:
    if p.check == "event_pattern":
        return RequestError("InvalidEventPatternException", p.message)
    if p.check == "bus":
        return RequestError("ResourceNotFoundException", p.message)
    member = _MEMBER.get(p.check, p.check)
    return RequestError("ValidationException", f"Parameter {member} is not valid. Reason: {p.message}")


async def _counts(broker, names: list[str]) -> dict[str, tuple[int, int]]:
    return await stored.stats(broker.redis, names)


@takes(ArchiveRequest)
async def create_archive(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    req: ArchiveRequest = read(body, ArchiveRequest)
    _refuse(req)
    await broker.reload_resources()
    name = req.archive_name
    if name is None:
        raise RequestError("ValidationException", "Parameter ArchiveName is required.")
    bus = _bus_of(broker, req.event_source_arn)
    if name in broker.declared.archives:
        raise RequestError("ResourceAlreadyExistsException", f"Archive {name} already exists.")
    now = time.time()
    archive = Archive(name=name, bus=bus, event_pattern=_pattern(req.event_pattern), retention_days=req.retention_days or 0,
                      description=req.description or "", created=now, modified=now)
    _check(broker, archive)
    try:
        await broker.change_resources(lambda: resources.create(broker.redis, archive, cap=MAX_API_ARCHIVES))
    except resources.Exists:
        raise RequestError("ResourceAlreadyExistsException", f"Archive {name} already exists.") from None
    except resources.OverQuota:
        raise RequestError("LimitExceededException", f"The requested resource exceeds the maximum number allowed: "
                                                     f"at most {MAX_API_ARCHIVES} archives through the API.") from None
    return _answer(origin, archive, now)


@takes(ArchiveRequest)
async def describe_archive(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    await broker.reload_resources()
    archive = _found(broker, body.get("ArchiveName"))
    counts = await _counts(broker, [archive.name])
    return _description(broker, origin, archive, counts[archive.name])


@takes(ListArchivesRequest)
async def list_archives(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    req: ListArchivesRequest = read(body, ListArchivesRequest)
    if sum(x is not None for x in (req.name_prefix, req.event_source_arn, req.state)) > 1:
        raise RequestError("ValidationException", "At most one filter is allowed for ListArchives. "
                                                  "Use either : State, EventSourceArn, or NamePrefix.")
    if req.state is not None and req.state not in STATES:
        raise RequestError("ValidationException", f"1 validation error detected: Value '{req.state}' at 'state' failed "
                                                  f"to satisfy constraint: Member must satisfy enum value set: "
                                                  f"[{', '.join(STATES)}]")
    await broker.reload_resources()
    bus = _bus_of(broker, req.event_source_arn) if req.event_source_arn is not None else None
    chosen = sorted((a for a in broker.declared.archives.values()
                     if a.name.startswith(req.name_prefix or "") and bus in (None, a.bus)
                     and req.state in (None, STATE)), key=lambda a: a.name)
    page = _page(chosen, body, "Archives")
    counts = await _counts(broker, [a.name for a in page["Archives"]])
    page["Archives"] = [_summary(broker, origin, a, counts[a.name]) for a in page["Archives"]]
    return page


@takes(ArchiveRequest)
async def update_archive(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    req: ArchiveRequest = read(body, ArchiveRequest)
    _refuse(req)
    await broker.reload_resources()
    old = _api_archive(broker, req.archive_name)
    changes: dict[str, Any] = {"modified": time.time()}
    if req.description is not None:
        changes["description"] = req.description
    if req.event_pattern is not None:  # AWS: an empty pattern is none (keep every event)
        changes["event_pattern"] = _pattern(req.event_pattern) if req.event_pattern else None
    if req.retention_days is not None:
        changes["retention_days"] = req.retention_days
    new = msgspec.structs.replace(old, **changes)
    _check(broker, new)
    try:
        await broker.change_resources(lambda: resources.update(broker.redis, old, new))
    except resources.NotFound:
        raise RequestError("ResourceNotFoundException", f"Archive {old.name} does not exist.") from None
    except resources.Conflict:
        raise RequestError("ConcurrentModificationException", f"Archive {old.name} was changed meanwhile; try again.") from None
    return _answer(origin, new, old.created)


@takes(ArchiveRequest)
async def delete_archive(request: web.Request, body: dict, origin: Origin) -> dict:
    """Deletes its events too. A broker that has not seen the delete yet (within its 1 s poll) may
    still add some: retention (bus.broker.retention) drops the events of archives that do not exist."""
    broker = broker_of(request)
    await broker.reload_resources()
    archive = _api_archive(broker, body.get("ArchiveName"))
    try:
        await broker.change_resources(lambda: resources.delete(broker.redis, "archive", archive.name))
    except resources.NotFound:
        raise RequestError("ResourceNotFoundException", f"Archive {archive.name} does not exist.") from None
    await stored.drop(broker.redis, archive.name)
    await tags.forget(broker.redis, identity.archive_arn(origin, archive.name))  # a new one of its name starts bare
    return {}


OPERATIONS = {
    "CreateArchive": create_archive, "DescribeArchive": describe_archive, "ListArchives": list_archives,
    "UpdateArchive": update_archive, "DeleteArchive": delete_archive,
}
