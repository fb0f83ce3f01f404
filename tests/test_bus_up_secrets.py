"""`bus up` and BUS_SECRETS_KEY: made once into the data directory (mode 0600) when the
environment has none, and given to the broker and the worker it starts."""
import stat
from pathlib import Path

import boto3
import pytest
from cryptography.fernet import Fernet

from bus import secrets
from bus.local.up import children_env, key_file
from tests.test_bus_up import _children, _role, running_up


def test_without_a_key_in_the_environment_one_is_made_0600_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(secrets.ENV, raising=False)
    first = children_env(str(tmp_path))[secrets.ENV]
    Fernet(first.encode())  # a usable key
    assert stat.S_IMODE(key_file(str(tmp_path)).stat().st_mode) == 0o600
    assert children_env(str(tmp_path))[secrets.ENV] == first  # the next `bus up` opens what this one sealed


def test_a_key_in_the_environment_is_used_and_no_file_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv(secrets.ENV, "from-the-environment")
    assert children_env(str(tmp_path))[secrets.ENV] == "from-the-environment"
    assert not key_file(str(tmp_path)).exists()


@pytest.mark.slow
def test_bus_up_gives_its_key_to_the_broker_and_the_worker_and_connections_can_be_made(tmp_path, monkeypatch):
    monkeypatch.delenv(secrets.ENV, raising=False)
    with running_up(tmp_path) as up:
        key = key_file(str(tmp_path / ".busway")).read_text().strip()
        for pid, cmd in _children(up.proc.pid).items():
            if _role(cmd) in ("broker", "worker"):
                assert f"{secrets.ENV}={key}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        client = boto3.client("events", endpoint_url=up.url, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x")
        created = client.create_connection(Name="crm", AuthorizationType="API_KEY", AuthParameters={
            "ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "v"}})
        assert created["ConnectionState"] == "AUTHORIZED"
    assert key not in up.output()
