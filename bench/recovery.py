"""Crash recovery, measured: how soon a SIGKILLed worker's delivery runs elsewhere, and what
worker churn costs in lost and duplicated executions.

    ./dev bench bench/recovery.py [--trials 10] [--events 2000] [--lease 3]

1. Redelivery: one broker, two workers; a 2 s handler starts on one worker, which is
   SIGKILLed; time from the kill to the handler starting on the other worker. Repeated
   --trials times; prints min/p50/max. The bound is the lease (--lease-seconds) plus one
   reclaim scan.
2. Churn: --events events posted in batches of 10 through three workers while one worker is
   SIGKILLed and restarted every second; prints events lost (must be 0), duplicate executions
   and kills. Loopback only; every process is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bus.local.redisproc import RedisProcess, free_port

HERE = Path(__file__).parent
RULES = """
rules:
  - name: slow
    event_pattern: {source: [slow]}
    targets: [{id: t, function: crashy.slow, retry_policy: {maximum_retry_attempts: 5}}]
  - name: quick
    event_pattern: {source: [quick]}
    targets: [{id: t, function: crashy.quick, retry_policy: {maximum_retry_attempts: 5}}]
"""


class Rig:
    def __init__(self, redis_url: str, root: Path, lease: float):
        self.redis_url, self.root, self.lease = redis_url, root, lease
        self.out = root / "calls.jsonl"
        (root / "rules").mkdir()
        (root / "rules" / "r.yaml").write_text(RULES)
        self.env = dict(os.environ, RECOVERY_OUT=str(self.out))
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()

    def spawn(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "bus", "--log-level", "ERROR", *args, "--redis", self.redis_url],
                                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def broker(self) -> None:
        self.spawn("serve", "--rules", str(self.root / "rules"), "--port", str(self.port))
        _wait(lambda: _get(f"http://127.0.0.1:{self.port}/healthz"))

    def worker(self) -> subprocess.Popen:
        return self.spawn("worker", "--functions", str(HERE / "recovery_functions"), "--metrics-port", "0",
                          "--lease-seconds", str(self.lease))

    def post(self, events: list[dict]) -> list[str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/events", data=json.dumps(events).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return [e["EventId"] for e in json.loads(resp.read())["Entries"]]

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        # Only whole lines: a handler in another process may be halfway through appending one.
        *whole, _partial = self.out.read_text().split("\n")
        return [json.loads(line) for line in whole if line.strip()]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _wait(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise TimeoutError("condition not met")


def redelivery_trial(rig: Rig) -> float:
    [event_id] = rig.post([{"source": "slow", "detail-type": "T", "detail": {"seconds": 2.0}}])
    first = _wait(lambda: next((r for r in rig.records() if r["id"] == event_id and r["phase"] == "start"), None))
    victim = int(first["worker"].rsplit("-", 2)[1])
    os.kill(victim, signal.SIGKILL)
    killed = time.time()
    again = _wait(lambda: next((r for r in rig.records() if r["id"] == event_id and r["phase"] == "start"
                                and r["worker"] != first["worker"]), None), timeout=30)
    _wait(lambda: any(r["id"] == event_id and r["phase"] == "end" for r in rig.records()), timeout=30)
    return again["t"] - killed


def redelivery(redis_url: str, trials: int, lease: float) -> list[float]:
    rig = Rig(redis_url, Path(tempfile.mkdtemp()), lease)
    try:
        rig.broker()
        workers = [rig.worker(), rig.worker()]
        times = []
        for _ in range(trials):
            times.append(redelivery_trial(rig))
            workers = [w for w in workers if w.poll() is None] + [rig.worker()]  # replace the dead one
            time.sleep(1.0)
        return times
    finally:
        rig.stop()


def churn(redis_url: str, events: int, lease: float) -> tuple[int, int, int, float]:
    rig = Rig(redis_url, Path(tempfile.mkdtemp()), lease)
    try:
        rig.broker()
        workers = [rig.worker() for _ in range(3)]
        sent: list[str] = []

        def produce():
            for i in range(0, events, 10):
                sent.extend(rig.post([{"source": "quick", "detail-type": "T", "detail": {"i": i + k}} for k in range(10)]))
                time.sleep(0.01)

        started = time.monotonic()
        producer = threading.Thread(target=produce)
        producer.start()
        kills = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not producer.is_alive() and len({r["id"] for r in rig.records()}) >= events:
                break
            time.sleep(1.0)
            victim = kills % 3
            workers[victim].kill()
            workers[victim].wait()
            workers[victim] = rig.worker()
            kills += 1
        producer.join()
        handled = [r["id"] for r in rig.records()]
        lost = len(set(sent) - set(handled))
        return lost, len(handled) - len(set(handled)), kills, time.monotonic() - started
    finally:
        rig.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--lease", type=float, default=3.0)
    args = ap.parse_args()
    with RedisProcess(tempfile.mkdtemp(), fsync="always") as redis:
        times = redelivery(redis.url, args.trials, args.lease)
        print(f"redelivery after SIGKILL (lease {args.lease:g} s, {len(times)} trials): "
              f"min {min(times):.2f} s, p50 {statistics.median(times):.2f} s, max {max(times):.2f} s")
        lost, dups, kills, took = churn(redis.url, args.events, args.lease)
        print(f"churn: {args.events} events, {kills} worker SIGKILLs (one per second), {took:.1f} s: "
              f"lost {lost}, duplicate executions {dups} ({dups / args.events:.2%})")


if __name__ == "__main__":
    main()
