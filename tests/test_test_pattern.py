"""TestEventPattern through boto3, the native route and `bus test-pattern`."""
import json
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

from tests.httpc import post

EVENT = {"id": "1", "account": "123456789012", "source": "shop.orders", "time": "2026-01-01T00:00:00Z",
         "region": "us-east-1", "detail-type": "OrderPlaced", "resources": [], "detail": {"amount": 120}}


@pytest.fixture
def broker(stack):
    stack.write_rules("rules: []\n")
    return stack.start_broker()


def test_boto3_test_event_pattern_answers_true_and_false(broker, events_client):
    client = events_client(broker.url)
    big = json.dumps({"detail": {"amount": [{"numeric": [">", 100]}]}})
    small = json.dumps({"detail": {"amount": [{"numeric": ["<", 100]}]}})
    assert client.test_event_pattern(EventPattern=big, Event=json.dumps(EVENT))["Result"] is True
    assert client.test_event_pattern(EventPattern=small, Event=json.dumps(EVENT))["Result"] is False


def test_boto3_invalid_pattern_raises_invalid_event_pattern_exception(broker, events_client):
    client = events_client(broker.url)
    with pytest.raises(client.exceptions.InvalidEventPatternException) as err:
        client.test_event_pattern(EventPattern=json.dumps({"detail": {"amount": [{"numeric": ">"}]}}),
                                  Event=json.dumps(EVENT))
    assert "amount" in str(err.value)


def test_boto3_event_missing_required_fields_is_a_validation_exception(broker, events_client):
    with pytest.raises(ClientError) as err:
        events_client(broker.url).test_event_pattern(EventPattern='{"source": ["a"]}', Event='{"source": "a"}')
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_native_route_answers_result(broker):
    status, body = post(broker.url + "/test-event-pattern",
                        {"pattern": {"source": [{"prefix": "shop."}]}, "event": EVENT})
    assert (status, body) == (200, {"result": True})
    status, body = post(broker.url + "/test-event-pattern", {"pattern": {"source": "x"}, "event": EVENT})
    assert status == 400 and body["__type"] == "InvalidEventPatternException"


def run_cli(tmp_path, pattern) -> subprocess.CompletedProcess:
    (tmp_path / "p.json").write_text(json.dumps(pattern))
    (tmp_path / "e.json").write_text(json.dumps(EVENT))
    return subprocess.run([sys.executable, "-m", "bus", "test-pattern", str(tmp_path / "p.json"), str(tmp_path / "e.json")],
                          capture_output=True, text=True)


def test_cli_exits_0_on_match_1_on_no_match_2_on_invalid(tmp_path):
    assert run_cli(tmp_path, {"source": ["shop.orders"]}).returncode == 0
    assert run_cli(tmp_path, {"source": ["other"]}).returncode == 1
    invalid = run_cli(tmp_path, {"source": [{"nonsense": 1}]})
    assert invalid.returncode == 2 and "InvalidEventPatternException" in invalid.stderr
