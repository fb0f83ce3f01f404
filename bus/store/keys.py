"""Every Redis key, consumer group and stream field name busway uses, and nothing else.

Other modules (and deploy/k8s/from_rules.py, and the tests) import these instead of
spelling a key out. A target's keys share the hash tag `{<bus>/<rule>/<target id>}`. busway
runs on one Redis (with replicas if you like), not on Redis Cluster: several scripts touch keys
of many slots (ENQUEUE the streams of several targets, the schedule FIRE script the leader key,
the progress hash and several streams, FINISH a shared DLQ or the inbox, redrive a DLQ and a
target stream). Cluster support has an issue of its own.
"""
from __future__ import annotations

PREFIX = "busway"

# --- deliveries ------------------------------------------------------------------------------
GROUP = "busway"  # the one consumer group of every target stream: the workers
FIELD = b"d"  # the one field of a stream entry: a Delivery, DeadLetter or InboxItem as JSON
REGISTRY = f"{PREFIX}:targets"  # hash: target key -> TargetRecord JSON (published by brokers)
WORKERS = f"{PREFIX}:workers"  # sorted set: consumer name -> last heartbeat (epoch s)


def target_key(bus: str, rule: str, target: str) -> str:
    """A target's name in keys, metrics and the CLI: `<bus>/<rule>/<target id>`."""
    return f"{bus}/{rule}/{target}"


def stream_key(tkey: str) -> str:
    """The stream of a target's deliveries, read by GROUP."""
    return f"{PREFIX}:{{{tkey}}}:q"


def delayed_key(tkey: str) -> str:
    """Sorted set of a target's deliveries waiting for a retry, scored by due time (ms)."""
    return f"{PREFIX}:{{{tkey}}}:delayed"


def concurrency_key(function: str) -> str:
    """Sorted set of reserved-concurrency leases of one function, scored by expiry (ms)."""
    return f"{PREFIX}:concurrency:{{{function}}}"


# --- API destination rate limits (http targets) ----------------------------------------------

def rate_key(destination: str) -> str:
    """An API destination's next free turn under its invocation rate limit (µs of server TIME),
    shared by every worker (bus/store/lua/rate_take.lua)."""
    return f"{PREFIX}:rate:{{{destination}}}"


# --- dead letters ----------------------------------------------------------------------------
DLQ_PREFIX = f"{PREFIX}:dlq:{{"
DLQ_PATTERN = f"{DLQ_PREFIX}*"  # SCAN MATCH of every DLQ
INBOX_DLQ = "inbox"  # the DLQ of inbox items no broker can route (undecodable, unknown bus)


def dlq_key(name: str) -> str:
    """A dead-letter stream: one per target (named after it) or shared by name."""
    return f"{DLQ_PREFIX}{name}}}"


def dlq_name(key: bytes | str) -> str:
    """The DLQ name inside a dlq_key."""
    key = as_str(key)
    return key[len(DLQ_PREFIX):-1]


# --- destinations ----------------------------------------------------------------------------
INBOX = f"{PREFIX}:inbox"  # stream of InboxItem (bus, event) awaiting routing by a broker
INBOX_GROUP = "brokers"

# --- rules created through the AWS API -------------------------------------------------------
API_RULES = f"{PREFIX}:api:rules"  # hash: "<bus>/<rule>" -> Rule JSON
API_VERSION = f"{PREFIX}:api:version"  # bumped by every change; brokers reload when it moves
API_RULE_COUNTS = f"{PREFIX}:api:counts"  # hash: bus -> how many API rules it holds (the per-bus cap)


def api_rule_field(bus: str, name: str) -> str:
    """The API_RULES field of one rule."""
    return f"{bus}/{name}"


# --- buses, connections and API destinations created through the AWS API ---------------------
API_BUSES = f"{PREFIX}:api:buses"  # hash: bus name -> Bus JSON
API_CONNECTIONS = f"{PREFIX}:api:connections"  # hash: name -> Connection JSON (secrets sealed only)
API_DESTINATIONS = f"{PREFIX}:api:destinations"  # hash: name -> ApiDestination JSON
API_ARCHIVES = f"{PREFIX}:api:archives"  # hash: name -> Archive JSON
API_RESOURCES_VERSION = f"{PREFIX}:api:resources:version"  # bumped by every change of the four


# --- archives (bus/store/archives.py) and replays (bus/store/replays.py) ---------------------

def archive_events_key(archive: str) -> str:
    """Sorted set of an archive's events: member = the event's JSON as delivered (unique: it holds
    the event id), score = the event's `time` in epoch ms. Written by ENQUEUE with the deliveries."""
    return f"{PREFIX}:archive:{{{archive}}}:events"


ARCHIVE_EVENTS_PATTERN = f"{PREFIX}:archive:{{*}}:events"  # SCAN MATCH of every archive's events


def archive_of_events_key(key: bytes | str) -> str:
    """The archive name inside an archive_events_key."""
    return as_str(key)[len(f"{PREFIX}:archive:{{"):-len("}:events")]


def archive_bytes_key(archive: str) -> str:
    """String: the sum of the lengths of the members of archive_events_key (SizeBytes), kept by the
    same scripts that add and trim them."""
    return f"{PREFIX}:archive:{{{archive}}}:bytes"


API_REPLAYS = f"{PREFIX}:api:replays"  # hash: replay name -> Replay JSON (definition, state, checkpoint)
REPLAY_LEADER_KEY = f"{PREFIX}:replay:leader"  # the broker running replays: its fencing token, with a TTL
REPLAY_FENCE_KEY = f"{PREFIX}:replay:fence"  # INCR'd for every new tenure of replay leadership

# --- tags and bus policies --------------------------------------------------------------------
API_TAGS = f"{PREFIX}:api:tags"  # hash: resource ARN -> {key: value} JSON (TagResource and the create calls)
API_POLICIES = f"{PREFIX}:api:policies"  # hash: bus name -> its resource policy (AWS policy JSON)
API_POLICIES_VERSION = f"{PREFIX}:api:policies:version"  # bumped by every policy change; brokers poll it


# --- the scheduler ---------------------------------------------------------------------------
LEADER_KEY = f"{PREFIX}:scheduler:leader"  # the leading broker's fencing token, with a TTL
FENCE_KEY = f"{PREFIX}:scheduler:fence"  # INCR'd for every new tenure
PROGRESS_KEY = f"{PREFIX}:scheduler:progress"  # hash: "<bus>/<rule>" -> Progress JSON


def fired_key(rule_id: str, epoch: int) -> str:
    """Dedup mark of one (schedule rule, scheduled time); expires."""
    return f"{PREFIX}:scheduler:fired:{rule_id}:{epoch}"


# --- the live trace (`bus tail`) -------------------------------------------------------------
TRACE = f"{PREFIX}:trace"  # capped stream of trace records
TRACE_FIELD = b"r"  # the one field of a trace entry: a record as JSON
TAIL_ACTIVE = f"{PREFIX}:tail:active"  # exists while someone tails


def as_str(value: bytes | str) -> str:
    """Redis replies are bytes; names we compare and print are str."""
    return value.decode() if isinstance(value, bytes) else value
