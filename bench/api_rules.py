"""PutRule and PutTargets latency as the number of API rules grows, end to end over raw HTTP.

    .venv/bin/python bench/api_rules.py [--at 0,1000,5000,10000] [--samples 50]
    .venv/bin/python bench/api_rules.py --source /tmp/busway-head --fill direct   # an older tree

Starts one private redis-server (bus.local.redisproc, AOF, appendfsync --fsync) and one
`bus serve` with no YAML rules (BUS_MAX_API_RULES_PER_BUS raised past the last count), then
creates rules through the AWS API (AWS JSON 1.1 over one keep-alive HTTP connection, as boto3
sends it, without boto3's own client-side cost): each a PutRule with a pattern
`{source: [bench.appK], detail-type: [type-I]}` (100 sources) and a PutTargets with one
function target. At each count of --at it times --samples more of them (new rules, so the
count grows by --samples per point), each followed by one PutEvents the new rule matches (the
first match after a change brings the matcher's automaton up to date, so it pays for that),
and prints p50/p99 of the three.

`--fill direct` reaches each count by writing the stored rules into Redis in one pipeline
(what bus.store.apirules.save writes, one version bump) and waiting for the broker to load
them, instead of through the API: the old code path rebuilt everything on every change,
and filling 10,000 rules through it one by one takes most of an hour. The timed operations
always go through the API.

`--source DIR` runs the broker from another source tree (a `git archive` of an older commit,
say), so "before" and "after" run from the same bench. Every process is stopped on exit.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import redis  # noqa: E402

from bus.config.model import FunctionTarget, Rule  # noqa: E402
from bus.local.redisproc import RedisProcess, free_port  # noqa: E402
from bus.store.keys import API_RULES, API_VERSION, api_rule_field  # noqa: E402

SOURCES = 100
FUNCTION = "bench_noop.handler"  # never invoked: no worker runs


def pattern(i: int) -> dict:
    return {"source": [f"bench.app{i % SOURCES}"], "detail-type": [f"type-{i}"]}


class Api:
    """AWS JSON 1.1 calls over one keep-alive connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def call(self, operation: str, body: dict) -> tuple[int, dict]:
        self.conn.request("POST", "/", json.dumps(body), {
            "X-Amz-Target": f"AWSEvents.{operation}", "Content-Type": "application/x-amz-json-1.1"})
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")

    def timed(self, operation: str, body: dict) -> float:
        start = time.perf_counter()
        status, answer = self.call(operation, body)
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"{operation} failed: {status} {answer}")
        return elapsed * 1000

    def create(self, i: int) -> tuple[float, float]:
        """PutRule + PutTargets of rule i: their latencies in ms."""
        put_rule = self.timed("PutRule", {"Name": f"r{i}", "EventPattern": json.dumps(pattern(i))})
        put_targets = self.timed("PutTargets", {"Rule": f"r{i}", "Targets": [
            {"Id": "t", "Arn": f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}"}]})
        return put_rule, put_targets

    def first_event(self, i: int) -> float:
        """PutEvents of one event rule i matches, right after the rule changed: the matcher
        brings its automaton up to date on the first match after a change, so this pays that."""
        source, detail_type = pattern(i)["source"][0], pattern(i)["detail-type"][0]
        return self.timed("PutEvents", {"Entries": [{"Source": source, "DetailType": detail_type, "Detail": "{}"}]})


def fill_direct(client: redis.Redis, api: Api, start: int, stop: int) -> None:
    """Rules start..stop-1 written straight into Redis, then wait until the broker routes them."""
    if stop <= start:
        return
    pipe = client.pipeline(transaction=True)
    for i in range(start, stop):
        rule = Rule(name=f"r{i}", event_pattern=pattern(i), targets=[FunctionTarget(id="t", function=FUNCTION)])
        pipe.hset(API_RULES, api_rule_field(rule.bus, rule.name), msgspec.json.encode(rule))
    pipe.incr(API_VERSION)
    pipe.execute()
    deadline = time.monotonic() + 600
    while api.call("DescribeRule", {"Name": f"r{stop - 1}"})[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the broker did not load the filled rules")
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_healthy(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("broker not healthy within 60 s")


def run(args) -> list[tuple]:
    source = Path(args.source).resolve() if args.source else ROOT
    points = sorted({int(x) for x in args.at.split(",")})
    with tempfile.TemporaryDirectory(prefix="bench-api-rules-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "rules").mkdir()
        rp = RedisProcess(tmp_path / "redis", fsync=args.fsync).start()
        port = free_port()
        log = tmp_path / "broker.log"
        env = {**os.environ, "PYTHONPATH": str(source), "PYTHONUNBUFFERED": "1",
               "BUS_MAX_API_RULES_PER_BUS": str(max(points) + args.samples + 1)}
        cmd = [sys.executable, "-m", "bus", "--log-level", "warning", "serve", "--rules", str(tmp_path / "rules"),
               "--port", str(port), "--redis", rp.url]
        if args.profile:
            cmd[1:1] = ["-m", "cProfile", "-o", args.profile]
        with open(log, "ab") as out:
            broker = subprocess.Popen(cmd, cwd=source, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(rp.url)
        try:
            wait_healthy(port, broker, log)
            api = Api(port)
            rows, count = [], 0
            for point in points:
                if args.fill == "direct":
                    fill_direct(client, api, count, point)
                    count = max(count, point)
                started = time.monotonic()
                while count < point:
                    api.create(count)
                    count += 1
                    if count % 1000 == 0:
                        print(f"  {count} rules ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
                timed = [(*api.create(count + k), api.first_event(count + k)) for k in range(args.samples)]
                count += args.samples
                row = [point]
                for column in zip(*timed):
                    row += [percentile(list(column), 0.5), percentile(list(column), 0.99)]
                rows.append(tuple(row))
                print(f"at {point:>6} rules: PutRule p50 {row[1]:7.2f} ms p99 {row[2]:7.2f} ms | "
                      f"PutTargets p50 {row[3]:7.2f} ms p99 {row[4]:7.2f} ms | "
                      f"first PutEvents p50 {row[5]:7.2f} ms p99 {row[6]:7.2f} ms", file=sys.stderr, flush=True)
            return rows
        finally:
            client.close()
            os.killpg(broker.pid, signal.SIGINT if args.profile else signal.SIGTERM)
            try:
                broker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(broker.pid, signal.SIGKILL)
                broker.wait()
            rp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", default="0,1000,5000,10000", help="rule counts to time at")
    parser.add_argument("--samples", type=int, default=50, help="timed PutRule+PutTargets pairs per count")
    parser.add_argument("--fill", choices=("api", "direct"), default="api")
    parser.add_argument("--source", help="the source tree the broker runs from (default: this one)")
    parser.add_argument("--fsync", choices=("always", "everysec", "no"), default="always")
    parser.add_argument("--profile", help="run the broker under cProfile, writing this file")
    args = parser.parse_args()
    rows = run(args)
    print(f"\n{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"fill={args.fill}, fsync={args.fsync}, source={args.source or ROOT}")
    print("| rules | PutRule p50 / p99 ms | PutTargets p50 / p99 ms | first PutEvents p50 / p99 ms |")
    print("|---:|---:|---:|---:|")
    for point, *ms in rows:
        print(f"| {point:,} | {ms[0]:.2f} / {ms[1]:.2f} | {ms[2]:.2f} / {ms[3]:.2f} | {ms[4]:.2f} / {ms[5]:.2f} |")


if __name__ == "__main__":
    main()
