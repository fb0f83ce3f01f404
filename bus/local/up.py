"""`bus up`: a private Redis, one broker and one worker as child processes, stopped together."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from bus.local.redisproc import RedisProcess

GRACE_SECONDS = 15


def up(rules: str, functions: str, port: int, data_dir: str, redis_url: str | None,
       host: str = "127.0.0.1", fsync: str = "always", log_format: str = "text",
       credentials: str | None = None, insecure_no_auth: bool = False) -> int:
    """`credentials` (a credentials YAML) goes to the broker; the caller checked the bind is allowed."""
    redis_proc = None
    if not redis_url:
        redis_proc = RedisProcess(Path(data_dir) / "redis", fsync=fsync).start()
        redis_url = redis_proc.url
        url_file(data_dir).write_text(redis_url)  # lets `bus dlq ...` find this Redis
        print(f"busway: private Redis at {redis_url} (AOF, appendfsync {fsync}) in {Path(data_dir).resolve() / 'redis'}", flush=True)
    base = [sys.executable, "-m", "bus", "--log-format", log_format]
    auth = ["--credentials", str(Path(credentials).resolve())] if credentials else []
    auth += ["--insecure-no-auth"] if insecure_no_auth else []
    children = [
        _spawn(base + ["serve", "--rules", rules, "--port", str(port), "--host", host, "--redis", redis_url, *auth]),
        _spawn(base + ["worker", "--functions", functions, "--redis", redis_url, "--metrics-port", str(port + 1)]),
    ]
    print(f"busway: broker on http://{host}:{port} (POST /events, AWS API at /, /metrics), "
          f"worker metrics on http://127.0.0.1:{port + 1}/metrics. Ctrl-C stops everything.", flush=True)
    print(f"busway: authentication {'on, principals from ' + credentials if credentials else 'off (no --credentials)'}",
          flush=True)
    stopping = False

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    print(f"busway: {' '.join(child.args[3:5])} exited with {child.returncode}; stopping", file=sys.stderr, flush=True)
                    stopping, code = True, 1
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if redis_proc:
            redis_proc.stop()
            url_file(data_dir).unlink(missing_ok=True)
        print("busway: stopped", flush=True)
    return code


def _spawn(args: list[str]) -> subprocess.Popen:
    # Own process group: a terminal Ctrl-C reaches only us; we stop children in order.
    return subprocess.Popen(args, start_new_session=True)


def _stop_children(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def url_file(data_dir: str) -> Path:
    return Path(data_dir) / "redis.url"
