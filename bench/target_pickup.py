"""How soon a worker serves a target that did not exist a moment ago (issue 16: within 100 ms).

    .venv/bin/python bench/target_pickup.py [--samples 30]
    .venv/bin/python bench/target_pickup.py --tree /tmp/base     # also an older checkout, in turn

Starts one private redis-server (AOF, appendfsync everysec), one `bus serve` with no YAML rules
and one `bus worker --functions bench/functions`, all on 127.0.0.1 and all stopped on exit. Each
sample creates a new API rule (PutRule, then PutTargets with one function target, noop.record),
puts one event it matches at once, and waits until the handler has started: the figure is from
PutTargets' answer to the handler's first act (noop.record writes its start time). The event
waits in the new target's stream meanwhile (its group exists from the publish on), so what is
measured is how long the worker takes to notice the target, plus one delivery.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from api_rules import Api, percentile, wait_healthy  # noqa: E402
from bus.local.redisproc import RedisProcess, free_port  # noqa: E402

FUNCTIONS = ROOT / "bench" / "functions"
TARGET_MS = 100.0


def start(tree: Path, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # cwd=tree: `python -m bus` imports the bus package of its working directory first.
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bus", "--log-level", "warning", *args], cwd=tree,
                                env={**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1", **env},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def handler_start(path: Path, event_id: str, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines() if path.exists() else ():
            key, _, started = line.partition(" ")
            if key == event_id:
                return float(started)
        time.sleep(0.002)
    raise RuntimeError(f"event {event_id} was not handled within {timeout:g} s")


def measure(tree: Path, samples: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench-pickup-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "rules").mkdir()
        rp = RedisProcess(tmp / "redis").start()
        starts = tmp / "starts.txt"
        port = free_port()
        procs = []
        try:
            procs.append(start(tree, ["serve", "--rules", str(tmp / "rules"), "--port", str(port), "--redis", rp.url],
                               {}, tmp / "broker.log"))
            wait_healthy(port, procs[0], tmp / "broker.log")
            procs.append(start(tree, ["worker", "--functions", str(FUNCTIONS), "--redis", rp.url,
                                      "--metrics-port", str(free_port())],
                               {"BENCH_LATENCY_FILE": str(starts)}, tmp / "worker.log"))
            time.sleep(3)  # the worker is up and idle, as a deployed one would be
            api = Api(port)
            out = []
            for i in range(samples):
                status, _ = api.call("PutRule", {"Name": f"pick{i}", "EventPattern": f'{{"source": ["pick{i}"]}}'})
                status2, _ = api.call("PutTargets", {"Rule": f"pick{i}", "Targets": [
                    {"Id": "t", "Arn": "arn:aws:lambda:us-east-1:000000000000:function:noop.record_async"}]})
                published = time.time()
                status3, answer = api.call("PutEvents", {"Entries": [{"Source": f"pick{i}", "DetailType": "d",
                                                                      "Detail": "{}"}]})
                if (status, status2, status3) != (200, 200, 200):
                    raise RuntimeError(f"API calls failed: {status} {status2} {status3} {answer}")
                out.append((handler_start(starts, answer["Entries"][0]["EventId"]) - published) * 1000)
                time.sleep(0.137)  # samples fall at every phase of the worker's polling
            return out
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            rp.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--tree", action="append", default=[], type=Path, help="another checkout to measure too")
    args = p.parse_args()
    trees = [("busway", ROOT)] + [(f"busway@{t.name}", t.resolve()) for t in args.tree]
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; {platform.python_implementation()} "
          f"{platform.python_version()}; {args.samples} samples per tree\n")
    print(f"{'tree':<22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   (PutTargets answered -> handler start)")
    worst = {}
    for name, tree in trees:
        figures = measure(tree, args.samples)
        print(" ".join(f"{f:.0f}" for f in figures))
        print(f"{name:<22} {percentile(figures, 0.5):>8.1f} {percentile(figures, 0.99):>8.1f} {max(figures):>8.1f}",
              flush=True)
        worst[name] = max(figures)
    print(f"\nissue 16: a new target served within {TARGET_MS:g} ms: busway max {worst['busway']:.1f} ms -> "
          f"{'met' if worst['busway'] <= TARGET_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
