"""With Sentinel (high availability without sharding), busway finds the primary by asking the
Sentinel, and after the primary dies it carries on with the promoted replica, without a restart."""
from __future__ import annotations

import time

import pytest

from bus.local.sentinel import LocalSentinel
from tests.conftest import Stack, wait_for
from tests.httpc import post

RULES = """
rules:
  - name: r
    event_pattern: {source: [t]}
    targets:
      - {id: t1, function: probe.record}
"""


def event(i: int) -> dict:
    return {"source": "t", "detail-type": "T", "detail": {"i": i}}


@pytest.mark.timeout(180)
def test_through_sentinel_events_are_handled_before_and_after_the_primary_is_killed(tmp_path):
    sentinel = LocalSentinel(tmp_path / "redis").start()
    stack = Stack(sentinel.url, tmp_path)
    try:
        stack.write_rules(RULES)
        stack.start_broker()
        stack.start_worker()
        status, body = post(stack.url + "/events", [event(i) for i in range(5)])
        assert status == 200 and body["FailedEntryCount"] == 0
        stack.wait_records(5)
        time.sleep(1.5)  # the replica has caught up (replication is asynchronous)
        sentinel.primary.kill()
        wait_for(lambda: sentinel.primary_port() == sentinel.replica.port, timeout=30, what="the replica promoted")
        answered = []
        deadline = time.monotonic() + 30
        while len(answered) < 5 and time.monotonic() < deadline:  # the broker finds the new primary
            status, body = post(stack.url + "/events", event(100 + len(answered)))
            if status == 200 and body["FailedEntryCount"] == 0:
                answered.append(body["Entries"][0]["EventId"])
            else:
                time.sleep(0.2)
        assert len(answered) == 5, "the broker writes to the promoted replica"
        handled = wait_for(lambda: {c["event"]["id"] for c in stack.records()} >= set(answered) and stack.records(),
                           timeout=30, what="the events after the failover handled")
        assert len(handled) >= 10
    finally:
        stack.stop()
        sentinel.stop()
