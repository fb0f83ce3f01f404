"""End-to-end benchmark (issue 4): HTTP in, no-op handler out, against saq and arq on the same Redis.

    .venv/bin/python bench/e2e.py            # default run, about 2-3 minutes
    .venv/bin/python bench/e2e.py --quick    # smoke run, about 30 s

What runs (all on 127.0.0.1, every process started here is stopped here, Ctrl-C included):
  - one private redis-server (bus.local.redisproc.RedisProcess, AOF, appendfsync --fsync, default
    `always`: busway's default), shared by every phase, flushed and its AOF rewritten before each;
  - busway, per handler kind (async, sync): `bus serve` (one rule {source: [bench]} -> one
    function target) and `bus worker --concurrency 10` as subprocesses; this process posts
    batches of 10 events to POST /events from --clients concurrent aiohttp tasks;
  - busway with an `http` target (unless --no-http): the same rule sending each event to an API
    destination, a local aiohttp receiver in this process (api_key connection, 200 answers);
  - saq: `python -m saq saq_noop.settings` (one worker, concurrency 10); arq: `python -m arq
    arq_noop.WorkerSettings` (one worker, max_jobs 10); this process enqueues from --clients
    concurrent tasks. No-op async jobs; see bench/functions/.
  - synchronous Invoke (unless --no-invoke; issue 17): Lambda's Invoke (RequestResponse) of the no-op
    sync handler through `bus serve` + `bus worker`, from --clients tasks in a closed loop, against
    bench/functions/plain_invoke.py: an aiohttp process running the same handler in-process.

Throughput = N handler runs / (first post or enqueue -> queue seen empty after the last one was
accepted); the queue is polled every 2 ms. Producer and consumer run at the same time, for all three.
Throughput phases run in --rounds interleaved rounds and the best is kept (neighbours on a shared
machine only ever slow a phase down).
Latency = open loop, one batch of 10 every 20 ms (500 events/s) for --latency-seconds: from the
moment this process has the answer (PutEvents response read / enqueue call returned) to the first
line of the handler (time.time() written to a file; same clock).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web
import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bus.local.redisproc import RedisProcess, find_redis_server, free_port  # noqa: E402

FUNCTIONS = ROOT / "bench" / "functions"
PY = sys.executable
BATCH = 10
CONCURRENCY = 10
TICK = 0.020  # latency phase: one batch of 10 every 20 ms = 500 events/s
POLL = 0.002
EVENT = {"source": "bench", "detail-type": "noop", "detail": {"n": 1}}
STREAM = "busway:{default/bench/noop}:q"
TARGET_P99_MS = 20.0
TARGET_RATIO = 5.0


# --- child processes --------------------------------------------------------------------

class Children:
    """Every subprocess this bench starts, each in its own process group (its slots included)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> psutil.Process:
        """Start `args` in `cwd`: `python -m bus` imports the bus package of its working directory
        first (sys.path[0]), before PYTHONPATH, so another checkout's code runs only from there."""
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return psutil.Process(proc.pid)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self, timeout: float = 10.0) -> None:
        procs, self.procs = self.procs, []
        for _, proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # leftovers of the group (slots), or a hung process
            if proc.poll() is None:
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


class CpuMeter:
    """CPU used, and time spent waiting for a CPU, by some processes over a window.

    Children count too (a busway worker's sync slots), except for "bench", whose children are
    the systems under test. "other" is the rest of the machine (other users' processes, the
    kernel): this is a shared 2-core box, and a busy neighbour shows up there. Waiting time is
    the run-queue delay from /proc/<pid>/task/*/schedstat: runnable, but no core free.
    """

    def __init__(self, procs: dict[str, psutil.Process]):
        self.procs = procs
        self.before = self._sample()
        self.machine = _machine_busy()
        self.started = time.perf_counter()

    def _sample(self) -> dict[str, dict[int, tuple[float, float]]]:
        out = {}
        for name, proc in self.procs.items():
            seen = {}
            for p in [proc, *(_children(proc) if name != "bench" else [])]:
                try:
                    t = p.cpu_times()
                    seen[p.pid] = (t.user + t.system, _runqueue_wait(p.pid))
                except psutil.Error:
                    pass
            out[name] = seen
        return out

    def measure(self) -> tuple[dict[str, float], dict[str, float]]:
        """(CPU %, run-queue wait %) per name, as % of one core over the window (200% = both cores)."""
        wall = time.perf_counter() - self.started
        after, machine = self._sample(), _machine_busy()
        cpu, wait = {}, {}
        for name in self.procs:
            was = self.before[name]
            cpu[name] = 100 * sum(c - was.get(pid, (0.0, 0.0))[0] for pid, (c, _) in after[name].items()) / wall
            wait[name] = 100 * sum(w - was.get(pid, (0.0, 0.0))[1] for pid, (_, w) in after[name].items()) / wall
        cpu["other"] = max(0.0, 100 * (machine - self.machine) / wall - sum(cpu.values()))
        return cpu, wait


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _runqueue_wait(pid: int) -> float:
    total = 0.0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        pass
    return total


class Window:
    """One measured window: CpuMeter, plus a probe that times a durable Redis write (INCR) every
    20 ms. Under appendfsync always the answer waits for the fsync that Redis shares among all
    writes of a loop turn, so the probe shows what a round trip to Redis costs right now: the
    disk's fsync latency (other machines' tenants write to it too) plus Redis's own queue."""

    def __init__(self, procs: dict[str, psutil.Process], redis: aioredis.Redis):
        self.meter = CpuMeter(procs)
        self.redis = redis
        self.rtts: list[float] = []
        self.task = asyncio.create_task(self._probe())

    async def _probe(self) -> None:
        while True:
            started = time.perf_counter()
            await self.redis.incr("bench:probe")
            self.rtts.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)

    async def close(self) -> tuple[dict[str, float], dict[str, float], tuple[float, float]]:
        """(CPU %, wait %, write round trip p50/p99 ms)."""
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        cpu, wait = self.meter.measure()
        rtts = self.rtts or [float("nan")]
        return cpu, wait, (percentile(rtts, 50), percentile(rtts, 99))


class RedisCalls:
    """Redis commands per handler run over a window (INFO commandstats; commands run inside Lua
    scripts count too, so this is work done in Redis, not round trips)."""

    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def _calls(self) -> dict[str, int]:
        stats = await self.redis.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    async def start(self) -> "RedisCalls":
        self.before = await self._calls()
        return self

    async def per_run(self, runs: int, top: int = 6) -> str:
        after = await self._calls()
        diff = {k: (v - self.before.get(k, 0)) / runs for k, v in after.items()}
        diff = {k: v for k, v in diff.items() if k not in ("info", "xlen", "zcard") and v >= 0.01}  # our polling
        busiest = sorted(((v, k) for k, v in diff.items()), reverse=True)[:top]
        listed = ", ".join(f"{k} {v:.2f}" for v, k in busiest) + (", ..." if len(diff) > top else "")
        return f"Redis commands per run (inside scripts too): {sum(diff.values()):.1f}; {listed}"


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


# --- results ----------------------------------------------------------------------------

@dataclass
class Row:
    system: str
    kind: str
    count: int = 0
    seconds: float = 0.0
    ingest_seconds: float | None = None  # throughput: first post -> last one accepted
    p50_ms: float | None = None
    p99_ms: float | None = None
    p99_sent_ms: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    wait: dict[str, float] = field(default_factory=dict)
    rtt: tuple[float, float] | None = None  # durable Redis write round trip, p50/p99 ms (Window)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def cpu_per_run(row: Row) -> str:
    """CPU time per handler run (or request) of each process: steadier than the rate on a shared
    machine, where neighbours slow every phase down by a different amount, but spend no CPU here."""
    per = {name: pct / 100 * row.seconds / row.count * 1e6 for name, pct in row.cpu.items() if name != "other"}
    return "CPU us per run: " + ", ".join(f"{name} {us:.0f}" for name, us in per.items()) + f", all {sum(per.values()):.0f}"


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]  # nearest rank


@dataclass
class Latency:
    accepted: list[float]  # ms from "accepted" (answer read here) to handler start; may be < 0
    sent: list[float]  # ms from "request sent" to handler start

    def p(self, q: float, which: str = "accepted") -> float:
        return percentile(getattr(self, which), q)


def join_latencies(timed: list[tuple[str, float, float]], started_file: Path) -> Latency:
    """Join (key, sent, accepted) times with the handlers' start times."""
    started = {}
    for line in started_file.read_text().splitlines():
        key, t = line.split()
        started.setdefault(key, float(t))
    missing = [k for k, _, _ in timed if k not in started]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(timed)} latency events never reached a handler")
    return Latency([(started[k] - a) * 1000 for k, _, a in timed], [(started[k] - s) * 1000 for k, s, _ in timed])


def latency_row(system: str, kind: str, seconds: float, lat: Latency, cpu: dict[str, float],
                wait: dict[str, float], rtt: tuple[float, float]) -> Row:
    row = Row(system, kind, len(lat.accepted), seconds, p50_ms=lat.p(50), p99_ms=lat.p(99),
              p99_sent_ms=lat.p(99, "sent"), cpu=cpu, wait=wait, rtt=rtt)
    row.notes.append(f"accepted -> start max {max(lat.accepted):.1f} ms, "
                     f"{sum(v < 0 for v in lat.accepted) / len(lat.accepted):.0%} negative (handler ran before "
                     f"the answer was read); request sent -> start p50 {lat.p(50, 'sent'):.1f} ms, "
                     f"p99 {lat.p(99, 'sent'):.1f} ms, max {max(lat.sent):.1f} ms")
    return row


async def healthy(http: aiohttp.ClientSession, url: str, children: Children) -> bool:
    """Whether `url` (a /healthz) answers 200; raises if one of `children` died meanwhile."""
    children.check_alive()
    try:
        async with http.get(url) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def wait_until(check, timeout: float, what: str, children: Children) -> float:
    """Poll `check` every 2 ms; return time.perf_counter() of the first true answer."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return time.perf_counter()
        if time.monotonic() > deadline:
            children.check_alive()
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(POLL)


async def produce(total: int, per_call: int, clients: int, send) -> None:
    """`clients` concurrent tasks call `send()` until `total` items (per_call each) are sent."""
    calls = itertools.count()
    n_calls = -(-total // per_call)

    async def client() -> None:
        while next(calls) < n_calls:
            await send()

    await asyncio.gather(*(client() for _ in range(clients)))


async def open_loop(seconds: float, send_batch) -> list[tuple[str, float, float]]:
    """One send_batch() every TICK regardless of answers (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for k in range(int(seconds / TICK)):
        await asyncio.sleep(max(0.0, start + k * TICK - loop.time()))
        tasks.append(asyncio.create_task(send_batch()))
    return [item for batch in await asyncio.gather(*tasks) for item in batch]


def histogram_quantiles(before: str, after: str, name: str) -> tuple[float, float] | None:
    """p50/p99 (ms) of a Prometheus histogram's increase between two scrapes, interpolated in buckets."""
    def buckets(text: str) -> dict[float, float]:
        out: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith(name + "_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[float(le)] = out.get(float(le), 0.0) + float(line.rsplit(" ", 1)[1])
        return out
    b0, b1 = buckets(before), buckets(after)
    inc = sorted((le, b1[le] - b0.get(le, 0.0)) for le in b1)
    if not inc or inc[-1][1] <= 0:
        return None
    total = inc[-1][1]

    def q(frac: float) -> float:
        rank, lo, prev = frac * total, 0.0, 0.0
        for le, cum in inc:
            if cum >= rank:
                if le == float("inf"):
                    return lo * 1000
                return (lo + (le - lo) * (rank - prev) / max(cum - prev, 1e-9)) * 1000
            lo, prev = le, cum
        return lo * 1000
    return q(0.50), q(0.99)


# --- busway ------------------------------------------------------------------------------

class Busway:
    def __init__(self, children: Children, redis_url: str, redis_proc: psutil.Process, tmp: Path, clients: int,
                 log_level: str, profile_dir: Path | None = None, worker_args: str = ""):
        self.children, self.redis_url, self.redis_proc, self.tmp = children, redis_url, redis_proc, tmp
        self.clients = clients
        self.log_level = log_level
        self.profile_dir = profile_dir
        self.worker_args = shlex.split(worker_args)
        self.latency_file = tmp / "busway-latency.txt"

    @asynccontextmanager
    async def running(self, function: str, rules_text: str | None = None, extra_env: dict[str, str] | None = None):
        """`function`'s rule (or `rules_text`, naming the phase by `function`) in a broker and a worker."""
        rules = self.tmp / f"rules-{function}"
        rules.mkdir(exist_ok=True)
        (rules / "bench.yaml").write_text(rules_text or (
            "rules:\n  - name: bench\n    event_pattern:\n      source: [bench]\n"
            f"    targets:\n      - id: noop\n        function: {function}\n"))
        port, metrics_port = free_port(), free_port()
        env = {"BENCH_LATENCY_FILE": str(self.latency_file), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        log = ["--log-level", self.log_level]

        def bus(role: str) -> list[str]:
            if not self.profile_dir:
                return [PY, "-m", "bus", *log]
            out = self.profile_dir / f"{role}-{function}.prof"  # written when the process exits
            return [PY, "-m", "cProfile", "-o", str(out), "-m", "bus", *log]
        broker = self.children.start("busway-broker", [*bus("broker"), "serve", "--rules", str(rules),
                                                       "--port", str(port), "--redis", self.redis_url], env)
        worker = self.children.start("busway-worker", [
            *bus("worker"), "worker", "--functions", str(FUNCTIONS), "--redis", self.redis_url,
            "--concurrency", str(CONCURRENCY), "--metrics-port", str(metrics_port), *self.worker_args], env)
        self.base, self.metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
        self.procs = {"broker": broker, "worker": worker}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as self.http:
            self.redis = aioredis.from_url(self.redis_url)
            try:
                for url in (self.base + "/healthz", f"http://127.0.0.1:{metrics_port}/healthz"):
                    await wait_until(lambda url=url: self._ok(url), 30, url, self.children)
                yield self
            finally:
                await self.redis.aclose()
                self.children.stop_all()

    async def _ok(self, url: str) -> bool:
        return await healthy(self.http, url, self.children)

    async def post(self, body: bytes) -> list[tuple[str, float, float]]:
        sent = time.time()
        async with self.http.post(self.base + "/events", data=body,
                                  headers={"Content-Type": "application/json"}) as r:
            raw = await r.read()
            accepted = time.time()
        answer = json.loads(raw)
        if r.status != 200 or answer.get("FailedEntryCount"):
            raise RuntimeError(f"PutEvents failed: HTTP {r.status} {raw[:300]!r}")
        return [(e["EventId"], sent, accepted) for e in answer["Entries"]]

    async def metrics(self) -> str:
        async with self.http.get(self.metrics_url) as r:
            return await r.text()

    async def invocations(self) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in (await self.metrics()).splitlines()
                   if line.startswith("busway_invocations_total{"))

    async def drained(self) -> bool:
        return await self.redis.xlen(STREAM) == 0

    async def send_and_drain(self, events: int, clients: int) -> tuple[float, float]:
        """Post `events` (batches of 10) from `clients` tasks: seconds until all were accepted,
        and until the stream is empty (every handler ran and its delivery was deleted)."""
        body = json.dumps([EVENT] * BATCH).encode()
        started = time.perf_counter()
        await produce(events, BATCH, clients, lambda: self.post(body))
        ingested = time.perf_counter() - started
        return ingested, await wait_until(self.drained, 120, "busway queue to drain", self.children) - started

    async def throughput(self, kind: str, function: str, events: int, warmup: int) -> Row:
        async with self.running(function):
            await self.send_and_drain(warmup, self.clients)  # imports, slots, connections
            before = await self.invocations()
            window = Window({**self.procs, "redis": self.redis_proc, "bench": psutil.Process()}, self.redis)
            calls = await RedisCalls(self.redis).start()
            ingested, seconds = await self.send_and_drain(events, self.clients)
            cpu, wait, rtt = await window.close()
            ran = await self.invocations() - before
            row = Row("busway", kind, events, seconds, ingested, cpu=cpu, wait=wait, rtt=rtt,
                      notes=[await calls.per_run(events)])
        if ran != events:
            row.notes.append(f"worker counted {ran:.0f} invocations for {events} events")
        return row

    async def http_throughput(self, events: int, warmup: int) -> Row:
        """The same rule with an `http` target: each event POSTed (api_key connection) to a local
        aiohttp receiver that answers 200. The destination's rate limit is set far above what one
        worker sends, so this measures the invoker (and how it takes its rate-limit turns from
        Redis: `get` in the Redis-commands note is one rate_take call), not the limit."""
        sink = Sink()
        async with sink.serving() as port, self.running("http", http_rules(port), {"BENCH_HTTP_KEY": "bench-key"}):
            await self.send_and_drain(warmup, self.clients)
            before = sink.count
            window = Window({**self.procs, "redis": self.redis_proc, "bench": psutil.Process()}, self.redis)
            calls = await RedisCalls(self.redis).start()
            ingested, seconds = await self.send_and_drain(events, self.clients)
            cpu, wait, rtt = await window.close()
            received = sink.count - before
            row = Row("busway", "http", events, seconds, ingested, cpu=cpu, wait=wait, rtt=rtt,
                      notes=[await calls.per_run(events),
                             "receiver: aiohttp in the bench process (its CPU counts as bench)"])
        if received != events:
            row.notes.append(f"the receiver got {received} requests for {events} events")
        return row

    async def invoke_throughput(self, calls: int, warmup: int, clients: int) -> Row:
        """Lambda's Invoke (RequestResponse) of the no-op sync handler, through broker and worker."""
        rules = "functions:\n  noop.handler: {}\n"
        async with self.running("invoke", rules):
            url = self.base + "/2015-03-31/functions/noop.handler/invocations"
            return await invoke_row("busway", self.http, url, calls, warmup, clients,
                                    {**self.procs, "redis": self.redis_proc}, self.redis, self.children)

    async def latency(self, kind: str, function: str, seconds: float) -> Row:
        self.latency_file.write_text("")
        body = json.dumps([EVENT] * BATCH).encode()
        async with self.running(function):
            await self.send_and_drain(20 * BATCH, 2)
            scrape0 = await self.metrics()
            window = Window({**self.procs, "redis": self.redis_proc, "bench": psutil.Process()}, self.redis)
            accepted = await open_loop(seconds, lambda: self.post(body))
            await wait_until(self.drained, 60, "busway queue to drain", self.children)
            cpu, wait, rtt = await window.close()
            scrape1 = await self.metrics()
        row = latency_row("busway", kind, seconds, join_latencies(accepted, self.latency_file), cpu, wait, rtt)
        hist = histogram_quantiles(scrape0, scrape1, "busway_ingestion_to_invocation_start_seconds")
        if hist:
            row.notes.append(f"worker histogram (broker received -> invoke): p50 {hist[0]:.1f} ms, "
                             f"p99 {hist[1]:.1f} ms")
        return row


async def closed_loop(total: int, clients: int, call) -> tuple[float, list[float]]:
    """`total` calls of `call` from `clients` tasks, each waiting for its answer: (seconds, latencies ms)."""
    latencies: list[float] = []
    left = itertools.count()

    async def client() -> None:
        while next(left) < total:
            sent = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - sent) * 1000)
    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    return time.perf_counter() - started, latencies


async def invoke_row(system: str, http: aiohttp.ClientSession, url: str, calls: int, warmup: int, clients: int,
                     procs: dict[str, psutil.Process], redis_client: aioredis.Redis, children: Children) -> Row:
    """Synchronous Invoke of a no-op function at `url`, closed loop: requests/s and latency from
    request sent to answer read."""
    async def call() -> None:
        async with http.post(url, data=b'{"n": 1}') as r:
            body = await r.read()
            if r.status != 200 or r.headers.get("X-Amz-Function-Error"):
                raise RuntimeError(f"{system} invoke failed: HTTP {r.status} {body[:300]!r}")
    await closed_loop(warmup, clients, call)
    window = Window({**procs, "bench": psutil.Process()}, redis_client)
    seconds, latencies = await closed_loop(calls, clients, call)
    cpu, wait, rtt = await window.close()
    return Row(system, "invoke", calls, seconds, p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
               cpu=cpu, wait=wait, rtt=rtt)


class Sink:
    """The http phase's receiver: an aiohttp server in this process that counts POSTs and answers 200."""

    def __init__(self):
        self.count = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        return web.Response(text="ok")

    @asynccontextmanager
    async def serving(self):
        app = web.Application()
        app.router.add_post("/events", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield port
        finally:
            await runner.cleanup()


def http_rules(port: int) -> str:
    return f"""connections:
  - name: sink
    authorization: {{api_key: {{header: x-api-key, value_from_env: BENCH_HTTP_KEY}}}}
api_destinations:
  - name: sink
    connection: sink
    endpoint: http://127.0.0.1:{port}/events
    invocation_rate_limit_per_second: 1000000
rules:
  - name: bench
    event_pattern: {{source: [bench]}}
    targets:
      - id: noop
        http: sink
"""


# --- saq and arq -------------------------------------------------------------------------

class JobQueue:
    """saq or arq: one worker subprocess (its own CLI), jobs enqueued from this process."""

    def __init__(self, system: str, children: Children, redis_url: str, redis_proc: psutil.Process, tmp: Path,
                 clients: int, arq_poll: float):
        self.system, self.children, self.redis_url, self.redis_proc = system, children, redis_url, redis_proc
        self.clients = clients
        self.latency_file = tmp / f"{system}-latency.txt"
        self.arq_poll = arq_poll

    @asynccontextmanager
    async def running(self):
        env = {"BENCH_REDIS_URL": self.redis_url, "BENCH_LATENCY_FILE": str(self.latency_file),
               "BENCH_ARQ_POLL_DELAY": str(self.arq_poll), "PYTHONPATH": str(FUNCTIONS)}
        if self.system == "saq":
            args = [PY, "-m", "saq", "saq_noop.settings"]
        else:
            args = [PY, "-m", "arq", "arq_noop.WorkerSettings", "--custom-log-dict", "arq_noop.LOGGING"]
        self.procs = {"worker": self.children.start(f"{self.system}-worker", args, env)}
        self.redis = aioredis.from_url(self.redis_url)
        try:
            if self.system == "saq":
                from saq import Queue
                self.queue = Queue.from_url(self.redis_url)
                await self.queue.connect()
                self.enqueue = lambda fn, **kw: self.queue.enqueue(fn, **kw)
            else:
                from arq import create_pool
                from arq.connections import RedisSettings
                self.pool = await create_pool(RedisSettings.from_dsn(self.redis_url))
                self.enqueue = lambda fn, **kw: self.pool.enqueue_job(fn, **kw)
            yield self
        finally:
            if self.system == "saq":
                await self.queue.disconnect()
            else:
                await self.pool.aclose()
            await self.redis.aclose()
            self.children.stop_all()

    async def drained(self) -> bool:
        self.children.check_alive()
        if self.system == "saq":
            return await self.queue.count("incomplete") == 0
        return await self.redis.zcard("arq:queue") == 0

    async def one(self, fn: str, **kw) -> None:
        if await self.enqueue(fn, **kw) is None:
            raise RuntimeError(f"{self.system} refused a job")

    async def send_and_drain(self, jobs: int, clients: int) -> tuple[float, float]:
        started = time.perf_counter()
        await produce(jobs, 1, clients, lambda: self.one("noop"))
        ingested = time.perf_counter() - started
        return ingested, await wait_until(self.drained, 300, f"{self.system} queue to drain", self.children) - started

    async def throughput(self, jobs: int, warmup: int) -> Row:
        async with self.running():
            await self.send_and_drain(warmup, self.clients)
            window = Window({**self.procs, "redis": self.redis_proc, "bench": psutil.Process()}, self.redis)
            calls = await RedisCalls(self.redis).start()
            ingested, seconds = await self.send_and_drain(jobs, self.clients)
            cpu, wait, rtt = await window.close()
            row = Row(self.system, "async", jobs, seconds, ingested, cpu=cpu, wait=wait, rtt=rtt,
                      notes=[await calls.per_run(jobs)])
        if self.system == "arq":
            row.notes.append(f"poll_delay {self.arq_poll} s")
        return row

    async def latency(self, seconds: float) -> Row:
        self.latency_file.write_text("")

        async def record() -> tuple[str, float, float]:
            tag = uuid.uuid4().hex
            sent = time.time()
            await self.one("record", tag=tag)
            return tag, sent, time.time()

        async def batch() -> list[tuple[str, float, float]]:
            return await asyncio.gather(*(record() for _ in range(BATCH)))

        async with self.running():
            await self.send_and_drain(200, 2)
            window = Window({**self.procs, "redis": self.redis_proc, "bench": psutil.Process()}, self.redis)
            accepted = await open_loop(seconds, batch)
            await wait_until(self.drained, 60, f"{self.system} queue to drain", self.children)
            cpu, wait, rtt = await window.close()
        return latency_row(self.system, "async", seconds, join_latencies(accepted, self.latency_file), cpu, wait, rtt)


# --- the run -----------------------------------------------------------------------------

async def fresh_redis(url: str) -> None:
    """FLUSHALL, then rewrite the AOF (now tiny) and wait: every phase starts with a small AOF, so
    an automatic rewrite (a fork, and slower fsyncs while it writes) left over from earlier phases
    cannot land in the middle of a measurement."""
    r = aioredis.from_url(url)
    try:
        await r.flushall()
        await r.bgrewriteaof()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = await r.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                await r.config_set("latency-monitor-threshold", 5)  # record stalls >= 5 ms (LATENCY LATEST)
                await r.execute_command("LATENCY", "RESET")
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("Redis AOF rewrite did not finish within 60 s")
    finally:
        await r.aclose()


async def redis_counters(url: str) -> tuple[int, int, str]:
    """(forks so far, AOF size in bytes, Redis stalls >= 5 ms since fresh_redis: "event max N ms")."""
    r = aioredis.from_url(url)
    try:
        stalls = ", ".join(f"{_s(e[0])} max {e[3]} ms" for e in await r.execute_command("LATENCY", "LATEST"))
        return ((await r.info("stats"))["total_forks"], (await r.info("persistence"))["aof_current_size"], stalls)
    finally:
        await r.aclose()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def plain_invoke(children: Children, redis_url: str, calls: int, warmup: int, clients: int) -> Row:
    """The baseline: bench/functions/plain_invoke.py, the same handler in an aiohttp process."""
    port = free_port()
    server = children.start("plain-invoke", [PY, str(FUNCTIONS / "plain_invoke.py"), str(port)],
                            {"PYTHONPATH": str(FUNCTIONS)})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        redis_client = aioredis.from_url(redis_url)
        try:
            await wait_until(lambda: healthy(http, f"http://127.0.0.1:{port}/healthz", children), 30,
                             "plain aiohttp invoke server", children)
            url = f"http://127.0.0.1:{port}/2015-03-31/functions/noop.handler/invocations"
            return await invoke_row("aiohttp", http, url, calls, warmup, clients, {"server": server}, redis_client,
                                    children)
        finally:
            await redis_client.aclose()
            children.stop_all()


async def run(args, children: Children, rp: RedisProcess, tmp: Path) -> list[Row]:
    """Throughput phases in --rounds interleaved rounds (best kept), then one latency phase each."""
    redis_proc = psutil.Process(rp.proc.pid)
    bw = Busway(children, rp.url, redis_proc, tmp, args.clients, args.busway_log_level, args.profile,
                args.busway_worker_args)
    queues = {s: JobQueue(s, children, rp.url, redis_proc, tmp, args.clients, args.arq_poll_delay)
              for s in ("saq", "arq") if s in args.systems}
    busway_kinds = [("async", "noop.handler_async", "noop.record_async"), ("sync", "noop.handler", "noop.record")]
    busway_kinds = busway_kinds if "busway" in args.systems else []
    rows: list[Row] = []

    async def phase(title: str, measure) -> Row:
        print(title, flush=True)
        await fresh_redis(rp.url)
        forks, _, _ = await redis_counters(rp.url)
        row = await measure()
        forks_after, aof, stalls = await redis_counters(rp.url)
        if stalls:
            row.notes.append(f"Redis stalls >= 5 ms (LATENCY LATEST): {stalls}")
        if forks_after > forks:
            row.notes.append(f"Redis forked {forks_after - forks} time(s) during the phase (AOF rewrite at "
                             f"{aof / 1e6:.0f} MB): expect a dip")
        if row.count and row.cpu:
            row.notes.append(cpu_per_run(row))
        lat = f", p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms" if row.p99_ms is not None else ""
        print(f"  {row.count} in {row.seconds:.2f} s = {row.rate:.0f}/s{lat}", flush=True)
        return row

    tries: dict[tuple[str, str], list[Row]] = {}
    for r in range(1, args.rounds + 1):
        for kind, handler, _ in busway_kinds:
            tries.setdefault(("busway", kind), []).append(await phase(
                f"busway {kind}: throughput, {args.events} events (round {r})",
                lambda: bw.throughput(kind, handler, args.events, args.warmup)))
        if busway_kinds and not args.no_http:
            tries.setdefault(("busway", "http"), []).append(await phase(
                f"busway http target: throughput, {args.events} events (round {r})",
                lambda: bw.http_throughput(args.events, args.warmup)))
        for name, q in queues.items():
            tries.setdefault((name, "async"), []).append(await phase(
                f"{name}: throughput, {args.jobs} jobs (round {r})", lambda: q.throughput(args.jobs, args.warmup)))
    for attempts in tries.values():
        best = max(attempts, key=lambda row: row.rate)
        if len(attempts) > 1:
            best.notes.insert(0, "best of rounds: " + ", ".join(f"{row.rate:.0f}/s" for row in attempts))
        rows.append(best)

    if busway_kinds and not args.no_invoke:
        for r in range(1, args.rounds + 1):
            tries.setdefault(("busway", "invoke"), []).append(await phase(
                f"busway sync Invoke: {args.invokes} calls, closed loop (round {r})",
                lambda: bw.invoke_throughput(args.invokes, args.warmup, args.clients)))
            tries.setdefault(("aiohttp", "invoke"), []).append(await phase(
                f"plain aiohttp, the same handler in-process: {args.invokes} calls (round {r})",
                lambda: plain_invoke(children, rp.url, args.invokes, args.warmup, args.clients)))
        for key in (("busway", "invoke"), ("aiohttp", "invoke")):
            attempts = tries.pop(key)
            best = max(attempts, key=lambda row: row.rate)
            if len(attempts) > 1:
                best.notes.insert(0, "best of rounds: " + ", ".join(f"{row.rate:.0f}/s" for row in attempts))
            rows.append(best)

    rate = f"{BATCH / TICK:.0f}/s for {args.latency_seconds:.0f} s"
    for kind, _, recorder in busway_kinds:
        rows.append(await phase(f"busway {kind}: latency at {rate}",
                                lambda: bw.latency(kind, recorder, args.latency_seconds)))
    if not args.no_competitor_latency:
        for name, q in queues.items():
            rows.append(await phase(f"{name}: latency at {rate}", lambda: q.latency(args.latency_seconds)))
    return rows


def report(rows: list[Row], args, redis_version: str, loads: list[str]) -> None:
    worker_args = f" (bus worker {args.busway_worker_args})" if args.busway_worker_args else ""
    print()
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
          f"Redis {redis_version}, appendonly yes, appendfsync {args.fsync}; clients {args.clients}; "
          f"batches of {BATCH}; busway at {_busway_version()}{worker_args}; load average {' -> '.join(loads)}")
    print()
    head = ("system", "handler", "phase", "events/jobs", "seconds", "per s", "accepted per s", "p50 ms", "p99 ms",
            "p99 from send", "Redis write RTT p50/p99 ms", "broker CPU% (wait%)", "worker", "redis", "bench",
            "other CPU%")
    invokes = [r for r in rows if r.kind == "invoke"]
    rows = [r for r in rows if r.kind != "invoke"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        phase = "latency @500/s" if r.p99_ms is not None else "max throughput"
        accepted = f"{r.count / r.ingest_seconds:.0f}" if r.ingest_seconds else ""
        cells = [r.system, r.kind, phase, str(r.count), f"{r.seconds:.2f}", f"{r.rate:.0f}", accepted,
                 _ms(r.p50_ms), _ms(r.p99_ms), _ms(r.p99_sent_ms),
                 f"{r.rtt[0]:.2f} / {r.rtt[1]:.1f}" if r.rtt else ""]
        cells += [f"{r.cpu[k]:.0f} ({r.wait[k]:.0f})" if k in r.cpu else ""
                  for k in ("broker", "worker", "redis", "bench")]
        cells.append(f"{r.cpu.get('other', 0):.0f}")
        print("| " + " | ".join(cells) + " |")
    print("\nper s: handler runs per second, first post/enqueue to queue empty. accepted per s: the "
          "producer's rate (all posts answered / enqueues returned); above `per s` means the consumer was behind.\n"
          "p50/p99: answer read by the producer -> handler start (issue 4's definition; negative when the handler "
          "starts before the answer arrives), open loop at 500/s. p99 from send: request sent -> handler start.\n"
          "Redis write RTT: an INCR every 20 ms during the phase (it waits for the shared fsync).\n"
          "CPU%: of one core over the phase (2 cores: 200% is the whole machine); wait%: time runnable but "
          "waiting for a core; the busway worker includes its sync slots; bench is this process (the producer); "
          "other: everything else on the machine.")
    for r in rows:
        for note in r.notes:
            print(f"note: {r.system} {r.kind} {'latency' if r.p99_ms is not None else 'throughput'}: {note}")

    if invokes:
        print("\nSynchronous Invoke of a no-op function (RequestResponse), closed loop, "
              f"{args.clients} clients; latency from request sent to answer read:\n")
        print("| system | calls | seconds | calls per s | p50 ms | p99 ms | server CPU% | worker | redis | bench |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in invokes:
            server = r.cpu.get("broker", r.cpu.get("server", 0))
            print(f"| {'busway (broker + worker + Redis)' if r.system == 'busway' else 'aiohttp, handler in-process'} "
                  f"| {r.count} | {r.seconds:.2f} | {r.rate:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {server:.0f} | "
                  f"{r.cpu.get('worker', 0):.0f} | {r.cpu.get('redis', 0):.0f} | {r.cpu.get('bench', 0):.0f} |")
        for r in invokes:
            for note in r.notes:
                print(f"note: {r.system} invoke: {note}")
        by = {r.system: r for r in invokes}
        if "busway" in by and "aiohttp" in by:
            print(f"busway / plain aiohttp: {by['busway'].rate / by['aiohttp'].rate:.2f}x the calls per s, "
                  f"p99 {by['busway'].p99_ms:.1f} vs {by['aiohttp'].p99_ms:.1f} ms")

    tput = {(r.system, r.kind): r.rate for r in rows if r.p99_ms is None}
    best = max(((s, v) for (s, k), v in tput.items() if s in ("saq", "arq")), key=lambda x: x[1], default=None)
    print()
    for kind in ("async", "sync"):
        if ("busway", kind) in tput and best:
            ratio = tput[("busway", kind)] / best[1]
            print(f"target 1: busway {kind} / {best[0]} = {tput[('busway', kind)]:.0f} / {best[1]:.0f} = "
                  f"{ratio:.2f}x (target >= {TARGET_RATIO:.0f}x): {'MET' if ratio >= TARGET_RATIO else 'MISSED'}")
    for r in rows:
        if r.system == "busway" and r.p99_ms is not None:
            print(f"target 2: busway {r.kind} p99 at 500 events/s = {r.p99_ms:.1f} ms "
                  f"(target < {TARGET_P99_MS:.0f} ms): "
                  f"{'MET' if r.p99_ms < TARGET_P99_MS else 'MISSED'}")


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _busway_version() -> str:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + (" + uncommitted changes in bus/" if git("status", "--porcelain", "--", "bus") else "")


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.0f}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small counts, 3 s latency phases, no saq/arq latency phases (~30 s)")
    p.add_argument("--events", type=int, help="busway events per throughput phase (default 20000; quick 2000)")
    p.add_argument("--jobs", type=int, help="saq/arq jobs per throughput phase (default 6000; quick 1000)")
    p.add_argument("--warmup", type=int, help="events/jobs run before each measured phase (default 500; quick 200)")
    p.add_argument("--latency-seconds", type=float, help="length of each 500/s latency phase (default 10; quick 3)")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the throughput phases, best kept "
                   "(default 2; quick 1): a busy neighbour then has to hit every round of a system to skew it")
    p.add_argument("--clients", type=int, default=8, help="concurrent producer tasks in the throughput phases (8)")
    p.add_argument("--fsync", choices=["always", "everysec", "no"], default="always",
                   help="Redis appendfsync for every system (default always: busway's default)")
    p.add_argument("--systems", nargs="+", default=["busway", "saq", "arq"], choices=["busway", "saq", "arq"])
    p.add_argument("--arq-poll-delay", type=float, default=0.01,
                   help="arq Worker poll_delay (default 0.01 s: arq's own default, 0.5 s, caps it near 200 jobs/s)")
    p.add_argument("--no-competitor-latency", action="store_true", help="skip the saq/arq 500/s latency phases")
    p.add_argument("--no-http", action="store_true", help="skip busway's http-target throughput phase")
    p.add_argument("--no-invoke", action="store_true", help="skip the synchronous Invoke phases (busway and plain aiohttp)")
    p.add_argument("--invokes", type=int, help="synchronous Invoke calls per phase (default 5000; quick 1000)")
    p.add_argument("--busway-log-level", default="WARNING",
                   help="bus --log-level for broker and worker (WARNING: no per-delivery INFO line, "
                        "like saq's and arq's settings here)")
    p.add_argument("--busway-worker-args", default="", metavar="ARGS",
                   help="extra `bus worker` arguments, e.g. '--prefetch 0' (default: none, busway's defaults)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run busway's broker and worker under cProfile, one .prof per process and phase, into DIR "
                        "(slows them down: use it to see where time goes, not for the numbers)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to this long for the machine to be quiet (< 25%% of one core busy)")
    args = p.parse_args()
    quick = args.quick
    args.events = args.events or (2000 if quick else 20000)
    args.jobs = args.jobs or (1000 if quick else 6000)
    args.invokes = args.invokes or (1000 if quick else 5000)
    args.rounds = args.rounds or (1 if quick else 2)
    args.warmup = args.warmup if args.warmup is not None else (200 if quick else 500)
    args.latency_seconds = args.latency_seconds or (3.0 if quick else 10.0)
    args.no_competitor_latency = args.no_competitor_latency or quick
    if args.profile:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    busy = _wait_quiet(args.wait_quiet)
    if busy > 25:
        print(f"warning: other processes use {busy:.0f}% of one core right now; results will be low and noisy "
              f"(see the 'other CPU%' column; --wait-quiet SECONDS waits for a quiet machine)", flush=True)
    version = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True).stdout.split()
    redis_version = next((w.split("=", 1)[1] for w in version if w.startswith("v=")), "?")
    started = time.perf_counter()
    loads = [_load()]
    with tempfile.TemporaryDirectory(prefix="busway-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        children = Children(tmp)
        rp = RedisProcess(tmp / "redis", fsync=args.fsync)
        try:
            rp.start()
            with redis.Redis.from_url(rp.url) as r:  # the setting every system runs on, as Redis reports it
                fsync = r.config_get("appendfsync")["appendfsync"]
            if fsync != args.fsync:
                raise RuntimeError(f"Redis runs with appendfsync {fsync}, not {args.fsync}")
            print(f"redis {redis_version} on {rp.url}, appendfsync {args.fsync}; logs in {tmp}", flush=True)
            rows = asyncio.run(run(args, children, rp, tmp))
        except KeyboardInterrupt:
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
            rp.stop()
    loads.append(_load())
    report(rows, args, redis_version, loads)
    if args.profile:
        _print_profiles(args.profile)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


def _print_profiles(directory: Path, top: int = 12) -> None:
    import pstats
    for prof in sorted(directory.glob("*.prof")):
        print(f"\n--- {prof.name}: top {top} by own time (python -m pstats {prof} for more)")
        pstats.Stats(str(prof)).sort_stats("tottime").print_stats(top)


def _wait_quiet(patience: float) -> float:
    """% of one core that other processes use (1 s sample); retry until quiet or `patience` runs out."""
    deadline = time.monotonic() + patience
    while True:
        t = psutil.cpu_times_percent(interval=1.0)
        busy = (100 - t.idle - t.iowait) * psutil.cpu_count()
        if busy <= 25 or time.monotonic() >= deadline:
            return busy


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
