"""What is stored per delivery: the target record workers read, and the queued Delivery.

A broker publishes one TargetRecord per declared target to the registry (bus.store.queue);
a worker chooses the invoker by the kind of `record.target`. One stream per target
(bus/rule/target id) holds its Deliveries; key names are in bus.store.keys.
"""
from __future__ import annotations

import time

import msgspec

from bus.config.model import (
    ApiDestination, Config, Connection, EventSourceMapping, FunctionSettings, FunctionTarget, HttpTarget, RetryPolicy,
    Rule, Target,
)
from bus.ids import new_id
from bus.store.keys import stream_key, target_key


class TargetRecord(msgspec.Struct, frozen=True):
    """A target as workers see it: where it hangs (bus, rule), the target itself, and what the
    worker needs beyond it (the settings of a function target's function)."""

    bus: str
    rule: str
    target: Target
    function: FunctionSettings | None = None  # FunctionTarget: its `functions:` settings
    # HttpTarget: its API destination and that destination's connection (secrets only named or
    # sealed, never in clear: see bus.config.model). None if either is missing: the worker fails it.
    destination: ApiDestination | None = None
    connection: Connection | None = None

    @property
    def key(self) -> str:
        return target_key(self.bus, self.rule, self.target.id)

    @property
    def stream(self) -> str:
        return stream_key(self.key)

    @property
    def dlq_name(self) -> str | None:
        dead_letter = self.target.dead_letter
        if dead_letter is True:
            return self.key
        return dead_letter or None

    @property
    def name(self) -> str:
        """What metrics and logs call the thing invoked: the function, for a function target."""
        return self.target.function if isinstance(self.target, FunctionTarget) else self.key


def secret_env_names(records) -> frozenset[str]:
    """The environment variables the connections of these targets read their secrets from."""
    names: set[str] = set()
    for record in records:
        auth = record.connection.authorization if record.connection is not None else None
        if auth is None:
            continue
        for part, key in ((auth.api_key, "value_from_env"), (auth.basic, "password_from_env"),
                          (auth.oauth_client_credentials, "client_secret_from_env")):
            if part is not None and getattr(part, key):
                names.add(getattr(part, key))
    return frozenset(names)


class Delivery(msgspec.Struct, frozen=True):
    """One event on its way to one target: the queued unit of work.

    `id` is the Lambda request id: stable across retries and redeliveries of this delivery.
    `retries` counts attempts already finished by earlier entries of this delivery (a retry
    re-enqueues the record); the stream's own delivery counter adds the attempts of this entry.
    """

    id: str
    event: msgspec.Raw
    bus: str
    rule: str
    target: str
    function: str  # the function of a function target ("" for other kinds): kept in dead letters
    first_enqueued: float
    ingested: float
    retries: int = 0
    hops: int = 0  # buses this event crossed (bus targets) before reaching this delivery's bus
    # A synchronous Invoke (RequestResponse): the broker's reply stream, which gets the outcome
    # instead of a retry or a dead letter; `tail`: the reply carries the handler's last 4 KB of log.
    reply: str = ""
    tail: bool = False
    client_context: str = ""  # Invoke's X-Amz-Client-Context, decoded (JSON text): the handler's context.client_context

    @property
    def target_key(self) -> str:
        return target_key(self.bus, self.rule, self.target)


_encode = msgspec.json.Encoder().encode
_decode_delivery = msgspec.json.Decoder(Delivery).decode
_decode_record = msgspec.json.Decoder(TargetRecord).decode


def encode_delivery(d: Delivery) -> bytes:
    return _encode(d)


def decode_delivery(raw: bytes) -> Delivery:
    return _decode_delivery(raw)


def encode_record(record: TargetRecord) -> bytes:
    return _encode(record)


def decode_record(raw: bytes) -> TargetRecord:
    return _decode_record(raw)


def new_delivery(event: bytes, record: TargetRecord, ingested: float, hops: int = 0) -> Delivery:
    target = record.target
    return Delivery(
        id=new_id(), event=msgspec.Raw(event), bus=record.bus, rule=record.rule, target=target.id,
        function=target.function if isinstance(target, FunctionTarget) else "",
        first_enqueued=time.time(), ingested=ingested, hops=hops,
    )


# Lambda's Invoke API (bus.broker.awslambda): every declared function has two targets of its
# own, on a "bus" no rule can be on ("$" is not in a bus name), so their keys never collide.
INVOKE_BUS = "$lambda"
EVENT_INVOKE = "event"  # InvocationType Event: the function's async retry settings and destinations
SYNC_INVOKE = "sync"  # RequestResponse: one attempt, its outcome sent back to the waiting broker


def invoke_records(config: Config) -> list[TargetRecord]:
    """The Invoke targets of every function in `functions:`."""
    return [record for ref in sorted(config.functions) for record in invoke_pair(ref, config.functions[ref])]


def invoke_pair(ref: str, s: FunctionSettings) -> tuple[TargetRecord, TargetRecord]:
    event = FunctionTarget(
        id=ref, function=ref, dead_letter=s.dead_letter, on_success=s.on_success, on_failure=s.on_failure,
        retry_policy=RetryPolicy(maximum_retry_attempts=s.maximum_retry_attempts,
                                 maximum_event_age_seconds=s.maximum_event_age_seconds))
    sync = FunctionTarget(id=ref, function=ref, retry_policy=RetryPolicy(maximum_retry_attempts=0))
    return (TargetRecord(bus=INVOKE_BUS, rule=EVENT_INVOKE, target=event, function=s),
            TargetRecord(bus=INVOKE_BUS, rule=SYNC_INVOKE, target=sync, function=s))


class MappingRecord(msgspec.Struct, frozen=True):
    """An event source mapping as workers see it: the mapping and its function's settings."""

    mapping: EventSourceMapping
    function: FunctionSettings


def mapping_records(config: Config) -> list[MappingRecord]:
    return [MappingRecord(m, config.function(m.function)) for m in config.event_source_mappings if m.enabled]


_encode_mappings = msgspec.json.Encoder().encode
_decode_mappings = msgspec.json.Decoder(list[MappingRecord]).decode


def encode_mappings(records: list[MappingRecord]) -> bytes:
    return _encode_mappings(records)


def decode_mappings(raw: bytes) -> list[MappingRecord]:
    return _decode_mappings(raw)


def target_records(config: Config, rule: Rule) -> list[TargetRecord]:
    """The registry records of a rule's targets."""
    return [record_of(config, rule, t) for t in rule.targets]


def record_of(config: Config, rule: Rule, target: Target) -> TargetRecord:
    if isinstance(target, FunctionTarget):
        return TargetRecord(bus=rule.bus, rule=rule.name, target=target, function=config.function(target.function))
    if isinstance(target, HttpTarget):
        destination = config.api_destinations.get(target.http)
        connection = config.connections.get(destination.connection) if destination else None
        return TargetRecord(bus=rule.bus, rule=rule.name, target=target, destination=destination,
                            connection=connection)
    return TargetRecord(bus=rule.bus, rule=rule.name, target=target)

