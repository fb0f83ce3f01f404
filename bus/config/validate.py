"""The checks a rule must pass, however it arrives: from YAML (bus.config.rulesfile) or the AWS API.

Pure: a Rule (already the right shape, msgspec saw to that) and the names of the declared buses
in, a list of Problems out, in a fixed order. Each Problem names its check, where it is (a path
of YAML keys inside the rule, which rulesfile turns into `file:line: key: message`) and what is
wrong in YAML's words; the AWS API maps the check to AWS's exception and message instead.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Literal

import msgspec

from bus.config.model import (
    ARCHIVE_NAME,
    FUNCTION_REF,
    HTTP_METHODS,
    RULE_NAME,
    TARGET_ID,
    ApiDestination,
    Archive,
    BusTarget,
    Connection,
    FunctionSettings,
    FunctionTarget,
    QUEUE_BOUNDS,
    QUEUE_NAME,
    EventSourceMapping,
    QueueDecl,
    QueueTarget,
    HttpParameters,
    HttpTarget,
    Rule,
    Target,
)
from bus.patterns import PatternError, compile_pattern

MAX_TARGETS_PER_RULE = 5  # AWS's hard limit

Check = Literal[
    "type", "name", "bus", "event_pattern", "pattern_or_schedule", "schedule", "too_many_targets",
    "target_id_twice", "target_id", "function", "function_source", "retry_policy", "destination",
    "input", "http_destination", "bus_target", "http_parameters",
    # connections and API destinations
    "connection_name", "authorization", "api_destination_name", "endpoint", "method", "rate_limit",
    "connection",
    # archives
    "archive_name", "retention_days", "description",
    # function settings
    "environment", "async_invoke",
    # queues and event source mappings
    "queue_target", "queue", "mapping",
]
PathPart = str | int


class Problem(msgspec.Struct, frozen=True):
    check: Check
    path: tuple[PathPart, ...]  # inside the rule, as YAML spells it: ("targets", 0, "on_success")
    message: str
    key: str | None = None  # the key to name when it is not the path's last (the rule's name)
    target: int | None = None  # which target, for the API's per-target answers


def validate_rule(rule: Rule, buses: Collection[str], destinations: Collection[str] | None = None,
                  queues: Collection[str] | None = None) -> list[Problem]:
    """Every problem with `rule` on a bus set of `buses`; [] if it may be loaded.

    `destinations`: the API destinations an `http` target may name (None: not checked, as for
    stored API rules, whose destination may be deleted later: the worker then fails the delivery)."""
    wrong_type = _check_types(rule)
    if wrong_type:  # the other checks assume the types are right
        return wrong_type
    out: list[Problem] = []
    if not isinstance(rule.name, str) or not RULE_NAME.match(rule.name):
        out.append(Problem("name", ("name",), f"invalid rule name {rule.name!r} (1-64 of A-Z a-z 0-9 . - _)"))
    if rule.bus not in buses:
        out.append(Problem("bus", ("bus",), _undeclared(rule.bus, buses)))
    if rule.event_pattern is not None:
        try:
            compile_pattern(rule.event_pattern)
        except PatternError as exc:
            out.append(Problem("event_pattern", ("event_pattern",), str(exc)))
    # AWS accepts a rule with both: its pattern matches events and its schedule fires as well.
    if rule.event_pattern is None and rule.schedule is None:
        out.append(Problem("pattern_or_schedule", (), "a rule needs an event_pattern or a schedule (or both)",
                           key=str(rule.name)))
    if rule.schedule is not None:
        out.extend(_check_schedule(rule))
    if len(rule.targets) > MAX_TARGETS_PER_RULE:
        out.append(Problem("too_many_targets", ("targets",), f"at most {MAX_TARGETS_PER_RULE} targets per rule"))
    seen: set[str] = set()
    for i, target in enumerate(rule.targets):
        if target.id in seen:
            out.append(Problem("target_id_twice", ("targets", i, "id"),
                               f"target id {target.id!r} is used twice in this rule", target=i))
        seen.add(target.id)
        out.extend(msgspec.structs.replace(p, path=("targets", i) + p.path, target=i)
                   for p in validate_target(target, buses, destinations, queues))
    return out


MAX_ARCHIVE_DESCRIPTION = 512  # AWS's ArchiveDescription


def validate_archive(a: Archive, buses: Collection[str]) -> list[Problem]:
    """An archive's problems (YAML and CreateArchive/UpdateArchive); paths start at the archive."""
    out: list[Problem] = []
    if not isinstance(a.name, str) or not ARCHIVE_NAME.match(a.name):
        out.append(Problem("archive_name", ("name",), f"invalid archive name {a.name!r} (1-48 of A-Z a-z 0-9 . - _)"))
    if a.bus not in buses:
        out.append(Problem("bus", ("bus",), _undeclared(a.bus, buses)))
    if a.event_pattern is not None:
        try:
            compile_pattern(a.event_pattern)
        except PatternError as exc:
            out.append(Problem("event_pattern", ("event_pattern",), str(exc)))
    if a.retention_days < 0:
        out.append(Problem("retention_days", ("retention_days",), "retention_days must be 0 (forever) or more"))
    if len(a.description) > MAX_ARCHIVE_DESCRIPTION:
        out.append(Problem("description", ("description",), f"at most {MAX_ARCHIVE_DESCRIPTION} characters"))
    return out


def validate_target(target: Target, buses: Collection[str], destinations: Collection[str] | None = None,
                    queues: Collection[str] | None = None) -> list[Problem]:
    """The problems of one target on its own; paths start at the target. `queues`: the queues a
    `queue` target may name (None: not checked; a queue made through the SQS API counts too)."""
    out: list[Problem] = []
    if isinstance(target, QueueTarget) and queues is not None and target.queue not in queues:
        declared = ", ".join(sorted(queues)) or "none"
        out.append(Problem("queue_target", ("queue",),
                           f"queue {target.queue!r} is not declared in queues: (declared: {declared})"))
    if not isinstance(target.id, str) or not TARGET_ID.match(target.id):
        out.append(Problem("target_id", ("id",), f"invalid target id {target.id!r}"))
    if isinstance(target, FunctionTarget) and not FUNCTION_REF.match(target.function):
        out.append(Problem("function", ("function",), f"{target.function!r} is not module.handler"))
    elif isinstance(target, FunctionTarget):
        from bus.config.function_refs import (
            refusal,  # never stdlib, an installed module, busway or a dunder
        )
        if why := refusal(target.function):
            out.append(Problem("function_source", ("function",), why))
    if isinstance(target, HttpTarget) and destinations is not None and target.http not in destinations:
        out.append(Problem("http_destination", ("http",),
                           f"API destination {target.http!r} is not declared (declared: {', '.join(sorted(destinations)) or 'none'})"))
    if isinstance(target, BusTarget) and target.bus not in buses:
        out.append(Problem("bus_target", ("bus",), _undeclared(target.bus, buses)))
    if isinstance(target, HttpTarget) and target.http_parameters is not None:
        if bad := http_parameters_problem(target.http_parameters):
            out.append(Problem("http_parameters", ("http_parameters",) + bad,
                               f"{bad[0]} {bad[1]!r} is not valid (header names are HTTP tokens; values "
                               f"are printable ASCII without CR or LF, at most 512 characters)"))
    out.extend(_check_input(target))
    out.extend(_check_retry(target))
    # A record sent to a bus that does not exist can never be routed: a broker would retry it forever.
    for key in ("on_success", "on_failure"):
        bus = getattr(target, key)
        if bus is not None and not isinstance(target, FunctionTarget):
            # Lambda's invocation records describe a function's run; an HTTP or bus target has no
            # function to describe (its failures go to its dead_letter).
            out.append(Problem("destination", (key,), f"{key} is for function targets (Lambda destinations); "
                                                      f"use dead_letter for this target's failures"))
        elif bus is not None and bus not in buses:
            out.append(Problem("destination", (key,), _undeclared(bus, buses)))
    return out


def _check_input(target: Target) -> list[Problem]:
    from bus.transform import (
        input_problems,  # compiles jmespath and paths: loaded only when asked
    )
    return [Problem("input", path, message) for path, message in input_problems(target)]


def validate_connection(c: Connection) -> list[Problem]:
    """A connection's problems; paths start at the connection."""
    out: list[Problem] = []
    if not isinstance(c.name, str) or not CONNECTION_NAME.match(c.name):
        out.append(Problem("connection_name", ("name",), f"invalid connection name {c.name!r} (1-64 of A-Z a-z 0-9 . - _)"))
    a = c.authorization
    kinds = [k for k in ("api_key", "basic", "oauth_client_credentials") if getattr(a, k) is not None]
    if len(kinds) != 1:
        out.append(Problem("authorization", ("authorization",),
                           "exactly one of api_key, basic or oauth_client_credentials is needed"
                           + (f" (found {', '.join(kinds)})" if kinds else "")))
        return out
    kind = kinds[0]
    auth = getattr(a, kind)
    secret = {"api_key": "value", "basic": "password", "oauth_client_credentials": "client_secret"}[kind]
    given = [f for f in (f"{secret}_from_env", f"{secret}_sealed") if getattr(auth, f)]
    if len(given) != 1:
        out.append(Problem("authorization", ("authorization", kind),
                           f"exactly one of {secret}_from_env or {secret}_sealed is needed"))
    if kind == "api_key" and not HEADER_NAME.match(auth.header or ""):
        out.append(Problem("authorization", ("authorization", kind, "header"), f"invalid header name {auth.header!r}"))
    if kind == "oauth_client_credentials" and not _is_http_url(auth.token_url):
        out.append(Problem("authorization", ("authorization", kind, "token_url"),
                           f"token_url must be an http:// or https:// URL, not {auth.token_url!r}"))
    return out


def validate_api_destination(d: ApiDestination, connections: Collection[str]) -> list[Problem]:
    """An API destination's problems; paths start at the destination."""
    out: list[Problem] = []
    if not isinstance(d.name, str) or not CONNECTION_NAME.match(d.name):
        out.append(Problem("api_destination_name", ("name",), f"invalid API destination name {d.name!r} (1-64 of A-Z a-z 0-9 . - _)"))
    if d.connection not in connections:
        out.append(Problem("connection", ("connection",),
                           f"connection {d.connection!r} is not declared (declared: {', '.join(sorted(connections)) or 'none'})"))
    # Unlike AWS, http:// is allowed: self-hosted services on an internal network.
    if not _is_http_url(d.endpoint):
        out.append(Problem("endpoint", ("endpoint",), f"endpoint must be an http:// or https:// URL, not {d.endpoint!r}"))
    if d.method not in HTTP_METHODS:
        out.append(Problem("method", ("method",), f"method must be one of {', '.join(HTTP_METHODS)} (not CONNECT or TRACE)"))
    if not 1 <= d.invocation_rate_limit_per_second <= 1_000_000:
        out.append(Problem("rate_limit", ("invocation_rate_limit_per_second",), "must be at least 1"))
    return out


# The botocore model's patterns for HttpParameters: a header name is an HTTP token, values are
# printable ASCII (no CR or LF: a value may never add a header of its own), query text has no
# control characters.
_HEADER_KEY = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]{1,512}$")
_HEADER_VALUE = re.compile(r"^[ \t]*[\x20-\x7E]+([ \t]+[\x20-\x7E]+)*[ \t]*$")
_QUERY_KEY = re.compile(r"^[^\x00-\x1F\x7F]{1,512}$")
_QUERY_VALUE = re.compile(r"^[^\x00-\x09\x0B\x0C\x0E-\x1F\x7F]{1,512}$")


def http_parameters_problem(p: HttpParameters) -> tuple[str, str | int] | None:
    """The first member breaking the model's patterns, as (member, key or index); None if none."""
    for key, value in p.header_parameters.items():
        if not _HEADER_KEY.match(key) or not (len(value) <= 512 and _HEADER_VALUE.match(value)):
            return ("header_parameters", key)
    for key, value in p.query_string_parameters.items():
        if not _QUERY_KEY.match(key) or not _QUERY_VALUE.match(value):
            return ("query_string_parameters", key)
    for i, value in enumerate(p.path_parameter_values):
        if not value.strip():
            return ("path_parameter_values", i)
    return None


CONNECTION_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,512}$")  # an HTTP token (RFC 9110)


def _is_http_url(url: object) -> bool:
    from urllib.parse import urlsplit
    if not isinstance(url, str) or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_types(rule: Rule) -> list[Problem]:
    """A rule built in code (the AWS API builds one from a request) may hold a value of the wrong
    type; msgspec checks types only when it converts. Converting the rule's builtins back is what
    loading a stored rule does, so a rule passing this can be stored and loaded again."""
    builtins = msgspec.to_builtins(rule)
    targets = builtins.pop("targets", [])
    out = _type_problems(builtins, Rule, ())  # targets one by one: each as its own kind
    for i, (target, raw) in enumerate(zip(rule.targets, targets)):
        out.extend(msgspec.structs.replace(p, target=i) for p in _type_problems(raw, type(target), ("targets", i)))
    return out


def _type_problems(raw: object, type_: type, where: tuple[PathPart, ...]) -> list[Problem]:
    try:
        msgspec.convert(raw, type_)
    except (msgspec.ValidationError, TypeError) as exc:
        return [Problem("type", where + _error_path(str(exc)), str(exc))]
    return []


def _error_path(message: str) -> tuple[PathPart, ...]:
    """msgspec's `... - at `$.targets[0].id`` as a path: ("targets", 0, "id")."""
    at = message.rpartition("at `$")[2].rstrip("`")
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", at))


def _check_retry(target: Target) -> list[Problem]:
    p = target.retry_policy
    out = []
    if not 0 <= p.maximum_retry_attempts <= 185:
        out.append(Problem("retry_policy", ("retry_policy", "maximum_retry_attempts"), "must be from 0 to 185"))
    if not 60 <= p.maximum_event_age_seconds <= 86400:
        out.append(Problem("retry_policy", ("retry_policy", "maximum_event_age_seconds"), "must be from 60 to 86400"))
    if p.backoff_base_seconds <= 0 or p.backoff_max_seconds < p.backoff_base_seconds:
        out.append(Problem("retry_policy", ("retry_policy",), "backoff_base_seconds must be > 0 and <= backoff_max_seconds"))
    return out


def _check_schedule(rule: Rule) -> list[Problem]:
    # Imported here: bus.scheduler imports the config model, and loading YAML needs no scheduler.
    from bus.scheduler.expression import ScheduleError
    from bus.scheduler.plan import schedule_of
    try:
        schedule_of(rule)
    except (ScheduleError, ValueError, KeyError, TypeError) as exc:
        return [Problem("schedule", ("schedule",), str(exc))]
    return []


def _undeclared(bus: str, buses: Collection[str]) -> str:
    return f"bus {bus!r} is not declared (declared: {', '.join(sorted(buses))})"


# Lambda's rules for environment variables: names start with a letter and have letters, digits and
# _; the variables the runtime sets are reserved; at most 4 KB in all (names and values, as AWS counts).
ENV_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]+$")
RESERVED_ENV = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})
MAX_ENV_BYTES = 4096


def function_problems(s: FunctionSettings) -> list[Problem]:
    """The problems of one function's settings on their own (the buses are checked apart)."""
    out: list[Problem] = []
    for name in s.environment:
        if not ENV_NAME.match(name):
            out.append(Problem("environment", ("environment", name),
                               "an environment variable's name is a letter, then letters, digits or _"))
        elif name in RESERVED_ENV:
            out.append(Problem("environment", ("environment", name), f"{name} is reserved: the runtime sets it"))
    if sum(len(k.encode()) + len(v.encode()) for k, v in s.environment.items()) > MAX_ENV_BYTES:
        out.append(Problem("environment", ("environment",), f"at most {MAX_ENV_BYTES} bytes of names and values"))
    if not 0 <= s.maximum_retry_attempts <= 2:
        out.append(Problem("async_invoke", ("maximum_retry_attempts",), "maximum_retry_attempts must be 0 to 2"))
    if not 60 <= s.maximum_event_age_seconds <= 21600:
        out.append(Problem("async_invoke", ("maximum_event_age_seconds",),
                           "maximum_event_age_seconds must be 60 to 21600"))
    return out


def function_bus_problems(s: FunctionSettings, buses: Collection[str]) -> list[Problem]:
    """A function's async destinations must be declared buses: a record for none is never routed."""
    return [Problem("destination", (key,), _undeclared(bus, buses))
            for key in ("on_success", "on_failure") if (bus := getattr(s, key)) is not None and bus not in buses]


def queue_problems(q: QueueDecl, queues: Collection[str]) -> list[Problem]:
    """A declared queue: SQS's name rule and attribute bounds; its dead-letter queue declared too."""
    out: list[Problem] = []
    if not QUEUE_NAME.match(q.name):
        out.append(Problem("queue", ("name",), f"invalid queue name {q.name!r} (1-80 of A-Z a-z 0-9 - _; "
                                               f"FIFO queues are not supported)"))
    for key, (low, high) in QUEUE_BOUNDS.items():
        if not low <= getattr(q, key) <= high:
            out.append(Problem("queue", (key,), f"{key} must be {low} to {high}"))
    if (r := q.redrive_policy) is not None:
        if r.dead_letter_queue not in queues or r.dead_letter_queue == q.name:
            out.append(Problem("queue", ("redrive_policy", "dead_letter_queue"),
                               f"dead-letter queue {r.dead_letter_queue!r} is not another declared queue"))
        if not 1 <= r.max_receive_count <= 1000:
            out.append(Problem("queue", ("redrive_policy", "max_receive_count"), "max_receive_count must be 1 to 1000"))
    return out


def mapping_problems(m: EventSourceMapping, queues: Mapping[str, QueueDecl],
                     functions: Mapping[str, FunctionSettings]) -> list[Problem]:
    """An event source mapping as Lambda checks one (../shared/reference/aws-auth-invoke-sqs.md §4.2)."""
    out: list[Problem] = []
    if m.queue not in queues:
        out.append(Problem("mapping", ("queue",), f"queue {m.queue!r} is not declared in queues:"))
    if not FUNCTION_REF.match(m.function):
        out.append(Problem("mapping", ("function",), f"{m.function!r} is not module.handler"))
    else:
        from bus.config.function_refs import refusal
        if why := refusal(m.function):
            out.append(Problem("mapping", ("function",), why))
    if not 1 <= m.batch_size <= 10000:
        out.append(Problem("mapping", ("batch_size",), "batch_size must be 1 to 10000"))
    elif m.batch_size > 10 and m.maximum_batching_window_seconds < 1:
        out.append(Problem("mapping", ("batch_size",), "a batch_size over 10 needs maximum_batching_window_seconds of 1 or more"))
    if not 0 <= m.maximum_batching_window_seconds <= 300:
        out.append(Problem("mapping", ("maximum_batching_window_seconds",), "maximum_batching_window_seconds must be 0 to 300"))
    if m.maximum_concurrency is not None and not 2 <= m.maximum_concurrency <= 1000:
        out.append(Problem("mapping", ("maximum_concurrency",), "maximum_concurrency must be 2 to 1000"))
    queue, settings = queues.get(m.queue), functions.get(m.function)
    timeout = settings.timeout if settings is not None else 3.0
    if queue is not None and timeout > queue.visibility_timeout:
        out.append(Problem("mapping", ("function",), f"the function's timeout ({timeout:g} s) is over queue "
                                                     f"{m.queue}'s visibility_timeout ({queue.visibility_timeout} s)"))
    return out
