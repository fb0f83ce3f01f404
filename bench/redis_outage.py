"""Redis outages, measured: how soon workers deliver again after a redis-server SIGKILL.

    ./dev bench bench/redis_outage.py [--trials 5] [--outage 2] [--workers 2] [--rate 200]

One broker and --workers workers on a private redis-server (AOF, appendfsync always) while
a producer posts --rate quick events/s in batches of 10. Each trial SIGKILLs the
redis-server, waits --outage seconds, restarts it on the same port and AOF, and times from
the moment it answers PING again to the first handler run that began after that moment.
Prints min/p50/max of that figure (goal <= 1 s; resolution about 50 ms, the restart's PING
interval), the events the broker accepted and the workers never handled (must be 0), the
duplicate executions, and whether every worker outlived every outage. Loopback only; every
process is stopped at the end.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from recovery import Rig  # the same broker + workers rig as the crash-recovery bench

from bus.local.redisproc import RedisProcess


class Producer(threading.Thread):
    """Posts quick events at `rate`/s until stopped; keeps the ids the broker accepted."""

    def __init__(self, rig: Rig, rate: float):
        super().__init__(daemon=True)
        self.rig, self.interval = rig, 10 / rate
        self.accepted: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            try:
                self.accepted.extend(self.rig.post([{"source": "quick", "detail-type": "T", "detail": {"i": i + k}}
                                                    for k in range(10)]))
            except Exception:  # Redis is down: the broker refuses the request, nothing was accepted
                pass
            i += 10
            time.sleep(self.interval)


def first_run_after(rig: Rig, moment: float, timeout: float = 30.0) -> float:
    """Seconds from `moment` to the first handler run that began after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = [r["t"] for r in rig.records() if r["t"] >= moment]
        if after:
            return min(after) - moment
        time.sleep(0.01)
    raise TimeoutError(f"nothing handled within {timeout}s of Redis answering again")


def trial(rig: Rig, redis: RedisProcess, outage: float) -> float:
    time.sleep(1.0)  # steady load before the kill
    redis.kill()
    time.sleep(outage)
    redis.start()  # returns once PING answers: "Redis answers again"
    return first_run_after(rig, time.time())


def wait_handled(rig: Rig, ids: set[str], timeout: float = 60.0) -> set[str]:
    """The accepted ids still unhandled after waiting up to `timeout` for them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = ids - {r["id"] for r in rig.records()}
        if not missing:
            return missing
        time.sleep(0.2)
    return missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--outage", type=float, default=2.0, help="seconds Redis stays down per trial")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=200.0, help="events per second posted")
    ap.add_argument("--lease", type=float, default=3.0)
    args = ap.parse_args()
    redis = RedisProcess(tempfile.mkdtemp(), fsync="always").start()
    rig = Rig(redis.url, Path(tempfile.mkdtemp()), args.lease)
    try:
        rig.broker()
        workers = [rig.worker() for _ in range(args.workers)]
        producer = Producer(rig, args.rate)
        producer.start()
        figures = [trial(rig, redis, args.outage) for _ in range(args.trials)]
        time.sleep(1.0)
        producer.stopping.set()
        producer.join()
        missing = wait_handled(rig, set(producer.accepted))
        handled = [r["id"] for r in rig.records()]
        alive = all(w.poll() is None for w in workers)
    finally:
        rig.stop()
        redis.stop()
    print(f"first handled delivery after Redis answers again ({args.trials} SIGKILLs, {args.outage:g} s down, "
          f"{args.workers} workers, {args.rate:g} events/s): min {min(figures):.3f} s, "
          f"p50 {statistics.median(figures):.3f} s, max {max(figures):.3f} s")
    print(f"accepted {len(producer.accepted)}, lost {len(missing)}, "
          f"duplicate executions {len(handled) - len(set(handled))}, workers all alive: {alive}")


if __name__ == "__main__":
    main()
