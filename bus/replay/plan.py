"""A replay's decisions, pure (no Redis, no clock): what to read next, how much of it to send in
one step, where the checkpoint goes, which state comes next, and how long to wait so that the
replays of one leader send at most `rate` events per second between them.

Pacing: a step sends at most page_size(rate) events (a tenth of a second's worth, 1 to
MAX_PAGE); the next step may start when `events / rate` seconds have passed since this one
began. At the default rate (1000/s) that is pages of 100, ten steps a second.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from bus.store.replays import Checkpoint, Replay

DEFAULT_RATE = 1000.0  # events per second per leader, all replays together (env BUS_REPLAY_RATE)
MAX_PAGE = 100  # archived events read per step
STEP_SECONDS = 0.1  # a step carries about this long's worth of events at the rate
STEP_BYTES = 1 << 20  # archived JSON per step beyond the first event: bounds one Lua call's size


@dataclass(frozen=True)
class Page:
    """The next read: ZRANGEBYSCORE archive min_score (max_score LIMIT offset count."""

    min_score: int
    max_score: int  # exclusive
    offset: int
    count: int


def page_size(rate: float, max_page: int = MAX_PAGE) -> int:
    """Events per step: STEP_SECONDS at `rate`, at least 1, at most max_page."""
    return max(1, min(max_page, math.ceil(rate * STEP_SECONDS)))


def next_page(replay: Replay, count: int) -> Page:
    """Where the replay continues: from its checkpoint, else from EventStartTime."""
    point = replay.checkpoint or Checkpoint(replay.event_start_ms, 0)
    return Page(point.score_ms, replay.event_end_ms, point.done, count)


def take(sizes: Sequence[int], max_bytes: int = STEP_BYTES) -> int:
    """How many of a page's events (their JSON sizes, in order) one step sends: all of them
    while their total is within max_bytes, and always at least one."""
    total = 0
    for n, size in enumerate(sizes):
        total += size
        if total > max_bytes:
            return max(1, n)
    return len(sizes)


def advance(checkpoint: Checkpoint | None, scores: Sequence[int]) -> Checkpoint | None:
    """The checkpoint after replaying events of these scores (in archive order) past `checkpoint`."""
    if not scores:
        return checkpoint
    last = scores[-1]
    done = 0
    for score in reversed(scores):
        if score != last:
            break
        done += 1
    if checkpoint is not None and checkpoint.score_ms == last:
        done += checkpoint.done  # the step continued at the checkpoint's own score
    return Checkpoint(last, done)


@dataclass(frozen=True)
class Decision:
    """What the leader does with a replay now. `send`: replay the page read (then `state`)."""

    state: str
    reason: str = ""
    send: bool = False


def decide(replay: Replay, gone: str | None) -> Decision | None:
    """Before reading: CANCELLING -> CANCELLED; archive or bus gone (`gone` says which) ->
    FAILED; an active replay -> read and send (None: nothing to do, it has ended)."""
    if replay.state == "CANCELLING":
        return Decision("CANCELLED", "Replay cancelled.")
    if not replay.active:
        return None
    if gone is not None:
        return Decision("FAILED", gone)
    return Decision("RUNNING", send=True)


def after_step(replay: Replay, scores: Sequence[int], page_len: int, asked: int, now: float) -> Replay:
    """The replay once `scores` (the first events of a page of page_len, `asked` for) are sent:
    checkpoint and EventLastReplayedTime moved; COMPLETED (at `now`) if the page was the last."""
    last_page = page_len < asked and len(scores) == page_len
    return msgspec.structs.replace(
        replay, checkpoint=advance(replay.checkpoint, scores), replayed=replay.replayed + len(scores),
        event_last_replayed_ms=scores[-1] if scores else replay.event_last_replayed_ms,
        state="COMPLETED" if last_page else "RUNNING", replay_end=now if last_page else None,
    )


def ended(replay: Replay, state: str, reason: str, now: float) -> Replay:
    """The replay moved to a final state at `now`."""
    return msgspec.structs.replace(replay, state=state, state_reason=reason, replay_end=now)


def lag_seconds(replay: Replay) -> float:
    """EventEndTime minus the time of the last event replayed (from EventStartTime if none yet)."""
    last = replay.event_last_replayed_ms if replay.event_last_replayed_ms is not None else replay.event_start_ms
    return max(0.0, (replay.event_end_ms - last) / 1000)


def next_step_at(started: float, events: int, rate: float) -> float:
    """When the next step may start: `events` sent from `started` at `rate` per second."""
    return started + events / rate if rate > 0 else started
