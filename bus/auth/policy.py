"""Who may do what: the action a request asks for, and whether its principal may do it.

Deny by default: an action is open to every authenticated principal only if it is listed in
OPEN_ACTIONS (PutEvents - checked per entry against the principal's buses, or the bus's resource
policy when it has one (bus_denial) - and reads of rules,
targets and buses); everything else (rule and target changes, the dead-letter queues, any AWS
operation added later) needs `admin: true`. Dead-letter reads are admin-only because a dead
letter holds an event of any bus, which a principal limited to some buses should not read.

PutEvents to a bus that has a resource policy (PutPermission) is decided by that policy
instead of the principal's `buses:` (bus_denial; the documents are bus.auth.buspolicy's).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bus import identity
from bus.auth import buspolicy
from bus.auth.credentials import Principal
from bus.auth.errors import ACCESS_DENIED, AuthError

AWS_TARGET_PREFIX = "AWSEvents."
PolicyLookup = Callable[[str], "dict[str, Any] | None"]  # a bus -> its resource policy (bus.broker.policies)

OPEN_ACTIONS = frozenset({
    "PutEvents", "TestEventPattern",
    "ListEventBuses", "DescribeEventBus", "ListRules", "DescribeRule", "ListTargetsByRule",
    "ListRuleNamesByTarget", "ListApiDestinations", "DescribeApiDestination",
    # Not the connections: they never show secrets, but they do show how each service is
    # authorized (header names, client ids, token URLs), which only an admin needs to read.
})

# Native routes -> the action they perform (named like AWS's where there is one).
_NATIVE = {
    ("POST", "/events"): "PutEvents",
    ("POST", "/test-event-pattern"): "TestEventPattern",
    ("GET", "/dlq"): "ListDeadLetters",
    ("POST", "/dlq/redrive"): "RedriveDeadLetters",
    ("POST", "/dlq/purge"): "PurgeDeadLetters",
}


def native_action(method: str, path: str) -> str | None:
    """The action of a native route; None for a path no route serves (it gets its 404)."""
    if method == "GET" and path.startswith("/dlq/"):
        return "GetDeadLetter"
    if method == "POST" and (path == "/cloudevents" or path.startswith("/cloudevents/")):
        return "PutEvents"  # CloudEvents in: the same per-entry bus check as PutEvents
    return _NATIVE.get((method, path))


def aws_action(target_header: str) -> str | None:
    """The operation named by X-Amz-Target, or None when it names none."""
    return target_header[len(AWS_TARGET_PREFIX):] if target_header.startswith(AWS_TARGET_PREFIX) else None


def check(principal: Principal, action: str) -> None:
    """Raise AccessDeniedException unless `principal` may perform `action`."""
    if principal.admin or action in OPEN_ACTIONS:
        return
    raise AuthError(ACCESS_DENIED, f"User: {user_arn(principal)} is not authorized to perform: "
                                   f"events:{action} because it is not an admin principal")


def bus_denial(principal: Principal, who: identity.Identity, policies: PolicyLookup | None = None):
    """The per-entry PutEvents check bus.broker.ingest calls: a bus name -> None or why not.

    `policies` looks up a bus's resource policy (bus.broker.policies). A bus without one: the
    principal's `buses:` list decides, as before policies. A bus with one: an explicit Deny
    refuses anyone, admins too; else an Allow naming the principal admits it, and so does being
    an admin; the `buses:` list is not consulted (the policy is the bus's whole say)."""
    caller = buspolicy.Caller(principal.name, principal.access_key_id, identity.account())

    def denied(bus: str) -> str | None:
        doc = policies(bus) if policies is not None else None
        if doc is None:
            return None if principal.may_put_to(bus) else _denied(principal, who, bus, "")
        verdict = buspolicy.verdict(doc, caller, bus)
        if verdict == "deny":
            return _denied(principal, who, bus, " with an explicit deny in a resource-based policy")
        if verdict == "allow" or principal.admin:
            return None
        return _denied(principal, who, bus, " because no resource-based policy allows the events:PutEvents action")
    return denied


def _denied(principal: Principal, who: identity.Identity, bus: str, why: str) -> str:
    """AWS's AccessDeniedException message, with AWS's reason when a resource policy decided."""
    return (f"User: {user_arn(principal)} is not authorized to perform: events:PutEvents on resource: "
            f"{identity.event_bus_arn(who, bus)}{why}")


def user_arn(principal: Principal) -> str:
    return f"arn:aws:iam::{identity.account()}:user/{principal.name}"
