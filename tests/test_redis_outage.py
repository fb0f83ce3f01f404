"""Workers survive Redis outages: a redis-server SIGKILLed mid-load and restarted on the same
port and AOF (appendfsync always, so nothing Redis answered is lost).

Each test starts its own RedisProcess (never the session one) so it may kill it. Only
correctness is asserted here; bench/redis_outage.py measures the recovery time.
"""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import pytest
import redis as redis_lib

from bus.local.redisproc import RedisProcess, free_port
from bus.store.connect import Backoff
from bus.store.keys import GROUP, stream_key
from tests.conftest import Stack, wait_for
from tests.httpc import post

RULES = """
rules:
  - name: quick
    event_pattern: {source: [quick]}
    targets: [{id: t, function: probe.record, dead_letter: true}]
  - name: slow
    event_pattern: {source: [slow]}
    targets: [{id: t, function: probe.slow, dead_letter: true}]
"""
STREAMS = [stream_key("default/quick/t"), stream_key("default/slow/t")]


def healthz(port: int) -> int | None:
    """The worker's /healthz status code, or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


class HealthLog:
    """Polls /healthz in a thread; `seen` is the sequence of distinct answers."""

    def __init__(self, port: int):
        self.port, self.seen, self._stop = port, [], threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            status = healthz(self.port)
            if status is not None and (not self.seen or self.seen[-1] != status):
                self.seen.append(status)
            time.sleep(0.05)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        return self.seen


class Producer:
    """Posts quick events in batches until stopped; keeps the ids the broker accepted."""

    def __init__(self, url: str):
        self.url, self.accepted, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            batch = [{"source": "quick", "detail-type": "T", "detail": {"i": i + k}} for k in range(5)]
            i += 5
            try:
                status, body = post(self.url + "/events", batch)
            except Exception:  # Redis is down: the broker refuses or fails the request
                status, body = 0, {}
            if status == 200 and not body.get("FailedEntryCount"):
                self.accepted.extend(e["EventId"] for e in body["Entries"])
            time.sleep(0.02)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return self.accepted


@pytest.fixture
def own_redis(tmp_path):
    server = RedisProcess(tmp_path / "redis", fsync="always").start()
    yield server
    server.stop()


def drained(url: str) -> bool:
    client = redis_lib.Redis.from_url(url)
    try:
        return all(client.xlen(s) == 0 and client.xpending(s, GROUP)["pending"] == 0 for s in STREAMS)
    finally:
        client.close()


def test_worker_outlives_a_redis_kill_and_handles_every_accepted_event_once_per_handler_run(own_redis, tmp_path):
    stack = Stack(own_redis.url, tmp_path)
    try:
        stack.write_rules(RULES)
        stack.start_broker()
        port = free_port()
        # A 1 s lease: after the outage the slow entries look lapsed, so reclaims race renewals.
        worker = stack.start_worker(concurrency=4, metrics_port=port, extra=("--lease-seconds", "1"))
        wait_for(lambda: healthz(port) == 200, what="worker /healthz ok")
        health = HealthLog(port)
        producer = Producer(stack.url)
        stack.wait_records(20)
        # One handler returns during the outage, one runs across it.
        _, body = post(stack.url + "/events", [{"source": "slow", "detail-type": "T", "detail": {"seconds": s}}
                                               for s in (1.0, 2.5)])
        returns_during, runs_across = [e["EventId"] for e in body["Entries"]]
        wait_for(lambda: len(runs(stack, "slow_start")) == 2, what="both slow handlers began")

        own_redis.kill()  # mid-load, mid-handler
        wait_for(lambda: 503 in health.seen, what="/healthz 503 while Redis is down")
        wait_for(lambda: runs(stack, "slow"), what="the shorter slow handler returned")
        time.sleep(1.0)  # its FINISH fails for a while, and so do reads, renewals and reclaims
        assert worker.poll() is None, "the worker is still running while Redis is down"
        restarted_at = time.time()
        own_redis.start()  # same port, same AOF

        wait_for(lambda: health.seen[-1] == 200, what="/healthz ok again")
        time.sleep(0.5)
        accepted = set(producer.stop())
        handled = wait_for(lambda: accepted <= (ids := {c["event"]["id"] for c in stack.records()}) and ids,
                           timeout=20, what="every accepted event handled")
        wait_for(lambda: len(runs(stack, "slow")) >= 2, what="the longer slow handler returned")
        wait_for(lambda: drained(own_redis.url), timeout=10, what="every delivery finished in Redis")
        seen = health.stop()
        slow_runs = {c["event"]["id"]: c for c in runs(stack, "slow")}
        slow_starts = [c["event"]["id"] for c in runs(stack, "slow_start")]
    finally:
        stack.stop()
    assert worker.returncode in (None, 0), "the worker never exited on its own"
    assert accepted <= handled
    assert seen[:1] == [200] and 503 in seen and seen[-1] == 200 and seen.index(503) < len(seen) - 1, seen
    assert sorted(slow_starts) == sorted([returns_during, runs_across]), \
        "each slow handler ran once: outcomes reached during the outage were written, running ones not restarted"
    assert slow_runs[returns_during]["end"] < restarted_at, "it returned while Redis was down"


def runs(stack: Stack, handler: str) -> list[dict]:
    return [c for c in stack.records() if c["handler"] == handler]


def test_worker_started_before_redis_waits_for_it_and_then_delivers(tmp_path):
    server = RedisProcess(tmp_path / "redis", fsync="always")  # not started yet
    stack = Stack(server.url, tmp_path)
    try:
        port = free_port()
        worker = stack.start_worker(metrics_port=port)
        wait_for(lambda: healthz(port) == 503, what="/healthz 503 with no Redis")
        time.sleep(0.5)
        assert worker.poll() is None, "the worker waits for Redis instead of exiting"
        server.start()
        stack.write_rules(RULES)
        stack.start_broker()
        wait_for(lambda: healthz(port) == 200, what="/healthz ok once Redis answers")
        post(stack.url + "/events", [{"source": "quick", "detail-type": "T", "detail": {}}])
        [call] = stack.wait_records(1)
        assert call["handler"] == "record"
    finally:
        stack.stop()
        server.stop()


def test_sigterm_while_redis_is_down_logs_the_unwritten_outcome_and_it_is_redelivered(own_redis, tmp_path):
    stack = Stack(own_redis.url, tmp_path)
    try:
        stack.write_rules(RULES)
        stack.start_broker()
        first = stack.start_worker(concurrency=1, extra=("--lease-seconds", "1", "--grace-seconds", "1"))
        post(stack.url + "/events", [{"source": "slow", "detail-type": "T", "detail": {"seconds": 0.5}}])
        wait_for(lambda: runs(stack, "slow_start"), what="the slow handler began")
        own_redis.kill()
        wait_for(lambda: runs(stack, "slow"), what="it returned while Redis was down")
        first.terminate()
        assert first.wait(15) == 0, "a worker stops on SIGTERM even while Redis is down"
        assert "not written: Redis unreachable" in stack.logs(), "the outcome it could not write is logged"
        own_redis.start()
        stack.start_worker(concurrency=1, extra=("--lease-seconds", "1"))
        wait_for(lambda: len(runs(stack, "slow")) == 2, timeout=15, what="redelivered after its lease lapsed")
        wait_for(lambda: drained(own_redis.url), what="and finished")
    finally:
        stack.stop()
    assert [c["context"]["attempt"] for c in runs(stack, "slow")] == [1, 2]


def test_reconnect_backoff_doubles_from_50_ms_to_a_1_s_cap_with_jitter():
    backoff = Backoff()
    waits = [backoff.next() for _ in range(8)]
    caps = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert all(cap / 2 <= w <= cap for w, cap in zip(waits, caps)), waits
    backoff.reset()
    assert backoff.next() <= 0.05, "an answered call starts the next outage's backoff over"


def _reserved_call(tmp_path):
    from bus.config.model import FunctionSettings, FunctionTarget
    from bus.store.deliveries import TargetRecord, new_delivery
    from bus.worker.invoker import Invocation
    record = TargetRecord(bus="default", rule="r", target=FunctionTarget(id="t", function="probe.record"),
                          function=FunctionSettings(reserved_concurrency=2))
    return Invocation(record, new_delivery(b'{"id": "e"}', record, time.time()), 1, "w:1-0", lambda: None)


def test_no_concurrency_lease_while_redis_is_away_throttles_without_running_the_handler(tmp_path):
    import asyncio

    import redis.asyncio as aioredis

    from bus.store.queue import Queue
    from bus.worker.functions import FunctionLoader
    from bus.worker.invoker import THROTTLED
    from bus.worker.invokers.function import FunctionInvoker

    async def attempt():
        client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
        invoker = FunctionInvoker(Queue(client), FunctionLoader(str(tmp_path)), "w", 3.0)
        call = _reserved_call(tmp_path)
        try:
            return await invoker.invoke(call, invoker.place(call, True))
        finally:
            await invoker.close()
            await client.aclose()
    result = asyncio.run(attempt())
    assert result.kind == THROTTLED, "waits like a throttle (no attempt used) instead of failing the worker"


def test_a_lease_that_cannot_be_released_during_an_outage_is_released_when_redis_is_back(own_redis, tmp_path):
    import asyncio

    import redis.asyncio as aioredis

    from bus.store.keys import concurrency_key
    from bus.store.queue import Queue
    from bus.worker.functions import FunctionLoader
    from bus.worker.invokers.function import FunctionInvoker

    async def scenario():
        client = aioredis.from_url(own_redis.url, socket_connect_timeout=0.5)
        invoker = FunctionInvoker(Queue(client), FunctionLoader(str(tmp_path)), "w", 3.0)
        assert await invoker.queue.acquire("probe.record", 2, "w:1-0", int(time.time() * 1000) + 60_000)
        own_redis.kill()
        await invoker._release("probe.record", "w:1-0")  # must not raise while Redis is away
        own_redis.start()
        for _ in range(100):
            if not invoker._releasing:
                break
            await asyncio.sleep(0.05)
        held = await client.zrange(concurrency_key("probe.record"), 0, -1)
        await invoker.close()
        await client.aclose()
        return held
    assert asyncio.run(scenario()) == []
