"""PutTargets entries in, ListTargetsByRule members out: which target kind a target's ARN names
(a Lambda function, an event bus, an API destination) and each kind's AWS members (Input,
InputPath, InputTransformer, HttpParameters, RetryPolicy, DeadLetterConfig, RoleArn).

Pure: no I/O. Errors are AWS's: a malformed ARN fails the whole request (`check_arns`), an ARN
of a service busway does not run fails its entry (`target_of`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from bus import identity
from bus.broker.envelope import Origin, RequestError
from bus.config.model import (
    FUNCTION_REF,
    QUEUE_NAME,
    ApiDestination,
    BusTarget,
    FunctionTarget,
    HttpParameters,
    HttpTarget,
    InputTransformer,
    QueueTarget,
    RetryPolicy,
    Rule,
    Target,
    stable_uuid,
)
from bus.config.validate import http_parameters_problem

SUPPORTED = "Lambda functions, event buses, API destinations and SQS queues"

# A target's identity for ListRuleNamesByTarget: its kind and the name it delivers to.
TargetKey = tuple[str, str]


# --- request members (bus.broker.awsapi.takes checks their types) ----------------------------

class _Member(msgspec.Struct, rename="pascal"):
    """Members of a request's structure, all optional: a missing one is for the operation to answer."""


class RetryPolicyMember(_Member):
    maximum_retry_attempts: int | None = None
    maximum_event_age_in_seconds: int | None = None


class DeadLetterConfigMember(_Member):
    arn: str | None = None


class InputTransformerMember(_Member):
    input_paths_map: dict[str, str] | None = None
    input_template: str | None = None


class HttpParametersMember(_Member):
    path_parameter_values: list[str] | None = None
    header_parameters: dict[str, str] | None = None
    query_string_parameters: dict[str, str] | None = None


class TargetMember(_Member):
    id: str | None = None
    arn: str | None = None
    role_arn: str | None = None
    input: str | None = None
    input_path: str | None = None
    input_transformer: InputTransformerMember | None = None
    http_parameters: HttpParametersMember | None = None
    retry_policy: RetryPolicyMember | None = None
    dead_letter_config: DeadLetterConfigMember | None = None


# --- ARNs ------------------------------------------------------------------------------------

def malformed_arn(arn: Any) -> RequestError:
    """AWS's whole-request answer to a target ARN that is not an ARN (the ARN itself is the X)."""
    return RequestError("ValidationException", f"Parameter {arn} is not valid. Reason: Provided Arn is not in correct format.")


def check_arns(raw_targets: list[dict]) -> None:
    """Every entry's Arn is present and well formed, else the whole request fails (before any
    entry is looked at, as AWS does). busway also takes a bare `module.handler` for a function."""
    for i, raw in enumerate(raw_targets, start=1):
        arn = raw.get("Arn")
        if arn is None or arn == "":
            raise RequestError("ValidationException", f"1 validation error detected: Value null at "
                                                      f"'targets.{i}.member.arn' failed to satisfy constraint: Member must not be null")
        if not _plain_function(arn) and identity.parse_arn(arn) is None:
            raise malformed_arn(arn)
        transformer = raw.get("InputTransformer")
        if isinstance(transformer, dict) and transformer.get("InputTemplate") is None:
            raise RequestError("ValidationException", f"1 validation error detected: Value null at "
                                                      f"'targets.{i}.member.inputTransformer.inputTemplate' failed to "
                                                      f"satisfy constraint: Member must not be null")


def _plain_function(arn: str) -> bool:
    # README: a target's Arn may be just `module.handler` (busway's, not AWS's); anything else that
    # does not parse as an ARN is malformed.
    return FUNCTION_REF.match(arn) is not None


def key_of_arn(arn: str) -> TargetKey | None:
    """The target kind and name `arn` names; None if busway delivers to nothing of that kind."""
    if _plain_function(arn):
        return ("function", arn)
    if (function := identity.function_name(arn)) is not None:
        return ("function", function)
    if (bus := identity.bus_name(arn)) is not None:
        return ("bus", bus)
    if (destination := identity.api_destination_name(arn)) is not None:
        return ("http", destination)
    parts = identity.parse_arn(arn)
    if parts is not None and parts.service == "sqs" and QUEUE_NAME.match(parts.resource):
        return ("queue", parts.resource)
    return None


def key_of(target: Target) -> TargetKey:
    if isinstance(target, HttpTarget):
        return ("http", target.http)
    if isinstance(target, BusTarget):
        return ("bus", target.bus)
    if isinstance(target, QueueTarget):
        return ("queue", target.queue)
    return ("function", target.function)


def _unsupported(tid: Any, arn: str) -> RequestError:
    parts = identity.parse_arn(arn)
    if parts is None or parts.service == "lambda":  # a Lambda ARN that names no function: validate_target says so
        return RequestError("ValidationException", f"Target {tid}: Arn must name a function as "
                                                   f"arn:aws:lambda:<region>:<account>:function:module.handler.")
    what = parts.service if parts.service != "events" else f"events {parts.resource.split('/')[0]}"
    return RequestError("ValidationException", f"Target {tid}: {what} is not a target kind busway delivers to "
                                               f"(it delivers to {SUPPORTED}).")


# --- PutTargets entry -> Target ----------------------------------------------------------------

def target_of(raw: dict) -> Target:
    """One PutTargets entry (its ARN already checked by check_arns) as a target; a RequestError
    fails this entry alone. validate_target then says whether the target is a good one.

    PutTargets has no way to name Lambda destinations (AWS sets them on the function, with
    PutFunctionEventInvokeConfig), so targets made here have neither on_success nor on_failure."""
    tid, arn = raw.get("Id"), raw["Arn"]
    key = key_of_arn(arn)
    if key is None:
        raise _unsupported(tid, arn)
    kind, name = key
    common: dict[str, Any] = dict(id=tid, retry_policy=_retry_policy(raw.get("RetryPolicy") or {}),
                                  dead_letter=_dead_letter(raw.get("DeadLetterConfig") or {}),
                                  role_arn=raw.get("RoleArn"), input=raw.get("Input"), input_path=raw.get("InputPath"),
                                  input_transformer=_transformer(raw.get("InputTransformer")))
    http = raw.get("HttpParameters")
    if kind == "http":
        return HttpTarget(http=name, http_parameters=_http_parameters(http, tid), **common)
    if http is not None:  # busway has no API Gateway targets, the other kind AWS takes them for
        raise RequestError("ValidationException", f"Target {tid}: HttpParameters apply only to API destination targets.")
    if kind == "bus":
        return BusTarget(bus=name, **common)
    if kind == "queue":
        return QueueTarget(queue=name, **common)
    return FunctionTarget(function=name, **common)


def _retry_policy(raw: dict) -> RetryPolicy:
    return RetryPolicy(maximum_retry_attempts=_or_default(raw.get("MaximumRetryAttempts"), 185),
                       maximum_event_age_seconds=_or_default(raw.get("MaximumEventAgeInSeconds"), 86400))


def _or_default(value: int | None, default: int) -> int:
    """A RetryPolicy member; null is absent (its type was checked by TargetMember)."""
    return default if value is None else value


def _dead_letter(raw: dict) -> bool | str:
    arn = raw.get("Arn")
    return identity.queue_name(arn) if arn else False


def _transformer(raw: dict | None) -> InputTransformer | None:
    if raw is None:
        return None
    return InputTransformer(input_template=raw["InputTemplate"], input_paths_map=raw.get("InputPathsMap") or {})


def _http_parameters(raw: dict | None, tid: Any = None) -> HttpParameters | None:
    if raw is None:
        return None
    params = HttpParameters(header_parameters=raw.get("HeaderParameters") or {},
                            query_string_parameters=raw.get("QueryStringParameters") or {},
                            path_parameter_values=raw.get("PathParameterValues") or [])
    if bad := http_parameters_problem(params):
        member, key = bad
        raise RequestError("ValidationException", f"Target {tid}: HttpParameters {_AWS_MEMBER[member]}[{key!r}] is not valid.")
    return params


_AWS_MEMBER = {"header_parameters": "HeaderParameters", "query_string_parameters": "QueryStringParameters",
               "path_parameter_values": "PathParameterValues"}


# --- Target -> ListTargetsByRule member --------------------------------------------------------

def target_arn(target: Target, origin: Origin, destinations: Mapping[str, ApiDestination]) -> str:
    """The ARN the API shows for a target, in the caller's region and busway's account."""
    if isinstance(target, HttpTarget):
        return identity.api_destination_arn(origin, target.http, destination_uuid(target.http, destinations))
    if isinstance(target, BusTarget):
        return identity.event_bus_arn(origin, target.bus)
    if isinstance(target, QueueTarget):
        return identity.queue_arn(origin, target.queue)
    return identity.function_arn(origin, target.function)


def destination_uuid(name: str, destinations: Mapping[str, ApiDestination]) -> str:
    """The destination's id; for one not (or no longer) declared, the id YAML would give it
    (bus.config.rulesfile derives it from the name), so the ARN stays the same across calls."""
    known = destinations.get(name)
    if known is not None and known.uuid:
        return known.uuid
    return stable_uuid(ApiDestination, name)


def member_of(target: Target, rule: Rule, origin: Origin, destinations: Mapping[str, ApiDestination]) -> dict[str, Any]:
    """A target as ListTargetsByRule shows it: only the members it has, as PutTargets took them."""
    item: dict[str, Any] = {"Id": target.id, "Arn": target_arn(target, origin, destinations)}
    if target.role_arn is not None:
        item["RoleArn"] = target.role_arn
    if target.input is not None:
        item["Input"] = target.input
    if target.input_path is not None:
        item["InputPath"] = target.input_path
    if (t := target.input_transformer) is not None:
        item["InputTransformer"] = {"InputTemplate": t.input_template, **({"InputPathsMap": t.input_paths_map}
                                                                         if t.input_paths_map else {})}
    if isinstance(target, HttpTarget) and target.http_parameters is not None:
        item["HttpParameters"] = _http_member(target.http_parameters)
    item["RetryPolicy"] = {"MaximumRetryAttempts": target.retry_policy.maximum_retry_attempts,
                           "MaximumEventAgeInSeconds": target.retry_policy.maximum_event_age_seconds}
    dlq = f"{rule.bus}/{rule.name}/{target.id}" if target.dead_letter is True else target.dead_letter
    if dlq:
        item["DeadLetterConfig"] = {"Arn": identity.queue_arn(origin, dlq)}
    return item


def _http_member(p: HttpParameters) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.path_parameter_values:
        out["PathParameterValues"] = list(p.path_parameter_values)
    if p.header_parameters:
        out["HeaderParameters"] = dict(p.header_parameters)
    if p.query_string_parameters:
        out["QueryStringParameters"] = dict(p.query_string_parameters)
    return out
