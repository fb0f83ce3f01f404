"""The pieces of `bus up` as a supervisor, and `bus worker`'s metrics port.

Restart backoff, the data-directory lock, children that die with their parent, a supervisor
restarting what exits; two `bus worker` with default options on one host; a taken metrics port.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bus.local import children
from bus.local.lock import DataDirBusy, DataDirLock
from bus.local.ports import free_port, port_free
from bus.local.supervisor import Backoff, Supervisor
from tests.conftest import FUNCTIONS, wait_for


def test_restart_delays_double_from_half_a_second_to_ten_and_start_over_after_a_long_run():
    backoff = Backoff()
    assert [backoff.delay(ran_for=1) for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff.delay(ran_for=30) == 0.5
    assert backoff.delay(ran_for=1) == 1


def test_a_second_lock_on_a_data_directory_is_refused_naming_the_holder(tmp_path):
    with DataDirLock(tmp_path / "data"):
        with pytest.raises(DataDirBusy) as refused:
            DataDirLock(tmp_path / "data")
        assert refused.value.holder == os.getpid() and f"PID {os.getpid()}" in str(refused.value)
    DataDirLock(tmp_path / "data").close()  # released with its holder


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from bus.local.lock import DataDirLock; "
                               f"DataDirLock({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy, match=f"PID {holder.pid}"):
            DataDirLock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    DataDirLock(tmp_path).close()


@pytest.mark.skipif(not children.DIES_WITH_PARENT, reason="parent-death signal is Linux only")
def test_a_child_dies_with_its_parent_even_when_the_parent_is_killed_with_sigkill():
    parent = subprocess.Popen([sys.executable, "-c", "import sys, time; from bus.local.children import spawn; "
                               "c = spawn([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "print(c.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert os.getpgid(child) == child  # a session of its own: a terminal's Ctrl-C reaches only the parent
        parent.kill()
        parent.wait()
        wait_for(lambda: not _alive(child), timeout=5, what="the orphaned child to exit")
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_supervisor_restarts_a_child_that_exits_and_says_so_by_role():
    said: list[str] = []
    supervisor = Supervisor(said.append)
    worker = supervisor.add("worker", lambda: subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"]))
    try:
        wait_for(lambda: supervisor.check() is None and worker.restarts >= 2, timeout=10, what="two restarts")
        assert re.fullmatch(r"busway: worker \(PID \d+\) exited with code 3; restarting it in 0.5s", said[0])
        assert any("restarting it in 1s" in line for line in said)
        assert any(line.startswith("busway: worker restarted (PID ") for line in said)
    finally:
        supervisor.stop(grace=5)


def test_the_supervisor_stops_on_a_configuration_error_instead_of_restarting():
    said: list[str] = []
    supervisor = Supervisor(said.append)
    supervisor.add("broker", lambda: subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(2)"]))
    assert supervisor.run(lambda: False, interval=0.05) == 1
    assert said == ["busway: broker exited with code 2 (bad configuration); stopping"]


def test_two_bus_workers_with_default_options_both_start(redis_url, tmp_path):
    env = _worker_env()
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = []
    try:
        for log in logs:
            with open(log, "w") as out:
                procs.append(subprocess.Popen([sys.executable, "-m", "bus", "worker", "--functions", str(FUNCTIONS),
                                               "--redis", redis_url], env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            wait_for(lambda: "worker metrics on" in log.read_text(), timeout=15, what=f"{log.name} to serve metrics")
        time.sleep(0.5)
        assert all(proc.poll() is None for proc in procs), [log.read_text() for log in logs]
        ports = {int(log.read_text().split("worker metrics on http://127.0.0.1:")[1].split("/")[0]) for log in logs}
        assert len(ports) == 2
        assert "metrics port 9101 is taken (another worker?); using port" in logs[1].read_text()
        assert not any("Traceback" in log.read_text() for log in logs)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(15)


def test_a_taken_metrics_port_is_one_line_not_a_traceback(redis_url):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        done = subprocess.run([sys.executable, "-m", "bus", "worker", "--functions", str(FUNCTIONS), "--redis", redis_url,
                               "--metrics-port", str(port)], env=_worker_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"bus: worker metrics port {port} on 127.0.0.1 is taken: "
                                   "pass another --metrics-port N (0: none)")


def test_a_free_port_is_free():
    assert port_free("127.0.0.1", free_port())


def _worker_env() -> dict:
    env = dict(os.environ)
    env.pop("BUS_WORKER_METRICS_PORT", None)
    return env


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
