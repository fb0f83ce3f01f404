"""Start and stop a private Redis Cluster on loopback: the tests' and bench/cluster.py's.

`primaries` redis-server processes with `replicas` replicas each, every one in its own
directory under `root` with cluster mode on, joined by `redis-cli --cluster create`. Nothing
here is used by a deployed busway: there the operator runs the cluster and busway is given
`redis+cluster://host:port[,host:port...]`.
"""
from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import redis

from bus.local.ports import port_free
from bus.local.redisproc import RedisProcess, find_redis_cli

# A cluster node also listens on its port + 10000 (the cluster bus), and Redis 6 refuses ports over
# 55535. Ports from 20000 to 22767 keep both below the kernel's ephemeral range (32768 and up), where
# the kernel's own picks for client sockets could take them between our check and the bind.
_PORTS = range(20000, 22768)


def cluster_port(taken: frozenset[int] = frozenset()) -> int:
    """A port free for a cluster node, its cluster-bus port (+10000) free too, and not in `taken`
    (the ports already picked for this cluster's other nodes, which are not listening yet)."""
    for _ in range(200):
        port = random.choice(_PORTS)
        if port not in taken and port_free("127.0.0.1", port) and port_free("127.0.0.1", port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class LocalCluster:
    """A Redis Cluster of child processes; `url` is what busway's --redis takes."""

    def __init__(self, root: str | Path, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 fsync: str = "everysec"):
        self.root = Path(root)
        self.primaries, self.replicas = primaries, replicas
        self.node_timeout_ms = node_timeout_ms  # how long a silent primary takes to be failed over
        self.nodes: list[RedisProcess] = []
        for _ in range(primaries * (1 + replicas)):
            self.nodes.append(self._node(fsync))

    def _node(self, fsync: str) -> RedisProcess:
        # Every node is picked before any listens, so a port check alone could hand two nodes the
        # same port (and directory): the second would then wait on the first as a leftover server.
        port = cluster_port(frozenset(n.port for n in self.nodes))
        extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms))
        return RedisProcess(self.root / f"node-{port}", port=port, fsync=fsync, extra=extra)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(self.addresses)

    def start(self, timeout: float = 30.0) -> "LocalCluster":
        for node in self.nodes:
            node.start()
        if self.primaries == 1 and not self.replicas:  # `redis-cli --cluster create` wants 3 primaries
            with redis.Redis(port=self.nodes[0].port, socket_timeout=5) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
            self.wait_ok(timeout)
            return self
        subprocess.run([find_redis_cli(), "--cluster", "create", *self.addresses,
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout)
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and knows every slot's primary and replicas."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ok(n) for n in self.nodes if n.proc and n.proc.poll() is None):
                return
            time.sleep(0.1)
        raise RuntimeError(f"cluster not ok within {timeout}s; see {self.root}/node-*/redis.log")

    def wait_serving(self, timeout: float = 30.0) -> float:
        """Until every live node says cluster_state:ok (all slots served, a dead primary's by its
        promoted replica); the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if all(self._state_ok(n) for n in self.nodes if n.proc and n.proc.poll() is None):
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"cluster not serving every slot within {timeout}s; see {self.root}/node-*/redis.log")

    def _state_ok(self, node: RedisProcess) -> bool:
        client = redis.Redis(port=node.port, socket_timeout=1)
        try:
            return client.cluster("info").get("cluster_state") == "ok"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def wait_failed_over(self, key: str, dead: RedisProcess, timeout: float = 30.0) -> float:
        """Until another node serves `key`'s slot (the dead primary's replica was promoted) and the
        cluster says ok; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if self.owner(key) is not dead:
                    self.wait_serving(timeout - (time.monotonic() - started))
                    return time.monotonic() - started
            except RuntimeError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no replica took over {key}'s slot within {timeout}s")

    def owner(self, key: str) -> RedisProcess:
        """The node serving `key`'s slot now (asked of any live node)."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                slot = client.cluster("keyslot", key)
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return self.node(int(primary[1]))
            except redis.RedisError:
                continue
            finally:
                client.close()
        raise RuntimeError(f"no live node knows who serves {key}")

    def _ok(self, node: RedisProcess) -> bool:
        client = redis.Redis(port=node.port, socket_timeout=1)
        try:
            info = client.cluster("info")
            if info.get("cluster_state") != "ok":
                return False
            return self._replicated(client)
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _replicated(self, client: redis.Redis) -> bool:
        """Every primary has its replicas attached (they sync after `create` returns)."""
        lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
        masters = [line for line in lines if " master " in line or ",master " in line]
        slaves = [line for line in lines if "slave" in line.split()[2]]
        return len(masters) >= self.primaries and len(slaves) >= self.primaries * self.replicas

    def primary_ports(self) -> list[int]:
        """The ports of the nodes that are primaries now (after a failover, a replica's)."""
        out = []
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                if client.info("replication").get("role") == "master":
                    out.append(node.port)
            except redis.RedisError:
                pass
            finally:
                client.close()
        return out

    def node(self, port: int) -> RedisProcess:
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
