"""The AWS event bus operations: ListEventBuses and DescribeEventBus for every bus, and
CreateEventBus, UpdateEventBus, DeleteEventBus for buses made through the API.

Buses declared in YAML (the default bus among them) are read-only here (ManagedRuleException,
as for YAML rules): change them in their file. The default bus cannot be deleted, and a bus
that still has rules cannot either (AWS: "EventBus can't be deleted since it has rules.").
Deleting a bus that does not exist succeeds, as on AWS.

CreateEventBus keeps its Tags (bus.broker.awstags' limits); DescribeEventBus shows the bus's
resource policy (PutPermission) as `Policy`, read from Redis so it is never a poll behind;
DeleteEventBus forgets the bus's tags and policy. UpdateEventBus has no Policy member in AWS's
API (botocore's model), so here neither: PutPermission and RemovePermission change it.
"""
from __future__ import annotations

import os
import time
from typing import Any

import msgspec
from aiohttp import web

from bus import identity
from bus.broker import awstags
from bus.broker.awsapi import takes
from bus.broker.awsrules import TagMember, _page, _Paged, _Request
from bus.broker.envelope import Origin, RequestError, bus_name
from bus.config.model import BUS_NAME, DEFAULT_BUS, Bus
from bus.store import policies, resources, tags

# AWS's default quota of event buses (100 per account and Region); here: buses made through the API.
MAX_API_BUSES = int(os.environ.get("BUS_MAX_API_BUSES", "100"))
MAX_DESCRIPTION = 512
# Members of AWS's bus operations busway has no use for; refused by name rather than dropped.
_UNSUPPORTED = ("EventSourceName", "KmsKeyIdentifier", "DeadLetterConfig", "LogConfig")


class ListEventBusesRequest(_Paged):
    name_prefix: str | None = None


class BusRequest(_Request):
    """DescribeEventBus, CreateEventBus, UpdateEventBus, DeleteEventBus."""
    name: str | None = None
    description: str | None = None
    tags: list[TagMember] | None = None


def _broker(request: web.Request):
    return request.app["broker"]


def _view(broker, origin: Origin, bus: Bus) -> dict[str, Any]:
    """A bus as AWS shows it; a YAML bus was created (as far as the API knows) when the broker started."""
    created = bus.created or broker.started
    out: dict[str, Any] = {"Name": bus.name, "Arn": identity.event_bus_arn(origin, bus.name),
                           "Description": bus.description, "CreationTime": created,
                           "LastModifiedTime": bus.modified or created}
    if bus.name in broker.yaml_config.buses:
        out["ManagedBy"] = "busway.yaml"
    return out


@takes(ListEventBusesRequest)
async def list_event_buses(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    prefix = body.get("NamePrefix") or ""
    buses = sorted((b for b in broker.router.config.buses.values() if b.name.startswith(prefix)), key=lambda b: b.name)
    return _page([_view(broker, origin, b) for b in buses], body, "EventBuses")


@takes(BusRequest)
async def describe_event_bus(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    out = _view(broker, origin, _find(broker, bus_name(body.get("Name"))))
    policy = await policies.get(broker.redis, out["Name"])
    if policy is not None:
        out["Policy"] = policy
    return out


def _find(broker, name: str) -> Bus:
    bus = broker.router.config.buses.get(name)
    if bus is None:
        raise RequestError("ResourceNotFoundException", f"Event bus {name} does not exist.")
    return bus


def _check_request(body: dict, unsupported_too: tuple[str, ...] = ("Tags",)) -> None:
    unsupported = [m for m in (*_UNSUPPORTED, *unsupported_too) if body.get(m) is not None]
    if unsupported:
        raise RequestError("ValidationException", f"Parameter {unsupported[0]} is not supported by busway.")
    description = body.get("Description")
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise RequestError("ValidationException", f"Parameter Description is not valid: at most {MAX_DESCRIPTION} characters.")


def _managed(name: str) -> RequestError:
    return RequestError("ManagedRuleException", f"Event bus {name} is declared in YAML; change it in the rules files.")


@takes(BusRequest)
async def create_event_bus(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    name = body.get("Name")
    # A custom bus's name has no "/" (AWS keeps those for partner buses, which busway has not).
    if not isinstance(name, str) or not BUS_NAME.match(name) or "/" in name:
        raise RequestError("ValidationException", f"Parameter Name is not valid: {name!r}.")
    _check_request(body, unsupported_too=())
    given_tags = awstags.check_tags(body.get("Tags"))
    await broker.reload_resources()
    if name in broker.declared.buses:
        raise RequestError("ResourceAlreadyExistsException", f"Event bus {name} already exists.")
    now = time.time()
    bus = Bus(name=name, description=body.get("Description") or "", created=now, modified=now)
    try:
        await broker.change_resources(lambda: resources.create(broker.redis, bus, cap=MAX_API_BUSES))
    except resources.Exists:
        raise RequestError("ResourceAlreadyExistsException", f"Event bus {name} already exists.") from None
    except resources.OverQuota:
        raise RequestError("LimitExceededException", f"The requested resource exceeds the maximum number allowed: "
                                                     f"at most {MAX_API_BUSES} event buses through the API.") from None
    out = {"EventBusArn": identity.event_bus_arn(origin, name)}
    # After the bus exists (a refused create leaves no tags behind); a new bus starts with only its
    # own, even if a bus of its name was deleted by a busway that did not forget tags.
    await tags.forget(broker.redis, out["EventBusArn"])
    if given_tags:
        await tags.tag(broker.redis, out["EventBusArn"], given_tags, limit=awstags.MAX_TAGS)
    if bus.description:
        out["Description"] = bus.description
    return out


@takes(BusRequest)
async def update_event_bus(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    name = bus_name(body.get("Name"))
    _check_request(body)
    await broker.reload_resources()
    if name in broker.yaml_config.buses:
        raise _managed(name)
    old = broker.api_resources.buses.get(name)
    if old is None:
        raise RequestError("ResourceNotFoundException", f"Event bus {name} does not exist.")
    description = body.get("Description")
    new = msgspec.structs.replace(old, description=old.description if description is None else description,
                                  modified=time.time())
    try:
        await broker.change_resources(lambda: resources.update(broker.redis, old, new))
    except resources.NotFound:
        raise RequestError("ResourceNotFoundException", f"Event bus {name} does not exist.") from None
    except resources.Conflict:
        raise RequestError("ConcurrentModificationException", f"Event bus {name} was changed meanwhile; try again.") from None
    return {"Arn": identity.event_bus_arn(origin, name), "Name": name, "Description": new.description}


@takes(BusRequest)
async def delete_event_bus(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise RequestError("ValidationException", "Parameter Name is not valid.")
    name = bus_name(name)
    if name == DEFAULT_BUS:
        raise RequestError("ValidationException", f"Cannot delete event bus {DEFAULT_BUS}.")
    await broker.reload_resources()
    if name in broker.yaml_config.buses:
        raise _managed(name)
    if name not in broker.api_resources.buses:
        return {}  # AWS: deleting a bus that is not there succeeds
    has_rules = RequestError("ValidationException", "EventBus can't be deleted since it has rules.")
    if any(bus == name for bus, _ in broker.router.config.rules):
        raise has_rules
    try:  # the store looks at the stored rules again in the same call: one put meanwhile is seen
        await broker.change_resources(lambda: resources.delete(broker.redis, "bus", name))
    except resources.NotFound:
        pass  # another broker deleted it first
    except resources.InUse:
        raise has_rules from None
    await tags.forget(broker.redis, identity.event_bus_arn(origin, name))
    await policies.forget(broker.redis, name)
    await broker.policies.reload()
    return {}


OPERATIONS = {
    "ListEventBuses": list_event_buses, "DescribeEventBus": describe_event_bus, "CreateEventBus": create_event_bus,
    "UpdateEventBus": update_event_bus, "DeleteEventBus": delete_event_bus,
}
