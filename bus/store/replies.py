"""What a worker sends back to the broker waiting on a synchronous Invoke (RequestResponse).

One InvokeReply per call, appended to the waiting broker's reply stream (bus.store.keys.reply_key)
with the call's ack, in the same FINISH (bus.worker.finisher). `payload` is what Lambda's Invoke
answers with: the handler's return value as JSON, or Lambda's error object.
"""
from __future__ import annotations

import msgspec

OK = "ok"
FUNCTION_ERROR = "error"  # 200 with X-Amz-Function-Error: Unhandled
THROTTLED = "throttled"  # 429 TooManyRequestsException


class InvokeReply(msgspec.Struct, frozen=True):
    request_id: str
    status: str  # OK | FUNCTION_ERROR | THROTTLED
    payload: bytes = b""
    log: bytes = b""  # LogType Tail: the last 4 KB of the handler's log
    reason: str = ""  # THROTTLED: Lambda's Reason


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(InvokeReply).decode


def encode_reply(reply: InvokeReply) -> bytes:
    return _encode(reply)


def decode_reply(raw: bytes) -> InvokeReply:
    return _decode(raw)
