"""A bus resource policy (AWS's policy JSON): check a document, edit it as PutPermission and
RemovePermission do, and decide whether it allows or denies one principal's PutEvents. Pure.

What a statement's Principal may name (an AWS account id or arn:aws:iam::<account>:root is
every busway principal: busway has one account; a user ARN is the principal of that name; our
extension: a bare principal name or access key id; "*" is everyone). Its Resource is matched on
the bus (`event-bus/<name>`, `*` and `?` wildcards) and the account; the region is not
compared, since it is only the label a client signs with. A statement with a Condition never
allows (busway cannot evaluate aws:PrincipalOrgID) but still denies: unknown means refused.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from bus import identity

VERSION = "2012-10-17"
PUT_EVENTS = "events:PutEvents"
MAX_POLICY_BYTES = 10_240  # AWS: "The permission policy on the event bus cannot exceed 10 KB in size."
_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Principal", "Action", "Resource", "Condition"})
_UNSUPPORTED_KEYS = ("NotPrincipal", "NotAction", "NotResource")
_ACCOUNT_ID = re.compile(r"^\d{12}$")

Verdict = Literal["allow", "deny"] | None


class PolicyError(ValueError):
    """A document busway will not store; the message names the member."""


@dataclass(frozen=True)
class Caller:
    """Who asks, as a policy can name them."""

    name: str
    access_key_id: str
    account: str


# --- checking and writing documents ------------------------------------------------------------

def parse(text: str) -> dict[str, Any]:
    """A Policy member's JSON text, checked; PolicyError says what is wrong."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise PolicyError("Policy is not valid JSON.") from None
    check(doc)
    return doc


def check(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise PolicyError("Policy must be a JSON object.")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyError(f"Policy has an unknown member: {min(unknown)}.")
    if not isinstance(doc.get("Version", VERSION), str) or not isinstance(doc.get("Id", ""), str):
        raise PolicyError("Policy Version and Id must be strings.")
    statements = doc.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise PolicyError("Policy needs a Statement: a statement or a non-empty list of them.")
    sids = [s.get("Sid") for s in statements if isinstance(s, dict) and s.get("Sid") is not None]
    if len(sids) != len(set(map(str, sids))):
        raise PolicyError("Policy has two statements with the same Sid.")
    for s in statements:
        _check_statement(s)


def _check_statement(s: Any) -> None:
    if not isinstance(s, dict):
        raise PolicyError("Each Statement must be a JSON object.")
    for key in _UNSUPPORTED_KEYS:
        if key in s:
            raise PolicyError(f"Statement member {key} is not supported by busway.")
    if "Condition" in s:
        raise PolicyError("Statement member Condition is not supported by busway: its one key for event buses, "
                          "aws:PrincipalOrgID, needs AWS Organizations.")
    unknown = set(s) - _STATEMENT_KEYS
    if unknown:
        raise PolicyError(f"Statement has an unknown member: {min(unknown)}.")
    if "Sid" in s and not isinstance(s["Sid"], str):
        raise PolicyError("Statement Sid must be a string.")
    if s.get("Effect") not in ("Allow", "Deny"):
        raise PolicyError("Statement Effect must be Allow or Deny.")
    if not _principal_values(s.get("Principal")):
        raise PolicyError('Statement Principal must be "*" or {"AWS": an ARN, an account id, or a list of them}.')
    for member in ("Action", "Resource"):
        if not _strings(s.get(member)):
            raise PolicyError(f"Statement {member} must be a string or a non-empty list of strings.")


def encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def too_long(text: str) -> bool:
    return len(text.encode()) > MAX_POLICY_BYTES


def statement(sid: str, principal: str, bus_arn: str, action: str = PUT_EVENTS) -> dict[str, Any]:
    """The statement PutPermission writes: "*" for everyone, an account id as its root ARN, and
    (our extension) any other value as the user of that name in this account."""
    if principal == "*":
        who: Any = "*"
    elif _ACCOUNT_ID.match(principal):
        who = {"AWS": f"arn:aws:iam::{principal}:root"}
    else:
        who = {"AWS": f"arn:aws:iam::{identity.account()}:user/{principal}"}
    return {"Sid": sid, "Effect": "Allow", "Principal": who, "Action": action, "Resource": bus_arn}


def statements(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    if doc is None:
        return []
    found = doc.get("Statement")
    if isinstance(found, dict):
        return [found]
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


def with_statement(doc: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`doc` with `new` added, replacing the statement of the same Sid (PutPermission again)."""
    kept = [s for s in statements(doc) if s.get("Sid") != new["Sid"]]
    return {"Version": (doc or {}).get("Version", VERSION), "Statement": [*kept, new]}


def without_statement(doc: dict[str, Any] | None, sid: str) -> dict[str, Any] | None:
    """`doc` without the statement `sid` (None when none is left); KeyError if it has no such statement."""
    found = statements(doc)
    kept = [s for s in found if s.get("Sid") != sid]
    if len(kept) == len(found):
        raise KeyError(sid)
    return {**(doc or {}), "Statement": kept} if kept else None


# --- deciding ------------------------------------------------------------------------------

def verdict(doc: dict[str, Any], caller: Caller, bus: str, action: str = PUT_EVENTS) -> Verdict:
    """"deny" if a statement denies `caller` `action` on `bus`, else "allow" if one allows it, else None."""
    allowed = False
    for s in statements(doc):
        if not isinstance(s, dict) or not _applies(s, caller, bus, action):
            continue
        if s.get("Effect") == "Deny":
            return "deny"
        if s.get("Effect") == "Allow" and "Condition" not in s:
            allowed = True
    return "allow" if allowed else None


def _applies(s: dict[str, Any], caller: Caller, bus: str, action: str) -> bool:
    return (_names(s.get("Principal"), caller) and _any_match(s.get("Action"), action.lower(), lower=True)
            and any(_resource_matches(r, caller.account, bus) for r in _strings(s.get("Resource"))))


def _names(principal: Any, caller: Caller) -> bool:
    ours = {"*", caller.account, f"arn:aws:iam::{caller.account}:root",
            f"arn:aws:iam::{caller.account}:user/{caller.name}", caller.name, caller.access_key_id}
    return any(v in ours for v in _principal_values(principal))


def _principal_values(principal: Any) -> list[str]:
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict) and set(principal) == {"AWS"}:
        return _strings(principal["AWS"])
    return []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return []


def _glob(value: str, pattern: str) -> bool:
    """IAM's wildcards: `*` and `?` only (a `[` is itself, not fnmatch's set)."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _any_match(patterns: Any, value: str, lower: bool = False) -> bool:
    return any(_glob(value, p.lower() if lower else p) for p in _strings(patterns))


def _resource_matches(resource: str, account: str, bus: str) -> bool:
    if resource == "*":
        return True
    arn = identity.parse_arn(resource)
    if arn is None or not _glob("events", arn.service):
        return False
    return _glob(account, arn.account or "*") and _glob(f"event-bus/{bus}", arn.resource)
