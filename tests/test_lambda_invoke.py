"""Lambda's API through boto3's `lambda` client: Invoke (RequestResponse, Event, DryRun) on real
workers, ListFunctions/GetFunction/GetFunctionConfiguration, environments kept apart, throttling."""
from __future__ import annotations

import base64
import json

import boto3
import pytest
from botocore.config import Config

from bus.store.deliveries import INVOKE_BUS, SYNC_INVOKE
from bus.store.keys import stream_key, target_key
from tests.conftest import wait_for

RULES = """\
buses:
  - name: results
functions:
  lambdas.echo: {timeout: 5, memory_limit_in_mb: 256, description: says it back}
  lambdas.echo_async: {}
  lambdas.boom: {}
  lambdas.chatty: {}
  lambdas.sleepy: {timeout: 0.5}
  lambdas.recorded: {on_success: results}
  lambdas.failing: {maximum_retry_attempts: 1, dead_letter: true}
  lambdas.not_json: {}
  lambdas.secret_a: {environment: {SECRET: a-only, ONLY_A: "yes"}}
  lambdas.secret_b: {}
  lambdas.held: {reserved_concurrency: 0}
  lambdas.client: {}
rules:
  - name: results-seen
    bus: results
    event_pattern: {source: [lambda]}
    targets: [{id: r, function: probe.record}]
"""


def lambda_client(url: str, **keys):
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=keys.get("key", "x"), aws_secret_access_key=keys.get("secret", "x"),
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30))


@pytest.fixture
def broker(stack):
    stack.write_rules(RULES)
    stack.env["BUS_INVOKE_START_WAIT"] = "0.5"
    return stack.start_broker()


@pytest.fixture
def client(broker):
    broker.start_worker(concurrency=4)
    client = lambda_client(broker.url)
    wait_for_worker(client)
    return client


def wait_for_worker(client) -> None:
    """Until a worker answers: before it has read the registry, calls are throttled."""
    wait_for(lambda: _answer(client, "lambdas.echo") is not None, timeout=15, what="a worker to answer")


def invoke(client, name: str, payload=None, **kw):
    resp = client.invoke(FunctionName=name, Payload=json.dumps(payload if payload is not None else {}), **kw)
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None


# --- reads ---------------------------------------------------------------------------------------

def test_list_functions_lists_the_declared_functions_with_their_settings(broker):
    client = lambda_client(broker.url)
    functions = {f["FunctionName"]: f for f in client.list_functions()["Functions"]}
    assert "lambdas.echo" in functions and len(functions) == 12
    echo = functions["lambdas.echo"]
    assert echo["Timeout"] == 5 and echo["MemorySize"] == 256 and echo["Description"] == "says it back"
    assert echo["FunctionArn"].startswith("arn:aws:lambda:us-east-1:") and echo["FunctionArn"].endswith(":function:lambdas.echo")
    assert functions["lambdas.secret_a"]["Environment"] == {"Variables": {"SECRET": "a-only", "ONLY_A": "yes"}}


def test_list_functions_pages_with_max_items_and_marker(broker):
    client = lambda_client(broker.url)
    names = [f["FunctionName"] for page in client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 4})
             for f in page["Functions"]]
    assert names == sorted(names) and len(names) == 12 == len(set(names))


def test_get_function_and_its_configuration(broker):
    client = lambda_client(broker.url)
    got = client.get_function(FunctionName="lambdas.held")
    assert got["Configuration"]["FunctionName"] == "lambdas.held" and got["Configuration"]["State"] == "Active"
    assert got["Concurrency"] == {"ReservedConcurrentExecutions": 0}
    config = client.get_function_configuration(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:lambdas.echo")
    assert config["Handler"] == "lambdas.echo" and config["Version"] == "$LATEST"
    client.get_waiter("function_active_v2").wait(FunctionName="lambdas.echo")


def test_an_undeclared_function_is_resource_not_found(broker):
    client = lambda_client(broker.url)
    for call in (lambda: client.get_function(FunctionName="lambdas.nope"),
                 lambda: client.get_function_configuration(FunctionName="os.system"),
                 lambda: client.invoke(FunctionName="probe.record", Payload=b"{}"),
                 lambda: client.invoke(FunctionName="lambdas.echo", Qualifier="7", Payload=b"{}")):
        with pytest.raises(client.exceptions.ResourceNotFoundException) as err:
            call()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# --- RequestResponse -----------------------------------------------------------------------------

@pytest.mark.cluster
def test_request_response_returns_the_handlers_value(client):
    resp, body = invoke(client, "lambdas.echo", {"n": 1})
    assert resp["StatusCode"] == 200 and resp["ExecutedVersion"] == "$LATEST" and "FunctionError" not in resp
    assert body["event"] == {"n": 1} and body["function"] == "lambdas.echo" and body["request_id"]


def test_request_response_runs_an_async_handler(client):
    _, body = invoke(client, "lambdas.echo_async", [1, 2, 3])
    assert body == {"event": [1, 2, 3], "async": True}


def test_a_handler_exception_is_an_unhandled_function_error_with_lambdas_payload(client):
    resp, body = invoke(client, "lambdas.boom", {"why": "testing"})
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError" and body["errorMessage"] == "boom: testing"
    assert any("raise ValueError" in line for line in body["stackTrace"]) and body["requestId"]


def test_a_handler_that_overruns_its_timeout_gets_lambdas_timeout_error(client):
    resp, body = invoke(client, "lambdas.sleepy", {"seconds": 5})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout" and "Task timed out after 0.50 seconds" in body["errorMessage"]


def test_a_return_value_json_cannot_hold_is_a_marshal_error(client):
    resp, body = invoke(client, "lambdas.not_json")
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.MarshalError"


def test_log_type_tail_returns_the_last_4_kb_of_the_handlers_output(client):
    resp, body = invoke(client, "lambdas.chatty", LogType="Tail")
    assert body == "said it"
    log = base64.b64decode(resp["LogResult"]).decode()
    assert len(log.encode()) <= 4096 and "the end" in log and "REPORT RequestId:" in log
    assert "hello from chatty" not in log  # more than 4 KB came after it
    resp, _ = invoke(client, "lambdas.chatty")
    assert "LogResult" not in resp


def test_a_client_context_reaches_the_handler_of_a_sync_call(client):
    import base64 as b64
    cc = b64.b64encode(json.dumps({"custom": {"tenant": "t1"}, "env": {"app": "a"}}).encode()).decode()
    _, body = invoke(client, "lambdas.client", ClientContext=cc)
    assert body == {"custom": {"tenant": "t1"}, "env": {"app": "a"}}
    _, body = invoke(client, "lambdas.client")
    assert body == {"custom": None, "env": None}
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="lambdas.client", ClientContext="not base64!", Payload=b"{}")


def test_an_empty_payload_is_an_empty_object_and_bad_json_is_invalid_request_content(client):
    resp = client.invoke(FunctionName="lambdas.echo")
    assert json.loads(resp["Payload"].read())["event"] == {}
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="lambdas.echo", Payload=b"{not json")


def test_with_no_worker_free_a_sync_invoke_is_throttled_and_never_runs(broker, r):
    client = lambda_client(broker.url)  # no worker at all
    with pytest.raises(client.exceptions.TooManyRequestsException) as err:
        client.invoke(FunctionName="lambdas.recorded", Payload=b'{"late": true}')
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert err.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
    stream = stream_key(target_key(INVOKE_BUS, SYNC_INVOKE, "lambdas.recorded"))
    assert r.xlen(stream) == 1  # still queued when the broker gave up on it
    broker.start_worker()
    wait_for(lambda: r.xlen(stream) == 0, what="the worker to take and finish the refused call")
    wait_for_worker(client)
    assert broker.records() == []


def test_reserved_concurrency_zero_throttles_a_sync_invoke(client):
    with pytest.raises(client.exceptions.TooManyRequestsException) as err:
        client.invoke(FunctionName="lambdas.held", Payload=b"{}")
    assert err.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


# --- Event and DryRun ----------------------------------------------------------------------------

@pytest.mark.cluster
def test_event_invoke_answers_202_and_runs_the_handler(client, broker):
    resp = client.invoke(FunctionName="lambdas.recorded", InvocationType="Event", Payload=b'{"k": "v"}')
    assert resp["StatusCode"] == 202
    broker.wait_records(1)
    [rec] = [r for r in broker.records() if r["handler"] == "recorded"]
    assert rec["event"] == {"k": "v"} and rec["context"]["function_name"] == "lambdas.recorded"


def test_event_invoke_sends_lambdas_success_record_to_the_functions_on_success_bus(client, broker):
    client.invoke(FunctionName="lambdas.recorded", InvocationType="Event", Payload=b'{"k": 1}')
    recs = broker.wait_records(2)
    [destination] = [r for r in recs if r["handler"] == "record"]
    assert destination["event"]["detail-type"] == "Lambda Function Invocation Result - Success"
    detail = destination["event"]["detail"]
    assert detail["requestPayload"] == {"k": 1} and detail["responsePayload"] == {"recorded": True}
    assert detail["requestContext"]["functionArn"].endswith(":function:lambdas.recorded")


def test_event_invoke_retries_as_the_function_says_then_dead_letters(client, broker):
    client.invoke(FunctionName="lambdas.failing", InvocationType="Event", Payload=b'{"n": 1}')
    recs = broker.wait_records(2, timeout=15)
    assert [r["context"]["attempt"] for r in recs] == [1, 2]  # maximum_retry_attempts: 1
    out = wait_for(lambda: (r := broker.bus("dlq", "list")).stdout.strip() and "lambdas.failing" in r.stdout and r,
                   timeout=10, what="the dead letter")
    assert "$lambda/event/lambdas.failing" in out.stdout


def test_dry_run_answers_204_and_runs_nothing(client, broker):
    resp = client.invoke(FunctionName="lambdas.recorded", InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    invoke(client, "lambdas.echo")  # a call after it has run: the worker is reading
    assert broker.records() == []


# --- environments --------------------------------------------------------------------------------

def test_a_functions_environment_is_visible_to_it_and_to_no_other_function(broker):
    broker.start_worker(concurrency=1)  # one slot's worth: both functions go through the same pool
    client = lambda_client(broker.url)
    wait_for_worker(client)
    for _ in range(3):
        _, a = invoke(client, "lambdas.secret_a")
        _, b = invoke(client, "lambdas.secret_b")
        assert a == {"SECRET": "a-only", "ONLY_A": "yes"}
        assert b == {"SECRET": None, "ONLY_A": None}


# --- authorization -------------------------------------------------------------------------------

CREDENTIALS = """\
principals:
  - {name: app, access_key_id: AKIAAPP000000001, secret_access_key: app-secret, buses: [], functions: [lambdas.echo]}
  - {name: ops, access_key_id: AKIAOPS000000001, secret_access_key: ops-secret, buses: ["*"], admin: true}
"""


@pytest.fixture
def guarded(stack, tmp_path):
    (tmp_path / "credentials.yaml").write_text(CREDENTIALS)
    stack.write_rules(RULES)
    stack.start_broker(extra=("--credentials", str(tmp_path / "credentials.yaml")))
    stack.start_worker()
    return stack


def test_a_principal_invokes_and_sees_only_the_functions_it_is_given(guarded):
    app = lambda_client(guarded.url, key="AKIAAPP000000001", secret="app-secret")
    wait_for_worker(app)
    assert [f["FunctionName"] for f in app.list_functions()["Functions"]] == ["lambdas.echo"]
    arn = "arn:aws:lambda:us-east-1:000000000000:function:lambdas.echo"  # %-encoded in the signed path
    assert json.loads(app.invoke(FunctionName=arn, Payload=b'{"a": 1}')["Payload"].read())["event"] == {"a": 1}
    with pytest.raises(app.exceptions.ClientError) as err:
        app.invoke(FunctionName="lambdas.boom", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    ops = lambda_client(guarded.url, key="AKIAOPS000000001", secret="ops-secret")
    assert len(ops.list_functions()["Functions"]) == 12


def test_a_wrong_secret_is_refused_with_403_before_anything_runs(guarded):
    stranger = lambda_client(guarded.url, key="AKIAAPP000000001", secret="wrong")
    with pytest.raises(stranger.exceptions.ClientError) as err:
        stranger.invoke(FunctionName="lambdas.recorded", InvocationType="Event", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert guarded.records() == []


# --- --reload ------------------------------------------------------------------------------------

def test_reload_runs_an_edited_handler_within_2_seconds(stack, tmp_path):
    import time
    functions = tmp_path / "fns"
    functions.mkdir()
    source = functions / "hot.py"
    source.write_text('def version(event, context):\n    return "v1"\n')
    stack.write_rules("functions:\n  hot.version: {}\n")
    stack.start_broker()
    stack._spawn(["worker", "--functions", str(functions), "--reload", "--metrics-port", "0"], "worker")
    client = lambda_client(stack.url)
    wait_for(lambda: _answer(client, "hot.version") == "v1", timeout=15, what="v1")
    source.write_text('def version(event, context):\n    return "v2"\n')  # same size, likely the same second
    edited = time.monotonic()
    wait_for(lambda: _answer(client, "hot.version") == "v2", timeout=5, interval=0.05, what="v2 after the edit")
    assert time.monotonic() - edited < 2.0
    assert "functions changed in" in stack.logs()


def _answer(client, name: str, payload: object = None):
    """The handler's answer, or None while the call is throttled (no worker ready yet)."""
    try:
        return json.loads(client.invoke(FunctionName=name, Payload=json.dumps(payload or {}))["Payload"].read())
    except client.exceptions.TooManyRequestsException:
        return None


def test_a_handler_never_sees_the_variables_connections_read_their_secrets_from(stack):
    stack.env.update(CRM_KEY="s3cret-key", PLAIN_SETTING="visible")
    stack.write_rules("""\
functions:
  lambdas.peek_env: {}
connections:
  - name: crm
    authorization: {api_key: {header: x-api-key, value_from_env: CRM_KEY}}
api_destinations:
  - {name: crm-orders, connection: crm, endpoint: "http://127.0.0.1:9/orders"}
rules:
  - name: to-crm
    event_pattern: {source: [crm]}
    targets: [{id: crm, http: crm-orders}]
""")
    stack.start_broker()
    stack.start_worker()
    client = lambda_client(stack.url)
    names = {"names": ["CRM_KEY", "PLAIN_SETTING"]}
    assert wait_for(lambda: _answer(client, "lambdas.peek_env", names), timeout=15, what="an answer") == \
        {"CRM_KEY": None, "PLAIN_SETTING": "visible"}
