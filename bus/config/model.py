"""The declared world: buses, rules, targets and function settings, as typed msgspec Structs.

These are validated once at the YAML boundary (bus.config.rulesfile) and trusted everywhere else.
"""
from __future__ import annotations

import re
import uuid
from typing import Any, Literal

import msgspec

RULE_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
BUS_NAME = re.compile(r"^[/.\-_A-Za-z0-9]{1,256}$")
TARGET_ID = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
FUNCTION_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

DEFAULT_BUS = "default"


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """EventBridge's target retry policy, with AWS's defaults and bounds."""

    maximum_retry_attempts: int = 185
    maximum_event_age_seconds: int = 86400
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0


class InputTransformer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """EventBridge's InputTransformer: values picked from the event by JSONPath, put into a template."""

    input_template: str
    input_paths_map: dict[str, str] = {}


class HttpParameters(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """EventBridge's HttpParameters of an API destination target (or a connection's extras)."""

    header_parameters: dict[str, str] = {}
    query_string_parameters: dict[str, str] = {}
    path_parameter_values: list[str] = []


class _TargetBase(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="kind"):
    """What every target kind has: an id, EventBridge's retry policy, a DLQ, destinations, and
    at most one of the input options (none: the whole event is sent)."""

    id: str
    retry_policy: RetryPolicy = RetryPolicy()
    dead_letter: bool | str = False
    on_success: str | None = None
    on_failure: str | None = None
    input: str | None = None  # constant JSON text
    input_path: str | None = None  # JSONPath, as AWS accepts it
    input_transformer: InputTransformer | None = None
    input_jmespath: str | None = None  # busway's extension: the target gets the expression's result
    role_arn: str | None = None  # kept and returned by the API; busway assumes no roles


INPUT_OPTIONS = ("input", "input_path", "input_transformer", "input_jmespath")


class FunctionTarget(_TargetBase, frozen=True, tag="function"):
    """A Python handler (`module.handler` in the functions directory), run by a worker."""

    function: str


class HttpTarget(_TargetBase, frozen=True, tag="http"):
    """An API destination (by name): an HTTP request from a worker, authorized by its connection."""

    http: str
    http_parameters: HttpParameters | None = None


class BusTarget(_TargetBase, frozen=True, tag="bus"):
    """Another bus of this broker: the event is matched by that bus's rules."""

    bus: str


class QueueTarget(_TargetBase, frozen=True, tag="queue"):
    """An SQS-compatible queue of busway's (bus.store.sqs): the event (or its input) becomes a message."""

    queue: str


# The target kinds, a tagged union on `kind`. A new kind is one Struct here (its YAML key is its
# tag) plus one invoker in bus.worker.invokers. YAML names the kind by its key (`function: ...`),
# so the loader fills `kind` in (see with_kind) before converting.
Target = FunctionTarget | HttpTarget | BusTarget | QueueTarget
TARGET_KINDS: dict[str, type] = {"function": FunctionTarget, "http": HttpTarget, "bus": BusTarget, "queue": QueueTarget}


def with_kind(raw: Any) -> Any:
    """A target as written in YAML or stored by an older busway: add `kind` from its kind's key."""
    if isinstance(raw, dict) and "kind" not in raw:
        for kind in TARGET_KINDS:
            if kind in raw:
                return {"kind": kind, **raw}
    return raw


# --- connections and API destinations (EventBridge's, for `http` targets) ------------------
# A secret is named, never held: `*_from_env` (YAML: read from the worker's environment) or
# `*_sealed` (the API: encrypted with BUS_SECRETS_KEY, bus.secrets). Neither form is the secret.

class ApiKeyAuth(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    header: str
    value_from_env: str | None = None
    value_sealed: str | None = None


class BasicAuth(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    username: str
    password_from_env: str | None = None
    password_sealed: str | None = None


class OAuthClientCredentials(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    token_url: str
    client_id: str
    client_secret_from_env: str | None = None
    client_secret_sealed: str | None = None
    scope: str | None = None
    http_method: Literal["GET", "POST", "PUT"] = "POST"
    # Extra parameters sent to the token endpoint (AWS's OAuthHttpParameters); values are not secret.
    oauth_http_parameters: HttpParameters | None = None


class Authorization(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Exactly one of the three (checked by validation, not by the type)."""

    api_key: ApiKeyAuth | None = None
    basic: BasicAuth | None = None
    oauth_client_credentials: OAuthClientCredentials | None = None


class Connection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: str
    authorization: Authorization
    description: str = ""
    invocation_http_parameters: HttpParameters | None = None  # sent with every request
    # DeauthorizeConnection: requests are refused until the connection is updated with new secrets.
    deauthorized: bool = False
    uuid: str = ""  # the last segment of its ARN (YAML: derived from the name; the API: random)
    created: float = 0.0  # epoch seconds (API resources; YAML: 0)
    modified: float = 0.0


_ARN_IDS = uuid.UUID("6b1f2c0e-5d1a-4f7e-9a35-8c2d1e0b7a11")  # the namespace of YAML resources' ARN ids


def stable_uuid(kind: type, name: str) -> str:
    """The ARN id of a YAML connection or API destination: derived from its name, so it is the same
    in every broker and across restarts (the API gives its own resources random ones)."""
    return str(uuid.uuid5(_ARN_IDS, f"{kind.__name__}/{name}"))


HTTP_METHODS = ("POST", "GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE")


class ApiDestination(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: str
    connection: str
    endpoint: str  # http:// or https://; each `*` is filled from the target's path_parameter_values
    method: str = "POST"
    invocation_rate_limit_per_second: int = 300
    description: str = ""
    uuid: str = ""  # the last segment of its ARN (YAML: derived from the name; the API: random)
    created: float = 0.0
    modified: float = 0.0


class Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A pattern rule (event_pattern) or a schedule rule (schedule) on one bus."""

    name: str
    targets: list[Target] = []
    bus: str = DEFAULT_BUS
    description: str = ""
    state: Literal["ENABLED", "DISABLED"] = "ENABLED"
    event_pattern: dict[str, Any] | None = None
    schedule: str | None = None
    timezone: str | None = None
    start: str | None = None
    end: str | None = None
    catch_up: Literal["none", "latest", "all"] = "latest"
    role_arn: str | None = None  # kept and returned by the API (PutRule RoleArn)
    tags: dict[str, str] = {}  # kept and returned by the API (PutRule Tags)


class Bus(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    description: str = ""
    created: float = 0.0  # epoch seconds; a YAML bus: 0 (the API shows the broker's start)
    modified: float = 0.0


ARCHIVE_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,48}$")  # AWS's ArchiveName


class Archive(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An archive of one bus's events (YAML `archives:` or CreateArchive): every event accepted on
    the bus that its pattern matches (every event, with no pattern) is kept, scored by its `time`,
    for retention_days (0: forever). Replayed events are never archived again."""

    name: str
    bus: str = DEFAULT_BUS
    event_pattern: dict[str, Any] | None = None
    retention_days: int = 0
    description: str = ""
    created: float = 0.0  # epoch seconds; a YAML archive: 0 (the API shows the broker's start)
    modified: float = 0.0


class FunctionSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Lambda-like function configuration, keyed by `module.handler`.

    `environment` is set in the handler's process for its calls only (bus.worker.slot). The
    async-invocation settings (Lambda's PutFunctionEventInvokeConfig and DeadLetterConfig) apply
    to Invoke with InvocationType Event, not to rule targets, which have their own."""

    timeout: float = 3.0
    reserved_concurrency: int | None = None
    memory_limit_in_mb: int = 128
    environment: dict[str, str] = {}
    description: str = ""
    maximum_retry_attempts: int = 2  # Lambda's async default and bound: 0..2
    maximum_event_age_seconds: int = 21600  # 60..21600
    on_success: str | None = None  # a bus that receives Lambda's invocation record
    on_failure: str | None = None
    dead_letter: bool | str = False


QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")  # SQS's, standard queues


# SQS's bounds for a queue's attributes (a rules file's queue and the SQS API alike)
QUEUE_BOUNDS = {"visibility_timeout": (0, 43200), "message_retention_period": (60, 1209600),
                "delay_seconds": (0, 900), "receive_message_wait_time_seconds": (0, 20),
                "maximum_message_size": (1024, 1048576)}


class QueueRedrive(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    dead_letter_queue: str
    max_receive_count: int


class QueueDecl(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A queue declared in YAML (`queues:`), SQS's attributes and defaults; read-only through the API."""

    name: str
    visibility_timeout: int = 30
    message_retention_period: int = 345600
    delay_seconds: int = 0
    receive_message_wait_time_seconds: int = 0
    maximum_message_size: int = 1048576
    redrive_policy: QueueRedrive | None = None


class EventSourceMapping(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Lambda's SQS event source mapping: workers poll `queue` and invoke `function` with batches."""

    queue: str
    function: str
    batch_size: int = 10
    maximum_batching_window_seconds: float = 0
    function_response_types: list[Literal["ReportBatchItemFailures"]] = []
    maximum_concurrency: int | None = None  # batches at once, per worker (AWS: across the mapping)
    enabled: bool = True


class RulesFile(msgspec.Struct, forbid_unknown_fields=True):
    """One YAML file's top level; every key is optional."""

    buses: list[Any] = []
    rules: list[Any] = []
    functions: dict[str, Any] = {}
    connections: list[Any] = []
    api_destinations: list[Any] = []
    archives: list[Any] = []
    queues: list[Any] = []
    event_source_mappings: list[Any] = []


class Config(msgspec.Struct):
    """Everything loaded from a rules directory, merged."""

    buses: dict[str, Bus]
    rules: dict[tuple[str, str], Rule]  # (bus, rule name) -> rule
    functions: dict[str, FunctionSettings]
    connections: dict[str, Connection] = {}
    api_destinations: dict[str, ApiDestination] = {}
    archives: dict[str, Archive] = {}  # by name (archive names are account-wide, as on AWS)
    queues: dict[str, QueueDecl] = {}
    event_source_mappings: list[EventSourceMapping] = []

    def function(self, ref: str) -> FunctionSettings:
        return self.functions.get(ref) or FunctionSettings()


def empty_config() -> Config:
    return Config(buses={DEFAULT_BUS: Bus(DEFAULT_BUS)}, rules={}, functions={})
