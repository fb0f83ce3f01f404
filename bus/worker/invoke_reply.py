"""What the caller of a synchronous Invoke gets for an attempt's result: pure, no I/O.

Lambda's shapes (../shared/reference/aws-auth-invoke-sqs.md §2.2-2.4): the handler's return value
as JSON; on a failure, Lambda's error object (`errorMessage`, `errorType`, and for an exception
`requestId` and `stackTrace`) with X-Amz-Function-Error: Unhandled; a throttle is the API's
TooManyRequestsException. None: nobody is to be answered (the broker already was).
"""
from __future__ import annotations

import math

import msgspec

from bus.store.deliveries import Delivery
from bus.store.replies import FUNCTION_ERROR, OK, THROTTLED, InvokeReply
from bus.worker.invoker import THROTTLED as RESULT_THROTTLED, Result
from bus.worker.slot import TAIL_BYTES

NOT_CLAIMED = "not_claimed"  # bus.worker.invokers.function: the broker answered before a worker started it
RESERVED_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"


def invoke_reply(d: Delivery, result: Result, memory_mb: int = 128) -> InvokeReply | None:
    if result.kind == NOT_CLAIMED:
        return None
    if result.kind == RESULT_THROTTLED:
        return InvokeReply(d.id, THROTTLED, reason=RESERVED_LIMIT)
    if result.ok and result.result is not None:
        return InvokeReply(d.id, OK, result.result, _log(d, result, memory_mb))
    return InvokeReply(d.id, FUNCTION_ERROR, msgspec.json.encode(error_object(d, result)), _log(d, result, memory_mb))


def error_object(d: Delivery, result: Result) -> dict:
    """Lambda's error payload for a failed (or unmarshallable) result."""
    if result.ok:  # returned a value JSON cannot hold
        return {"errorMessage": "Unable to marshal response: the handler's return value is not JSON serializable",
                "errorType": "Runtime.MarshalError", "requestId": d.id, "stackTrace": []}
    if result.kind == "timeout":
        return {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {d.id} Error: {result.message}"}
    if result.kind == "exception":
        return {"errorMessage": result.message, "errorType": result.error_type, "requestId": d.id,
                "stackTrace": list(result.stack)}
    if result.kind == "import":
        return {"errorMessage": result.message, "errorType": "Runtime.ImportModuleError", "requestId": d.id,
                "stackTrace": []}
    # killed, claimed elsewhere, anything else: the handler's process ended without an answer
    return {"errorType": result.error_type or "Runtime.ExitError", "errorMessage": f"RequestId: {d.id} Error: {result.message}"}


def _log(d: Delivery, result: Result, memory_mb: int) -> bytes:
    """LogType Tail: the handler's output between Lambda's START and END/REPORT lines, last 4 KB."""
    if not d.tail:
        return b""
    ms = result.seconds * 1000
    text = (f"START RequestId: {d.id} Version: $LATEST\n".encode() + bytes(result.log)
            + f"END RequestId: {d.id}\nREPORT RequestId: {d.id}\tDuration: {ms:.2f} ms\t"
              f"Billed Duration: {max(1, math.ceil(ms))} ms\tMemory Size: {memory_mb} MB\t\n".encode())
    return text[-TAIL_BYTES:]
