"""Fault scenarios, measured (issue 12): one summary line per scenario.

    .venv/bin/python bench/faults.py            # every scenario, about 5 minutes
    .venv/bin/python bench/faults.py --quick    # smoke run, about 1-2 minutes, smaller counts
    .venv/bin/python bench/faults.py --only churn,redis [--keep]

Each scenario gets its own private redis-server (AOF, appendfsync always) on a free port in a
temp dir, its own `bus serve` and `bus worker` processes (each in a process group of its own,
all stopped by this script: on exit, error, Ctrl-C or SIGTERM), and handlers this script writes
into a temp functions dir. Every handler run appends {event id, source, worker, attempt, time}
to a file, so:

    sent        events posted (bad-input: requests sent)
    accepted    events answered with an EventId
    handled     accepted events whose handler ran (to completion) at least once
    lost        accepted events never handled (must be 0; poison: good events, and poison
                events neither handled nor dead-lettered)
    duplicated  accepted events whose handler ran to completion more than once (at-least-once:
                a worker killed between a handler's end and its FINISH)
    5xx         answers with a 5xx status seen by the load generator (see each scenario)
    recovery s  per scenario, from the fault to service again (defined in the notes column)

Scenarios:
  churn      3 workers under load; one is SIGKILLed (the worker process only, as an OOM kill)
             and restarted every ~1 s. recovery = last kill -> every accepted event handled.
  broker     2 brokers behind the load generator (round robin; a failed request is retried on
             the other broker); broker A is SIGKILLed mid-load and restarted 2 s later on the same
             port. recovery = longest a request waited, first try -> EventIds, around the kill.
  redis      redis-server SIGKILLed mid-load, down 2 s, restarted on the same port and AOF;
             the producer retries a refused batch. 5xx = the broker's 500 "not stored, retry"
             answers while Redis was down. recovery = Redis answering PING -> first handler
             run (worst trial).
  poison     one worker; good events at a steady rate and, among them, events for a handler
             raising SystemExit at import, one calling os._exit(3), and an async one blocking
             its loop past its 2 s timeout (each 1 retry, dead letter). handled = good events.
             recovery = longest gap between two good handler runs while the poison ran.
  badinput   malformed requests to every route (tests/test_bad_input.py's cases, a seeded
             random fuzz over every AWS operation, raw HTTP garbage); 5xx must be 0; then a good
             batch must be accepted and handled.
  slowloris  slow clients trickling headers one byte a second (BUS_HEADER_TIMEOUT=5) while a
             normal client posts an event every 50 ms; every one must be accepted.
             recovery = the normal client's slowest answer.
  conns      500 keep-alive clients (one connection each, all open at once) post events;
             all accepted and handled, 0 5xx (the cap BUS_MAX_CONNECTIONS is 1000).

Loopback only. Process logs are in the temp dir named at the start (kept with --keep or when
a scenario fails).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
import redis as redis_lib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bus.local.redisproc import RedisProcess, free_port  # noqa: E402
from bus.store import keys  # noqa: E402

PY = sys.executable
OUT_ENV = "FAULTS_OUT"

# --- handlers written into the temp functions dir ---------------------------------------------

HANDLERS = {
    "rec.py": '''
        """Records a run as one JSON line (one O_APPEND write), after the work is done."""
        import json, os, time

        def note(event, context, phase):
            line = json.dumps({"id": event["id"], "src": event["source"], "n": event["detail"].get("n"),
                               "w": context.log_stream_name, "a": context.attempt, "phase": phase,
                               "t": time.time()}) + "\\n"
            fd = os.open(os.environ["FAULTS_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

        def good(event, context):
            note(event, context, "end")
            return {"ok": True}
    ''',
    "importexit.py": '''
        """Poison: importing it raises SystemExit (a stray sys.exit() at top level)."""
        import sys
        sys.exit("importexit: leaving at import time")

        def handler(event, context):
            return {"never": True}
    ''',
    "hardexit.py": '''
        """Poison: ends its slot process at once, as a C extension's abort would."""
        import os
        from rec import note

        def handler(event, context):
            note(event, context, "attempt")
            os._exit(3)
    ''',
    "blocker.py": '''
        """Poison: an async handler blocking its event loop far past its 2 s timeout."""
        import time
        from rec import note

        async def handler(event, context):
            note(event, context, "attempt")
            time.sleep(30)
    ''',
}

GOOD_RULE = """
  - name: good
    event_pattern: {source: [good]}
    targets: [{id: t, function: rec.good, retry_policy: {maximum_retry_attempts: 5}}]
"""
POISON_RULES = """
functions:
  blocker.handler: {timeout: 2}
rules:
""" + GOOD_RULE + "".join(f"""
  - name: {name}
    event_pattern: {{source: [{name}]}}
    targets:
      - id: t
        function: {ref}
        retry_policy: {{maximum_retry_attempts: 1, backoff_base_seconds: 0.05, backoff_max_seconds: 0.2}}
        dead_letter: true
""" for name, ref in [("importexit", "importexit.handler"), ("hardexit", "hardexit.handler"),
                      ("blocker", "blocker.handler")])
RULES = "rules:\n" + GOOD_RULE


# --- processes ----------------------------------------------------------------------------------

class Rig:
    """One scenario's world: a private Redis, brokers and workers, each in its own process group."""

    def __init__(self, root: Path, rules: str = RULES):
        self.root = root
        self.functions = root / "functions"
        self.functions.mkdir(parents=True)
        for name, text in HANDLERS.items():
            (self.functions / name).write_text(textwrap.dedent(text).lstrip())
        (root / "rules").mkdir()
        (root / "rules" / "r.yaml").write_text(rules)
        self.out = root / "runs.jsonl"
        self.redis = RedisProcess(root / "redis", fsync="always")
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, **{OUT_ENV: str(self.out)}, PYTHONUNBUFFERED="1")

    def __enter__(self) -> "Rig":
        self.redis.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def spawn(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.root / f"{name}-{len(self.procs)}.log", "ab")
        proc = subprocess.Popen([PY, "-m", "bus", "--log-level", "WARNING", *args, "--redis", self.redis.url],
                                cwd=ROOT, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def broker(self, port: int | None = None, env: dict | None = None) -> tuple[subprocess.Popen, int]:
        port = port or free_port()
        proc = self.spawn("broker", ["serve", "--rules", str(self.root / "rules"), "--port", str(port)], env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url) or proc.poll() is not None, 20, "broker /healthz")
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}; see {self.root}")
        return proc, port

    def worker(self, concurrency: int = 10, lease: float = 3.0) -> subprocess.Popen:
        return self.spawn("worker", ["worker", "--functions", str(self.functions), "--concurrency",
                                     str(concurrency), "--metrics-port", "0", "--lease-seconds", str(lease)])

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(proc.pid, signal.SIGKILL)  # leftovers of the group (slots) or a hung process
            if proc.poll() is None:
                proc.wait()
        self.redis.stop()

    def runs(self) -> list[dict]:
        """Every recorded handler run (whole lines only: a slot may be halfway through one)."""
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        *whole, _partial = text.split("\n")
        return [json.loads(line) for line in whole if line.strip()]

    def dead_letters(self) -> list[dict]:
        client = redis_lib.Redis.from_url(self.redis.url)
        try:
            letters = []
            for key in client.scan_iter(match=keys.DLQ_PATTERN):
                for _id, fields in client.xrange(key):
                    letters.append(json.loads(fields[keys.FIELD]))
            return letters
        finally:
            client.close()


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_members(pgids: list[int]) -> list[str]:
    """Live processes in these process groups, as 'pid(ppid, status, age s)'. Zombies do not count:
    a killed worker's slots are reparented to PID 1, which may take a moment to reap them."""
    wanted, found = set(pgids), []
    for p in psutil.process_iter(["pid", "ppid", "status", "create_time"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) in wanted:
                found.append(f"{p.pid}(ppid {p.info['ppid']}, {p.info['status']}, "
                             f"{time.time() - p.info['create_time']:.0f} s)")
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def healthy(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


async def drain(rig: Rig, ids: set[str], timeout: float) -> float:
    """Wait until every id in `ids` was handled (or `timeout`); the time.time() it happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ids <= {r["id"] for r in rig.runs() if r["phase"] == "end"}:
            return time.time()
        await asyncio.sleep(0.1)
    return float("nan")


# --- results ------------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    sent: int = 0
    accepted: int = 0
    handled: int = 0
    lost: int = 0
    duplicated: int = 0
    fivexx: int = 0
    recovery: float | None = None
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def count(self, rig: Rig, accepted: set[str]) -> dict[str, int]:
        """Fill accepted/handled/lost/duplicated from the runs; completed runs per event id."""
        done: dict[str, int] = {}
        for r in rig.runs():
            if r["phase"] == "end":
                done[r["id"]] = done.get(r["id"], 0) + 1
        self.accepted = len(accepted)
        self.handled = sum(1 for i in accepted if i in done)
        self.lost = self.accepted - self.handled
        self.duplicated = sum(1 for i in accepted if done.get(i, 0) > 1)
        unanswered = sum(1 for i in done if i not in accepted)
        if unanswered:
            self.notes.append(f"{unanswered} handled events never answered to the client (stored, answer lost)")
        return done

    def line(self) -> str:
        rec = "-" if self.recovery is None else f"{self.recovery:.2f}"
        return (f"{self.name}: sent {self.sent} / accepted {self.accepted} / handled {self.handled} / "
                f"lost {self.lost} / duplicated {self.duplicated} / 5xx {self.fivexx} / recovery {rec} s"
                + (f"  [{'; '.join(self.notes)}]" if self.notes else "")
                + (f"  FAILED: {'; '.join(self.failures)}" if self.failures else ""))

    def check(self, **expect) -> None:
        for name, want in expect.items():
            got = getattr(self, name)
            if got != want:
                self.failures.append(f"{name} {got}, expected {want}")


def events(n0: int, count: int, source: str = "good") -> list[dict]:
    return [{"source": source, "detail-type": "T", "detail": {"n": n0 + k}} for k in range(count)]


async def post(session: aiohttp.ClientSession, url: str, batch: list[dict]) -> tuple[int, list[str]]:
    """(HTTP status, EventIds); raises aiohttp.ClientError / OSError when the connection fails."""
    async with session.post(url + "/events", data=json.dumps(batch).encode(),
                            headers={"Content-Type": "application/json"}) as resp:
        body = await resp.read()
        if resp.status != 200:
            return resp.status, []
        entries = json.loads(body)["Entries"]
        return 200, [e["EventId"] for e in entries if "EventId" in e]


def session(limit: int = 0, timeout: float = 10.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=timeout))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


# --- 1. worker SIGKILL churn ------------------------------------------------------------------------

async def churn(root: Path, quick: bool) -> Result:
    n_events, rate = (1000, 200) if quick else (3000, 200)  # 5 s or 15 s of load
    res = Result("churn")
    with Rig(root) as rig:
        _, port = rig.broker()
        url = f"http://127.0.0.1:{port}"
        workers = [rig.worker() for _ in range(3)]
        accepted: set[str] = set()
        answered: dict[str, float] = {}  # event id -> when its EventId came back
        killed_groups: list[int] = []

        async def produce(s):
            for i in range(0, n_events, 10):
                status, ids = await post(s, url, events(i, 10))
                res.sent += 10
                res.fivexx += status >= 500
                accepted.update(ids)
                answered.update(dict.fromkeys(ids, time.time()))
                await asyncio.sleep(10 / rate)

        async with session() as s:
            producer = asyncio.create_task(produce(s))
            kills, last_kill = 0, time.time()
            while not producer.done():
                await asyncio.sleep(1.0)
                victim = kills % 3
                workers[victim].kill()  # SIGKILL to the worker process only; its slots die with it
                workers[victim].wait()
                last_kill = time.time()
                killed_groups.append(workers[victim].pid)
                workers[victim] = rig.worker()
                kills += 1
            await producer
        done_at = await drain(rig, accepted, 30)
        res.count(rig, accepted)
        first_done: dict[str, float] = {}
        for r in rig.runs():
            if r["phase"] == "end" and r["id"] in answered:
                first_done[r["id"]] = min(r["t"], first_done.get(r["id"], r["t"]))
        delays = sorted(first_done[i] - answered[i] for i in first_done)
        res.recovery = delays[-1] if delays else float("nan")
        slow = sum(1 for d in delays if d > 1.0)
        await asyncio.sleep(0.5)
        orphans = group_members(killed_groups)
        res.notes.append(f"{kills} worker SIGKILLs in {n_events / rate:.0f} s of load at {rate} events/s; "
                         f"recovery = longest EventId -> first handler end ({slow} events over 1 s, "
                         f"p50 {delays[len(delays) // 2] * 1000:.0f} ms); last kill -> all handled "
                         f"{done_at - last_kill:.1f} s")
        if orphans:
            await asyncio.sleep(3.0)
            still = group_members(killed_groups)
            res.notes.append(f"processes left in killed workers' groups 0.5 s after the run: {orphans}; "
                             f"3 s later: {still}")
        res.check(lost=0, fivexx=0)
    return res


# --- 2. broker SIGKILL, two brokers --------------------------------------------------------------------

async def broker_kill(root: Path, quick: bool) -> Result:
    seconds, rate, clients = (6, 300, 4) if quick else (12, 300, 4)
    res = Result("broker")
    with Rig(root) as rig:
        a, port_a = rig.broker()
        _b, port_b = rig.broker()
        urls = [f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"]
        rig.worker()
        rig.worker()
        accepted: set[str] = set()
        waits: list[tuple[float, float]] = []  # (first try, accepted) of requests that needed a retry
        retried = errors = 0
        stop = asyncio.Event()

        async def client(k: int):
            nonlocal retried, errors
            sessions = [session(timeout=5), session(timeout=5)]
            try:
                i, turn = 0, k
                while not stop.is_set():
                    batch = events(k * 1_000_000 + i, 10)
                    i += 10
                    res.sent += 10
                    first = time.time()
                    for attempt in range(10):
                        which = (turn + attempt) % 2
                        try:
                            status, ids = await post(sessions[which], urls[which], batch)
                        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                            status, ids = 0, []
                            errors += 1
                        res.fivexx += status >= 500
                        if status == 200:
                            accepted.update(ids)
                            if attempt:
                                retried += 1
                                waits.append((first, time.time()))
                            break
                        await asyncio.sleep(0.05 * attempt)
                    else:
                        res.failures.append("a batch was refused by both brokers 10 times")
                    turn += 1
                    await asyncio.sleep(clients * 10 / rate)
            finally:
                for s in sessions:
                    await s.close()

        tasks = [asyncio.create_task(client(k)) for k in range(clients)]
        await asyncio.sleep(seconds / 2)
        a.kill()
        a.wait()
        killed = time.time()
        await asyncio.sleep(2.0)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: rig.broker(port_a))  # A again, same port
        await asyncio.sleep(seconds / 2 - 2)
        stop.set()
        await asyncio.gather(*tasks)
        await drain(rig, accepted, 30)
        res.count(rig, accepted)
        res.recovery = max((done - first for first, done in waits if done >= killed), default=0.0)
        res.notes.append(f"{retried} requests retried on the other broker after {errors} connection errors; "
                         f"recovery = longest first try -> EventIds")
        res.check(lost=0, fivexx=0)
    return res


# --- 3. Redis SIGKILL and restart --------------------------------------------------------------------

async def redis_kill(root: Path, quick: bool) -> Result:
    trials, outage, rate = (1, 2.0, 200) if quick else (3, 2.0, 200)
    res = Result("redis")
    with Rig(root) as rig:
        _, port = rig.broker()
        url = f"http://127.0.0.1:{port}"
        workers = [rig.worker(), rig.worker()]
        accepted: set[str] = set()
        answers: list[tuple[float, int]] = []  # (time, status) of every answer
        stop = asyncio.Event()

        async def produce(s):
            i = 0
            while not stop.is_set():
                batch = events(i, 10)
                i += 10
                res.sent += 10
                while True:  # a refused batch was not stored: post it again until accepted
                    try:
                        status, ids = await post(s, url, batch)
                    except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                        status, ids = 0, []
                    answers.append((time.time(), status))
                    res.fivexx += status >= 500
                    if status == 200:
                        accepted.update(ids)
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(10 / rate)

        figures, windows = [], []
        loop = asyncio.get_running_loop()
        async with session(timeout=15) as s:
            producer = asyncio.create_task(produce(s))
            for _ in range(trials):
                await asyncio.sleep(1.5)
                down = time.time()
                rig.redis.kill()
                await asyncio.sleep(outage)
                await loop.run_in_executor(None, rig.redis.start)  # returns once PING answers
                up = time.time()
                windows.append((down, up))
                first = float("nan")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    after = [r["t"] for r in rig.runs() if r["t"] >= up]
                    if after:
                        first = min(after)
                        break
                    await asyncio.sleep(0.01)
                figures.append(first - up)
            await asyncio.sleep(1.0)
            stop.set()
            await producer
        await drain(rig, accepted, 30)
        res.count(rig, accepted)
        res.recovery = max(figures)
        late = sum(1 for t, st in answers if st >= 500 and not any(d <= t <= u + 1.0 for d, u in windows))
        alive = all(w.poll() is None for w in workers)
        res.notes.append(f"{trials} SIGKILLs, {outage:g} s down each; 5xx are the broker's 500 'not stored, "
                         f"retry' answers ({late} outside down..up+1 s); recovery = PING -> first handler run "
                         f"(trials: {', '.join(f'{f:.3f}' for f in figures)}); workers all alive: {alive}")
        res.check(lost=0)
        if late:
            res.failures.append(f"{late} 5xx answers outside the outages")
        if not alive:
            res.failures.append("a worker died")
    return res


# --- 4. poison handlers ----------------------------------------------------------------------------

async def poison(root: Path, quick: bool) -> Result:
    seconds, rate, per_kind = (8, 50, 2) if quick else (15, 50, 4)
    res = Result("poison")
    kinds = ["importexit", "hardexit", "blocker"]
    with Rig(root, POISON_RULES) as rig:
        _, port = rig.broker()
        url = f"http://127.0.0.1:{port}"
        worker = rig.worker()
        good: set[str] = set()
        bad: dict[str, str] = {}  # event id -> kind
        poison_at = [1.0 + k * (seconds - 6) / max(1, per_kind - 1) for k in range(per_kind)]
        async with session() as s:
            started = time.monotonic()
            i = 0
            while time.monotonic() - started < seconds:
                batch = events(i, 5)
                i += 5
                if poison_at and time.monotonic() - started >= poison_at[0]:
                    poison_at.pop(0)
                    batch += [{"source": kind, "detail-type": "T", "detail": {"n": -1}} for kind in kinds]
                status, ids = await post(s, url, batch)
                res.sent += len(batch)
                res.fivexx += status >= 500
                for event, event_id in zip(batch, ids):
                    (good.add(event_id) if event["source"] == "good" else bad.__setitem__(event_id, event["source"]))
                await asyncio.sleep(5 / rate)
            load_end = time.time()
        await drain(rig, good, 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(rig.dead_letters()) < len(bad):
            await asyncio.sleep(0.2)
        done = res.count(rig, good)
        res.accepted += len(bad)
        letters = rig.dead_letters()
        lettered = {l["event"].get("id") for l in letters if isinstance(l["event"], dict)}
        poison_lost = sum(1 for i in bad if i not in lettered and i not in done)
        res.lost += poison_lost
        runs = rig.runs()
        attempts = {k: sum(1 for r in runs if r["src"] == k and r["phase"] == "attempt") for k in kinds}
        codes: dict[str, dict[str, int]] = {}
        for l in letters:
            c = codes.setdefault(l["rule"], {})
            c[l["error_code"]] = c.get(l["error_code"], 0) + 1
        attempts["importexit"] = sum(l["retry_attempts"] + 1 for l in letters if l["rule"] == "importexit")
        good_times = sorted(r["t"] for r in runs if r["src"] == "good" and r["phase"] == "end" and r["t"] <= load_end)
        gaps = [b - a for a, b in zip(good_times, good_times[1:])]
        res.recovery = max(gaps, default=float("nan"))
        res.notes.append(f"{len(good)} good + {len(bad)} poison events ({per_kind} per kind); attempts "
                         + ", ".join(f"{k} {attempts[k]}" for k in kinds)
                         + "; dead letters " + ", ".join(f"{k} {codes.get(k, {})}" for k in kinds)
                         + f"; worker alive: {worker.poll() is None}; recovery = longest gap between good runs")
        res.handled = sum(1 for i in good if i in done)
        res.check(lost=0, fivexx=0)
        if len(letters) != len(bad):
            res.failures.append(f"{len(letters)} dead letters for {len(bad)} poison events")
        if worker.poll() is not None:
            res.failures.append("the worker died")
    return res


# --- 5. bad inputs -----------------------------------------------------------------------------------

def bad_requests(seed: int, fuzz_per_operation: int) -> list[tuple[str, str, str, dict, bytes]]:
    """(label, method, path, headers, body) of malformed requests to every route."""
    aws_h = lambda op: {"X-Amz-Target": f"AWSEvents.{op}", "Content-Type": "application/x-amz-json-1.1"}
    js = {"Content-Type": "application/json"}
    out: list[tuple[str, str, str, dict, bytes]] = []
    try:  # the regression cases of the test suite
        from tests.test_bad_input import AWS_CASES, NATIVE_CASES
        for label, (op, body) in AWS_CASES.items():
            out.append((f"tests:{label}", "POST", "/", aws_h(op), (body if isinstance(body, str) else json.dumps(body)).encode()))
        for label, (path, body) in NATIVE_CASES.items():
            out.append((f"tests:{label}", "POST", path, js, body))
    except ImportError as exc:
        print(f"  (tests/test_bad_input.py not importable: {exc}; own cases only)")
    deep = b"[" * 5000 + b"]" * 5000
    raw_bodies = [b"", b"{", b"null", b"5", b'"x"', b"[]", b"[1, 2]", b"\xff\xfe", deep, b'{"a": ' * 3000,
                  b"{}", b'{"Entries": 5}', b'{"Entries": [5]}', b'{"Entries": [{}]}',
                  json.dumps({"Entries": [{"Source": "s", "DetailType": "t", "Detail": "{}"}] * 11}).encode(),
                  json.dumps({"Entries": [{"Source": "s", "DetailType": "t", "Detail": "x" * 300_000}]}).encode(),
                  json.dumps({"Entries": [{"Source": 5, "DetailType": [], "Detail": {}}]}).encode(),
                  b"x" * (5 * 1024 * 1024)]
    for k, body in enumerate(raw_bodies):
        out.append((f"aws-putevents-{k}", "POST", "/", aws_h("PutEvents"), body))
        out.append((f"events-{k}", "POST", "/events", js, body))
        out.append((f"test-event-pattern-{k}", "POST", "/test-event-pattern", js, body))
        out.append((f"dlq-redrive-{k}", "POST", "/dlq/redrive", js, body))
        out.append((f"dlq-purge-{k}", "POST", "/dlq/purge", js, body))
    out += [
        ("aws-no-target", "POST", "/", {"Content-Type": "application/x-amz-json-1.1"}, b"{}"),
        ("aws-unknown-target", "POST", "/", aws_h("NoSuchOperation"), b"{}"),
        ("aws-target-garbage", "POST", "/", {"X-Amz-Target": "AWSEvents.Put Events;'\"", "Content-Type": "x"}, b"{}"),
        ("aws-wrong-content-type", "POST", "/", {"X-Amz-Target": "AWSEvents.ListRules", "Content-Type": "text/plain"}, b"{}"),
        ("events-native-bad-fields", "POST", "/events", js, b'[{"source": 5, "detail-type": {}, "detail": "x"}]'),
        ("events-native-many", "POST", "/events", js, json.dumps([{"source": "s"}] * 1000).encode()),
        ("events-native-detail-array", "POST", "/events", js, b'{"source": "s", "detail-type": "t", "detail": [1]}'),
        ("events-native-bus-bad", "POST", "/events", js, b'{"source": "s", "detail-type": "t", "detail": {}, "bus": "../x"}'),
        ("tep-bad-pattern", "POST", "/test-event-pattern", js, b'{"pattern": {"source": "x"}, "event": {}}'),
        ("tep-wildcard-bomb", "POST", "/test-event-pattern", js,
         json.dumps({"pattern": {"source": [{"wildcard": "*a*b*c*d*e*f*g*h*i*j*k*"}]}, "event": {"source": "x"}}).encode()),
        ("dlq-list-bad-query", "GET", "/dlq?target=%ff%fe&limit=-5&start=zz", {}, b""),
        ("dlq-list-huge-limit", "GET", "/dlq?limit=99999999999999999999", {}, b""),
        ("dlq-show-missing", "GET", "/dlq/0-0", {}, b""),
        ("dlq-show-garbage", "GET", "/dlq/" + "%ff" * 50, {}, b""),
        ("dlq-show-long", "GET", "/dlq/" + "9" * 5000, {}, b""),
        ("metrics-post", "POST", "/metrics", {}, b"x"),
        ("healthz-body", "GET", "/healthz", js, b"{" * 1000),
        ("events-get", "GET", "/events", {}, b""),
        ("events-put", "PUT", "/events", js, b"[]"),
        ("root-delete", "DELETE", "/", {}, b""),
        ("unknown-route", "POST", "/nope/" + "a" * 3000, js, b"{}"),
    ]
    # A seeded random fuzz over every AWS operation: members each operation reads, wrong types.
    ops = ["PutEvents", "TestEventPattern", "ListEventBuses", "DescribeEventBus", "ListRules", "DescribeRule",
           "ListTargetsByRule", "PutRule", "PutTargets", "RemoveTargets", "EnableRule", "DisableRule", "DeleteRule"]
    members = ["Name", "EventBusName", "NamePrefix", "NextToken", "Limit", "Rule", "Targets", "Ids", "Force",
               "Description", "State", "EventPattern", "ScheduleExpression", "Entries", "Event", "RoleArn"]
    rnd = random.Random(seed)
    plausible = ["r", "default", "nope", "", "0", "-1", "ENABLED", "rate(1 minute)", "rate(0 minutes)",
                 "cron(0 12 * * ? *)", "cron(99 99 * * ? *)", '{"source": ["x"]}', '{"source": "x"}', "{not json",
                 "[" * 200 + "]" * 200, "rec.good", "arn:aws:sqs:us-east-1:0:q", "x" * 3000, "\u0000", "\udcff"]

    def value(depth=0):
        r = rnd.random()
        if r < 0.3:
            return rnd.choice(plausible)
        if r < 0.5:
            return rnd.choice([None, True, False, 0, -1, 2**70, 1e308, -0.5, "", [], {}])
        if depth < 3 and r < 0.75:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        if depth < 3:
            return {rnd.choice(members + ["Id", "Arn", "Source", "DetailType", "Detail", "Time"]): value(depth + 1)
                    for _ in range(rnd.randint(0, 4))}
        return rnd.random()

    for op in ops:
        for k in range(fuzz_per_operation):
            body = {rnd.choice(members): value() for _ in range(rnd.randint(0, 5))}
            out.append((f"fuzz-{op}-{k}", "POST", "/", aws_h(op), json.dumps(body).encode(errors="surrogatepass")))
    return out


RAW_GARBAGE = [
    b"GARBAGE\r\n\r\n",
    b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
    b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AWSEvents.PutEvents\r\n" + b"X-A: " + b"a" * 100_000 + b"\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % k for k in range(500)) + b"\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: \x01\x02\xff\r\nContent-Length: 2\r\n\r\n{}",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello to a plain-HTTP port
    b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]" * 50,
]


def raw_status(port: int, data: bytes) -> int | None:
    """Send raw bytes; the status code of the first answer, or None if the broker just closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        got = b""
        try:
            while b"\r\n" not in got:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
    head = got.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) >= 2 and head[0].startswith(b"HTTP/") and head[1].isdigit() else None


async def bad_input(root: Path, quick: bool) -> Result:
    res = Result("badinput")
    cases = bad_requests(seed=12, fuzz_per_operation=5 if quick else 20)
    with Rig(root) as rig:
        broker, port = rig.broker()
        url = f"http://127.0.0.1:{port}"
        rig.worker()
        statuses: dict[int | str, int] = {}
        fivexx: list[str] = []
        async with session(limit=4, timeout=30) as s:
            await s.post(url + "/", data=json.dumps({"Name": "r", "EventPattern": '{"source": ["x"]}'}),
                         headers={"X-Amz-Target": "AWSEvents.PutRule", "Content-Type": "application/x-amz-json-1.1"})

            async def one(label, method, path, headers, body):
                try:
                    async with s.request(method, url + path, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    status = type(exc).__name__
                statuses[status] = statuses.get(status, 0) + 1
                if isinstance(status, int) and status >= 500:
                    fivexx.append(f"{label}={status}")

            sem = asyncio.Semaphore(4)

            async def bounded(*case):
                async with sem:
                    await one(*case)
            await asyncio.gather(*(bounded(*c) for c in cases))
            loop = asyncio.get_running_loop()
            for k, data in enumerate(RAW_GARBAGE):
                status = await loop.run_in_executor(None, raw_status, port, data)
                key = status if status is not None else "closed"
                statuses[key] = statuses.get(key, 0) + 1
                if status is not None and status >= 500:
                    fivexx.append(f"raw-{k}={status}")
            res.sent = len(cases) + len(RAW_GARBAGE)
            status, ids = await post(s, url, events(0, 10))
            res.sent += 10
        await drain(rig, set(ids), 15)
        res.count(rig, set(ids))
        res.fivexx = len(fivexx)
        res.notes.append(f"{len(cases)} HTTP + {len(RAW_GARBAGE)} raw malformed requests, then 10 good events; "
                         "answers " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
                         + f"; broker alive: {broker.poll() is None}")
        if fivexx:
            res.notes.append("5xx: " + ", ".join(fivexx[:20]))
        res.check(fivexx=0, lost=0, accepted=10)
    return res


# --- 6. slowloris --------------------------------------------------------------------------------

SLOW_REQUEST = b"POST /events HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 4000


async def slowloris(root: Path, quick: bool) -> Result:
    n_slow, seconds, header_timeout = (100, 8, 5) if quick else (300, 15, 5)
    res = Result("slowloris")
    with Rig(root) as rig:
        _, port = rig.broker(env={"BUS_HEADER_TIMEOUT": str(header_timeout)})
        url = f"http://127.0.0.1:{port}"
        rig.worker()
        closed_after: list[float] = []
        end = time.monotonic() + seconds

        async def slow_client():
            """Trickles one byte a second; when the broker closes it, connects again (until the end)."""
            while time.monotonic() < end:
                opened = time.monotonic()
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.5)
                    continue
                try:
                    k = 0
                    while time.monotonic() < end:
                        writer.write(SLOW_REQUEST[k % len(SLOW_REQUEST):][:1])
                        k += 1
                        try:
                            data = await asyncio.wait_for(reader.read(65536), 1.0)
                            if not data or b"\r\n\r\n" in data:  # closed, or answered and closed
                                closed_after.append(time.monotonic() - opened)
                                break
                        except asyncio.TimeoutError:
                            pass
                except OSError:
                    closed_after.append(time.monotonic() - opened)
                finally:
                    writer.close()

        slow = [asyncio.create_task(slow_client()) for _ in range(n_slow)]
        accepted: set[str] = set()
        latencies: list[float] = []
        failed = 0
        await asyncio.sleep(0.5)
        fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                      timeout=aiohttp.ClientTimeout(total=10))
        async with session(timeout=10) as keep, fresh:
            i = 0
            while time.monotonic() < end:
                s = keep if i % 2 == 0 else fresh  # alternate: a kept-alive connection, a new one
                started = time.perf_counter()
                try:
                    status, ids = await post(s, url, events(i, 1))
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    status, ids = 0, []
                latencies.append(time.perf_counter() - started)
                res.sent += 1
                res.fivexx += status >= 500
                failed += status != 200
                accepted.update(ids)
                i += 1
                await asyncio.sleep(0.05)
        await asyncio.gather(*slow)
        await drain(rig, accepted, 15)
        res.count(rig, accepted)
        res.recovery = max(latencies, default=float("nan"))
        res.notes.append(f"{n_slow} slow clients (reconnecting), 1 byte/s, BUS_HEADER_TIMEOUT={header_timeout}: "
                         f"{len(closed_after)} slow connections closed by the broker after "
                         + (f"{min(closed_after):.1f}..{max(closed_after):.1f} s" if closed_after else "-")
                         + f"; normal client: {failed} failed, p50 {statistics.median(latencies) * 1000:.1f} ms, "
                         f"p99 {pct(latencies, 99) * 1000:.1f} ms; recovery = slowest answer")
        res.check(fivexx=0, lost=0, accepted=res.sent)
    return res


# --- 7. 500 concurrent connections ----------------------------------------------------------------

async def connections(root: Path, quick: bool) -> Result:
    n_clients, rounds, per_batch = (500, 1, 5) if quick else (500, 4, 5)
    res = Result("conns")
    with Rig(root) as rig:
        broker, port = rig.broker()
        url = f"http://127.0.0.1:{port}"
        rig.worker()
        rig.worker()
        accepted: set[str] = set()
        latencies: list[float] = []
        errors: list[str] = []
        sessions = [session(limit=1, timeout=30) for _ in range(n_clients)]
        all_open = asyncio.Event()
        connected = 0
        peak = 0

        async def client(k: int, s: aiohttp.ClientSession):
            nonlocal connected
            for r in range(rounds):
                started = time.perf_counter()
                try:
                    status, ids = await post(s, url, events((k * rounds + r) * per_batch, per_batch))
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    status, ids = 0, []
                    errors.append(type(exc).__name__)
                latencies.append(time.perf_counter() - started)
                res.sent += per_batch
                res.fivexx += status >= 500
                accepted.update(ids)
                if r == 0:
                    connected += 1
                    if connected == n_clients:
                        all_open.set()
                    await all_open.wait()  # every client holds its connection open at once

        try:
            started = time.perf_counter()
            tasks = [asyncio.create_task(client(k, s)) for k, s in enumerate(sessions)]
            try:
                await asyncio.wait_for(all_open.wait(), 30)
                proc = psutil.Process(broker.pid)
                peak = sum(1 for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED
                           and c.laddr.port == port)
            except asyncio.TimeoutError:
                errors.append("not every client got an answer within 30 s")
            await asyncio.gather(*tasks)
            took = time.perf_counter() - started
            posted_at = time.time()
        finally:
            await asyncio.gather(*(s.close() for s in sessions))
        done_at = await drain(rig, accepted, 40)
        res.count(rig, accepted)
        res.notes.append(f"{n_clients} clients x {rounds} batches of {per_batch}; {peak} connections open at the "
                         f"broker at once; posting took {took:.1f} s, per request p50 "
                         f"{statistics.median(latencies) * 1000:.0f} ms, p99 {pct(latencies, 99) * 1000:.0f} ms; "
                         f"all handled {done_at - posted_at:.1f} s after the last answer")
        if errors:
            res.notes.append(f"client errors: {dict((e, errors.count(e)) for e in set(errors))}")
        res.check(fivexx=0, lost=0, accepted=res.sent)
        if peak < n_clients:
            res.failures.append(f"only {peak} connections were open at once")
    return res


# --- main -----------------------------------------------------------------------------------

SCENARIOS = {"churn": churn, "broker": broker_kill, "redis": redis_kill, "poison": poison,
             "badinput": bad_input, "slowloris": slowloris, "conns": connections}


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts: about 1-2 minutes in all")
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (process logs) even when all passed")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios: {unknown}")
    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="busway-faults-"))
    print(f"busway faults ({'quick' if args.quick else 'full'}), logs in {tmp}", flush=True)
    results: list[Result] = []
    began = time.monotonic()
    try:
        for name in names:
            t0 = time.monotonic()
            try:
                result = asyncio.run(SCENARIOS[name](tmp / name, args.quick))
            except Exception as exc:
                traceback.print_exc()
                result = Result(name, failures=[f"{type(exc).__name__}: {exc}"])
            result.notes.append(f"{time.monotonic() - t0:.0f} s")
            results.append(result)
            print(result.line(), flush=True)
    finally:
        print(f"\n{len(results)} scenarios in {time.monotonic() - began:.0f} s\n")
        print("| scenario | sent | accepted | handled | lost | duplicated | 5xx | recovery s | result |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|---|")
        for r in results:
            rec = "-" if r.recovery is None else f"{r.recovery:.2f}"
            print(f"| {r.name} | {r.sent:,} | {r.accepted:,} | {r.handled:,} | {r.lost} | {r.duplicated} | "
                  f"{r.fivexx} | {rec} | {'FAIL: ' + '; '.join(r.failures) if r.failures else 'pass'} |")
        failed = any(r.failures for r in results) or len(results) < len(names)
        if args.keep or failed:
            print(f"\nlogs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
