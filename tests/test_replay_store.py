"""Replays in Redis (bus.store.replays) and the runner over them (bus.replay.runner), with a real
Redis and no broker: the cap, the fenced step, cancel winning over a step, and a second runner
resuming from the first one's checkpoint with every event exactly once."""
from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
import redis.asyncio as aioredis

from bus.broker.router import Router
from bus.config.model import Archive, Bus, Config, FunctionTarget, Rule
from bus.events import format_time
from bus.ids import new_id
from bus.replay.runner import ReplayRunner
from bus.store import replays
from bus.store.keys import (
    API_REPLAYS,
    FIELD,
    REPLAY_FENCE_KEY,
    REPLAY_LEADER_KEY,
    stream_key,
    target_key,
)
from bus.store.lease import Lease
from bus.store.queue import Archived, Queue
from bus.store.replays import Checkpoint, Replay

T0 = 1_700_000_000  # epoch s: the archived events' times start here


def replay(name: str = "r", **kw) -> Replay:
    return Replay(**{"name": name, "archive": "arch", "bus": "default", "event_start_ms": T0 * 1000,
                     "event_end_ms": (T0 + 100) * 1000, "replay_start": 1.0, **kw})


def run(redis_url: str, body):
    async def main():
        client = aioredis.from_url(redis_url)
        try:
            return await body(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


def test_a_replay_name_is_taken_even_by_a_finished_replay(redis_url):
    async def body(redis):
        await replays.create(redis, replay(state="COMPLETED"))
        with pytest.raises(replays.Exists):
            await replays.create(redis, replay())
    run(redis_url, body)


def test_an_eleventh_active_replay_is_refused_but_finished_ones_do_not_count(redis_url):
    async def body(redis):
        for i in range(replays.MAX_ACTIVE):
            await replays.create(redis, replay(f"a{i}", state="RUNNING" if i % 2 else "STARTING"))
        await replays.create(redis, replay("done", state="COMPLETED"), cap=0)
        with pytest.raises(replays.OverCap):
            await replays.create(redis, replay("one-more"))
        assert await replays.get(redis, "one-more") is None
    run(redis_url, body)


async def _lead(redis) -> str:
    lease = Lease(redis, 10, REPLAY_LEADER_KEY, REPLAY_FENCE_KEY)
    assert await lease.hold()
    return lease.token


def test_a_step_writes_its_deliveries_and_checkpoint_together(redis_url, r):
    async def body(redis):
        await replays.create(redis, replay())
        token = await _lead(redis)
        read = await replays.get(redis, "r")
        new = msgspec.structs.replace(read.replay, state="RUNNING", checkpoint=Checkpoint(T0 * 1000, 1))
        await replays.step(redis, token, read, new, [("busway:{s}:q", b"one")])
    run(redis_url, body)
    assert [f[FIELD] for _, f in r.xrange("busway:{s}:q")] == [b"one"]
    assert json.loads(r.hget(API_REPLAYS, "r"))["checkpoint"] == {"score_ms": T0 * 1000, "done": 1}


def test_a_step_without_the_lease_writes_nothing(redis_url, r):
    async def body(redis):
        await replays.create(redis, replay())
        await _lead(redis)
        read = await replays.get(redis, "r")
        with pytest.raises(replays.NotLeader):
            await replays.step(redis, "not-my-token", read, read.replay, [("busway:{s}:q", b"one")])
    run(redis_url, body)
    assert not r.exists("busway:{s}:q")


def test_a_cancel_between_the_read_and_the_step_wins(redis_url, r):
    async def body(redis):
        await replays.create(redis, replay())
        token = await _lead(redis)
        read = await replays.get(redis, "r")
        await replays.request_cancel(redis, "r")
        with pytest.raises(replays.Changed):
            await replays.step(redis, token, read, msgspec.structs.replace(read.replay, state="RUNNING"),
                               [("busway:{s}:q", b"one")])
        return (await replays.get(redis, "r")).replay.state
    assert run(redis_url, body) == "CANCELLING"
    assert not r.exists("busway:{s}:q")


def test_cancel_of_a_finished_replay_is_refused_and_of_an_unknown_one_not_found(redis_url):
    async def body(redis):
        await replays.create(redis, replay(state="COMPLETED"))
        with pytest.raises(replays.Finished):
            await replays.request_cancel(redis, "r")
        with pytest.raises(replays.NotFound):
            await replays.request_cancel(redis, "nope")
    run(redis_url, body)


# --- the runner ----------------------------------------------------------------------------

RULE = Rule(name="again", event_pattern={"source": ["app"]}, targets=[FunctionTarget(id="t", function="probe.record")])
OTHER = Rule(name="other", event_pattern={"source": ["app"]}, targets=[FunctionTarget(id="t", function="probe.record")])


def router() -> Router:
    return Router(Config(buses={"default": Bus("default")}, rules={("default", "again"): RULE, ("default", "other"): OTHER},
                         functions={}, archives={"arch": Archive(name="arch")}))


def archive_events(redis, times: list[int]) -> list[str]:
    """Archive one event per epoch second in `times` (several may share one); their ids."""
    ids, archived = [], []
    for t in times:
        event = {"version": "0", "id": new_id(), "detail-type": "d", "source": "app", "account": "1",
                 "time": format_time(t), "region": "r", "resources": [], "detail": {"t": t}}
        ids.append(event["id"])
        archived.append(Archived("arch", t * 1000, json.dumps(event).encode()))
    return ids, archived


def replayed(r, rule: str = "again") -> list[dict]:
    entries = r.xrange(stream_key(target_key("default", rule, "t")))
    return [json.loads(f[FIELD])["event"] for _, f in entries]


async def until_done(runner: ReplayRunner, redis, name: str = "r", turns: int = 500) -> Replay:
    for _ in range(turns):
        await runner.tick()
        stored = await replays.get(redis, name)
        if not stored.replay.active:
            return stored.replay
        await asyncio.sleep(0.001)
    raise AssertionError("the replay never ended")


def test_the_runner_replays_exactly_the_window_with_replay_name_and_original_id_and_time(redis_url, r):
    times = [T0 - 1, T0, T0, T0 + 5, T0 + 99, T0 + 100, T0 + 200]  # the window is [T0, T0 + 100)
    ids, archived = archive_events(None, times)

    async def body(redis):
        await Queue(redis).enqueue([], archived)
        await replays.create(redis, replay())
        runner = ReplayRunner(redis, router, rate=1e6, max_page=2)
        return await until_done(runner, redis)
    done = run(redis_url, body)
    got = replayed(r)
    assert sorted(e["id"] for e in got) == sorted(ids[1:5])
    assert {e["replay-name"] for e in got} == {"r"}
    assert [e["time"] for e in got] == [format_time(t) for t in times[1:5]]
    assert (done.state, done.replayed, done.event_last_replayed_ms) == ("COMPLETED", 4, (T0 + 99) * 1000)


def test_the_runner_sends_only_to_the_rules_named(redis_url, r):
    _, archived = archive_events(None, [T0, T0 + 1])

    async def body(redis):
        await Queue(redis).enqueue([], archived)
        await replays.create(redis, replay(rules=["other"]))
        await until_done(ReplayRunner(redis, router, rate=1e6), redis)
    run(redis_url, body)
    assert (len(replayed(r, "other")), len(replayed(r, "again"))) == (2, 0)


def test_a_replay_whose_archive_is_gone_fails_with_the_reason(redis_url):
    async def body(redis):
        await replays.create(redis, replay(archive="gone"))
        return await until_done(ReplayRunner(redis, router, rate=1e6), redis)
    done = run(redis_url, body)
    assert (done.state, done.state_reason) == ("FAILED", "Archive gone does not exist.")


def test_a_second_runner_resumes_from_the_checkpoint_with_every_event_exactly_once(redis_url, r):
    # Many events share a second, so the checkpoint lands inside a run of equal scores.
    times = [T0 + i // 4 for i in range(40)]
    ids, archived = archive_events(None, times)

    async def body(redis):
        await Queue(redis).enqueue([], archived)
        await replays.create(redis, replay())
        first = ReplayRunner(redis, router, lock_ttl=0.3, rate=1e6, max_page=3)
        for _ in range(5):  # five steps of three, then it dies: never called again
            await first.tick()
        assert (await replays.get(redis, "r")).replay.replayed == 15
        second = ReplayRunner(redis, router, lock_ttl=0.3, rate=1e6, max_page=7)
        for _ in range(200):
            if await second._lease.hold():
                break
            await asyncio.sleep(0.02)
        return await until_done(second, redis)
    done = run(redis_url, body)
    got = [e["id"] for e in replayed(r)]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got)) == 40
    assert done.replayed == 40
