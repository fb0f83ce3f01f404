"""Read-ahead: a worker holds up to --prefetch deliveries beyond its free slots, and gives them back."""
import signal
import time

from bus.store.keys import GROUP, stream_key
from tests.conftest import wait_for
from tests.httpc import post

RULES = """
rules:
  - name: r
    event_pattern: {source: [t]}
    targets:
      - id: t1
        function: probe.slow
        dead_letter: true
"""
STREAM = stream_key("default/r/t1")


def slow_events(n: int, seconds: float) -> list[dict]:
    return [{"source": "t", "detail-type": "T", "detail": {"seconds": seconds, "n": i}} for i in range(n)]


def pending_by_consumer(r) -> dict[str, int]:
    summary = r.xpending(STREAM, GROUP)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


def finished(stack) -> list[dict]:
    return [c for c in stack.records() if c["handler"] == "slow"]


def test_a_worker_holding_deliveries_never_runs_more_handlers_at_once_than_its_concurrency(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker(concurrency=2, extra=("--prefetch", "4"))
    post(stack.url + "/events", slow_events(8, 0.3))
    wait_for(lambda: len(finished(stack)) == 8, timeout=20, what="8 slow handlers")
    spans = [(c["start"], c["end"]) for c in finished(stack)]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2, f"at most 2 at once, saw {most}"


def test_sync_calls_queued_in_busy_slots_never_run_more_handlers_at_once_than_its_concurrency(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker(concurrency=2, extra=("--prefetch", "8"))
    for batch in range(6):  # fast calls: the worker queues them behind running ones
        post(stack.url + "/events", slow_events(10, 0.0005))
    wait_for(lambda: len(finished(stack)) == 60, timeout=20, what="60 quick handlers")
    spans = [(c["start"], c["end"]) for c in finished(stack)]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2, f"at most 2 at once, saw {most}"


def test_with_prefetch_zero_a_worker_reads_only_as_many_as_it_has_free_slots(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker(concurrency=1, extra=("--prefetch", "0"))
    post(stack.url + "/events", slow_events(3, 0.5))
    stack.wait_records(1)
    time.sleep(0.2)
    assert list(pending_by_consumer(r).values()) == [1]


def test_sigterm_gives_held_deliveries_back_and_their_attempt_stays_the_first(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    first = stack.start_worker(concurrency=1, extra=("--prefetch", "3"))
    post(stack.url + "/events", slow_events(4, 1.0))
    [started] = stack.wait_records(1)
    wait_for(lambda: list(pending_by_consumer(r).values()) == [4], what="one running and three held")
    first.send_signal(signal.SIGTERM)
    stack.start_worker(concurrency=4)
    assert first.wait(15) == 0
    done = wait_for(lambda: len(finished(stack)) == 4 and finished(stack), timeout=15, what="all 4 handled")
    by_worker = {c["context"]["worker"] for c in done}
    assert len(by_worker) == 2, "the held three ran on the second worker"
    assert [c["context"]["attempt"] for c in done] == [1, 1, 1, 1], "a held delivery that never ran is no attempt"
    wait_for(lambda: r.xlen(STREAM) == 0, what="every delivery acknowledged and deleted")  # the ack follows the handler


def test_deliveries_held_while_all_slots_stay_busy_go_to_an_idle_worker(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker(concurrency=1, extra=("--prefetch", "3"))
    post(stack.url + "/events", slow_events(4, 4.0))
    [started] = stack.wait_records(1)
    wait_for(lambda: list(pending_by_consumer(r).values()) == [4], what="one running and three held")
    stack.start_worker(concurrency=4)
    others = wait_for(lambda: len(starts := [c for c in stack.records() if c["handler"] == "slow_start"]) == 4
                      and starts[1:], timeout=10, what="the held three started elsewhere")
    assert {c["context"]["worker"] for c in others} != {started["context"]["worker"]}
    # The busy slot frees 4 s after `started`: anything earlier did not wait for it (a loaded machine
    # may take a few seconds to start the second worker and hand the held ones over).
    assert all(c["t"] < started["t"] + 4.0 for c in others), "they did not wait for the busy worker's slot"
    assert [c["context"]["attempt"] for c in others] == [1, 1, 1]
