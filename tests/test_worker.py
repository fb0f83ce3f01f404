"""Workers: how deliveries are consumed from Redis and handed to handlers."""
from bus.store.keys import FIELD, GROUP, WORKERS, stream_key
from tests.conftest import wait_for
from tests.httpc import post

RULES = """
rules:
  - name: orders
    event_pattern: {source: [shop.orders]}
    targets:
      - {id: rec, function: probe.record}
"""


def order(i: int) -> dict:
    return {"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {"n": i}}


def test_two_workers_on_one_stream_handle_each_event_once(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker(concurrency=4)
    stack.start_worker(concurrency=4)
    wait_for(lambda: r.zcard(WORKERS) == 2, what="both workers running")
    ids = []
    for batch in range(5):
        _, body = post(stack.url + "/events", [order(batch * 10 + i) for i in range(10)])
        ids += [e["EventId"] for e in body["Entries"]]
    calls = stack.wait_records(50)
    wait_for(lambda: r.xlen(stream_key("default/orders/rec")) == 0, what="stream emptied")
    handled = [c["event"]["id"] for c in stack.records()]
    assert sorted(handled) == sorted(ids)
    assert len({c["context"]["worker"] for c in calls}) == 2, "both workers should have taken work"


def test_successful_delivery_is_acknowledged_and_deleted(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker()
    post(stack.url + "/events", order(1))
    stack.wait_records(1)
    key = stream_key("default/orders/rec")
    wait_for(lambda: r.xlen(key) == 0, what="entry deleted")
    assert r.xpending(key, GROUP)["pending"] == 0


def test_events_posted_before_any_worker_runs_are_delivered_when_one_starts(stack):
    stack.write_rules(RULES)
    stack.start_broker()
    post(stack.url + "/events", order(1))
    stack.start_worker()
    [call] = stack.wait_records(1)
    assert call["event"]["detail"] == {"n": 1}


def test_dead_consumers_with_nothing_pending_are_pruned(stack, r, monkeypatch):
    import asyncio

    import redis.asyncio as aioredis

    from bus.store import queue as queue_module
    from bus.worker.loop import Worker
    stack.write_rules(RULES)
    stack.start_broker()
    key = stream_key("default/orders/rec")
    r.xadd(key, {FIELD: b"x"})
    r.xreadgroup(GROUP, "dead-idle", {key: ">"}, count=1)  # a worker that read, finished, and died
    r.xack(key, GROUP, r.xrange(key)[0][0])
    r.xadd(key, {FIELD: b"y"})
    r.xreadgroup(GROUP, "dead-pending", {key: ">"}, count=1)  # died holding an entry: must stay
    monkeypatch.setattr(queue_module, "DEAD_CONSUMER_IDLE_MS", 0)

    async def prune():
        client = aioredis.from_url(stack.redis_url)
        worker = Worker(queue_module.Queue(client), None)
        await worker._refresh_targets()
        await asyncio.sleep(0.01)
        await worker._prune()
        await client.aclose()

    asyncio.run(prune())
    assert {c["name"].decode() for c in r.xinfo_consumers(key, GROUP)} == {"dead-pending"}


def test_a_worker_reads_a_target_published_after_its_last_registry_read_without_waiting_for_the_full_refresh(redis_url):
    import asyncio

    import redis.asyncio as aioredis

    from bus.store import queue as queue_module
    from bus.worker import loop
    from bus.worker.loop import Worker
    from tests.test_queue import RECORD

    async def body():
        client = aioredis.from_url(redis_url)
        worker = Worker(queue_module.Queue(client), None)
        await worker._refresh_targets()
        before = dict(worker.targets)
        await queue_module.Queue(client).publish_targets([RECORD])  # as a broker would
        await asyncio.sleep(loop.TARGETS_CHECK_SECONDS)
        await worker._refresh_targets()  # long before REFRESH_SECONDS: the counter moved
        after = dict(worker.targets)
        await client.aclose()
        return before, after
    before, after = asyncio.run(body())
    assert before == {} and list(after) == [RECORD.stream]
