"""What the AWS resource operations share (connections, API destinations, archives): the broker
of a request, a request read in its checked shape, AWS's ValidationException, required-member,
not-found and managed-by-YAML errors, one write through the broker with a concurrent change
answered as ConcurrentModificationException, and a resource's Creation/LastModified times.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from bus.broker.envelope import RequestError
from bus.store import resources


def broker_of(request: web.Request):
    return request.app["broker"]


def invalid(member: str, why: str = "") -> RequestError:
    return RequestError("ValidationException", f"Parameter {member} is not valid." + (f" Reason: {why}" if why else ""))


async def store(broker, write) -> None:
    """One write through the broker (in force here when this returns), its refusals in AWS's words."""
    try:
        await broker.change_resources(write)
    except resources.Conflict:
        raise RequestError("ConcurrentModificationException", "The resource was changed meanwhile; try again.") from None


def need(member: str, value: Any) -> Any:
    if value is None:
        raise RequestError("ValidationException", f"Parameter {member} is required.")
    return value


def times(broker, created: float, modified: float) -> dict[str, float]:
    created = created or broker.started  # a YAML resource: as old as the broker, as far as the API knows
    return {"CreationTime": created, "LastModifiedTime": modified or created}


def found(declared: Mapping[str, Any], name: Any, what: str) -> Any:
    """The resource `name` of one kind (YAML's and the API's), or AWS's ResourceNotFoundException."""
    value = declared.get(name) if isinstance(name, str) else None
    if value is None:
        raise RequestError("ResourceNotFoundException", f"{what} '{name}' does not exist.")
    return value


def not_yaml(yaml: Mapping[str, Any], name: str, what: str) -> None:
    """YAML's resources are changed in their files, not through the API."""
    if name in yaml:
        raise RequestError("ManagedRuleException", f"{what} {name} is declared in YAML; change it in the rules files.")


def read(body: dict, shape: type) -> Any:
    return msgspec.convert(body, shape)  # `takes` has checked it converts
