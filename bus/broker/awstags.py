"""TagResource, UntagResource, ListTagsForResource for event buses, rules, archives, connections
and API destinations (YAML's included: tags live in Redis, not in the YAML), and the tag checks
CreateEventBus shares.

A rule's PutRule Tags stay in the Rule (bus.config.model.Rule.tags) and are its tags until the
first TagResource or UntagResource of it, which stores its whole set (bus.store.tags: nothing
stored means "the tags it was created with"); so PutRule needs no second write, an UntagResource
of a PutRule tag holds, and DeleteRule forgets what was stored. AWS's limits: 50 tags per
resource, keys of 1 to 128 characters and values of 0 to 256, keys starting `aws:` reserved.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from bus import identity
from bus.broker.awsapi import takes
from bus.broker.awsrules import TagMember, _Request
from bus.broker.envelope import Origin, RequestError
from bus.config.model import DEFAULT_BUS, ApiDestination, Connection, stable_uuid
from bus.store import tags as store

MAX_TAGS = 50
MAX_KEY = 128
MAX_VALUE = 256
RESERVED_PREFIX = "aws:"
# <kind>/<the rest>; a rule's rest is <name> (default bus) or <bus>/<name>.
_RESOURCE = re.compile(r"^(event-bus|rule|archive|connection|api-destination)/(.+)$")


class _ArnRequest(_Request):
    resource_arn: str | None = msgspec.field(default=None, name="ResourceARN")  # not PascalCase's ResourceArn


class TagResourceRequest(_ArnRequest):
    tags: list[TagMember] | None = None


@dataclass(frozen=True)
class Tagged:
    """A resource found by its ARN: its canonical ARN and the tags it was created with."""

    arn: str
    base: dict[str, str]


# --- checks (CreateEventBus uses them too) ---------------------------------------------------

def check_tags(raw: list[dict[str, Any]] | None) -> dict[str, str]:
    """A Tags member as a dict, in AWS's words when it breaks a limit."""
    out: dict[str, str] = {}
    for tag in raw or []:
        key, value = tag.get("Key"), tag.get("Value")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
            raise _invalid(f"Parameter Tags is not valid: each Key is 1 to {MAX_KEY} characters.")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise _invalid(f"Parameter Tags is not valid: each Value is 0 to {MAX_VALUE} characters (key {key!r}).")
        _check_not_reserved(key)
        if key in out:
            raise _invalid("Invalid parameter: Duplicated keys are not allowed.")
        out[key] = value
    if len(out) > MAX_TAGS:
        raise _too_many()
    return out


def _check_not_reserved(key: str) -> None:
    if key.lower().startswith(RESERVED_PREFIX):
        raise _invalid(f"Tag keys starting with '{RESERVED_PREFIX}' are reserved for AWS: {key!r}.")


def _invalid(message: str) -> RequestError:
    return RequestError("ValidationException", message)


def _too_many() -> RequestError:
    return _invalid(f"A resource can have at most {MAX_TAGS} tags.")


# --- finding the resource ---------------------------------------------------------------------

async def _resource(request: web.Request, body: dict, origin: Origin) -> Tagged:
    arn = body.get("ResourceARN")
    if not isinstance(arn, str) or not arn:
        raise _invalid("Parameter ResourceARN is required.")
    broker = request.app["broker"]
    await broker.reload_resources()  # another broker may have made (or deleted) it a moment ago
    await broker.reload_api_rules()
    parts = identity.parse_arn(arn)
    m = _RESOURCE.match(parts.resource) if parts and parts.service == "events" else None
    found = _find(broker, origin, m.group(1), m.group(2)) if m else None
    if found is None:
        raise RequestError("ResourceNotFoundException", _not_found(arn, m))
    return found


def _not_found(arn: str, m) -> str:
    """AWS's words: a rule is named with its bus; anything else by its ARN."""
    if m is not None and m.group(1) == "rule":
        bus, _, name = m.group(2).rpartition("/")
        return f"Rule {name} does not exist on EventBus {bus or DEFAULT_BUS}."
    return f"Resource {arn} does not exist."


def _find(broker, origin: Origin, kind: str, rest: str) -> Tagged | None:
    declared = broker.declared
    if kind == "event-bus":
        return Tagged(identity.event_bus_arn(origin, rest), {}) if rest in broker.router.config.buses else None
    if kind == "archive":
        return Tagged(identity.archive_arn(origin, rest), {}) if rest in declared.archives else None
    if kind == "rule":
        bus, _, name = rest.rpartition("/")
        rule = broker.router.config.rules.get((bus or DEFAULT_BUS, name))
        return Tagged(identity.rule_arn(origin, rule.bus, rule.name), dict(rule.tags)) if rule else None
    name, _, given_id = rest.partition("/")
    if kind == "connection":
        c = declared.connections.get(name)
        uid = (c.uuid or stable_uuid(Connection, name)) if c else None
        return Tagged(identity.connection_arn(origin, name, uid), {}) if uid and given_id in ("", uid) else None
    d = declared.api_destinations.get(name)
    uid = (d.uuid or stable_uuid(ApiDestination, name)) if d else None
    return Tagged(identity.api_destination_arn(origin, name, uid), {}) if uid and given_id in ("", uid) else None


async def current(redis, found: Tagged) -> dict[str, str]:
    stored = await store.get(redis, found.arn)
    return found.base if stored is None else stored


# --- the operations ---------------------------------------------------------------------------

@takes(TagResourceRequest)
async def tag_resource(request: web.Request, body: dict, origin: Origin) -> dict:
    raw = body.get("Tags")
    if raw is None:
        raise _invalid("Parameter Tags is required.")
    tags = check_tags(raw)
    found = await _resource(request, body, origin)
    try:
        await store.tag(request.app["broker"].redis, found.arn, tags, base=found.base, limit=MAX_TAGS)
    except store.TooManyTags:
        raise _too_many() from None
    return {}


class UntagResourceRequest(_ArnRequest):
    tag_keys: list[str] | None = None


@takes(UntagResourceRequest)
async def untag_resource(request: web.Request, body: dict, origin: Origin) -> dict:
    keys = body.get("TagKeys")
    if keys is None:
        raise _invalid("Parameter TagKeys is required.")
    for key in keys:
        if not 1 <= len(key) <= MAX_KEY:
            raise _invalid(f"Parameter TagKeys is not valid: each key is 1 to {MAX_KEY} characters.")
        _check_not_reserved(key)
    found = await _resource(request, body, origin)
    await store.untag(request.app["broker"].redis, found.arn, keys, base=found.base)
    return {}


@takes(_ArnRequest)
async def list_tags_for_resource(request: web.Request, body: dict, origin: Origin) -> dict:
    found = await _resource(request, body, origin)
    tags = await current(request.app["broker"].redis, found)
    return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}


OPERATIONS = {"TagResource": tag_resource, "UntagResource": untag_resource,
              "ListTagsForResource": list_tags_for_resource}
