"""`bus up`: a private Redis, one broker and one worker as supervised child processes.

One `bus up` per data directory (bus/local/lock.py); the children die with it, even on
kill -9 (bus/local/children.py); a child that exits is restarted with backoff, Redis on the
same port and AOF (bus/local/supervisor.py). Ctrl-C or SIGTERM stops them in order.

The broker seals the secrets of connections made through the API with BUS_SECRETS_KEY and the
worker opens them with it: without one in the environment, `bus up` makes one into the data
directory (`secrets.key`, mode 0600) the first time and hands it to both from then on.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from bus import secrets
from bus.local import children
from bus.local.lock import DataDirBusy, DataDirLock
from bus.local.ports import free_port, port_free
from bus.local.redisproc import RedisNotFound, RedisProcess
from bus.local.supervisor import Supervisor

GRACE_SECONDS = 15
PORT_WAIT_SECONDS = 5.0  # an earlier `bus up`'s broker, killed a moment ago, may still be closing


def up(rules: str, functions: str, port: int, data_dir: str, redis_url: str | None,
       host: str = "127.0.0.1", fsync: str = "always", log_format: str = "text",
       credentials: str | None = None, insecure_no_auth: bool = False, reload: bool = False) -> int:
    """`credentials` (a credentials YAML) goes to the broker; the caller checked the bind is allowed.
    `reload`: the worker restarts its handler processes when the functions change (bus worker --reload)."""
    try:
        lock = DataDirLock(data_dir)  # before anything else: a refused `bus up` touches nothing
    except DataDirBusy as busy:
        print(f"bus: {busy}", file=sys.stderr, flush=True)
        return 1
    with lock:
        return _up_locked(rules, functions, port, data_dir, redis_url, host, fsync, log_format,
                          credentials, insecure_no_auth, reload)


def _up_locked(rules: str, functions: str, port: int, data_dir: str, redis_url: str | None, host: str,
               fsync: str, log_format: str, credentials: str | None, insecure_no_auth: bool,
               reload: bool = False) -> int:
    if not _wait_port_free(host, port):
        print(f"bus: port {port} on {host} is taken: stop what listens there or pass --port N",
              file=sys.stderr, flush=True)
        return 1
    stopping = False

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    # Before Redis starts: a Ctrl-C during its start-up is a clean stop, not a traceback.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    supervisor = Supervisor(say)
    redis_proc = None
    try:
        if not redis_url:
            redis_proc = RedisProcess(Path(data_dir) / "redis", fsync=fsync, die_with_parent=True)
            try:
                redis_proc.start()
            except (RuntimeError, RedisNotFound) as exc:
                print(f"bus: redis: {exc}", file=sys.stderr, flush=True)
                return 1
            supervisor.add("redis", redis_proc.spawn, running=redis_proc.proc)
            redis_url = redis_proc.url
            url_file(data_dir).write_text(redis_url)  # lets `bus dlq ...` find this Redis
            say(f"busway: private Redis at {redis_url} (AOF, appendfsync {fsync}) in "
                f"{Path(data_dir).resolve() / 'redis'}")
        env = children_env(data_dir)
        base = [sys.executable, "-m", "bus", "--log-format", log_format]
        auth = ["--credentials", str(Path(credentials).resolve())] if credentials else []
        auth += ["--insecure-no-auth"] if insecure_no_auth else []
        broker = base + ["serve", "--rules", rules, "--port", str(port), "--host", host, "--redis", redis_url, *auth]
        supervisor.add("broker", lambda: children.spawn(broker, env=env))
        metrics = _MetricsPort(port + 1)
        supervisor.add("worker", lambda: children.spawn(
            base + ["worker", "--functions", functions, "--redis", redis_url, "--metrics-port", str(metrics.pick()),
                    *(["--reload"] if reload else [])],
            env=env))
        say(f"busway: broker on http://{host}:{port} (POST /events, AWS API at /, /metrics), "
            f"worker metrics on http://127.0.0.1:{metrics.port}/metrics. Ctrl-C stops everything.")
        say(f"busway: authentication {'on, principals from ' + credentials if credentials else 'off (no --credentials)'}")
        if not children.DIES_WITH_PARENT:
            say("busway: no parent-death signal on this platform: if `bus up` is killed with SIGKILL, "
                "its children keep running")
        code = supervisor.run(lambda: stopping)
    finally:
        supervisor.stop(GRACE_SECONDS)
        if redis_proc:
            url_file(data_dir).unlink(missing_ok=True)
        say("busway: stopped")
    return code


def children_env(data_dir: str) -> dict[str, str]:
    """The broker's and worker's environment: ours, with BUS_SECRETS_KEY from the data directory
    when ours has none (made there the first time). Only its path is ever said, never the key."""
    env = dict(os.environ)
    if env.get(secrets.ENV):
        return env
    path = key_file(data_dir)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = secrets.new_key()
        # Created 0600 in one call (O_EXCL: never over a file someone else made meanwhile); the
        # umask can only narrow that. One `bus up` per data directory holds the lock here.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        say(f"busway: made {secrets.ENV} for secrets given through the API: {path.resolve()} (keep it with the data)")
    env[secrets.ENV] = key
    return env


def key_file(data_dir: str) -> Path:
    return Path(data_dir) / "secrets.key"


class _MetricsPort:
    """The worker's metrics port: broker port + 1, or a free one (said once) while that is taken.

    Checked at every (re)start of the worker: a port taken since is not a crash loop."""

    def __init__(self, preferred: int):
        self.preferred = self.port = preferred

    def pick(self) -> int:
        if port_free("127.0.0.1", self.preferred):
            self.port = self.preferred
        else:
            self.port = free_port()
            say(f"busway: worker metrics port {self.preferred} is taken; the worker serves /metrics on port {self.port}")
        return self.port


def _wait_port_free(host: str, port: int) -> bool:
    deadline = time.monotonic() + PORT_WAIT_SECONDS
    while not port_free(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def say(line: str) -> None:
    print(line, flush=True)


def url_file(data_dir: str) -> Path:
    return Path(data_dir) / "redis.url"
