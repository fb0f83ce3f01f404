"""`bus tail`: the live view of events and what happened to them."""
import json
import subprocess
import sys

import pytest

from bus.store.keys import TAIL_ACTIVE, TRACE
from tests.conftest import wait_for
from tests.httpc import post

RULES = """
rules:
  - name: orders
    event_pattern: {source: [shop.orders]}
    targets:
      - {id: rec, function: probe.record}
  - name: failing
    event_pattern: {source: [shop.bad]}
    targets:
      - {id: bad, function: probe.fail, dead_letter: true,
         retry_policy: {maximum_retry_attempts: 0}}
"""


def start_tail(stack, *args: str) -> tuple[subprocess.Popen, object]:
    out = open(stack.root / "tail.out", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "bus", "tail", "--follow", *args, "--redis", stack.redis_url],
                            env=stack.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack.procs.append(proc)
    return proc, out


def tail_text(stack) -> str:
    return (stack.root / "tail.out").read_text()


def warm_up(stack) -> None:
    """Post orders until one's outcome shows: then broker and worker have both noticed the tail
    (each checks about once a second, later on a loaded machine)."""
    import time

    def outcome_seen() -> bool:
        post(stack.url + "/events", {"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {}})
        time.sleep(0.3)
        return "default/orders/rec attempt 1: success" in tail_text(stack)
    wait_for(outcome_seen, timeout=20, interval=0.2, what="an order's outcome in the tail")


def test_tail_follow_shows_matched_rules_targets_and_outcomes(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    stack.start_worker()
    start_tail(stack)
    wait_for(lambda: r.exists(TAIL_ACTIVE), what="tail registered")
    warm_up(stack)
    post(stack.url + "/events", [{"source": "shop.bad", "detail-type": "X", "detail": {}},
                                 {"source": "nobody", "detail-type": "X", "detail": {}}])
    text = wait_for(lambda: "dead_letter" in (t := tail_text(stack)) and t, what="outcomes in tail")
    assert "matched: orders → default/orders/rec" in text
    assert "default/orders/rec attempt 1: success" in text
    assert "default/failing/bad attempt 1: dead_letter (MaximumRetryAttemptsExhausted" in text
    assert "no rule matched" in text


@pytest.mark.cluster
def test_tail_filters_by_pattern(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    start_tail(stack, "--json", "--pattern", json.dumps({"source": ["shop.bad"]}))
    wait_for(lambda: r.exists(TAIL_ACTIVE), what="tail registered")

    def events() -> list[dict]:
        return [rec["event"] for rec in map(json.loads, tail_text(stack).splitlines()) if rec["kind"] == "event"]

    def probe_shown() -> bool:  # the broker notices the tail about once a second (later when loaded)
        post(stack.url + "/events", {"source": "shop.bad", "detail-type": "probe", "detail": {}})
        return bool(events())

    wait_for(probe_shown, timeout=15, interval=0.3, what="the broker tracing for the tail")
    post(stack.url + "/events", [{"source": "shop.orders", "detail-type": "O", "detail": {}},
                                 {"source": "shop.bad", "detail-type": "X", "detail": {}}])
    wait_for(lambda: any(e["detail-type"] == "X" for e in events()), what="the matching event's line")
    import time
    time.sleep(0.5)  # the other event of the request would have been written by now
    assert {e["source"] for e in events()} == {"shop.bad"}


def test_nothing_is_traced_while_nobody_tails(stack, r):
    stack.write_rules(RULES)
    stack.start_broker()
    post(stack.url + "/events", {"source": "shop.orders", "detail-type": "O", "detail": {}})
    assert r.xlen(TRACE) == 0
