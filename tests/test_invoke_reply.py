"""What a synchronous Invoke's caller is answered for each attempt result (pure)."""
from __future__ import annotations

import json

import msgspec

from bus.store.deliveries import Delivery
from bus.store.replies import FUNCTION_ERROR, OK, THROTTLED
from bus.worker.invoke_reply import NOT_CLAIMED, invoke_reply
from bus.worker.invoker import throttled
from bus.worker.slot import Reply


def delivery(tail: bool = False) -> Delivery:
    return Delivery(id="req-9", event=msgspec.Raw(b"{}"), bus="$lambda", rule="sync", target="m.f", function="m.f",
                    first_enqueued=0.0, ingested=0.0, reply="busway:replies:{b}", tail=tail)


def payload(reply) -> dict:
    return json.loads(reply.payload)


def test_a_return_value_is_answered_as_is():
    reply = invoke_reply(delivery(), Reply(True, result=b'{"a":1}'))
    assert (reply.status, reply.payload, reply.request_id, reply.log) == (OK, b'{"a":1}', "req-9", b"")


def test_an_exception_is_lambdas_error_object_with_its_stack():
    reply = invoke_reply(delivery(), Reply(False, "exception", "ValueError", "bad", stack=['  File "m.py", line 2\n']))
    assert reply.status == FUNCTION_ERROR
    assert payload(reply) == {"errorMessage": "bad", "errorType": "ValueError", "requestId": "req-9",
                              "stackTrace": ['  File "m.py", line 2\n']}


def test_a_timeout_is_sandbox_timedout():
    reply = invoke_reply(delivery(), Reply(False, "timeout", "Sandbox.Timedout", "Task timed out after 3.00 seconds"))
    assert payload(reply) == {"errorType": "Sandbox.Timedout",
                              "errorMessage": "RequestId: req-9 Error: Task timed out after 3.00 seconds"}


def test_an_import_failure_is_runtime_import_module_error():
    reply = invoke_reply(delivery(), Reply(False, "import", "Runtime.ImportModuleError", "No module named 'm'"))
    assert payload(reply)["errorType"] == "Runtime.ImportModuleError"


def test_a_killed_slot_is_runtime_exit_error():
    reply = invoke_reply(delivery(), Reply(False, "killed", "Runtime.ExitError", "the handler's process exited"))
    assert payload(reply)["errorType"] == "Runtime.ExitError"


def test_a_value_json_cannot_hold_is_a_marshal_error():
    reply = invoke_reply(delivery(), Reply(True, result=None))
    assert reply.status == FUNCTION_ERROR and payload(reply)["errorType"] == "Runtime.MarshalError"


def test_over_reserved_concurrency_is_a_throttle_with_lambdas_reason():
    reply = invoke_reply(delivery(), throttled())
    assert (reply.status, reply.reason) == (THROTTLED, "ReservedFunctionConcurrentInvocationLimitExceeded")


def test_a_call_the_broker_refused_gets_no_answer():
    assert invoke_reply(delivery(), Reply(False, NOT_CLAIMED)) is None


def test_the_tail_has_lambdas_start_end_and_report_lines_and_at_most_4_kb():
    reply = invoke_reply(delivery(tail=True), Reply(True, result=b"1", seconds=0.0012, log=b"hi\n"), memory_mb=256)
    text = reply.log.decode()
    assert text.startswith("START RequestId: req-9 Version: $LATEST\nhi\nEND RequestId: req-9\nREPORT RequestId: req-9")
    assert "Duration: 1.20 ms" in text and "Memory Size: 256 MB" in text
    long = invoke_reply(delivery(tail=True), Reply(True, result=b"1", log=b"x" * 10000))
    assert len(long.log) == 4096 and long.log.endswith(b"MB\t\n")
