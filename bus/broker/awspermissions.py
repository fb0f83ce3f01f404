"""PutPermission and RemovePermission: the resource policy of a bus, which says who may
PutEvents to it (enforced per entry by bus.auth.policy.bus_denial; documents: bus.auth.buspolicy).

PutPermission either adds one statement (StatementId, Action, Principal), replacing the one of
the same Sid, or sets the whole document (Policy). Each edit is a compare-and-set on the stored
text, retried on a concurrent change, so two PutPermission calls on one bus both land. The edit
is in force on this broker when the call answers, on the others within their 1 s poll.
"""
from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from bus import identity
from bus.auth import buspolicy
from bus.broker.awsapi import takes
from bus.broker.awsrules import _Request
from bus.broker.envelope import Origin, RequestError, bus_name
from bus.store import policies as store

_STATEMENT_ID = re.compile(r"^[a-zA-Z0-9\-_]{1,64}$")
# busway's extension to AWS's "*" or 12-digit account id: the name of a principal of this account.
_PRINCIPAL = re.compile(r"^(\*|\d{12}|[A-Za-z0-9_.@+=,\-]{1,64})$")
_ATTEMPTS = 8  # compare-and-set rounds before ConcurrentModificationException


class PutPermissionRequest(_Request):
    event_bus_name: str | None = None
    action: str | None = None
    principal: str | None = None
    statement_id: str | None = None
    condition: dict[str, Any] | None = None
    policy: str | None = None


class RemovePermissionRequest(_Request):
    statement_id: str | None = None
    remove_all_permissions: bool | None = None
    event_bus_name: str | None = None


def _invalid(message: str) -> RequestError:
    return RequestError("ValidationException", message)


def _bus(request: web.Request, body: dict) -> str:
    name = bus_name(body.get("EventBusName"))
    if name not in request.app["broker"].router.config.buses:
        raise RequestError("ResourceNotFoundException", f"Event bus {name} does not exist.")
    return name


async def _edit(request: web.Request, bus: str, change) -> None:
    """Apply `change` (the stored document or None -> the new one or None) by compare-and-set."""
    broker = request.app["broker"]
    for _ in range(_ATTEMPTS):
        text = await store.get(broker.redis, bus)
        new = change(_stored(text))
        new_text = None if new is None else buspolicy.encode(new)
        if new_text is not None and buspolicy.too_long(new_text):
            raise RequestError("PolicyLengthExceededException",
                               f"The policy of event bus {bus} would be over {buspolicy.MAX_POLICY_BYTES} bytes.")
        if await store.replace(broker.redis, bus, text, new_text):
            await broker.policies.reload()  # in force here before the answer
            return
    raise RequestError("ConcurrentModificationException", f"The policy of event bus {bus} kept changing; try again.")


def _stored(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None  # unreadable (written by hand): an edit starts a new document
    return doc if isinstance(doc, dict) else None


@takes(PutPermissionRequest)
async def put_permission(request: web.Request, body: dict, origin: Origin) -> dict:
    bus = _bus(request, body)
    if body.get("Condition") is not None:
        raise _invalid("Parameter Condition is not supported by busway: its one key, aws:PrincipalOrgID, "
                       "needs AWS Organizations. Name principals instead.")
    if body.get("Policy") is not None:
        given = [m for m in ("StatementId", "Action", "Principal") if body.get(m) is not None]
        if given:
            raise _invalid(f"Parameter {given[0]} cannot be given with Policy: Policy is the whole document.")
        try:
            doc = buspolicy.parse(body["Policy"])
        except buspolicy.PolicyError as exc:
            raise _invalid(f"Parameter Policy is not valid: {exc}") from None
        await _edit(request, bus, lambda _old: doc)
        return {}
    await _edit(request, bus, _adding(_statement(body, identity.event_bus_arn(origin, bus))))
    return {}


def _statement(body: dict, bus_arn: str) -> dict[str, Any]:
    sid, action, principal = body.get("StatementId"), body.get("Action"), body.get("Principal")
    for member, value in (("Action", action), ("Principal", principal), ("StatementId", sid)):
        if value is None:
            raise _invalid(f"Parameter {member} is required (or give Policy).")
    if action != buspolicy.PUT_EVENTS:
        raise _invalid(f"Provided value in parameter 'action' is not supported (only {buspolicy.PUT_EVENTS}).")
    if not _STATEMENT_ID.match(sid):
        raise _invalid("Parameter StatementId is not valid: 1 to 64 of a-z A-Z 0-9 - _.")
    if not _PRINCIPAL.match(principal):
        raise _invalid('Parameter Principal is not valid: "*", a 12-digit account id, or a principal name.')
    return buspolicy.statement(sid, principal, bus_arn)


def _adding(statement: dict[str, Any]):
    return lambda old: buspolicy.with_statement(old, statement)


@takes(RemovePermissionRequest)
async def remove_permission(request: web.Request, body: dict, origin: Origin) -> dict:
    bus = _bus(request, body)
    if body.get("RemoveAllPermissions"):
        await _edit(request, bus, lambda _old: None)
        return {}
    sid = body.get("StatementId")
    if not isinstance(sid, str) or not sid:
        raise _invalid("Parameter StatementId is required unless RemoveAllPermissions is true.")

    def removing(old: dict[str, Any] | None) -> dict[str, Any] | None:
        if old is None:
            raise RequestError("ResourceNotFoundException", "EventBus does not have a policy.")
        try:
            return buspolicy.without_statement(old, sid)
        except KeyError:
            raise RequestError("ResourceNotFoundException", "Statement with the provided id does not exist.") from None
    await _edit(request, bus, removing)
    return {}


OPERATIONS = {"PutPermission": put_permission, "RemovePermission": remove_permission}
