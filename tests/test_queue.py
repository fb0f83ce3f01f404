"""The delivery queue contract (bus.store.queue.Queue) that workers and brokers call, on a real Redis."""
from __future__ import annotations

import time

import msgspec
import pytest

from bus.config.model import FunctionSettings, FunctionTarget, RetryPolicy
from bus.store.deadletters import make_dead_letter
from bus.store.deliveries import Delivery, TargetRecord, decode_delivery, new_delivery
from bus.store.keys import FIELD, INBOX, REGISTRY, delayed_key, dlq_key, stream_key
from bus.store.followups import RetryAt, ToDeadLetters, ToInbox
from bus.store.queue import Queue
from tests.conftest import with_client

RECORD = TargetRecord(bus="default", rule="r", target=FunctionTarget(id="t", function="m.h", dead_letter=True,
                                                                     retry_policy=RetryPolicy(maximum_retry_attempts=2)),
                      function=FunctionSettings(timeout=5.0))


def delivery() -> Delivery:
    return new_delivery(b'{"id": "e1"}', RECORD, time.time())


def test_a_published_target_reads_back_as_the_same_record(redis_url):
    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        return await queue.targets()
    assert with_client(redis_url, body) == {RECORD.stream: RECORD}


def test_an_unreadable_registry_record_is_skipped_not_fatal(redis_url, r):
    r.hset(REGISTRY, "default/old/t", b'{"bus": "default", "rule": "old", "target": "t", "function": "m.h"}')

    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        return await queue.targets()
    assert list(with_client(redis_url, body)) == [RECORD.stream]


def test_an_enqueued_delivery_is_read_once_with_its_count(redis_url):
    d = delivery()

    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        await queue.enqueue([d])
        first = await queue.read("w1", [RECORD.stream], 10, 10)
        again = await queue.read("w2", [RECORD.stream], 10, 10)
        return first, again
    first, again = with_client(redis_url, body)
    assert [(t.stream, t.times_delivered, decode_delivery(t.fields[FIELD])) for t in first] == [(RECORD.stream, 1, d)]
    assert again == []


def test_finishing_writes_every_follow_up_and_only_the_first_finisher_wins(redis_url, r):
    d = delivery()
    letter = make_dead_letter(d, "TIMEOUT", "too slow", 3, "MaximumRetryAttemptsExhausted")

    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        await queue.enqueue([d])
        [taken] = await queue.read("w1", [RECORD.stream], 1, 10)
        follow = [RetryAt(123.0, d), ToDeadLetters("shared", letter), ToInbox(b'{"bus": "b", "event": {}}')]
        return (await queue.finish(RECORD, taken.entry_id, follow),
                await queue.finish(RECORD, taken.entry_id, follow))
    assert with_client(redis_url, body) == (True, False)
    assert r.xlen(RECORD.stream) == 0, "acked and deleted"
    assert r.zrange(delayed_key(RECORD.key), 0, -1, withscores=True) == [(msgspec.json.encode(d), 123000.0)]
    assert r.xlen(dlq_key("shared")) == 1 and r.xlen(INBOX) == 1, "written once, by the first finisher"


def test_a_given_back_delivery_is_claimable_at_once_with_its_count_restored(redis_url):
    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        await queue.enqueue([delivery()])
        taken = await queue.read("w1", [RECORD.stream], 1, 10)
        await queue.give_back("w1", taken)
        return await queue.claim("w2", RECORD.stream, idle_ms=60_000, count=10)
    [claimed] = with_client(redis_url, body)
    assert claimed.times_delivered == 1, "the read that never started does not count as an attempt"


def test_due_retries_move_back_into_the_stream_and_later_ones_wait(redis_url, r):
    now = time.time()

    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        await queue.enqueue([d := delivery()])
        [taken] = await queue.read("w1", [RECORD.stream], 1, 10)
        await queue.finish(RECORD, taken.entry_id, [RetryAt(now - 1, d), RetryAt(now + 3600, delivery())])
        await queue.move_due([RECORD])
    with_client(redis_url, body)
    assert r.xlen(RECORD.stream) == 1 and r.zcard(delayed_key(RECORD.key)) == 1


def test_reserved_concurrency_leases_stop_at_the_limit_and_free_on_release(redis_url):
    async def body(client):
        queue = Queue(client)
        expiry = int(time.time() * 1000) + 60_000
        got = [await queue.acquire("m.h", 2, token, expiry) for token in ("a", "b", "c")]
        await queue.release("m.h", "a")
        return got, await queue.acquire("m.h", 2, "c", expiry)
    assert with_client(redis_url, body) == ([True, True, False], True)


def test_queue_figures_count_depth_pending_delayed_and_dead_letters(redis_url):
    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        await queue.enqueue([delivery(), d := delivery()])
        [taken] = await queue.read("w1", [RECORD.stream], 1, 10)
        letter = make_dead_letter(d, "X", "y", 1, "MaximumRetryAttemptsExhausted")
        await queue.finish(RECORD, taken.entry_id, [RetryAt(time.time() + 60, d), ToDeadLetters(RECORD.key, letter)])
        return await queue.stats([RECORD]), await queue.dead_letter_depths()
    stats, depths = with_client(redis_url, body)
    figures = stats[RECORD.key]
    assert (figures.depth, figures.pending, figures.delayed) == (1, 0, 1)
    assert figures.oldest is not None and abs(figures.oldest - time.time()) < 60
    assert depths == {RECORD.key: 1}


def test_with_durability_replicated_and_no_replica_enqueue_fails_as_not_replicated(redis_url, r):
    from bus.store.scripts import NotReplicated
    delivery = Delivery(id="req-1", event=b'{"id":"e1"}', bus="default", rule="r", target="t1",
                        function="probe.record", first_enqueued=0.0, ingested=0.0, retries=0)

    async def body(client):
        with pytest.raises(NotReplicated):
            await Queue(client, replicas=1, wait_ms=50).enqueue([delivery])  # the suite's Redis has no replica
    with_client(redis_url, body)
    assert r.xlen(stream_key("default/r/t1")) == 1, "written on the primary all the same: the answer says so"


def test_concurrent_enqueues_share_calls_and_every_delivery_and_archive_copy_lands(redis_url, r):
    import asyncio

    from bus.store.keys import archive_bytes_key, archive_events_key
    from bus.store.queue import Archived
    events = [b'{"id": "g%d"}' % i for i in range(20)]

    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        await asyncio.gather(*(queue.enqueue([new_delivery(e, RECORD, time.time())], [Archived("arc", i, e)])
                               for i, e in enumerate(events)))
        return queue.group_commit.calls
    calls = with_client(redis_url, body)
    assert calls < len(events), "requests that waited went together"
    assert sorted(bytes(decode_delivery(f[FIELD]).event) for _, f in r.xrange(RECORD.stream)) == sorted(events)
    assert r.zrange(archive_events_key("arc"), 0, -1, withscores=True) == [(e, float(i)) for i, e in enumerate(events)]
    assert int(r.get(archive_bytes_key("arc"))) == sum(map(len, events))


def test_concurrent_enqueues_without_the_replicas_asked_for_all_fail_as_not_replicated(redis_url):
    import asyncio

    from bus.store.scripts import NotReplicated

    async def body(client):
        queue = Queue(client, replicas=1, wait_ms=50)  # the suite's Redis has no replica
        outcomes = await asyncio.gather(*(queue.enqueue([delivery()]) for _ in range(5)), return_exceptions=True)
        return outcomes, queue.group_commit.calls
    outcomes, calls = with_client(redis_url, body)
    assert [type(o) for o in outcomes] == [NotReplicated] * 5
    assert calls < 5


def test_waking_the_reader_ends_a_blocked_read_at_once_with_nothing_taken(redis_url, r):
    import asyncio

    async def body(client):
        queue = Queue(client)
        await queue.publish_targets([RECORD])
        read = asyncio.create_task(queue.read("w1", [RECORD.stream], 10, 60_000))  # would block a minute
        while not any(c.get("cmd") == "xreadgroup" for c in await client.client_list()):
            await asyncio.sleep(0.01)
        await queue.wake_reader()
        return await asyncio.wait_for(read, 10)
    assert with_client(redis_url, body) == []
    assert r.xpending(RECORD.stream, "busway")["pending"] == 0
