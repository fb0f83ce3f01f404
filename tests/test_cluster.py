"""On Redis Cluster: targets spread over every shard, a request's deliveries on several slots are
each written once (also when it is retried), and workers read every shard.

Every test here runs on the suite's own 3-primary, 3-replica cluster (tests/conftest.py); the
delivery, retry, DLQ, destination, schedule and API-rule tests marked `cluster` elsewhere run on
it as well as on one Redis.
"""
from __future__ import annotations

import json
import urllib.request

import pytest

from bus.store.deliveries import Delivery
from bus.store.keys import key_slot, once_key, stream_key
from bus.store.once import write_once
from bus.store.queue import Queue
from tests.conftest import with_client
from tests.httpc import post

TARGETS = 12  # as 3 rules of 4 targets (a rule has at most 5)


@pytest.fixture
def backend() -> str:
    return "cluster"


def fan_out_rules(n: int = TARGETS) -> str:
    """Rules r0, r1, r2 on one pattern, with targets t0..t<n-1> among them."""
    rules = []
    for k in range(3):
        targets = "\n".join(f"      - {{id: t{i}, function: probe.record}}" for i in range(k, n, 3))
        rules.append(f"  - name: r{k}\n    event_pattern: {{source: [t]}}\n    targets:\n{targets}")
    return "rules:\n" + "\n".join(rules) + "\n"


def target(i: int) -> str:
    return stream_key(f"default/r{i % 3}/t{i}")


def event(i: int) -> dict:
    return {"source": "t", "detail-type": "T", "detail": {"i": i}}


def test_the_keys_slot_is_the_one_the_cluster_computes(r):
    for key in ["busway:{default/r/t1}:q", "busway:{api}:rules", "busway:{inbox}:items", "no-tag", "a{}b", "x{y"]:
        assert key_slot(key) == r.cluster_keyslot(key), key


def test_a_once_marker_lies_on_the_slot_it_is_made_for(r):
    for slot in (0, 1, 5000, 16383):
        assert r.cluster_keyslot(once_key(slot, "put/x")) == slot


def test_the_targets_of_a_rule_land_on_every_primary(stack, r):
    stack.write_rules(fan_out_rules())
    stack.start_broker()
    primaries = {r.get_node_from_key(target(i)).name for i in range(TARGETS)}
    assert len(primaries) == 3, primaries
    for i in range(TARGETS):  # each stream (with its group) exists on the node that owns its slot
        assert r.exists(target(i))


def test_an_event_for_targets_on_every_shard_is_handled_once_by_each(stack):
    stack.write_rules(fan_out_rules())
    stack.start_broker()
    stack.start_worker()
    ids = []
    for batch in range(3):
        status, body = post(stack.url + "/events", [event(batch * 10 + i) for i in range(10)])
        assert status == 200 and body["FailedEntryCount"] == 0
        ids += [e["EventId"] for e in body["Entries"]]
    records = stack.wait_records(30 * TARGETS, timeout=30)
    deliveries = [c["context"]["aws_request_id"] for c in records]  # one id per (event, target)
    assert len(deliveries) == len(set(deliveries)) == 30 * TARGETS, "each event once by each target"
    per_event = {}
    for c in records:
        per_event[c["event"]["id"]] = per_event.get(c["event"]["id"], 0) + 1
    assert per_event == {e: TARGETS for e in ids}


def _put_events(url: str, entries: list[dict], invocation: str) -> dict:
    body = json.dumps({"Entries": [{"Source": e["source"], "DetailType": e["detail-type"],
                                    "Detail": json.dumps(e["detail"])} for e in entries]}).encode()
    request = urllib.request.Request(url + "/", data=body, method="POST", headers={
        "X-Amz-Target": "AWSEvents.PutEvents", "Content-Type": "application/x-amz-json-1.1",
        "amz-sdk-invocation-id": invocation})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def test_a_put_events_retried_with_the_same_invocation_id_gets_the_same_event_ids_and_writes_nothing_twice(stack, r):
    stack.write_rules(fan_out_rules())
    stack.start_broker()  # no worker: the streams keep what was written
    entries = [event(i) for i in range(5)]
    first = _put_events(stack.url, entries, "3f1c0de2-0000-4000-8000-000000000001")
    again = _put_events(stack.url, entries, "3f1c0de2-0000-4000-8000-000000000001")
    other = _put_events(stack.url, entries, "3f1c0de2-0000-4000-8000-000000000002")
    assert first["Entries"] == again["Entries"], "a retry answers the ids of the first try"
    assert {e["EventId"] for e in other["Entries"]}.isdisjoint(e["EventId"] for e in first["Entries"])
    assert [r.xlen(target(i)) for i in range(TARGETS)] == [10] * TARGETS, \
        "5 events of the first request and 5 of the other on each target, none of the retry's"


def _delivery(target: int, n: int) -> Delivery:
    return Delivery(id=f"req-{target}-{n}", event=b'{"id":"e%d"}' % n, bus="default", rule=f"r{target % 3}",
                    target=f"t{target}", function="probe.record", first_enqueued=0.0, ingested=0.0, retries=0)


def test_a_request_written_on_some_slots_only_is_completed_by_its_retry_with_no_slot_twice(redis_url, r):
    deliveries = [_delivery(t, 0) for t in range(TARGETS)]

    async def body(client):
        queue = Queue(client)
        calls = queue._enqueue_calls(deliveries, [])
        assert len(calls) > 1, "the targets lie on several slots"
        written_first = dict(list(calls.items())[: len(calls) // 2])
        await write_once(client, written_first, "put/partial")  # as if the other slots' node had failed
        await queue.enqueue(deliveries, step="put/partial")  # the client's retry
        await queue.enqueue(deliveries, step="put/partial")  # and another
    with_client(redis_url, body)
    assert [r.xlen(target(i)) for i in range(TARGETS)] == [1] * TARGETS


def test_a_request_without_an_id_is_written_whole_each_time_it_is_sent(redis_url, r):
    deliveries = [_delivery(t, 0) for t in range(TARGETS)]

    async def body(client):
        queue = Queue(client)
        await queue.enqueue(deliveries)
        await queue.enqueue(deliveries)  # no id: another request (at least once, as on one Redis)
    with_client(redis_url, body)
    assert [r.xlen(target(i)) for i in range(TARGETS)] == [2] * TARGETS


def test_with_durability_replicated_a_request_to_every_shard_is_confirmed_by_their_replicas(redis_url, r):
    deliveries = [_delivery(t, 0) for t in range(TARGETS)]

    async def body(client):
        await Queue(client, replicas=1).enqueue(deliveries, step="put/replicated")
    with_client(redis_url, body)  # NotReplicated would raise: every primary has a replica in sync
    assert [r.xlen(target(i)) for i in range(TARGETS)] == [1] * TARGETS


def test_an_idempotency_key_on_post_events_names_the_request_and_one_too_long_is_ignored(stack, r):
    stack.write_rules(fan_out_rules())
    stack.start_broker()
    entries = [event(i) for i in range(3)]
    first = post(stack.url + "/events", entries, headers={"Idempotency-Key": "order-7"})
    again = post(stack.url + "/events", entries, headers={"Idempotency-Key": "order-7"})
    assert first == again and first[0] == 200, "a retry with the same key answers the same EventIds"
    long_key = "k" * 200  # over 128 characters: not kept, so each request is a new one (accepted, not refused)
    one, two = (post(stack.url + "/events", entries, headers={"Idempotency-Key": long_key}) for _ in range(2))
    assert one[0] == two[0] == 200 and one[1]["Entries"] != two[1]["Entries"]
    assert [r.xlen(target(i)) for i in range(TARGETS)] == [9] * TARGETS, "3 + 0 + 3 + 3 per target"


def test_a_local_cluster_gives_each_node_its_own_port_when_random_picks_repeat(monkeypatch, tmp_path):
    import bus.local.cluster as local_cluster
    picks = iter([20001, 20001, 20001, 20002, 20002, 20003])
    monkeypatch.setattr(local_cluster.random, "choice", lambda _ports: next(picks))
    monkeypatch.setattr(local_cluster, "port_free", lambda _host, _port: True)
    cluster = local_cluster.LocalCluster(tmp_path, primaries=3, replicas=0)
    assert [n.port for n in cluster.nodes] == [20001, 20002, 20003]
