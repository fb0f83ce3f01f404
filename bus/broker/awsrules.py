"""The AWS rule and bus operations: List/Describe for every rule, and PutRule, PutTargets,
RemoveTargets, DeleteRule, EnableRule, DisableRule for rules created through the API.

Rules declared in YAML are read-only here (ManagedRuleException): change them in their file.
"""
from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from aiohttp import web

from bus.store import apirules
from bus.broker.envelope import Origin, RequestError, bus_name
from bus.config.model import FUNCTION_REF, RULE_NAME, TARGET_ID, Bus, FunctionTarget, RetryPolicy, Rule, Target
from bus.patterns import PatternError, compile_pattern
from bus.config.rulesfile import MAX_TARGETS_PER_RULE

_LAMBDA_ARN = re.compile(r"^arn:aws[\w-]*:lambda:[^:]*:[^:]*:function:([^:]+)(?::[^:]+)?$")


def _bus_arn(origin: Origin, bus: str) -> str:
    return f"arn:aws:events:{origin.region}:{origin.account}:event-bus/{bus}"


def _rule_arn(origin: Origin, rule: Rule) -> str:
    path = rule.name if rule.bus == "default" else f"{rule.bus}/{rule.name}"
    return f"arn:aws:events:{origin.region}:{origin.account}:rule/{path}"


def _function_arn(origin: Origin, function: str) -> str:
    return f"arn:aws:lambda:{origin.region}:{origin.account}:function:{function}"


def _broker(request: web.Request):
    return request.app["broker"]


def _page(items: list, body: dict[str, Any], key: str) -> dict[str, Any]:
    start = int(body.get("NextToken") or 0)
    limit = int(body.get("Limit") or 100)
    out: dict[str, Any] = {key: items[start:start + limit]}
    if start + limit < len(items):
        out["NextToken"] = str(start + limit)
    return out


# --- buses ---------------------------------------------------------------------------------

async def list_event_buses(request: web.Request, body: dict, origin: Origin) -> dict:
    buses: dict[str, Bus] = _broker(request).router.config.buses
    prefix = body.get("NamePrefix") or ""
    items = [{"Name": b.name, "Arn": _bus_arn(origin, b.name), "Description": b.description}
             for b in sorted(buses.values(), key=lambda b: b.name) if b.name.startswith(prefix)]
    return _page(items, body, "EventBuses")


async def describe_event_bus(request: web.Request, body: dict, origin: Origin) -> dict:
    name = bus_name(body.get("Name"))
    bus = _broker(request).router.config.buses.get(name)
    if bus is None:
        raise RequestError("ResourceNotFoundException", f"Event bus {name} does not exist.")
    return {"Name": bus.name, "Arn": _bus_arn(origin, bus.name), "Description": bus.description}


# --- reading rules -------------------------------------------------------------------------

def _describe(origin: Origin, rule: Rule, managed_by_yaml: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": rule.name, "Arn": _rule_arn(origin, rule), "State": rule.state,
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


async def list_rules(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    bus = bus_name(body.get("EventBusName"))
    prefix = body.get("NamePrefix") or ""
    rules = sorted((r for (b, n), r in broker.router.config.rules.items() if b == bus and n.startswith(prefix)),
                   key=lambda r: r.name)
    items = [_describe(origin, r, (r.bus, r.name) in broker.yaml_config.rules) for r in rules]
    return _page(items, body, "Rules")


async def describe_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    rule, managed = _find(request, body, "Name")
    return _describe(origin, rule, managed)


async def list_targets_by_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    rule, _ = _find(request, body, "Rule")
    items = []
    for t in rule.targets:
        item: dict[str, Any] = {"Id": t.id, "Arn": _function_arn(origin, t.function), "RetryPolicy": {
            "MaximumRetryAttempts": t.retry_policy.maximum_retry_attempts,
            "MaximumEventAgeInSeconds": t.retry_policy.maximum_event_age_seconds}}
        dlq = rule.bus + "/" + rule.name + "/" + t.id if t.dead_letter is True else t.dead_letter
        if dlq:
            item["DeadLetterConfig"] = {"Arn": f"arn:aws:sqs:{origin.region}:{origin.account}:{dlq}"}
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
    broker = _broker(request)
    if rule is None:
        await apirules.delete(broker.redis, bus, name)
    else:
        await apirules.save(broker.redis, rule)
    await broker.reload_api_rules()  # this broker answers with the change already in force


async def put_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = _broker(request)
    name, bus = body.get("Name"), bus_name(body.get("EventBusName"))
    if not isinstance(name, str) or not RULE_NAME.match(name):
        raise RequestError("ValidationException", f"Parameter Name is not valid: {name!r}.")
    if bus not in broker.router.config.buses:
        raise RequestError("ResourceNotFoundException", f"Event bus {bus} does not exist.")
    if (bus, name) in broker.yaml_config.rules:
        raise RequestError("ManagedRuleException", f"Rule {name} is declared in YAML; change it in the rules files.")
    pattern, schedule = _pattern(body.get("EventPattern")), body.get("ScheduleExpression")
    if (pattern is None) == (schedule is None):
        raise RequestError("ValidationException", "Parameter(s) EventPattern or ScheduleExpression must be specified.")
    if schedule is not None:
        _check_schedule(schedule)
    state = body.get("State") or "ENABLED"
    if state not in ("ENABLED", "DISABLED"):
        raise RequestError("ValidationException", f"Parameter State is not valid: {state}.")
    old = broker.router.config.rules.get((bus, name))
    rule = Rule(name=name, bus=bus, description=body.get("Description") or "", state=state,
                event_pattern=pattern, schedule=schedule, targets=old.targets if old else [])
    await _store(request, rule)
    return {"RuleArn": _rule_arn(origin, rule)}


def _pattern(text: Any) -> dict | None:
    if text is None:
        return None
    try:
        compile_pattern(text)
    except PatternError as exc:
        raise RequestError("InvalidEventPatternException", str(exc)) from None
    return msgspec.json.decode(text) if isinstance(text, str) else text


def _check_schedule(expr: Any) -> None:
    from bus.scheduler.expression import ScheduleError, parse_schedule
    try:
        parse_schedule(expr)
    except (ScheduleError, ValueError, TypeError) as exc:
        raise RequestError("ValidationException", str(exc)) from None


async def _set_state(request: web.Request, body: dict, state: str) -> dict:
    rule = _api_rule(request, body, "Name")
    await _store(request, msgspec.structs.replace(rule, state=state))
    return {}


async def enable_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    return await _set_state(request, body, "ENABLED")


async def disable_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    return await _set_state(request, body, "DISABLED")


async def delete_rule(request: web.Request, body: dict, origin: Origin) -> dict:
    rule = _api_rule(request, body, "Name")
    if rule.targets and not body.get("Force"):
        raise RequestError("ValidationException", "Rule can't be deleted since it has targets.")
    await _store(request, None, rule.bus, rule.name)
    return {}


async def put_targets(request: web.Request, body: dict, origin: Origin) -> dict:
    rule = _api_rule(request, body, "Rule")
    targets = {t.id: t for t in rule.targets}
    failed = []
    for raw in body.get("Targets") or []:
        try:
            target = _target(raw)
        except RequestError as err:
            failed.append({"TargetId": raw.get("Id"), "ErrorCode": err.type, "ErrorMessage": err.message})
            continue
        targets[target.id] = target
    if len(targets) > MAX_TARGETS_PER_RULE:
        raise RequestError("LimitExceededException", f"A rule can have at most {MAX_TARGETS_PER_RULE} targets.")
    await _store(request, msgspec.structs.replace(rule, targets=list(targets.values())))
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


def _target(raw: dict) -> Target:
    tid, arn = raw.get("Id"), raw.get("Arn") or ""
    if not isinstance(tid, str) or not TARGET_ID.match(tid):
        raise RequestError("ValidationException", f"Parameter Id is not valid: {tid!r}.")
    m = _LAMBDA_ARN.match(arn)
    function = m.group(1) if m else arn
    if not FUNCTION_REF.match(function):
        raise RequestError("ValidationException",
                           f"Target {tid}: Arn must name a function as arn:aws:lambda:<region>:<account>:function:module.handler.")
    retry = raw.get("RetryPolicy") or {}
    policy = RetryPolicy(maximum_retry_attempts=retry.get("MaximumRetryAttempts", 185),
                         maximum_event_age_seconds=retry.get("MaximumEventAgeInSeconds", 86400))
    if not (0 <= policy.maximum_retry_attempts <= 185 and 60 <= policy.maximum_event_age_seconds <= 86400):
        raise RequestError("ValidationException", f"Target {tid}: RetryPolicy is out of range.")
    dlq_arn = (raw.get("DeadLetterConfig") or {}).get("Arn")
    return FunctionTarget(id=tid, function=function, retry_policy=policy,
                  dead_letter=dlq_arn.rsplit(":", 1)[-1] if dlq_arn else False)


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
