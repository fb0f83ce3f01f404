"""The AWS rule operations: List/Describe for every rule, ListRuleNamesByTarget, and
PutRule, PutTargets, RemoveTargets, DeleteRule, EnableRule, DisableRule for rules created
through the API. What each target kind looks like on the wire is bus.broker.awstargets'.

Rules declared in YAML are read-only here (ManagedRuleException): change them in their file.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import msgspec
from aiohttp import web

from bus import identity
from bus.broker import awstargets
from bus.broker.awsapi import takes
from bus.broker.awstargets import TargetMember
from bus.broker.envelope import (
    MAX_JSON_DEPTH,
    Origin,
    RequestError,
    TooDeep,
    bus_name,
    decode_json,
)
from bus.config.model import Rule
from bus.config.validate import (
    MAX_TARGETS_PER_RULE,
    Problem,
    validate_rule,
    validate_target,
)
from bus.patterns import PatternError, compile_pattern
from bus.store import apirules, tags

# AWS's default quota of rules per bus; API rules only (YAML's are the operator's own). Read once:
# a value that is not a number stops the broker at start, not a PutRule later.
MAX_API_RULES_PER_BUS = int(os.environ.get("BUS_MAX_API_RULES_PER_BUS", "300"))
MAX_PAGE = 100  # AWS's Limit is 1..100


# --- request shapes: each operation's members and their types (bus.broker.awsapi.takes) -----

class _Request(msgspec.Struct, rename="pascal"):
    """An AWS request's members (PascalCase on the wire), all optional: a missing one is for the
    operation to answer, in AWS's words; only a present one of the wrong type fails here."""


class _Paged(_Request):
    next_token: str | None = None
    limit: int | None = None


class RuleRequest(_Request):
    """DescribeRule, EnableRule, DisableRule, DeleteRule."""
    name: str | None = None
    event_bus_name: str | None = None
    force: bool | None = None


class ListRulesRequest(_Paged):
    name_prefix: str | None = None
    event_bus_name: str | None = None


class ListTargetsRequest(_Paged):
    rule: str | None = None
    event_bus_name: str | None = None


class ListRuleNamesRequest(_Paged):
    target_arn: str | None = None
    event_bus_name: str | None = None


class TagMember(_Request):
    key: str | None = None
    value: str | None = None


class PutRuleRequest(_Request):
    name: str | None = None
    event_bus_name: str | None = None
    description: str | None = None
    state: str | None = None
    event_pattern: str | dict[str, Any] | None = None
    schedule_expression: str | None = None
    role_arn: str | None = None
    tags: list[TagMember] | None = None


class PutTargetsRequest(_Request):
    rule: str | None = None
    event_bus_name: str | None = None
    targets: list[TargetMember] | None = None


class RemoveTargetsRequest(_Request):
    rule: str | None = None
    event_bus_name: str | None = None
    ids: list[str] | None = None
    force: bool | None = None


def _broker(request: web.Request):
    return request.app["broker"]


def _page(items: list, body: dict[str, Any], key: str) -> dict[str, Any]:
    """One page of `items`; NextToken is the index of the page's first item, as text."""
    token, limit = body.get("NextToken"), body.get("Limit")
    if token is not None and not (token.isascii() and token.isdigit()):
        raise RequestError("ValidationException", "Parameter NextToken is not valid.")
    if limit is not None and not 1 <= limit <= MAX_PAGE:
        raise RequestError("ValidationException", f"Parameter Limit is not valid: it must be from 1 to {MAX_PAGE}.")
    start, limit = int(token or 0), limit or MAX_PAGE
    out: dict[str, Any] = {key: items[start:start + limit]}
    if start + limit < len(items):
        out["NextToken"] = str(start + limit)
    return out


# --- reading rules -------------------------------------------------------------------------

def _describe(origin: Origin, rule: Rule, managed_by_yaml: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": rule.name, "Arn": identity.rule_arn(origin, rule.bus, rule.name), "State": rule.state,
                           "Description": rule.description, "EventBusName": rule.bus}
    if rule.event_pattern is not None:
        out["EventPattern"] = json.dumps(rule.event_pattern)
    if rule.schedule is not None:
        out["ScheduleExpression"] = rule.schedule
    if rule.role_arn is not None:
        out["RoleArn"] = rule.role_arn
    if managed_by_yaml:
        out["ManagedBy"] = "busway.yaml"
    return out


def _find(request: web.Request, body: dict, name_key: str) -> tuple[Rule, bool]:
    broker = _broker(request)
    bus = bus_name(body.get("EventBusName"))
    name = body.get(name_key)
    rule = broker.router.config.rules.get((bus, name))
    if rule is None:
        raise RequestError("ResourceNotFoundException", f"Rule {name} does not exist on EventBus {bus}.")
    return rule, (bus, name) in broker.yaml_config.rules


@takes(ListRulesRequest)
async def list_rules(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    bus = bus_name(body.get("EventBusName"))
    prefix = body.get("NamePrefix") or ""
    rules = sorted((r for (b, n), r in broker.router.config.rules.items() if b == bus and n.startswith(prefix)),
                   key=lambda r: r.name)
    items = [_describe(origin, r, (r.bus, r.name) in broker.yaml_config.rules) for r in rules]
    return _page(items, body, "Rules")


@takes(RuleRequest)
async def describe_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    rule, managed = _find(request, body, "Name")
    return _describe(origin, rule, managed)


@takes(ListTargetsRequest)
async def list_targets_by_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    rule, _ = _find(request, body, "Rule")
    destinations = _broker(request).router.config.api_destinations
    return _page([awstargets.member_of(t, rule, origin, destinations) for t in rule.targets], body, "Targets")


@takes(ListRuleNamesRequest)
async def list_rule_names_by_target(request: web.Request, body: dict, origin: Origin) -> dict:
    """The rules of a bus (YAML's and the API's) with a target delivering to what TargetArn names."""
    arn = body.get("TargetArn")
    if not arn:
        raise RequestError("ValidationException", "1 validation error detected: Value null at 'targetArn' "
                                                  "failed to satisfy constraint: Member must not be null")
    config = _broker(request).router.config
    bus = bus_name(body.get("EventBusName"))
    if bus not in config.buses:
        raise RequestError("ResourceNotFoundException", f"Event bus {bus} does not exist.")
    key = awstargets.key_of_arn(arn)  # None: nothing busway delivers to, so no rule names it
    names = sorted(r.name for (b, _), r in config.rules.items()
                   if b == bus and key is not None and any(awstargets.key_of(t) == key for t in r.targets))
    return _page(names, body, "RuleNames")


# --- changing API rules ----------------------------------------------------------------------

def _api_rule(request: web.Request, body: dict, name_key: str) -> Rule:
    rule, managed = _find(request, body, name_key)
    if managed:
        raise RequestError("ManagedRuleException",
                           f"Rule {rule.name} is declared in YAML; change it in the rules files.")
    return rule


async def _store(request: web.Request, rule: Rule | None, bus: str = "", name: str = "") -> None:
    if rule is not None:
        bus, name = rule.bus, rule.name
    try:  # in force here when this answers; the store enforces the cap atomically for a new rule
        await _broker(request).store_api_rule(bus, name, rule, cap=MAX_API_RULES_PER_BUS)
    except apirules.RuleLimitExceeded:
        raise _over_quota() from None


@takes(PutRuleRequest)
async def put_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    buses = broker.router.config.buses
    name, bus = body.get("Name"), bus_name(body.get("EventBusName"))
    if not isinstance(name, str):
        raise RequestError("ValidationException", f"Parameter Name is not valid: {name!r}.")
    if (bus, name) in broker.yaml_config.rules:
        raise RequestError("ManagedRuleException", f"Rule {name} is declared in YAML; change it in the rules files.")
    state = body.get("State") or "ENABLED"
    # Before the Rule is built: YAML's loader checks this as a type (a Literal), and validate_rule
    # would too, but a bad value is AWS's ValidationException, not a type error.
    if state not in ("ENABLED", "DISABLED"):
        raise RequestError("ValidationException", f"Parameter State is not valid: {state}.")
    old = broker.router.config.rules.get((bus, name))
    # AWS: PutRule replaces the rule whole, but its Tags count only when it creates the rule (an
    # update ignores them: TagResource changes them). A rule may have a pattern and a schedule.
    rule = Rule(name=name, bus=bus, description=body.get("Description") or "", state=state,
                event_pattern=_pattern(body.get("EventPattern") or None),  # "" is no pattern (moto and SDKs send it)
                schedule=body.get("ScheduleExpression") or None,
                role_arn=body.get("RoleArn"), tags=old.tags if old else _tags(body.get("Tags")),
                targets=old.targets if old else [])
    _raise_first(validate_rule(rule, buses), rule)
    if old is None:
        await _check_rule_quota(broker, bus)
    await _store(request, rule)
    return {"RuleArn": identity.rule_arn(origin, rule.bus, rule.name)}


def _tags(raw: list[dict] | None) -> dict[str, str]:
    """PutRule's Tags as a dict; a tag without its Key or Value, or a key given twice, is AWS's ValidationException."""
    tags: dict[str, str] = {}
    for tag in raw or []:
        key, value = tag.get("Key"), tag.get("Value")
        if not key or value is None or len(key) > 128 or len(value) > 256:
            raise RequestError("ValidationException", "Parameter Tags is not valid: each tag needs a Key "
                                                      "(1 to 128 characters) and a Value (0 to 256).")
        if key in tags:
            raise RequestError("ValidationException", "Invalid parameter: Duplicated keys are not allowed.")
        tags[key] = value
    return tags


async def _check_rule_quota(broker, bus: str) -> None:
    """A new API rule past MAX_API_RULES_PER_BUS is a LimitExceededException, as AWS answers.

    This early check answers before any other work; the store's own check (one Lua call with the
    write) is what holds when brokers race for the last place."""
    await broker.reload_api_rules()
    if broker.api_rule_count(bus) >= MAX_API_RULES_PER_BUS:
        raise _over_quota()


def _over_quota() -> RequestError:
    return RequestError("LimitExceededException", f"The requested resource exceeds the maximum number allowed: "
                                                  f"at most {MAX_API_RULES_PER_BUS} rules per event bus through the API.")


def _pattern(text: Any) -> dict | None:
    """EventPattern's JSON text as a dict; validating it is validate_rule's job."""
    if text is None or isinstance(text, dict):
        return text
    try:
        return decode_json(text)
    except TooDeep:
        raise RequestError("InvalidEventPatternException",
                           f"Event pattern is not valid. Reason: nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except (msgspec.DecodeError, TypeError):
        try:
            compile_pattern(text)  # says what is wrong with it in AWS's words
        except PatternError as exc:
            raise RequestError("InvalidEventPatternException", str(exc)) from None
        raise RequestError("InvalidEventPatternException", "Event pattern is not valid JSON.") from None


# What AWS answers for each failed check of bus.config.validate: (exception, message).
def _aws_error(p: Problem, rule: Rule) -> RequestError:
    tid = rule.targets[p.target].id if p.target is not None and p.target < len(rule.targets) else None
    return _target_error(p, tid) if p.target is not None else _rule_error(p, rule)


def _rule_error(p: Problem, rule: Rule) -> RequestError:
    if p.check == "type":  # the request shapes check types first; this is validate_rule's backstop
        return RequestError("SerializationException", p.message)
    if p.check == "name":
        return RequestError("ValidationException", f"Parameter Name is not valid: {rule.name!r}.")
    if p.check == "bus":
        return RequestError("ResourceNotFoundException", f"Event bus {rule.bus} does not exist.")
    if p.check == "event_pattern":
        return RequestError("InvalidEventPatternException", p.message)
    if p.check == "pattern_or_schedule":
        return RequestError("ValidationException", "Parameter(s) EventPattern or ScheduleExpression must be specified.")
    if p.check == "too_many_targets":
        return RequestError("LimitExceededException", f"A rule can have at most {MAX_TARGETS_PER_RULE} targets.")
    return RequestError("ValidationException", p.message)  # schedule: its message is AWS's already


def _target_error(p: Problem, tid: Any) -> RequestError:
    if p.check == "type":
        return RequestError("SerializationException", f"Target {tid}: {p.message}.")
    if p.check == "target_id":
        return RequestError("ValidationException", f"Parameter Id is not valid: {tid!r}.")
    if p.check == "function":
        return RequestError("ValidationException",
                            f"Target {tid}: Arn must name a function as arn:aws:lambda:<region>:<account>:function:module.handler.")
    if p.check == "retry_policy":
        return RequestError("ValidationException", f"Target {tid}: RetryPolicy is out of range.")
    if p.check == "destination":
        return RequestError("ResourceNotFoundException", f"Target {tid}: {p.message}.")
    if p.check == "http_destination":  # the ARN's API destination
        return RequestError("ResourceNotFoundException", f"Target {tid}: {p.message}.")
    if p.check == "bus_target":  # the ARN's event bus
        return RequestError("ResourceNotFoundException", f"Target {tid}: {p.message}.")
    if p.check == "input":
        return _input_error(p, tid)
    return RequestError("ValidationException", f"Target {tid}: {p.message}.")


_INPUT_MEMBERS = {"input": "Input", "input_path": "InputPath", "input_transformer": "InputTransformer",
                  "input_paths_map": "InputPathsMap", "input_template": "InputTemplate"}
# bus.transform.checks' wording of the two problems AWS has words of its own for.
_NOT_JSON = "must be JSON text"
_TWO_OPTIONS = "at most one of "
_UNDEFINED_PLACEHOLDER = re.compile(r"^placeholder <([^>]*)> is neither")


def _input_error(p: Problem, tid: Any) -> RequestError:
    """An input option's problem, in AWS's words where AWS has them (LocalStack's AWS-validated
    snapshots and CloudFormation's relayed errors), else naming the member."""
    members = [_INPUT_MEMBERS[part] for part in p.path if part in _INPUT_MEMBERS]
    if p.message.startswith(_TWO_OPTIONS):
        return RequestError("ValidationException",
                            f"Only one of Input, InputPath, or InputTransformer must be provided for target {tid}.")
    if members == ["Input"] and p.message.startswith(_NOT_JSON):
        return RequestError("ValidationException", f"Input for target {tid} is not a valid JSON text.")
    if m := _UNDEFINED_PLACEHOLDER.match(p.message):
        return RequestError("ValidationException", f"InputTemplate for target {tid} contains invalid placeholder {m.group(1)}.")
    where = f"{members[-1]}: " if members else ""
    return RequestError("ValidationException", f"Target {tid}: {where}{p.message}.")


def _raise_first(problems: list[Problem], rule: Rule) -> None:
    """AWS answers with one error: the first, in validate_rule's fixed order."""
    if problems:
        raise _aws_error(problems[0], rule)


async def _set_state(request: web.Request, body: dict, state: str) -> dict:
    rule = _api_rule(request, body, "Name")
    await _store(request, msgspec.structs.replace(rule, state=state))
    return {}


@takes(RuleRequest)
async def enable_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    return await _set_state(request, body, "ENABLED")


@takes(RuleRequest)
async def disable_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    return await _set_state(request, body, "DISABLED")


@takes(RuleRequest)
async def delete_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    """AWS: deleting a rule that does not exist succeeds (so a repeated delete does), unless its bus does not exist."""
    config = _broker(request).router.config
    bus = bus_name(body.get("EventBusName"))
    if bus not in config.buses:
        raise RequestError("ResourceNotFoundException", f"Event bus {bus} does not exist.")
    if (bus, body.get("Name")) not in config.rules:
        return {}
    rule = _api_rule(request, body, "Name")
    if rule.targets and not body.get("Force"):
        raise RequestError("ValidationException", "Rule can't be deleted since it has targets.")
    await _store(request, None, rule.bus, rule.name)
    await tags.forget(_broker(request).redis, identity.rule_arn(origin, rule.bus, rule.name))  # TagResource's
    return {}


@takes(PutTargetsRequest)
async def put_targets(request: web.Request, body: dict, origin: Origin) -> dict:
    entries = body.get("Targets") or []
    awstargets.check_arns(entries)  # a malformed ARN fails the whole request, before anything else
    rule = _api_rule(request, body, "Rule")
    config = _broker(request).router.config
    buses, destinations = config.buses, config.api_destinations
    targets = {t.id: t for t in rule.targets}
    failed = []
    for raw in entries:
        try:  # AWS fails the entry, not the request
            target = awstargets.target_of(raw)
            problems = validate_target(target, buses, destinations)
            if problems:
                raise _target_error(problems[0], target.id)
        except RequestError as err:
            failed.append({"TargetId": raw.get("Id"), "ErrorCode": err.type, "ErrorMessage": err.message})
            continue
        targets[target.id] = target
    changed = msgspec.structs.replace(rule, targets=list(targets.values()))
    # What is left is the rule's own (too many targets); its destinations were checked above, per
    # entry: a target kept from before whose destination was deleted since must not fail this call.
    _raise_first(validate_rule(changed, buses), changed)
    await _store(request, changed)
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


@takes(RemoveTargetsRequest)
async def remove_targets(request: web.Request, body: dict, origin: Origin) -> dict:
    rule = _api_rule(request, body, "Rule")
    ids = set(body.get("Ids") or [])
    await _store(request, msgspec.structs.replace(rule, targets=[t for t in rule.targets if t.id not in ids]))
    return {"FailedEntryCount": 0, "FailedEntries": []}


OPERATIONS = {
    "ListRules": list_rules, "DescribeRule": describe_rule, "ListTargetsByRule": list_targets_by_rule,
    "ListRuleNamesByTarget": list_rule_names_by_target,
    "PutRule": put_rule, "EnableRule": enable_rule, "DisableRule": disable_rule, "DeleteRule": delete_rule,
    "PutTargets": put_targets, "RemoveTargets": remove_targets,
}
