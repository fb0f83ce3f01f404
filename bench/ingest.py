"""Ingest benchmark (issue 16): how many events/s one broker process stores, driven by wrk.

    .venv/bin/python bench/ingest.py                       # ~1.5 min: bare aiohttp, busway, busway + worker
    .venv/bin/python bench/ingest.py --quick               # ~30 s
    .venv/bin/python bench/ingest.py --tree /tmp/base      # A/B: also run the broker of another checkout
    .venv/bin/python bench/ingest.py --scale               # also 2 brokers + 2 workers against 1 + 1

What runs (127.0.0.1 only; every process started here is stopped here, Ctrl-C included):
  - one private redis-server (AOF, appendfsync --fsync, default everysec as issue 16 measured),
    flushed before each phase;
  - `bus serve` with one rule {source: [bench]} -> one function target, so each event is matched and
    gets one delivery (an XADD) in the request's one ENQUEUE call;
  - the load: wrk (Debian's package) with --connections keep-alive connections on one thread,
    POSTing the same body of --batch events to POST /events (or to the AWS PutEvents operation
    with --api aws). wrk in C is not the bound: its CPU% is printed beside the broker's;
  - `bare`: an aiohttp server in a subprocess that reads the body, decodes it with msgspec and
    answers a fixed PutEvents-shaped result: the ceiling of an aiohttp process on this machine;
  - with --worker-phase, the same load while `bus worker` drains the stream (the two share cores).

Each phase warms up for --warmup s and then measures for --seconds s; --rounds interleaves the
phases and keeps each one's best (neighbours on a shared machine only ever slow a phase down).
Events/s counts events in 2xx answers; a phase with non-2xx answers, or with fewer stream entries
than answered events, fails the run. CPU% is of one core (200% = both cores of this machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from e2e import Children, CpuMeter, _cpu_model, _raise_interrupt  # noqa: E402  (process handling, CPU meter)
from bus.local.redisproc import RedisProcess, free_port  # noqa: E402

PY = sys.executable
FUNCTIONS = ROOT / "bench" / "functions"
EVENT = {"source": "bench", "detail-type": "noop", "detail": {"n": 1, "customer": "c-42", "items": [1, 2, 3]}}
STREAM = "busway:{default/bench/noop}:q"
TARGET_EVENTS_PER_S = 60_000
TARGET_SCALE = 1.6
RULES = ("rules:\n  - name: bench\n    event_pattern:\n      source: [bench]\n"
         "    targets:\n      - id: noop\n        function: noop.handler_async\n")

class NoSummary(RuntimeError):
    """A wrk exited without the summary line its done() prints."""


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(content_type)s"
%(target)s
wrk.body = io.open("%(body)s", "rb"):read("*a")
done = function(summary, latency, requests)
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "errors": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

BARE_SERVER = r"""
import sys, msgspec
from aiohttp import web
n = int(sys.argv[2])
answer = msgspec.json.encode({"FailedEntryCount": 0, "Entries": [{"EventId": "0" * 36}] * n})
async def events(request):
    msgspec.json.decode(await request.read())
    return web.Response(body=answer, content_type="application/json")
app = web.Application()
app.router.add_post("/events", events)
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


@dataclass
class Result:
    phase: str
    events: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    calls: int = 0  # Redis script calls (EVALSHA/EVAL) the broker made while measured: grouping shows here

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def wait_healthy(url: str, children: Children, timeout: float = 30.0) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        children.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not healthy after {timeout} s")
        time.sleep(0.05)


class Bench:
    def __init__(self, args, children: Children, rp: RedisProcess, tmp: Path):
        self.args, self.children, self.rp, self.tmp = args, children, rp, tmp
        self.redis = redis.Redis.from_url(rp.url)
        self.redis_proc = psutil.Process(rp.proc.pid)
        rules = tmp / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "bench.yaml").write_text(RULES)
        self.rules = rules
        self.body = tmp / "body.json"
        if args.api == "aws":
            payload = {"Entries": [{"Source": EVENT["source"], "DetailType": EVENT["detail-type"],
                                    "Detail": json.dumps(EVENT["detail"])}] * args.batch}
        else:
            payload = [EVENT] * args.batch
        self.body.write_bytes(json.dumps(payload).encode())

    def wrk_script(self) -> Path:
        path = self.tmp / f"wrk-{self.args.api}.lua"
        aws = self.args.api == "aws"
        path.write_text(WRK_LUA % {
            "content_type": "application/x-amz-json-1.1" if aws else "application/json",
            "target": 'wrk.headers["X-Amz-Target"] = "AWSEvents.PutEvents"' if aws else "",
            "body": self.body,
        })
        return path

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/" if self.args.api == "aws" else f"http://127.0.0.1:{port}/events"

    def start_broker(self, tree: Path, name: str) -> tuple[int, psutil.Process]:
        port = free_port()
        env = {"PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1", **self.loop_env()}
        proc = self.children.start(name, [PY, "-m", "bus", "--log-level", "warning", "serve", "--rules", str(self.rules),
                                          "--port", str(port), "--redis", self.rp.url], env, cwd=tree)
        return port, proc

    def loop_env(self) -> dict[str, str]:
        return {"BUS_EVENT_LOOP": self.args.loop} if self.args.loop else {}

    def start_worker(self, tree: Path, name: str) -> psutil.Process:
        env = {"PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1", **self.loop_env()}
        return self.children.start(name, [PY, "-m", "bus", "--log-level", "warning", "worker", "--functions",
                                          str(FUNCTIONS), "--redis", self.rp.url, "--concurrency", "10",
                                          "--metrics-port", str(free_port())], env, cwd=tree)

    def wrk(self, ports: list[int], seconds: float) -> list[subprocess.Popen]:
        """One wrk per port, at once, connections split between them; their summaries."""
        conns = max(1, self.args.connections // len(ports))
        procs = []
        for port in ports:
            procs.append(subprocess.Popen(
                ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(self.wrk_script()),
                 self.url(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        return procs

    def collect(self, procs: list[subprocess.Popen]) -> list[dict]:
        """Each wrk's summary, with the CPU seconds it used ("cpu_s", from wait4: it has exited
        by the time a CpuMeter could sample it)."""
        out = []
        for p in procs:
            text = p.stdout.read()
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            line = next((line for line in text.splitlines() if line.startswith("WRK ")), None)
            if line is None:
                raise NoSummary(f"wrk printed no summary:\n{text}")
            out.append({**json.loads(line[4:]), "cpu_s": usage.ru_utime + usage.ru_stime})
        return out

    def phase(self, name: str, tree: Path | None, brokers: int = 1, workers: int = 0) -> Result:
        """`brokers` brokers of `tree` (None: the bare aiohttp server), `workers` workers, wrk on each broker."""
        self.redis.flushall()
        procs: dict[str, psutil.Process] = {}
        ports = []
        if tree is None:
            port = free_port()
            procs["server"] = self.children.start("bare", [PY, "-c", BARE_SERVER, str(port), str(self.args.batch)])
            ports.append(port)
        else:
            for i in range(brokers):
                port, proc = self.start_broker(tree, f"{name}-broker{i}")
                procs[f"broker{i}" if brokers > 1 else "broker"] = proc
                ports.append(port)
            for i in range(workers):
                procs[f"worker{i}" if workers > 1 else "worker"] = self.start_worker(tree, f"{name}-worker{i}")
        try:
            for port in ports:
                wait_healthy(f"http://127.0.0.1:{port}/healthz", self.children)
            if self.args.warmup:
                self.collect(self.wrk(ports, self.args.warmup))
            before = self.redis.xlen(STREAM) if tree is not None and not workers else 0
            calls_before = self.script_calls()
            wrk_procs = self.wrk(ports, self.args.seconds)
            meter = CpuMeter({**procs, "redis": self.redis_proc})
            summaries = self.collect(wrk_procs)
            cpu, _ = meter.measure()
            wrk_cpu = 100 * sum(s["cpu_s"] for s in summaries) / (max(s["duration_us"] for s in summaries) / 1e6)
            cpu["other"] = max(0.0, cpu["other"] - wrk_cpu)
            cpu["wrk"] = wrk_cpu
            self.children.check_alive()
            calls = self.script_calls() - calls_before
        finally:
            self.children.stop_all()
        result = self.summarise(name, summaries, cpu)
        result.calls = calls
        if tree is not None and not workers:
            stored = self.redis.xlen(STREAM) - before
            if stored < result.events:
                raise RuntimeError(f"{name}: {result.events} events answered but only {stored} stream entries")
        return result

    def script_calls(self) -> int:
        """Script calls Redis has served so far (its INFO commandstats)."""
        stats = self.redis.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))

    def summarise(self, name: str, summaries: list[dict], cpu: dict[str, float]) -> Result:
        bad = sum(s["non2xx"] + s["errors"] for s in summaries)
        if bad:
            raise RuntimeError(f"{name}: {bad} requests failed or were not 2xx: {summaries}")
        seconds = max(s["duration_us"] for s in summaries) / 1e6
        events = sum(s["requests"] for s in summaries) * self.args.batch
        # Percentiles of several wrk processes: the worst of theirs (a conservative merge).
        return Result(name, events, seconds, max(s["p50_us"] for s in summaries) / 1000,
                      max(s["p99_us"] for s in summaries) / 1000, max(s["max_us"] for s in summaries) / 1000,
                      cpu={k: round(v) for k, v in cpu.items()})


def report(results: dict[str, Result], args, redis_version: str) -> None:
    print()
    print(f"machine: {platform.node()}, {_cpu_model()}, {os.cpu_count()} cores; {platform.python_implementation()} "
          f"{platform.python_version()}; redis {redis_version} (AOF, appendfsync {args.fsync})")
    print(f"load: wrk -t1 -c{args.connections} per phase, POST {'PutEvents (AWS JSON 1.1)' if args.api == 'aws' else '/events'}"
          f" with {args.batch} events per request; {args.seconds:g} s measured after {args.warmup:g} s warm-up, "
          f"best of {args.rounds}; event loop: {args.loop or 'asyncio (default)'}")
    print()
    print(f"{'phase':<26} {'events/s':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'calls/req':>9}  CPU% (of one core)")
    for r in results.values():
        cpu = ", ".join(f"{k} {v}" for k, v in r.cpu.items())
        requests = r.events / args.batch
        per_request = f"{r.calls / requests:.2f}" if requests and r.calls else "-"
        print(f"{r.phase:<26} {r.rate:>9,.0f} {r.rate / args.batch:>7,.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
              f"{r.max_ms:>7.1f} {per_request:>9}  {cpu}")
    busway = [r for name, r in results.items() if name.startswith("busway") and "+" not in name]
    if busway:
        best = max(busway, key=lambda r: r.rate)
        print(f"\nissue 16: ingest >= {TARGET_EVENTS_PER_S:,} events/s per broker: {best.phase} {best.rate:,.0f} "
              f"-> {'met' if best.rate >= TARGET_EVENTS_PER_S else 'NOT met'}")
    one, two = results.get("busway 1b+1w"), results.get("busway 2b+2w")
    if one and two:
        ratio = two.rate / one.rate
        print(f"issue 16: 2 brokers + 2 workers >= {TARGET_SCALE}x 1 + 1: {ratio:.2f}x -> "
              f"{'met' if ratio >= TARGET_SCALE else 'NOT met'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--api", choices=["native", "aws"], default="native")
    p.add_argument("--fsync", choices=["always", "everysec", "no"], default="everysec")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default=None, help="BUS_EVENT_LOOP for busway's processes")
    p.add_argument("--tree", action="append", default=[], type=Path,
                   help="also run the broker of this checkout (A/B; repeatable); its phase is named by its dir")
    p.add_argument("--no-bare", action="store_true", help="skip the bare aiohttp phase")
    p.add_argument("--worker-phase", action="store_true", help="also measure with a worker draining")
    p.add_argument("--scale", action="store_true", help="also 1 broker + 1 worker against 2 + 2")
    p.add_argument("--quick", action="store_true", help="5 s phases, 1 s warm-up, one round")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.rounds = 5, 1, 1
    if not shutil.which("wrk"):
        print("bench/ingest.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    phases: list[tuple[str, Path | None, int, int]] = []
    if not args.no_bare:
        phases.append(("bare aiohttp", None, 1, 0))
    trees = [("busway", ROOT)] + [(f"busway@{t.name}", t.resolve()) for t in args.tree]
    for label, tree in trees:
        phases.append((label, tree, 1, 0))
    if args.worker_phase:
        phases += [(f"{label} + worker", tree, 1, 1) for label, tree in trees]
    if args.scale:
        phases += [("busway 1b+1w", ROOT, 1, 1), ("busway 2b+2w", ROOT, 2, 2)]
    with tempfile.TemporaryDirectory(prefix="busway-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        children = Children(tmp)
        rp = RedisProcess(tmp / "redis", fsync=args.fsync).start()
        try:
            bench = Bench(args, children, rp, tmp)
            best: dict[str, Result] = {}
            for round_ in range(args.rounds):
                for name, tree, brokers, workers in phases:
                    try:
                        r = bench.phase(name, tree, brokers, workers)
                    except NoSummary as exc:  # seen once in a 2b+2w warm-up (wrk 4.1, Debian); not understood
                        print(f"round {round_ + 1}: {name}: {exc.args[0].splitlines()[0]}; the phase runs again", flush=True)
                        r = bench.phase(name, tree, brokers, workers)
                    print(f"round {round_ + 1}: {name:<26} {r.rate:>9,.0f} events/s  p50 {r.p50_ms:.2f} ms  "
                          f"p99 {r.p99_ms:.2f} ms  CPU {r.cpu}", flush=True)
                    if name not in best or r.rate > best[name].rate:
                        best[name] = r
            report(best, args, bench.redis.info("server")["redis_version"])
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
            rp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
