"""Test fixtures: a real redis-server the suite starts itself, and real broker/worker processes.

The Redis is ours (free port, temp dir), so flushing it between tests is allowed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import redis as redis_lib

from bus.local.redisproc import RedisProcess, free_port

FUNCTIONS = Path(__file__).parent / "functions"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisProcess(tmp_path_factory.mktemp("redis"), fsync="everysec").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A 3-primary, 3-replica Redis Cluster of our own (started once per test process, if needed)."""
    from bus.local.cluster import LocalCluster
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


def pytest_generate_tests(metafunc):
    """A test marked `cluster` runs twice: on one Redis and on the Redis Cluster."""
    if metafunc.definition.get_closest_marker("cluster") and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["redis", "cluster"], indirect=True)


@pytest.fixture
def backend(request) -> str:
    return getattr(request, "param", "redis")


def sync_client(url: str):
    """A plain (blocking) client for `url`: redis-py's cluster client for redis+cluster://."""
    if url.startswith("redis+cluster://"):
        host, port = url.removeprefix("redis+cluster://").split(",")[0].split(":")
        return redis_lib.RedisCluster(host=host, port=int(port))
    return redis_lib.Redis.from_url(url)


@pytest.fixture
def redis_url(backend, request) -> str:
    if backend == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        for port in cluster.primary_ports():
            client = redis_lib.Redis(port=port)
            client.flushall()
            client.close()
        return cluster.url
    server = request.getfixturevalue("redis_server")
    client = redis_lib.Redis.from_url(server.url)
    client.flushall()
    client.close()
    return server.url


@pytest.fixture
def r(redis_url):
    client = sync_client(redis_url)
    yield client
    client.close()


def with_client(redis_url: str, body: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `body(client)` with a fresh asyncio Redis client, closed afterwards; its result."""
    import asyncio

    from bus.store.connect import connect

    async def main() -> Any:
        client = connect(redis_url)
        try:
            return await body(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Stack:
    """Broker and worker processes against the test Redis; handlers record into out_dir."""

    def __init__(self, redis_url: str, root: Path):
        self.redis_url = redis_url
        self.root = root
        self.rules_dir = root / "rules"
        self.out_dir = root / "out"
        self.rules_dir.mkdir(exist_ok=True)
        self.out_dir.mkdir(exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.port: int | None = None
        self.env = dict(os.environ, BUSWAY_TEST_OUT=str(self.out_dir), PYTHONUNBUFFERED="1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_rules(self, text: str, name: str = "rules.yaml") -> None:
        (self.rules_dir / name).write_text(text)

    def start_broker(self, extra: tuple[str, ...] = ()) -> "Stack":
        """`extra`: more `bus serve` flags, e.g. ("--credentials", path)."""
        self.port = free_port()
        self._spawn(["serve", "--rules", str(self.rules_dir), "--port", str(self.port), *extra], "broker")
        wait_for(lambda: _healthy(self.url), what="broker /healthz")
        return self

    def start_worker(self, concurrency: int = 10, metrics_port: int = 0, name: str = "worker",
                     extra: tuple[str, ...] = ()) -> subprocess.Popen:
        return self._spawn(["worker", "--functions", str(FUNCTIONS), "--concurrency", str(concurrency),
                            "--metrics-port", str(metrics_port), *extra], name)

    def bus(self, *args: str) -> subprocess.CompletedProcess:
        """Run a `bus` CLI command against the test Redis."""
        return subprocess.run([sys.executable, "-m", "bus", *args, "--redis", self.redis_url],
                              env=self.env, capture_output=True, text=True, timeout=30)

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "bus", *args, "--redis", self.redis_url],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def records(self) -> list[dict]:
        path = self.out_dir / "calls.jsonl"
        if not path.exists():
            return []
        # Only whole lines: a handler in another process may be halfway through appending one.
        *whole, _partial = path.read_text().split("\n")
        return [json.loads(line) for line in whole if line.strip()]

    def wait_records(self, n: int, timeout: float = 10.0) -> list[dict]:
        return wait_for(lambda: (recs := self.records()) and len(recs) >= n and recs, timeout, what=f"{n} handler calls")

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def stack(redis_url, tmp_path):
    s = Stack(redis_url, tmp_path)
    yield s
    s.stop()


@pytest.fixture
def events_client():
    """A boto3 EventBridge client factory pointed at a broker URL."""
    import boto3

    def make(url: str, key_id: str = "x", secret: str = "x", region: str = "us-east-1"):
        return boto3.client("events", endpoint_url=url, region_name=region,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)
    return make
