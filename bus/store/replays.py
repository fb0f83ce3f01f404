"""Replays in Redis: the Replay record (definition, state, checkpoint), creating one under the cap
of active replays, cancelling, and the replay leader's fenced steps.

Keys: API_REPLAYS (hash: replay name -> Replay JSON), REPLAY_LEADER_KEY / REPLAY_FENCE_KEY (the
lease of the broker running replays, bus.store.lease). Every change is one Lua call that
compares the stored JSON with the JSON the caller read, so a CancelReplay landing between a
leader's read and its step wins, and the step is refused (the leader reads again).

The checkpoint names no member: (score_ms, done) = every archived event scored below score_ms
is replayed, and the first `done` members at score_ms (the sorted set orders equal scores by
member bytes) too. The next page is ZRANGEBYSCORE score_ms (end LIMIT done n.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Literal, NamedTuple

import msgspec
import redis.asyncio as aioredis

from bus.store.connect import is_cluster
from bus.store.keys import API_REPLAYS, FIELD, REPLAY_LEADER_KEY
from bus.store.once import stream_calls, write_once
from bus.store.scripts import REPLAY_SAVE, REPLAY_STEP, run_script

log = logging.getLogger("bus.replay")

State = Literal["STARTING", "RUNNING", "CANCELLING", "COMPLETED", "CANCELLED", "FAILED"]
ACTIVE: tuple[str, ...] = ("STARTING", "RUNNING", "CANCELLING")
FINISHED: tuple[str, ...] = ("COMPLETED", "CANCELLED", "FAILED")
MAX_ACTIVE = 10  # AWS: at most 10 active replays per account and Region
_NOT_LEADER = -1
_OVER_CAP = -2


class Checkpoint(msgspec.Struct, frozen=True):
    """Every archived event scored below `score_ms`, and the first `done` at `score_ms`, is replayed."""

    score_ms: int
    done: int = 0


class Replay(msgspec.Struct, frozen=True):
    """One replay: which window of which archive goes to which rules (None: every rule of the bus),
    where it stands and how far it got. Times: event times in epoch ms, replay times in epoch s."""

    name: str
    archive: str
    bus: str
    event_start_ms: int
    event_end_ms: int  # exclusive: an event at exactly EventEndTime is not replayed
    rules: list[str] | None = None
    description: str = ""
    state: State = "STARTING"
    state_reason: str = ""
    replay_start: float = 0.0
    replay_end: float | None = None
    event_last_replayed_ms: int | None = None
    checkpoint: Checkpoint | None = None  # None: nothing replayed yet (start at event_start_ms)
    replayed: int = 0  # events sent so far (whether or not a rule matched them)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class Stored(NamedTuple):
    """A replay as read, with the exact JSON it was read as (what a fenced write compares)."""

    raw: bytes
    replay: Replay


class Exists(Exception):
    """Create: the name is taken."""


class OverCap(Exception):
    """Create: MAX_ACTIVE replays are already active."""


class NotFound(Exception):
    """No replay of that name."""


class Finished(Exception):
    """Cancel: the replay has already ended (COMPLETED, CANCELLED, FAILED) or is cancelling."""


class Changed(Exception):
    """A fenced step: the stored replay is not the one the caller read (cancelled, or stepped)."""


class NotLeader(Exception):
    """A fenced step: the replay lease does not hold the caller's token; nothing was written."""


encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Replay).decode


def _decoded(name: bytes | str, raw: bytes) -> Stored | None:
    try:
        return Stored(raw, _decode(raw))
    except msgspec.DecodeError:
        log.error("stored replay %r does not load; skipped", name)
        return None


async def load(redis: aioredis.Redis) -> dict[str, Stored]:
    """Every replay that decodes, by name."""
    out: dict[str, Stored] = {}
    for name, raw in (await redis.hgetall(API_REPLAYS)).items():
        stored = _decoded(name, raw)
        if stored is not None:
            out[stored.replay.name] = stored
    return out


async def get(redis: aioredis.Redis, name: str) -> Stored | None:
    raw = await redis.hget(API_REPLAYS, name)
    return None if raw is None else _decoded(name, raw)


async def create(redis: aioredis.Redis, replay: Replay, cap: int = MAX_ACTIVE) -> None:
    """Store a new replay (state STARTING); Exists if the name is taken (finished replays too, as
    AWS), OverCap if `cap` replays are active."""
    got = await run_script(redis, REPLAY_SAVE, [API_REPLAYS], [replay.name, "", encode(replay), cap, *ACTIVE])
    if got == _OVER_CAP:
        raise OverCap()
    if got != 1:
        raise Exists(replay.name)


async def request_cancel(redis: aioredis.Redis, name: str, attempts: int = 20) -> Replay:
    """Ask the leader to stop `name`: STARTING or RUNNING -> CANCELLING (the leader writes
    CANCELLED). NotFound, or Finished if it already ended or is being cancelled."""
    for _ in range(attempts):  # each retry follows one step of the leader: a handful at most
        stored = await get(redis, name)
        if stored is None:
            raise NotFound(name)
        if stored.replay.state not in ("STARTING", "RUNNING"):
            raise Finished(stored.replay.state)
        new = msgspec.structs.replace(stored.replay, state="CANCELLING")
        if await run_script(redis, REPLAY_SAVE, [API_REPLAYS], [name, stored.raw, encode(new), 0]) == 1:
            return new
    raise Changed(name)


async def step(redis: aioredis.Redis, token: str, read: Stored, new: Replay,
               deliveries: list[tuple[str, bytes]] = ()) -> Stored:
    """Write one step: the deliveries ((stream key, Delivery JSON) pairs) and `new` (its checkpoint
    and state), only if the lease holds `token` and the replay is still `read`. NotLeader or
    Changed otherwise, with nothing written."""
    raw = encode(new)
    if is_cluster(redis) and deliveries:
        # The streams lie on other slots: write them first, each slot's part once, as a step named
        # by the checkpoint it starts from (the next leader redoing it writes nothing twice); then
        # the fenced checkpoint alone.
        await write_once(redis, stream_calls(deliveries), f"replay/{new.name}/{_sha(read.raw)}")
        deliveries = ()
    names = [REPLAY_LEADER_KEY, API_REPLAYS] + [stream for stream, _ in deliveries]
    args = [token, new.name, read.raw, raw, FIELD] + [body for _, body in deliveries]
    got = await run_script(redis, REPLAY_STEP, names, args)
    if got == _NOT_LEADER:
        raise NotLeader()
    if got != 1:
        raise Changed(new.name)
    return Stored(raw, new)


def _sha(raw: bytes) -> str:
    """A short name for the replay record a step starts from (its checkpoint and state)."""
    return hashlib.sha1(raw).hexdigest()[:16]
