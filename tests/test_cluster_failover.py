"""A primary of the Redis Cluster is SIGKILLed under load: its replica is promoted, the broker and
the worker carry on without a restart, and with --durability replicated no answered event is lost.

Each test starts a cluster of its own (3 primaries, 3 replicas, cluster-node-timeout 1 s) in its
temp dir, and the figures (answered / handled / lost / duplicated, seconds to recover) are printed.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from bus.local.cluster import LocalCluster
from bus.store.keys import stream_key
from tests.conftest import Stack
from tests.httpc import post

RULES = "rules:\n" + "\n".join(
    f"  - name: r{k}\n    event_pattern: {{source: [t]}}\n    targets:\n"
    f"      - {{id: a{k}, function: probe.record}}\n      - {{id: b{k}, function: probe.record}}"
    for k in range(3)) + "\n"
TARGETS = 6
BATCHES, PAUSE = 200, 0.02  # 2,000 events over ~4 s or more
KILL_AFTER = 60  # batches answered before the primary is killed


@dataclass
class Load:
    answered: dict[str, float] = field(default_factory=dict)  # event id -> when its answer came
    refused: int = 0  # requests answered with an error (retryable: nothing of them was accepted)
    killed: threading.Event = field(default_factory=threading.Event)


def produce(url: str, load: Load) -> None:
    for batch in range(BATCHES):
        if batch == KILL_AFTER:
            load.killed.set()
        status, body = post(url + "/events", [{"source": "t", "detail-type": "T", "detail": {"b": batch, "i": i}}
                                              for i in range(10)])
        now = time.time()
        if status == 200:
            load.answered.update((e["EventId"], now) for e in body["Entries"] if "EventId" in e)
        else:
            load.refused += 1
        time.sleep(PAUSE)


def settle(stack: Stack, answered: int, quiet: float = 5.0, timeout: float = 60.0) -> None:
    """Until every answered event was handled, or nothing more was handled for `quiet` seconds
    (with `acked`, the events a dead primary took with it never come)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len({c["event"]["id"] for c in stack.records()})
        if n >= answered:
            return
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet:
            return
        time.sleep(0.2)


def _longest_gap(load: Load) -> float:
    """The longest time between two answered requests: how long the clients saw no success."""
    times = sorted(set(load.answered.values()))
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def run_failover(tmp_path, durability: str) -> dict:
    cluster = LocalCluster(tmp_path / "cluster", primaries=3, replicas=1, node_timeout_ms=1000).start()
    stack = Stack(cluster.url, tmp_path)
    try:
        stack.write_rules(RULES)
        stack.start_broker(extra=("--durability", durability))
        stack.start_worker()
        load = Load()
        producer = threading.Thread(target=produce, args=(stack.url, load))
        producer.start()
        assert load.killed.wait(30), "the load never got going"
        victim = cluster.owner(stream_key("default/r0/a0"))
        victim.kill()  # SIGKILL (and reaped): no AOF flush, no failover handshake
        killed_at = time.time()
        promoted = cluster.wait_failed_over(stream_key("default/r0/a0"), victim, timeout=30)
        # As a supervisor would: the dead node comes back and rejoins as the new primary's replica.
        # Until then its shard has no replica, so with `replicated` its writes are refused (500), not
        # answered: nothing answered is unsafe, but that shard is unavailable meanwhile.
        victim.start()
        producer.join(120)
        expected = {(e, t) for e in load.answered for t in range(TARGETS)}
        settle(stack, len(load.answered))
        records = stack.records()
        deliveries = [c["context"]["aws_request_id"] for c in records]
        handled = {c["event"]["id"] for c in records}
        lost = set(load.answered) - handled
        figures = dict(durability=durability, answered=len(load.answered), refused_requests=load.refused,
                       handled=len(handled), lost=len(lost), duplicated=len(deliveries) - len(set(deliveries)),
                       deliveries=len(set(deliveries)), expected_deliveries=len(expected),
                       promoted_s=round(promoted, 2), longest_gap_s=round(_longest_gap(load), 2),
                       lost_answered_within_s_of_kill=round(max((killed_at - load.answered[e] for e in lost), default=0), 3))
        print(figures)
        return figures
    finally:
        stack.stop()
        cluster.stop()


@pytest.mark.timeout(240)
def test_with_durability_replicated_a_primary_killed_under_load_loses_no_answered_event(tmp_path):
    figures = run_failover(tmp_path, "replicated")
    assert figures["lost"] == 0, figures
    assert figures["deliveries"] >= figures["expected_deliveries"], "every target got every answered event"
    assert figures["answered"] > 10 * KILL_AFTER, "requests were answered after the failover too"


@pytest.mark.timeout(240)
def test_with_durability_acked_a_primary_killed_under_load_loses_only_events_answered_just_before_it(tmp_path):
    figures = run_failover(tmp_path, "acked")
    # Acknowledged by the primary, not yet on its replica when it died: only events answered in the
    # last moments before the kill can be gone (replication lags by well under a second here).
    assert figures["lost_answered_within_s_of_kill"] < 1.0, figures
    assert figures["answered"] > 10 * KILL_AFTER, "requests were answered after the failover too"
