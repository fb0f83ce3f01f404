"""Start and stop a private Redis primary, its replica and a Sentinel on loopback: the tests'.

Sentinel gives high availability, not sharding: one primary holds everything, a replica follows
it, and the Sentinel promotes the replica when the primary stops answering for `down_after_ms`.
busway is given `redis+sentinel://127.0.0.1:<sentinel port>/<service>` and asks the Sentinel
which server is the primary, again after a failover.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from bus.local.ports import free_port
from bus.local.redisproc import RedisProcess, find_redis_server

SERVICE = "busway"


class LocalSentinel:
    def __init__(self, root: str | Path, down_after_ms: int = 1000):
        self.root = Path(root)
        self.primary = RedisProcess(self.root / "primary", fsync="everysec")
        self.replica = RedisProcess(self.root / "replica", fsync="everysec",
                                    extra=("--replicaof", "127.0.0.1", str(self.primary.port)))
        self.port = free_port()
        self.down_after_ms = down_after_ms
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}"

    def start(self, timeout: float = 20.0) -> "LocalSentinel":
        self.primary.start()
        self.replica.start()
        directory = self.root / "sentinel"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"  # Sentinel rewrites its own config file: it must be writable
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {directory.resolve()}\n"
                        f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                        f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {SERVICE} 5000\n")
        self.proc = subprocess.Popen([find_redis_server(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until the Sentinel knows the primary and its replica
            if self.primary_port() == self.primary.port and self._replicas() >= 1:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"Sentinel not ready within {timeout}s")

    def _client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1)

    def primary_port(self) -> int | None:
        client = self._client()
        try:
            address = client.sentinel_get_master_addr_by_name(SERVICE)
            return int(address[1]) if address else None
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _replicas(self) -> int:
        client = self._client()
        try:
            return len(client.sentinel_slaves(SERVICE))
        except redis.RedisError:
            return 0
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.replica.stop()
        self.primary.stop()
