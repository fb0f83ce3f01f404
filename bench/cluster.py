"""Redis Cluster benchmark (issue 15): busway end to end on one Redis and on Redis Cluster.

    .venv/bin/python bench/cluster.py            # default run, about 5 minutes
    .venv/bin/python bench/cluster.py --quick    # smoke run, about 1 minute
    .venv/bin/python bench/cluster.py --setups plain cluster3 --rounds 3   # a subset

What it measures, on this machine, all on 127.0.0.1: no-op events handled per second end to end
(HTTP POST /events in batches of 10 -> broker -> Redis -> worker -> an async no-op handler,
bench/functions/cluster_noop.py) and PutEvents latency (per POST: request sent -> answer read),
for these set-ups:

  plain                 one redis-server (redis://), 1 broker + 1 worker: the baseline
  cluster1              a 1-primary Redis Cluster, no replicas, 1 broker + 1 worker: the cluster
                        protocol alone (per-slot writes with done-markers, slot-by-slot reads)
  plain-3x3             one redis-server, 3 brokers + 3 workers: the control for cluster3 (more
                        Python processes, one Redis)
  cluster3              a 3-primary cluster, no replicas, 3 brokers + 3 workers
  cluster3r-acked       a 3-primary cluster with 1 replica each, 3 brokers + 3 workers, --durability acked
  cluster3r-replicated  the same cluster, `bus serve --durability replicated` (WAIT 1 per node written)

Six rules, each matching its own `source` (bench.<rule>), each with one function target; the rule
names are picked so that their streams' hash tags fall two on each third of the slot space (two
streams per primary of a 3-primary cluster: the report says where they really landed). Events go
round-robin over the six sources, so every batch of 10 writes all six streams: on a cluster every
PutEvents is a multi-slot write (bus.store.once, one marker per slot) touching every primary.
The load generator (this process) spreads its concurrent clients (--clients-per-broker per broker)
over the brokers, client i always on broker i mod n.

Per set-up and round, with fresh Redis processes (a new plain Redis or cluster per round; the two
cluster3r set-ups share one, flushed between them), brokers and workers started for it:
  - warm-up (--warmup events), then the throughput phase: --events events as fast as the clients
    can post, timed from the first POST to every target stream being empty (each delivery is
    deleted when its handler finished); PutEvents p50/p99 over every POST of the phase;
  - the open-loop phase: a batch of 10 every 20 ms (--rate 500 events/s) for --latency-seconds,
    regardless of answers: PutEvents p50/p99 without queueing, and delivery latency (answer read
    -> first line of the handler, which records tagged events' start time in a file);
  - an idle window (--idle-seconds, nothing posted): what idle workers polling a cluster cost.
Set-ups run in --rounds interleaved rounds; the best throughput round is kept and the open-loop
round with the lowest PutEvents p99 (neighbours on a shared machine only slow a phase down).
Before each measured phase the bench waits (up to --phase-wait-quiet s) for the rest of the machine
to use under 30% of a core, and the machine's load average is printed at start and end.

CPU: % of one core per process over each phase (psutil, the way bench/e2e.py measures: a worker
includes its slot processes; 200% = both cores of this machine): each redis-server (primaries and
replicas apart), each broker, each worker, this process (the load generator), and "other" (the rest
of the machine: neighbours). Also Redis commands per event over the throughput phase, summed over
the primaries (INFO commandstats; commands inside scripts count), and a projected ceiling per
primary: its events/s divided by its CPU share.

Checks, noted in the report: every accepted event handled exactly once (worker invocation counters;
in the open-loop phase, each tagged event id's start lines), no failed POSTs, no retries, dead
letters or handler errors, warnings or tracebacks in a process log, primaries unchanged (no
failover). Every process started here is stopped here, on errors, Ctrl-C, SIGTERM and
--time-limit too; logs are in a temp dir (kept with --keep).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import e2e  # noqa: E402  (bench/e2e.py: process handling, CPU meter, percentiles, machine info)
from e2e import Children, CpuMeter, percentile  # noqa: E402
from bus.local.cluster import LocalCluster  # noqa: E402
from bus.local.redisproc import RedisProcess, find_redis_server, free_port  # noqa: E402
from bus.store.connect import connect  # noqa: E402
from bus.store.keys import key_slot, stream_key, target_key  # noqa: E402
from bus.store.once import ONCE_TTL_SECONDS  # noqa: E402

FUNCTIONS = ROOT / "bench" / "functions"
PY = sys.executable
BATCH = 10
RULES = 6
FUNCTION = "cluster_noop.handler"
SLOTS = 16384


# --- what runs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    name: str
    cluster: bool
    primaries: int
    replicas: int
    brokers: int
    workers: int
    durability: str = "acked"

    @property
    def store(self) -> tuple[bool, int, int]:
        """Set-ups with the same store share one Redis (or cluster) per round."""
        return self.cluster, self.primaries, self.replicas

    @property
    def shape(self) -> str:
        redis_part = (f"{self.primaries}p+{self.primaries * self.replicas}r cluster" if self.cluster
                      else "1 Redis")
        return f"{redis_part}, {self.brokers}b+{self.workers}w"


SETUPS = {s.name: s for s in [
    Setup("plain", False, 1, 0, 1, 1),
    Setup("cluster1", True, 1, 0, 1, 1),
    Setup("plain-3x3", False, 1, 0, 3, 3),
    Setup("cluster3", True, 3, 0, 3, 3),
    Setup("cluster3r-acked", True, 3, 1, 3, 3, "acked"),
    Setup("cluster3r-replicated", True, 3, 1, 3, 3, "replicated"),
]}


def pick_rules(n: int = RULES, shards: int = 3) -> list[str]:
    """Rule names whose target streams' slots fall evenly on the `shards` equal slot ranges that
    `redis-cli --cluster create` gives `shards` primaries."""
    per = -(-n // shards)
    chosen: dict[int, list[str]] = {}
    for i in itertools.count():
        name = f"r{i}"
        shard = key_slot(stream_key(target_key("default", name, "noop"))) * shards // SLOTS
        if len(chosen.setdefault(shard, [])) < per:
            chosen[shard].append(name)
        if sum(map(len, chosen.values())) >= n:
            return sorted((r for names in chosen.values() for r in names), key=lambda r: int(r[1:]))


RULE_NAMES = pick_rules()
STREAMS = [stream_key(target_key("default", r, "noop")) for r in RULE_NAMES]


def rules_yaml() -> str:
    out = ["rules:"]
    for r in RULE_NAMES:
        out += [f"  - name: {r}", "    event_pattern:", f"      source: [bench.{r}]", "    targets:",
                "      - id: noop", f"        function: {FUNCTION}"]
    return "\n".join(out) + "\n"


def bodies(tagged: bool) -> list[bytes]:
    """The POST bodies, used in turn: batch k holds events k*10 .. k*10+9 of the round-robin over
    the rules' sources (10 mod 6: three distinct bodies, each source 5 times in every 3 batches)."""
    detail = {"n": 1, "t": 1} if tagged else {"n": 1}
    out, k = [], 0
    while True:
        out.append(json.dumps([{"source": f"bench.{RULE_NAMES[(k + i) % RULES]}", "detail-type": "noop",
                                "detail": detail} for i in range(BATCH)]).encode())
        k = (k + BATCH) % RULES
        if k == 0:
            return out


# --- the store: one redis-server or a LocalCluster -----------------------------------------

class Store:
    """A fresh Redis (plain) or Redis Cluster for one round of one or more set-ups."""

    def __init__(self, root: Path, setup: Setup, fsync: str):
        self.setup = setup
        if setup.cluster:
            # node timeout well above any stall a busy 2-core machine may cause: no failover mid-phase
            self.cluster = LocalCluster(root, primaries=setup.primaries, replicas=setup.replicas,
                                          node_timeout_ms=5000, fsync=fsync)
            self.nodes = self.cluster.nodes
        else:
            self.cluster = None
            self.nodes = [RedisProcess(root / "redis", fsync=fsync)]

    def start(self) -> "Store":
        try:
            if self.cluster:
                self.cluster.start(timeout=60)
            else:
                self.nodes[0].start()
        except BaseException:
            self.stop()
            raise
        self.primaries = self.primary_ports()
        return self

    def stop(self) -> None:
        if self.cluster:
            self.cluster.stop()
        else:
            self.nodes[0].stop()

    @property
    def url(self) -> str:
        return self.cluster.url if self.cluster else self.nodes[0].url

    def primary_ports(self) -> list[int]:
        return sorted(self.cluster.primary_ports()) if self.cluster else [self.nodes[0].port]

    def procs(self) -> dict[str, psutil.Process]:
        """CpuMeter names: redis-p:<port> for primaries, redis-r:<port> for replicas."""
        return {f"redis-{'p' if n.port in self.primaries else 'r'}:{n.port}": psutil.Process(n.proc.pid)
                for n in self.nodes}

    def node_client(self, port: int) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=10)

    async def flush(self) -> None:
        for port in self.primaries:
            async with self.node_client(port) as r:
                await r.flushall()

    async def rewrite_aof(self) -> None:
        """Compact every node's AOF and wait: no automatic rewrite (a fork) lands in a phase."""
        for n in self.nodes:
            async with self.node_client(n.port) as r:
                try:
                    await r.bgrewriteaof()
                except redis.ResponseError:  # one in progress already
                    pass
        deadline = time.monotonic() + 60
        for n in self.nodes:
            async with self.node_client(n.port) as r:
                while True:
                    info = await r.info("persistence")
                    if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"AOF rewrite of node {n.port} did not finish within 60 s")
                    await asyncio.sleep(0.05)

    async def commandstats(self) -> dict[tuple[int, str], int]:
        """Commands run so far on each primary: (port, command) -> calls (INFO commandstats)."""
        total: dict[tuple[int, str], int] = {}
        for port in self.primaries:
            async with self.node_client(port) as r:
                for k, v in (await r.info("commandstats")).items():
                    total[port, k.removeprefix("cmdstat_")] = v["calls"]
        return total

    async def memory(self) -> tuple[int, int]:
        """(keys, used_memory bytes), summed over the primaries."""
        keys = used = 0
        for port in self.primaries:
            async with self.node_client(port) as r:
                keys += await r.dbsize()
                used += (await r.info("memory"))["used_memory"]
        return keys, used

    async def streams_by_primary(self) -> dict[int, int]:
        """How many of the rules' streams each primary serves."""
        if not self.cluster:
            return {self.primaries[0]: len(STREAMS)}
        async with self.node_client(self.primaries[0]) as r:
            slots = await r.execute_command("CLUSTER", "SLOTS")
        out = {p: 0 for p in self.primaries}
        for s in STREAMS:
            slot = key_slot(s)
            for lo, hi, primary, *_ in slots:
                if lo <= slot <= hi:
                    port = int(primary[1])
                    out[port] = out.get(port, 0) + 1
        return out


# --- results -------------------------------------------------------------------------------

@dataclass
class Row:
    setup: Setup
    phase: str  # "throughput", "open loop", "idle"
    round: int
    events: int = 0  # accepted events
    seconds: float = 0.0
    ingest_seconds: float | None = None
    post_ms: list[float] = field(default_factory=list)  # per POST: sent -> answer read
    deliver_ms: list[float] = field(default_factory=list)  # answer read -> handler start (open loop)
    cpu: dict[str, float] = field(default_factory=dict)
    wait: dict[str, float] = field(default_factory=dict)
    streams: dict[int, int] = field(default_factory=dict)  # primary port -> streams on it
    commands: dict[tuple[int, str], float] = field(default_factory=dict)  # (primary, command) -> calls per event
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # anything busway got wrong
    error: str | None = None  # the phase failed

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds and self.phase == "throughput" else 0.0

    def p(self, which: str, q: float) -> float | None:
        values = getattr(self, which)
        return percentile(values, q) if values else None


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


WORKER_COUNTERS = ("busway_invocations_total", "busway_invocation_errors_total", "busway_retries_total",
                   "busway_dead_letters_total", "busway_dropped_events_total", "busway_cross_slot_duplicates_total")
BENIGN = ("authentication off: no credentials configured",)  # what a loopback broker always says
BROKER_COUNTERS = ("busway_events_ingested_total", "busway_cross_slot_duplicates_total")


# --- one set-up's processes and the load generator -----------------------------------------

class Busway:
    """The brokers and workers of one set-up on one store, and this process's HTTP clients."""

    def __init__(self, setup: Setup, store: Store, children: Children, tmp: Path, args, tag: str):
        self.setup, self.store, self.children, self.tmp, self.args, self.tag = setup, store, children, tmp, args, tag
        self.latency_file = tmp / f"{tag}-latency.txt"
        self.errors: list[str] = []  # failed POSTs, this phase

    @asynccontextmanager
    async def running(self):
        rules = self.tmp / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "bench.yaml").write_text(rules_yaml())
        env = {"BENCH_LATENCY_FILE": str(self.latency_file), "PYTHONUNBUFFERED": "1"}
        log = ["--log-level", self.args.log_level]
        self.bases, self.procs, self.logs = [], {}, []
        for i in range(1, self.setup.brokers + 1):
            port = free_port()
            name = f"{self.tag}-broker{i}"
            self.procs[f"broker{i}"] = self.children.start(name, [
                PY, "-m", "bus", *log, "serve", "--rules", str(rules), "--port", str(port),
                "--redis", self.store.url, "--durability", self.setup.durability], env)
            self.bases.append(f"http://127.0.0.1:{port}")
            self.logs.append(self.tmp / f"{name}.log")
        self.worker_metrics = []
        for i in range(1, self.setup.workers + 1):
            port = free_port()
            name = f"{self.tag}-worker{i}"
            self.procs[f"worker{i}"] = self.children.start(name, [
                PY, "-m", "bus", *log, "worker", "--functions", str(FUNCTIONS), "--redis", self.store.url,
                "--concurrency", str(self.args.concurrency), "--metrics-port", str(port)], env)
            self.worker_metrics.append(f"http://127.0.0.1:{port}/metrics")
            self.logs.append(self.tmp / f"{name}.log")
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as self.http:
            self.redis = connect(self.store.url)  # one Redis or a cluster
            try:
                urls = [b + "/healthz" for b in self.bases] + [u.removesuffix("/metrics") + "/healthz"
                                                               for u in self.worker_metrics]
                for url in urls:
                    await e2e.wait_until(lambda url=url: self._ok(url), 60, url, self.children)
                yield self
            finally:
                await self.redis.aclose()
                self.children.stop_all()

    async def _ok(self, url: str) -> bool:
        return await e2e.healthy(self.http, url, self.children)

    async def post(self, base: str, body: bytes) -> list[str] | None:
        """The EventIds of one PutEvents, or None (the failure kept in self.errors)."""
        try:
            async with self.http.post(base + "/events", data=body, headers={"Content-Type": "application/json"}) as r:
                raw = await r.read()
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.errors.append(f"{base}: {type(exc).__name__}: {exc}")
            return None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        if status != 200 or answer.get("FailedEntryCount") or "Entries" not in answer:
            self.errors.append(f"{base}: HTTP {status} {raw[:300]!r}")
            return None
        return [e["EventId"] for e in answer["Entries"]]

    async def counters(self) -> dict[str, float]:
        """The workers' and brokers' counters, summed (worker:..., broker:...)."""
        out: dict[str, float] = {}
        for urls, names, kind in ((self.worker_metrics, WORKER_COUNTERS, "worker"),
                                  ([b + "/metrics" for b in self.bases], BROKER_COUNTERS, "broker")):
            for url in urls:
                async with self.http.get(url) as r:
                    text = await r.text()
                for name in names:
                    out[f"{kind}:{name}"] = out.get(f"{kind}:{name}", 0.0) + metric_sum(text, name)
        return out

    async def depths(self) -> list[int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in STREAMS:
                pipe.xlen(s)
            return await pipe.execute()

    async def drained(self) -> bool:
        return not any(await self.depths())

    async def wait_drained(self, timeout: float = 120) -> float:
        try:
            return await e2e.wait_until(self.drained, timeout, "every target stream to be empty", self.children)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; stream lengths {await self.depths()}") from None

    def meter(self) -> CpuMeter:
        return CpuMeter({**self.store.procs(), **self.procs, "bench": psutil.Process()})

    async def closed_loop(self, events: int, post_ms: list[float] | None = None) -> tuple[int, float]:
        """Post `events` in batches from every client as fast as answers come: (events accepted,
        seconds until the last answer)."""
        n_calls = -(-events // BATCH)
        calls = itertools.count()
        body = bodies(False)
        accepted = 0

        async def client(j: int) -> None:
            nonlocal accepted
            base = self.bases[j % len(self.bases)]
            while (k := next(calls)) < n_calls:
                t0 = time.perf_counter()
                ids = await self.post(base, body[k % len(body)])
                if ids is not None:
                    accepted += len(ids)
                    if post_ms is not None:
                        post_ms.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client(j) for j in range(self.args.clients_per_broker * len(self.bases))))
        return accepted, time.perf_counter() - started

    def _check_counts(self, row: Row, before: dict[str, float], after: dict[str, float], accepted: int) -> None:
        diff = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        ran = diff["worker:busway_invocations_total"]
        ingested = diff["broker:busway_events_ingested_total"]
        if ran != accepted:
            row.problems.append(f"{row.phase}: {accepted} events accepted, {ran:.0f} handler invocations, "
                                f"{ingested:.0f} ingested by the brokers")
        for name in WORKER_COUNTERS[1:]:
            if diff.get(f"worker:{name}"):
                row.problems.append(f"{row.phase}: worker {name} +{diff[f'worker:{name}']:.0f}")
        if diff.get("broker:busway_cross_slot_duplicates_total"):
            row.notes.append(f"{row.phase}: broker busway_cross_slot_duplicates_total "
                             f"+{diff['broker:busway_cross_slot_duplicates_total']:.0f}")

    def _take_errors(self, row: Row) -> None:
        if self.errors:
            row.problems.append(f"{row.phase}: {len(self.errors)} failed POSTs, first: {self.errors[0]}")
            self.errors = []

    async def throughput(self, rnd: int) -> Row:
        row = Row(self.setup, "throughput", rnd)
        await self.closed_loop(self.args.warmup)  # imports, slots, connections, script caches
        await self.wait_drained()
        self._take_errors(row)  # warm-up failures count too
        await self.store.rewrite_aof()
        await self.quiet(row)
        before, stats0, mem0 = await self.counters(), await self.store.commandstats(), await self.store.memory()
        meter = self.meter()
        started = time.perf_counter()
        row.events, row.ingest_seconds = await self.closed_loop(self.args.events, row.post_ms)
        row.seconds = await self.wait_drained() - started
        row.cpu, row.wait = meter.measure()
        stats1, after, mem1 = await self.store.commandstats(), await self.counters(), await self.store.memory()
        keys, used = mem1[0] - mem0[0], mem1[1] - mem0[1]
        requests = -(-self.args.events // BATCH)
        row.notes.append(f"Redis after the phase (streams empty): {keys:+,} keys, {used / 1e6:+.1f} MB used_memory "
                         f"over the primaries ({keys / requests:.1f} keys, {used / requests:,.0f} bytes per request"
                         f"{'; the per-slot done-markers live ' + str(ONCE_TTL_SECONDS) + ' s' if self.setup.cluster else ''})")
        self._take_errors(row)
        self._check_counts(row, before, after, row.events)
        # the bench's own calls; COMMAND stays: redis-py's cluster client sends COMMAND GETKEYS per XREADGROUP
        ignore = {"info", "xlen", "cluster", "bgrewriteaof", "ping"}
        row.commands = {k: (v - stats0.get(k, 0)) / max(row.events, 1) for k, v in stats1.items()
                        if k[1] not in ignore and v - stats0.get(k, 0) > 0}
        return row

    async def open_loop(self, rnd: int) -> Row:
        row = Row(self.setup, "open loop", rnd)
        self.latency_file.write_text("")
        body = bodies(True)
        turn = itertools.count()
        sent_ids: list[tuple[str, float]] = []

        async def send_batch() -> list:
            k = next(turn)
            base = self.bases[k % len(self.bases)]
            t0 = time.perf_counter()
            ids = await self.post(base, body[k % len(body)])
            answered = time.time()  # the handlers' clock
            if ids is not None:
                row.post_ms.append((time.perf_counter() - t0) * 1000)
                sent_ids.extend((i, answered) for i in ids)
            return []

        await self.store.rewrite_aof()
        await self.quiet(row)
        before = await self.counters()
        meter = self.meter()
        started = time.perf_counter()
        await e2e.open_loop(self.args.latency_seconds, send_batch)
        await self.wait_drained(60)
        row.seconds = time.perf_counter() - started
        row.cpu, row.wait = meter.measure()
        row.events = len(sent_ids)
        self._take_errors(row)
        self._check_counts(row, before, await self.counters(), row.events)
        await asyncio.sleep(0.2)  # the handler's last write has happened (stream empty), be generous
        starts: dict[str, list[float]] = {}
        for line in self.latency_file.read_text().splitlines():
            key, t = line.split()
            starts.setdefault(key, []).append(float(t))
        missing = [i for i, _ in sent_ids if i not in starts]
        twice = sum(1 for v in starts.values() if len(v) > 1)
        if missing:
            row.problems.append(f"open loop: {len(missing)} of {len(sent_ids)} accepted events never reached a handler")
        if twice:
            row.problems.append(f"open loop: {twice} events' handler started more than once")
        row.deliver_ms = [(starts[i][0] - a) * 1000 for i, a in sent_ids if i in starts]
        return row

    async def quiet(self, row: Row) -> None:
        """Wait (up to --phase-wait-quiet s) until the rest of the machine, everything but this
        set-up and this process, used under 30% of a core for a second: a phase started while a
        neighbour's test run holds the cores measures the neighbour."""
        deadline = time.monotonic() + self.args.phase_wait_quiet
        waited = 0.0
        while time.monotonic() < deadline:
            meter = self.meter()
            await asyncio.sleep(1.0)
            other = meter.measure()[0]["other"]
            if other < 30:
                break
            waited += 1.0
        if waited:
            row.notes.append(f"waited {waited:.0f} s for the machine to be quieter before the phase")

    async def idle(self, rnd: int) -> Row:
        row = Row(self.setup, "idle", rnd)
        meter = self.meter()
        started = time.perf_counter()
        await asyncio.sleep(self.args.idle_seconds)
        row.seconds = time.perf_counter() - started
        row.cpu, row.wait = meter.measure()
        return row

    def scan_logs(self) -> list[str]:
        """Warnings, errors and tracebacks the processes logged (WARNING is their log level)."""
        out = []
        for path in self.logs:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            bad = [ln for ln in lines if any(w in ln for w in ("Traceback", "ERROR", "WARNING", "CRITICAL", "Error"))
                   and not any(w in ln for w in BENIGN)]
            if bad:
                first = list(dict.fromkeys(ln.strip()[:300] for ln in bad))[:3]
                out.append(f"{path.name}: {len(bad)} warning/error lines, e.g. " + " | ".join(first))
        return out


# --- the run -------------------------------------------------------------------------------

async def run_setup(setup: Setup, store: Store, children: Children, tmp: Path, args, rnd: int) -> list[Row]:
    tag = f"{setup.name}-r{rnd}"
    bw = Busway(setup, store, children, tmp, args, tag)
    rows: list[Row] = []
    primaries = store.primary_ports()
    streams: dict[int, int] = {}
    t0 = time.perf_counter()
    try:
        async with bw.running():
            print(f"  {setup.name} (round {rnd}): {setup.brokers} broker(s) and {setup.workers} worker(s) up in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            streams = await store.streams_by_primary()
            print(f"  {setup.name} (round {rnd}): throughput, {args.events} events", flush=True)
            rows.append(await bw.throughput(rnd))
            r = rows[-1]
            print(f"    {r.events} in {r.seconds:.2f} s = {r.rate:.0f}/s, PutEvents p50 {r.p('post_ms', 50):.1f} ms, "
                  f"p99 {r.p('post_ms', 99):.1f} ms", flush=True)
            if args.latency_seconds > 0:
                print(f"  {setup.name} (round {rnd}): open loop, {args.rate:.0f} events/s for "
                      f"{args.latency_seconds:.0f} s", flush=True)
                rows.append(await bw.open_loop(rnd))
                r = rows[-1]
                if r.post_ms:
                    print(f"    PutEvents p50 {r.p('post_ms', 50):.1f} ms, p99 {r.p('post_ms', 99):.1f} ms; delivery "
                          f"p50 {_ms(r.p('deliver_ms', 50))} ms, p99 {_ms(r.p('deliver_ms', 99))} ms", flush=True)
            if args.idle_seconds > 0:
                rows.append(await bw.idle(rnd))
    except Exception as exc:  # a set-up that fails is reported, and the others still run
        text = f"{type(exc).__name__}: {exc}"
        print(f"    FAILED: {text}", flush=True)
        rows.append(Row(setup, "failed", rnd, error=text))
    print(f"  {setup.name} (round {rnd}): {time.perf_counter() - t0:.1f} s in all", flush=True)
    for row in rows:
        row.streams = streams
    logs = bw.scan_logs()
    now = store.primary_ports()
    if rows:
        rows[0].problems += logs
        if now != primaries:
            rows[0].problems.append(f"primaries changed during the set-up: {primaries} -> {now} (a failover)")
    for p in (p for row in rows for p in row.problems):
        print(f"    problem: {p}", flush=True)
    return rows


async def run(args, children: Children, tmp: Path, live: list[Store]) -> list[Row]:
    chosen = [SETUPS[name] for name in args.setups]
    groups: dict[tuple, list[Setup]] = {}
    for s in chosen:
        groups.setdefault(s.store, []).append(s)
    rows: list[Row] = []
    for rnd in range(1, args.rounds + 1):
        for store_key, setups in groups.items():
            order = setups if rnd % 2 else setups[::-1]  # acked/replicated: each goes first once
            root = tmp / f"store-{order[0].name}-r{rnd}"
            print(f"round {rnd}: starting {order[0].shape.split(',')[0]} for {', '.join(s.name for s in order)}",
                  flush=True)
            store = Store(root, order[0], args.fsync)
            live.append(store)
            try:
                t0 = time.perf_counter()
                store.start()  # in this thread: a Ctrl-C during it stops what it started
                print(f"  up in {time.perf_counter() - t0:.1f} s", flush=True)
                for i, setup in enumerate(order):
                    if i:
                        await store.flush()
                    rows += await run_setup(setup, store, children, tmp, args, rnd)
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
                print(f"  FAILED to run {[s.name for s in order]}: {text}", flush=True)
                rows += [Row(s, "failed", rnd, error=text) for s in order]
            finally:
                children.stop_all()
                store.stop()
                live.remove(store)
    return rows


def best_rows(rows: list[Row], setups: list[str]) -> list[Row]:
    """Per set-up: the best throughput round, the open-loop round with the lowest PutEvents p99,
    the idle round with the least CPU; the other rounds' figures are noted."""
    out = []
    for name in setups:
        mine = [r for r in rows if r.setup.name == name]
        for phase, key in (("throughput", lambda r: -r.rate), ("open loop", lambda r: r.p("post_ms", 99) or 1e9),
                           ("idle", lambda r: sum(v for k, v in r.cpu.items() if k not in ("bench", "other")))):
            tries = [r for r in mine if r.phase == phase]
            if not tries:
                continue
            best = min(tries, key=key)
            if len(tries) > 1 and phase == "throughput":
                best.notes.insert(0, "rounds: " + ", ".join(f"{r.rate:.0f}/s" for r in tries))
            elif len(tries) > 1 and phase == "open loop":
                best.notes.insert(0, "rounds' PutEvents p99: " + ", ".join(f"{r.p('post_ms', 99):.1f} ms"
                                                                            for r in tries if r.post_ms))
            for r in tries:
                if r is not best:
                    best.problems += [f"(round {r.round}) {p}" for p in r.problems]
            out.append(best)
        out += [r for r in mine if r.phase == "failed"]
    return out


def _kind(cpu: dict[str, float], prefix: str) -> str:
    """'sum (a+b+c)' of the processes whose name starts with `prefix`; '' if none."""
    values = [v for k, v in sorted(cpu.items()) if k.startswith(prefix)]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{sum(values):.0f} ({'+'.join(f'{v:.0f}' for v in values)})"


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def ceilings(rows: list[Row]) -> list[str]:
    """Per throughput row: each primary's events/s (its share of the streams) over its CPU share."""
    out = []
    for r in rows:
        if r.phase != "throughput" or not r.rate:
            continue
        parts = []
        total = sum(r.streams.values()) or RULES
        for port, n in sorted(r.streams.items()):
            cpu = r.cpu.get(f"redis-p:{port}")
            if not cpu:
                continue
            share = r.rate * n / total
            parts.append(f"{share:.0f}/s at {cpu:.0f}% -> ~{share * 100 / cpu:,.0f}/s")
        if parts:
            out.append(f"{r.setup.name}: per primary " + "; ".join(parts))
    return out


def report(rows: list[Row], args, redis_version: str, loads: list[str], started_utc: str) -> None:
    print()
    print(f"date: {started_utc}; machine: {e2e._cpu_model()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; Python {platform.python_version()}; "
          f"Redis {redis_version}, appendonly yes, appendfsync {args.fsync}; busway at {e2e._busway_version()}; "
          f"load average {' -> '.join(loads)}")
    print(f"events: {args.events} per throughput phase after {args.warmup} warm-up, batches of {BATCH}, "
          f"{args.clients_per_broker} clients per broker; open loop {args.rate:.0f} events/s for "
          f"{args.latency_seconds:.0f} s; worker --concurrency {args.concurrency}; rounds {args.rounds}; "
          f"rules {', '.join(RULE_NAMES)}")
    print()
    head = ("set-up", "processes", "phase", "events", "s", "events/s", "accepted/s", "PutEvents p50 ms", "p99 ms",
            "delivery p50 / p99 ms", "redis primaries CPU%", "replicas CPU%", "brokers CPU%", "workers CPU%",
            "bench CPU%", "other CPU%")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if r.phase == "failed":
            print(f"| {r.setup.name} | {r.setup.shape} | FAILED (round {r.round}) | " + " | " * 12 + " |")
            continue
        phase = {"open loop": f"open loop {args.rate:.0f}/s", "idle": f"idle {r.seconds:.0f} s"}.get(r.phase, r.phase)
        accepted = f"{r.events / r.ingest_seconds:.0f}" if r.ingest_seconds else ""
        deliver = (f"{_ms(r.p('deliver_ms', 50))} / {_ms(r.p('deliver_ms', 99))}" if r.deliver_ms else "")
        cells = [r.setup.name, r.setup.shape, phase, str(r.events) if r.phase != "idle" else "",
                 f"{r.seconds:.2f}", f"{r.rate:.0f}" if r.rate else "", accepted,
                 _ms(r.p("post_ms", 50)), _ms(r.p("post_ms", 99)), deliver,
                 _kind(r.cpu, "redis-p"), _kind(r.cpu, "redis-r"), _kind(r.cpu, "broker"), _kind(r.cpu, "worker"),
                 f"{r.cpu.get('bench', 0):.0f}", f"{r.cpu.get('other', 0):.0f}"]
        print("| " + " | ".join(cells) + " |")
    print("\nevents/s: handler runs per second, first POST to every stream empty. accepted/s: the clients' rate "
          "(all POSTs answered). PutEvents p50/p99: per POST of 10 events, request sent -> answer read (throughput: "
          "closed loop, so queueing included; open loop: a batch every 20 ms regardless of answers). delivery: "
          "answer read -> handler start. CPU%: of one core over the phase (2 cores = 200%); several processes of a "
          "kind: sum (each); a worker includes its slot processes; bench is this process (the load generator); "
          "other: the rest of the machine.")
    print()
    for r in rows:
        what = f"{r.setup.name} {r.phase}"
        if r.streams and r.phase == "throughput":
            print(f"note: {what}: streams per primary " + ", ".join(f"{p}: {n}" for p, n in sorted(r.streams.items())))
        if r.commands:
            summed: dict[str, float] = {}
            for (_, name), v in r.commands.items():
                summed[name] = summed.get(name, 0.0) + v
            busiest = sorted(summed.items(), key=lambda kv: -kv[1])[:7]
            print(f"note: {what}: Redis commands per event, all primaries (inside scripts too): "
                  f"{sum(summed.values()):.2f}; " + ", ".join(f"{k} {v:.2f}" for k, v in busiest))
            ports = sorted({port for port, _ in r.commands})
            if len(ports) > 1:
                parts = []
                for port in ports:
                    mine = {name: v for (p, name), v in r.commands.items() if p == port}
                    top = sorted(mine.items(), key=lambda kv: -kv[1])[:4]
                    parts.append(f"{port}: {sum(mine.values()):.2f} (" + ", ".join(f"{k} {v:.2f}" for k, v in top) + ")")
                print(f"note: {what}: per primary: " + "; ".join(parts))
        if r.phase == "throughput" and r.rate and r.cpu:
            kinds = [("redis", "redis-"), ("brokers", "broker"), ("workers", "worker"), ("bench", "bench")]
            per = ", ".join(f"{label} {sum(v for k, v in r.cpu.items() if k.startswith(prefix)) * 10 / r.rate:.3f}"
                            for label, prefix in kinds)
            print(f"note: {what}: CPU ms per event: {per}")
        if r.phase == "throughput" and r.cpu:
            waits = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.wait.items()) if v >= 5)
            if waits:
                print(f"note: {what}: run-queue wait % (runnable, no core free): {waits}")
        for n in r.notes:
            print(f"note: {what}: {n}")
    for line in ceilings(rows):
        print(f"ceiling: {line} (events/s one primary could take at 100% of a core, this workload)")
    problems = [(r, p) for r in rows for p in r.problems] + [(r, r.error) for r in rows if r.error]
    print()
    if problems:
        for r, p in problems:
            print(f"PROBLEM: {r.setup.name}: {p}")
    else:
        print("checks: every accepted event handled once, no failed POSTs, no retries/dead letters/errors, "
              "no warnings in the logs, no failover")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 2,000 events, 2 s open loop, no idle window, no plain-3x3 (~1 min)")
    p.add_argument("--setups", nargs="+", choices=list(SETUPS),
                   help=f"set-ups to run (default all: {' '.join(SETUPS)}; quick: all but plain-3x3)")
    p.add_argument("--events", type=int, help="events per throughput phase (default 10000; quick 2000)")
    p.add_argument("--warmup", type=int, help="events posted before each throughput phase (default 1000; quick 200)")
    p.add_argument("--rounds", type=int, help="interleaved rounds, best kept (default 2; quick 1)")
    p.add_argument("--latency-seconds", type=float, help="open-loop phase length (default 6; quick 2; 0: none)")
    p.add_argument("--idle-seconds", type=float, help="idle window (default 2; quick 0: none)")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop events/s, in batches of 10 (500)")
    p.add_argument("--clients-per-broker", type=int, default=8, help="concurrent POSTing clients per broker (8)")
    p.add_argument("--concurrency", type=int, default=10, help="bus worker --concurrency (10)")
    p.add_argument("--fsync", choices=["always", "everysec", "no"], default="everysec",
                   help="appendfsync of every redis-server (default everysec: a cluster's durability is its replicas)")
    p.add_argument("--log-level", default="WARNING", help="bus --log-level of brokers and workers (WARNING)")
    p.add_argument("--time-limit", type=float, help="stop everything after this many seconds (default 900; quick 300)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (process logs, Redis data)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to this long for the machine to be quiet (< 25%% of one core busy)")
    p.add_argument("--phase-wait-quiet", type=float, metavar="SECONDS",
                   help="before each measured phase, wait up to this long for other processes to use < 30%% of "
                        "a core (default 10; quick 0)")
    args = p.parse_args()
    quick = args.quick
    args.setups = args.setups or [s for s in SETUPS if not (quick and s == "plain-3x3")]
    args.events = args.events or (2000 if quick else 10000)
    args.warmup = args.warmup if args.warmup is not None else (200 if quick else 1000)
    args.rounds = args.rounds or (1 if quick else 2)
    args.latency_seconds = args.latency_seconds if args.latency_seconds is not None else (2.0 if quick else 6.0)
    args.idle_seconds = args.idle_seconds if args.idle_seconds is not None else (0.0 if quick else 2.0)
    args.time_limit = args.time_limit or (300.0 if quick else 900.0)
    args.phase_wait_quiet = args.phase_wait_quiet if args.phase_wait_quiet is not None else (0.0 if quick else 10.0)
    e2e.TICK = BATCH / args.rate  # e2e.open_loop sends one batch per TICK

    signal.signal(signal.SIGTERM, e2e._raise_interrupt)

    def out_of_time(signum, frame):
        print(f"\n--time-limit {args.time_limit:.0f} s reached", file=sys.stderr)
        raise KeyboardInterrupt
    busy = e2e._wait_quiet(args.wait_quiet)
    if busy > 25:
        print(f"warning: other processes use {busy:.0f}% of one core right now; results will be low and noisy "
              f"(see the 'other CPU%' column)", flush=True)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.time_limit))
    version = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True).stdout.split()
    redis_version = next((w.split("=", 1)[1] for w in version if w.startswith("v=")), "?")
    started = time.perf_counter()
    started_utc = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [e2e._load()]
    print(f"{started_utc}; load average {loads[0]}; {os.cpu_count()} cores; redis {redis_version}; "
          f"set-ups {', '.join(args.setups)}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="busway-cluster-"))
    print(f"logs in {tmp}", flush=True)
    children = Children(tmp)
    live: list[Store] = []
    rows: list[Row] = []
    code = 0
    try:
        rows = asyncio.run(run(args, children, tmp, live))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        code = 130
    finally:
        signal.alarm(0)
        children.stop_all()
        for store in live:
            store.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    if code:
        return code
    loads.append(e2e._load())
    report(best_rows(rows, args.setups), args, redis_version, loads, started_utc)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
