"""The AWS rule and bus operations: List/Describe for every rule, and PutRule, PutTargets,
RemoveTargets, DeleteRule, EnableRule, DisableRule for rules created through the API.

Rules declared in YAML are read-only here (ManagedRuleException): change them in their file.
"""
from __future__ import annotations

import json
import os
from typing import Any

import msgspec
from aiohttp import web

from bus import identity
from bus.broker.awsapi import takes
from bus.broker.envelope import MAX_JSON_DEPTH, Origin, RequestError, TooDeep, bus_name, decode_json
from bus.config.model import Bus, FunctionTarget, RetryPolicy, Rule, Target
from bus.config.validate import MAX_TARGETS_PER_RULE, Problem, validate_rule, validate_target
from bus.patterns import PatternError, compile_pattern
from bus.store import apirules

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


class ListEventBusesRequest(_Paged):
    name_prefix: str | None = None


class DescribeEventBusRequest(_Request):
    name: str | None = None


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


class PutRuleRequest(_Request):
    name: str | None = None
    event_bus_name: str | None = None
    description: str | None = None
    state: str | None = None
    event_pattern: str | dict[str, Any] | None = None
    schedule_expression: str | None = None
    role_arn: str | None = None


class RetryPolicyMember(_Request):
    maximum_retry_attempts: int | None = None
    maximum_event_age_in_seconds: int | None = None


class DeadLetterConfigMember(_Request):
    arn: str | None = None


class TargetMember(_Request):
    id: str | None = None
    arn: str | None = None
    role_arn: str | None = None
    input: str | None = None
    input_path: str | None = None
    retry_policy: RetryPolicyMember | None = None
    dead_letter_config: DeadLetterConfigMember | None = None


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


# --- buses ---------------------------------------------------------------------------------

@takes(ListEventBusesRequest)
async def list_event_buses(request: web.Request, body: dict, origin: Origin) -> dict:
    buses: dict[str, Bus] = _broker(request).router.config.buses
    prefix = body.get("NamePrefix") or ""
    items = [{"Name": b.name, "Arn": identity.event_bus_arn(origin, b.name), "Description": b.description}
             for b in sorted(buses.values(), key=lambda b: b.name) if b.name.startswith(prefix)]
    return _page(items, body, "EventBuses")


@takes(DescribeEventBusRequest)
async def describe_event_bus(request: web.Request, body: dict, origin: Origin) -> dict:
    name = bus_name(body.get("Name"))
    bus = _broker(request).router.config.buses.get(name)
    if bus is None:
        raise RequestError("ResourceNotFoundException", f"Event bus {name} does not exist.")
    return {"Name": bus.name, "Arn": identity.event_bus_arn(origin, bus.name), "Description": bus.description}


# --- reading rules -------------------------------------------------------------------------

def _describe(origin: Origin, rule: Rule, managed_by_yaml: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": rule.name, "Arn": identity.rule_arn(origin, rule.bus, rule.name), "State": rule.state,
                           "Description": rule.description, "EventBusName": rule.bus}
    if rule.event_pattern is not None:
        out["EventPattern"] = json.dumps(rule.event_pattern)
    if rule.schedule is not None:
        out["ScheduleExpression"] = rule.schedule
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
    items = []
    for t in rule.targets:
        item: dict[str, Any] = {"Id": t.id, "Arn": identity.function_arn(origin, t.function), "RetryPolicy": {
            "MaximumRetryAttempts": t.retry_policy.maximum_retry_attempts,
            "MaximumEventAgeInSeconds": t.retry_policy.maximum_event_age_seconds}}
        dlq = rule.bus + "/" + rule.name + "/" + t.id if t.dead_letter is True else t.dead_letter
        if dlq:
            item["DeadLetterConfig"] = {"Arn": identity.queue_arn(origin, dlq)}
        items.append(item)
    return _page(items, body, "Targets")


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
    rule = Rule(name=name, bus=bus, description=body.get("Description") or "", state=state,
                event_pattern=_pattern(body.get("EventPattern")), schedule=body.get("ScheduleExpression"),
                targets=old.targets if old else [])
    _raise_first(validate_rule(rule, buses), rule)
    if old is None:
        await _check_rule_quota(broker, bus)
    await _store(request, rule)
    return {"RuleArn": identity.rule_arn(origin, rule.bus, rule.name)}


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
    return RequestError("ValidationException", f"Target {tid}: {p.message}.")


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
    rule = _api_rule(request, body, "Name")
    if rule.targets and not body.get("Force"):
        raise RequestError("ValidationException", "Rule can't be deleted since it has targets.")
    await _store(request, None, rule.bus, rule.name)
    return {}


@takes(PutTargetsRequest)
async def put_targets(request: web.Request, body: dict, origin: Origin) -> dict:
    rule = _api_rule(request, body, "Rule")
    buses = _broker(request).router.config.buses
    targets = {t.id: t for t in rule.targets}
    failed = []
    for raw in body.get("Targets") or []:
        try:  # AWS fails the entry, not the request
            target = _target(raw)
            problems = validate_target(target, buses)
            if problems:
                raise _target_error(problems[0], target.id)
        except RequestError as err:
            failed.append({"TargetId": raw.get("Id"), "ErrorCode": err.type, "ErrorMessage": err.message})
            continue
        targets[target.id] = target
    changed = msgspec.structs.replace(rule, targets=list(targets.values()))
    _raise_first(validate_rule(changed, buses), changed)  # what is left is the rule's own: too many targets
    await _store(request, changed)
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


def _target(raw: dict) -> Target:
    """A PutTargets entry as a target; validate_target says whether it is a good one.

    PutTargets has no way to name Lambda destinations (AWS sets them on the function, with
    PutFunctionEventInvokeConfig), so targets made here have neither on_success nor on_failure."""
    tid, arn = raw.get("Id"), raw.get("Arn")
    arn = arn if isinstance(arn, str) else ""  # not text: no function, which validate_target reports
    retry = raw.get("RetryPolicy") or {}
    policy = RetryPolicy(maximum_retry_attempts=_or_default(retry.get("MaximumRetryAttempts"), 185),
                         maximum_event_age_seconds=_or_default(retry.get("MaximumEventAgeInSeconds"), 86400))
    dlq_arn = (raw.get("DeadLetterConfig") or {}).get("Arn")
    return FunctionTarget(id=tid, function=identity.function_name(arn) or arn, retry_policy=policy,
                          dead_letter=identity.queue_name(dlq_arn) if dlq_arn else False)


def _or_default(value: int | None, default: int) -> int:
    """A RetryPolicy member; null is absent (its type was checked by PutTargetsRequest)."""
    return default if value is None else value


@takes(RemoveTargetsRequest)
async def remove_targets(request: web.Request, body: dict, origin: Origin) -> dict:
    rule = _api_rule(request, body, "Rule")
    ids = set(body.get("Ids") or [])
    await _store(request, msgspec.structs.replace(rule, targets=[t for t in rule.targets if t.id not in ids]))
    return {"FailedEntryCount": 0, "FailedEntries": []}


OPERATIONS = {
    "ListEventBuses": list_event_buses, "DescribeEventBus": describe_event_bus,
    "ListRules": list_rules, "DescribeRule": describe_rule, "ListTargetsByRule": list_targets_by_rule,
    "PutRule": put_rule, "EnableRule": enable_rule, "DisableRule": disable_rule, "DeleteRule": delete_rule,
    "PutTargets": put_targets, "RemoveTargets": remove_targets,
}
