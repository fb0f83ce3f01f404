"""Every Redis key, consumer group and stream field name busway uses, and nothing else.

Other modules (and deploy/k8s/from_rules.py, and the tests) import these instead of
spelling a key out. The layout is Redis Cluster's: keys that one script or transaction
changes together share a hash tag, and nothing else does, so targets spread over every shard:
- a target's stream, retry set and own DLQ: `{<bus>/<rule>/<target id>}`;
- an archive's events and byte count: `{<archive>}`;
- everything the AWS API stores (rules, buses, connections, destinations, archives, replays,
  tags, policies, their versions) and the replay leader: `{api}`;
- the scheduler's leader, fence, progress and fired marks: `{scheduler}`;
- the inbox and its DLQ: `{inbox}`.
What still crosses slots (ingest to several targets, a shared DLQ or the inbox as a follow-up,
schedule firing, replay steps, redrive) is done slot by slot: docs/architecture.md says how.
`LEGACY_NAMES` maps the names older versions used, renamed once by bus.store.migrate.
"""
from __future__ import annotations

import array
import binascii
import functools
import sys
from importlib import resources

PREFIX = "busway"

# --- deliveries ------------------------------------------------------------------------------
GROUP = "busway"  # the one consumer group of every target stream: the workers
FIELD = b"d"  # the one field of a stream entry: a Delivery, DeadLetter or InboxItem as JSON
REGISTRY = f"{PREFIX}:targets"  # hash: target key -> TargetRecord JSON (published by brokers)
# string: a counter every publish of targets increments, so a worker notices a new target by one
# GET instead of reading the whole registry (it reads the registry when the counter moved)
REGISTRY_VERSION = f"{PREFIX}:targets:version"
MAPPINGS = f"{PREFIX}:mappings"  # string: the event source mappings (MappingRecords JSON), published by brokers
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


# --- synchronous Invoke (bus/broker/invocations.py) -------------------------------------------

def reply_key(broker: str) -> str:
    """A broker process's reply stream: workers append the outcomes of its synchronous Invokes."""
    return f"{PREFIX}:replies:{{{broker}}}"


def invoke_claim_key(request_id: str) -> str:
    """Who runs a synchronous Invoke: the worker that claims it first, or the broker, which claims it
    when no worker has by its start deadline (then it answers TooManyRequestsException)."""
    return f"{PREFIX}:invoke:{{{request_id}}}"


BROKER_CLAIM = "broker"  # the claim a broker makes on a call no worker started in time


# --- SQS-compatible queues (bus/store/sqs.py) --------------------------------------------------
# Every queue's keys share one hash tag: a receive moves a message to the queue's dead-letter queue
# in the same script, so on Redis Cluster all queues live on one slot (one shard).
SQS_QUEUES = f"{PREFIX}:sqs:{{sqs}}:queues"  # hash: queue name -> its attributes (JSON)
SQS_PARTS = ("ready", "delayed", "messages", "counts", "tokens", "first")


def sqs_keys(queue: str) -> list[str]:
    """A queue's keys, in SQS_PARTS order: ready (zset: id -> visible at, ms), delayed (zset: id ->
    due, ms), messages (hash: id -> JSON), counts (receives), tokens (latest receipt), first (ms)."""
    return [f"{PREFIX}:sqs:{{sqs}}:q:{queue}:{part}" for part in SQS_PARTS]


# --- API destination rate limits (http targets) ----------------------------------------------

def rate_key(destination: str) -> str:
    """An API destination's next free turn under its invocation rate limit (µs of server TIME),
    shared by every worker (bus/store/lua/rate_take.lua)."""
    return f"{PREFIX}:rate:{{{destination}}}"


# --- dead letters ----------------------------------------------------------------------------
DLQ_PREFIX = f"{PREFIX}:dlq:{{"
DLQ_PATTERN = f"{DLQ_PREFIX}*"  # SCAN MATCH of every DLQ
INBOX_DLQ = "inbox"  # the DLQ of inbox items no broker can route; its dlq_key shares the inbox's tag


def dlq_key(name: str) -> str:
    """A dead-letter stream: one per target (named after it) or shared by name."""
    return f"{DLQ_PREFIX}{name}}}"


def dlq_name(key: bytes | str) -> str:
    """The DLQ name inside a dlq_key."""
    key = as_str(key)
    return key[len(DLQ_PREFIX):-1]


# --- destinations ----------------------------------------------------------------------------
INBOX = f"{PREFIX}:{{inbox}}:items"  # stream of InboxItem (bus, event) awaiting routing by a broker
INBOX_GROUP = "brokers"

# --- rules created through the AWS API -------------------------------------------------------
API_RULES = f"{PREFIX}:{{api}}:rules"  # hash: "<bus>/<rule>" -> Rule JSON
API_VERSION = f"{PREFIX}:{{api}}:version"  # bumped by every change; brokers reload when it moves
API_RULE_COUNTS = f"{PREFIX}:{{api}}:counts"  # hash: bus -> how many API rules it holds (the per-bus cap)


def api_rule_field(bus: str, name: str) -> str:
    """The API_RULES field of one rule."""
    return f"{bus}/{name}"


# --- buses, connections and API destinations created through the AWS API ---------------------
API_BUSES = f"{PREFIX}:{{api}}:buses"  # hash: bus name -> Bus JSON
API_CONNECTIONS = f"{PREFIX}:{{api}}:connections"  # hash: name -> Connection JSON (secrets sealed only)
API_DESTINATIONS = f"{PREFIX}:{{api}}:destinations"  # hash: name -> ApiDestination JSON
API_ARCHIVES = f"{PREFIX}:{{api}}:archives"  # hash: name -> Archive JSON
API_RESOURCES_VERSION = f"{PREFIX}:{{api}}:resources:version"  # bumped by every change of the four


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


API_REPLAYS = f"{PREFIX}:{{api}}:replays"  # hash: replay name -> Replay JSON (definition, state, checkpoint)
REPLAY_LEADER_KEY = f"{PREFIX}:{{api}}:replay:leader"  # the broker running replays: its fencing token, with a TTL
REPLAY_FENCE_KEY = f"{PREFIX}:{{api}}:replay:fence"  # INCR'd for every new tenure of replay leadership

# --- tags and bus policies --------------------------------------------------------------------
API_TAGS = f"{PREFIX}:{{api}}:tags"  # hash: resource ARN -> {key: value} JSON (TagResource and the create calls)
API_POLICIES = f"{PREFIX}:{{api}}:policies"  # hash: bus name -> its resource policy (AWS policy JSON)
API_POLICIES_VERSION = f"{PREFIX}:{{api}}:policies:version"  # bumped by every policy change; brokers poll it


# --- the scheduler ---------------------------------------------------------------------------
LEADER_KEY = f"{PREFIX}:{{scheduler}}:leader"  # the leading broker's fencing token, with a TTL
FENCE_KEY = f"{PREFIX}:{{scheduler}}:fence"  # INCR'd for every new tenure
PROGRESS_KEY = f"{PREFIX}:{{scheduler}}:progress"  # hash: "<bus>/<rule>" -> Progress JSON


def fired_key(rule_id: str, epoch: int) -> str:
    """Dedup mark of one (schedule rule, scheduled time); expires."""
    return f"{PREFIX}:{{scheduler}}:fired:{rule_id}:{epoch}"


# --- the live trace (`bus tail`) -------------------------------------------------------------
TRACE = f"{PREFIX}:trace"  # capped stream of trace records
TRACE_FIELD = b"r"  # the one field of a trace entry: a record as JSON
TAIL_ACTIVE = f"{PREFIX}:tail:active"  # exists while someone tails


# --- what older versions called the keys above (bus.store.migrate renames them once) ----------
LEGACY_NAMES = {
    f"{PREFIX}:inbox": INBOX,
    f"{PREFIX}:api:rules": API_RULES,
    f"{PREFIX}:api:version": API_VERSION,
    f"{PREFIX}:api:counts": API_RULE_COUNTS,
    f"{PREFIX}:api:buses": API_BUSES,
    f"{PREFIX}:api:connections": API_CONNECTIONS,
    f"{PREFIX}:api:destinations": API_DESTINATIONS,
    f"{PREFIX}:api:archives": API_ARCHIVES,
    f"{PREFIX}:api:resources:version": API_RESOURCES_VERSION,
    f"{PREFIX}:api:replays": API_REPLAYS,
    f"{PREFIX}:replay:fence": REPLAY_FENCE_KEY,
    f"{PREFIX}:api:tags": API_TAGS,
    f"{PREFIX}:api:policies": API_POLICIES,
    f"{PREFIX}:api:policies:version": API_POLICIES_VERSION,
    f"{PREFIX}:scheduler:fence": FENCE_KEY,
    f"{PREFIX}:scheduler:progress": PROGRESS_KEY,
}  # leader locks expire within seconds and fired marks within a day: neither needs moving


# --- Redis Cluster: a key's slot, and a key of our own in a given slot ------------------------
SLOTS = 16384


def key_slot(key: bytes | str) -> int:
    """The cluster slot of `key`: CRC16 (XMODEM, which binascii.crc_hqx computes in C) of its hash
    tag, the text inside its first {...} when that is not empty, else of the whole key."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    return binascii.crc_hqx(raw, 0) % SLOTS


@functools.cache
def _slot_tags() -> array.array:
    """For each slot, the smallest n whose tag "%x" % n hashes to it: bus/store/slot_tags.bin,
    made by build_slot_tags() (tests/test_keys.py checks it), read once per process."""
    table = array.array("I")
    table.frombytes(resources.files("bus.store").joinpath("slot_tags.bin").read_bytes())
    if sys.byteorder != "little":
        table.byteswap()
    return table


def build_slot_tags() -> array.array:
    """The table of _slot_tags, computed (about 170,000 CRCs: too slow for every process start)."""
    table, left, n = array.array("I", [0xFFFFFFFF] * SLOTS), SLOTS, 0
    while left:
        s = binascii.crc_hqx(b"%x" % n, 0) % SLOTS
        if table[s] == 0xFFFFFFFF:
            table[s], left = n, left - 1
        n += 1
    return table


def slot_tag(slot: int) -> str:
    """A short hash tag whose slot is `slot`: how a marker key is put beside keys of that slot
    that share no tag with it (the deliveries of one request that land on one slot)."""
    return "%x" % _slot_tags()[slot]


def once_key(slot: int, step: str) -> str:
    """Marker that the writes of idempotent step `step` (a request, a schedule firing, a replay
    step) on `slot` are done: written in the same script call as them, with a TTL."""
    return f"{PREFIX}:{{{slot_tag(slot)}}}:once:{step}"


def as_str(value: bytes | str) -> str:
    """Redis replies are bytes; names we compare and print are str."""
    return value.decode() if isinstance(value, bytes) else value
