"""The safe default: no credentials, loopback only; and `bus up --credentials` reaches its broker."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bus.auth.bind import bind_refusal, is_loopback
from bus.local.redisproc import free_port
from tests.conftest import wait_for
from tests.httpc import get_text, post

ROOT = Path(__file__).parent.parent
TOKEN = "up-token-0123456789abcdef"


def bus(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, timeout=30,
                          env=env or _env(), cwd=cwd)


def _env() -> dict:
    env = dict(os.environ)
    env.pop("BUS_CREDENTIALS", None)
    return env


def test_only_loopback_addresses_count_as_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "10.0.0.1", "example.com"))
    assert bind_refusal("0.0.0.0", "creds.yaml", False) is None and bind_refusal("0.0.0.0", None, True) is None


@pytest.mark.parametrize("command", ["serve", "up"])
def test_listening_beyond_loopback_without_credentials_is_refused_in_one_line(command, redis_url, tmp_path):
    done = bus(command, "--host", "0.0.0.0", "--port", str(free_port()), "--redis", redis_url, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("bus: refusing to listen on 0.0.0.0 without credentials: pass --credentials FILE")
    assert "--insecure-no-auth" in line


def test_insecure_no_auth_lets_a_broker_listen_everywhere(stack):
    stack.start_broker(extra=("--host", "0.0.0.0", "--insecure-no-auth"))
    status, body = post(stack.url + "/events", {"source": "s", "detail-type": "d", "detail": {}})
    assert status == 200 and body["FailedEntryCount"] == 0


def test_a_bad_credentials_file_is_reported_as_file_line_key_not_a_traceback(redis_url, tmp_path):
    bad = tmp_path / "credentials.yaml"
    bad.write_text("principals:\n  - name: x\n    access_key_id: AKIAX0000001\n    buses: []\n")
    (tmp_path / "rules").mkdir()
    for command in ("serve", "up"):
        done = bus(command, "--credentials", str(bad), "--port", str(free_port()), "--redis", redis_url, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (f"{bad}:2: secret_access_key: required key 'secret_access_key' "
                                       "(or 'secret_access_key_from_env') is missing")
    env = dict(_env(), BUS_CREDENTIALS=str(bad))  # the environment variable is read the same way
    assert "secret_access_key" in bus("serve", "--port", str(free_port()), "--redis", redis_url, env=env,
                                      cwd=tmp_path).stderr


@pytest.mark.slow
def test_bus_up_with_credentials_passes_them_to_its_broker(tmp_path):
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "workers", tmp_path / "workers")
    (tmp_path / "credentials.yaml").write_text(
        "principals:\n  - {name: dev, access_key_id: AKIADEV000000001, secret_access_key: dev-secret,\n"
        f"     token: {TOKEN}, buses: ['*'], admin: true}}\n")
    env = dict(_env(), BUSWAY_ORDERS_FILE=str(tmp_path / "orders.jsonl"))
    env.pop("BUS_REDIS_URL", None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bus", "up", "--port", str(port), "--credentials", "credentials.yaml"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(url), timeout=30, what="bus up broker")
        event = {"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {"amount": 1}}
        status, body = post(url + "/events", event)
        assert (status, body["__type"]) == (400, "MissingAuthenticationTokenException")
        status, body = post(url + "/events", event, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and body["FailedEntryCount"] == 0, body
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "authentication on, principals from credentials.yaml" in out


def _up(url: str) -> bool:
    try:
        return json.loads(get_text(url + "/healthz"))["status"] == "ok"
    except OSError:
        return False
