"""The AWS API destination operations (Create, Describe, List, Update, Delete), answered in AWS's
shapes. An API destination names its connection by ARN; the connection holds the secrets, so
nothing here ever sees one. API destinations declared in YAML are read-only here
(ManagedRuleException, as for YAML rules).
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from bus import identity
from bus.broker.awsapi import takes
from bus.broker.awsconnections import _CONNECTION_ARN, _check_description, _check_name, _first_problem
from bus.broker.awsresources import broker_of, found, invalid, need, not_yaml, read, store, times
from bus.broker.awsrules import _page, _Paged, _Request
from bus.broker.envelope import Origin, RequestError
from bus.config.model import ApiDestination, Connection
from bus.config.validate import validate_api_destination
from bus.store import resources

# AWS's quota: 3,000 API destinations per account and Region.
MAX_API_DESTINATIONS = int(os.environ.get("BUS_MAX_API_DESTINATIONS", "3000"))
DEFAULT_RATE = 300  # AWS's default InvocationRateLimitPerSecond


class DestinationRequest(_Request):
    """CreateApiDestination, UpdateApiDestination, DescribeApiDestination, DeleteApiDestination."""
    name: str | None = None
    description: str | None = None
    connection_arn: str | None = None
    invocation_endpoint: str | None = None
    http_method: str | None = None
    invocation_rate_limit_per_second: int | None = None


class ListDestinationsRequest(_Paged):
    name_prefix: str | None = None
    connection_arn: str | None = None



# --- API destinations --------------------------------------------------------------------------

def _destination_view(broker, origin: Origin, d: ApiDestination, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"ApiDestinationArn": identity.api_destination_arn(origin, d.name, d.uuid),
                           "ApiDestinationState": "ACTIVE", **times(broker, d.created, d.modified)}
    if full:
        c = broker.declared.connections.get(d.connection)
        out.update(Name=d.name, InvocationEndpoint=d.endpoint, HttpMethod=d.method,
                   InvocationRateLimitPerSecond=d.invocation_rate_limit_per_second)
        if c is not None:
            out["ConnectionArn"] = identity.connection_arn(origin, c.name, c.uuid)
        if d.description:
            out["Description"] = d.description
    return out


def _connection_named_by(broker, arn: Any) -> Connection:
    m = _CONNECTION_ARN.match(arn) if isinstance(arn, str) else None
    if m is None:
        raise invalid("ConnectionArn", "Provided Arn is not in correct format.")
    c = broker.declared.connections.get(m.group(1))
    if c is None or c.uuid != m.group(2):
        raise RequestError("ResourceNotFoundException", f"Connection '{m.group(1)}' does not exist.")
    return c


def _destination(broker, name: Any) -> ApiDestination:
    return found(broker.declared.api_destinations, name, "API destination")


def _check_destination(broker, d: ApiDestination) -> None:
    _first_problem(validate_api_destination(d, broker.declared.connections))


@takes(DestinationRequest)
async def create_api_destination(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    req: DestinationRequest = read(body, DestinationRequest)
    name = _check_name(req.name)
    _check_description(req.description)
    await broker.reload_resources()
    connection = _connection_named_by(broker, need("ConnectionArn", req.connection_arn))
    if name in broker.declared.api_destinations:
        raise RequestError("ResourceAlreadyExistsException", f"API destination {name} already exists.")
    now = time.time()
    d = ApiDestination(name=name, connection=connection.name, uuid=str(uuid.uuid4()), created=now, modified=now,
                       endpoint=need("InvocationEndpoint", req.invocation_endpoint),
                       method=need("HttpMethod", req.http_method), description=req.description or "",
                       invocation_rate_limit_per_second=(DEFAULT_RATE if req.invocation_rate_limit_per_second is None
                                                         else req.invocation_rate_limit_per_second))
    _check_destination(broker, d)
    try:
        await store(broker, lambda: resources.create(broker.redis, d, cap=MAX_API_DESTINATIONS))
    except resources.Exists:
        raise RequestError("ResourceAlreadyExistsException", f"API destination {name} already exists.") from None
    except resources.OverQuota:
        raise RequestError("LimitExceededException", f"The requested resource exceeds the maximum number allowed: "
                                                     f"at most {MAX_API_DESTINATIONS} API destinations.") from None
    return _destination_view(broker, origin, d, full=False)


@takes(DestinationRequest)
async def describe_api_destination(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    return _destination_view(broker, origin, _destination(broker, body.get("Name")))


@takes(ListDestinationsRequest)
async def list_api_destinations(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    prefix = body.get("NamePrefix") or ""
    via = _connection_named_by(broker, body["ConnectionArn"]).name if body.get("ConnectionArn") else None
    items = [_destination_view(broker, origin, d) for d in sorted(broker.declared.api_destinations.values(), key=lambda d: d.name)
             if d.name.startswith(prefix) and via in (None, d.connection)]
    return _page(items, body, "ApiDestinations")


@takes(DestinationRequest)
async def update_api_destination(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    req: DestinationRequest = read(body, DestinationRequest)
    _check_description(req.description)
    await broker.reload_resources()
    old = _destination(broker, req.name)
    not_yaml(broker.yaml_config.api_destinations, old.name, "API destination")
    changes: dict[str, Any] = {"modified": time.time()}
    if req.connection_arn is not None:
        changes["connection"] = _connection_named_by(broker, req.connection_arn).name
    for member, field in (("invocation_endpoint", "endpoint"), ("http_method", "method"), ("description", "description"),
                          ("invocation_rate_limit_per_second", "invocation_rate_limit_per_second")):
        if getattr(req, member) is not None:
            changes[field] = getattr(req, member)
    new = msgspec.structs.replace(old, **changes)
    _check_destination(broker, new)
    await store(broker, lambda: resources.update(broker.redis, old, new))
    return _destination_view(broker, origin, new, full=False)


@takes(DestinationRequest)
async def delete_api_destination(request: web.Request, body: dict, origin: Origin) -> dict:
    """Targets that still name it fail their deliveries (to their DLQ) until it is back, as on AWS."""
    broker = broker_of(request)
    await broker.reload_resources()
    d = _destination(broker, body.get("Name"))
    not_yaml(broker.yaml_config.api_destinations, d.name, "API destination")
    try:
        await store(broker, lambda: resources.delete(broker.redis, "api_destination", d.name))
    except resources.NotFound:
        raise RequestError("ResourceNotFoundException", f"API destination '{d.name}' does not exist.") from None
    return {}


OPERATIONS = {
    "CreateApiDestination": create_api_destination, "DescribeApiDestination": describe_api_destination,
    "ListApiDestinations": list_api_destinations, "UpdateApiDestination": update_api_destination,
    "DeleteApiDestination": delete_api_destination,
}
