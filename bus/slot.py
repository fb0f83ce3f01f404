"""A slot process: runs sync handlers for a worker, one call at a time, so that a handler
that overruns its timeout or crashes can be killed and replaced without touching the worker.

Protocol on stdin/stdout: 4-byte big-endian length, then a msgpack Call or Reply. The
handler's own prints go to stderr so they cannot corrupt the protocol.
"""
from __future__ import annotations

import logging
import os
import struct
import sys
from typing import Any, BinaryIO

import msgspec

HEADER = struct.Struct(">I")


class Call(msgspec.Struct):
    ref: str
    event: bytes  # JSON
    context: dict[str, Any]
    timeout: float


class Reply(msgspec.Struct):
    ok: bool
    kind: str = ""
    error_type: str = ""
    message: str = ""
    result: bytes | None = None  # JSON, when the result is JSON-serialisable


def write_frame(out: BinaryIO, payload: bytes) -> None:
    out.write(HEADER.pack(len(payload)) + payload)
    out.flush()


def read_frame(inp: BinaryIO) -> bytes | None:
    header = inp.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    return inp.read(size)


def _die_with_parent() -> None:
    """Linux: SIGKILL this slot when its worker dies, as a Lambda sandbox dies with its host."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass  # elsewhere an orphaned slot exits at its next read (stdin closes)
    if os.getppid() == 1:  # the worker died before prctl took effect
        os._exit(0)


def main() -> None:
    _die_with_parent()
    from bus.context import make_context
    from bus.functions import FunctionLoader, FunctionLoadError

    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # print() in a handler lands in the worker's log, not in our protocol
    logging.basicConfig(level=os.environ.get("BUS_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loader = FunctionLoader(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None)
    decode_call = msgspec.msgpack.Decoder(Call).decode
    encode = msgspec.msgpack.Encoder().encode
    while (frame := read_frame(sys.stdin.buffer)) is not None:
        call = decode_call(frame)
        try:
            handler = loader.load(call.ref).handler
            context = make_context(timeout=call.timeout, **call.context)
            result = handler(msgspec.json.decode(call.event), context)
            reply = Reply(True, result=_json_or_none(result))
        except FunctionLoadError as exc:
            reply = Reply(False, "import", "Runtime.ImportModuleError", str(exc))
        except BaseException as exc:  # SystemExit and friends are the handler's failure too
            reply = Reply(False, "exception", type(exc).__name__, str(exc))
        write_frame(proto_out, encode(reply))


def _json_or_none(result: Any) -> bytes | None:
    try:
        return msgspec.json.encode(result)
    except (TypeError, msgspec.EncodeError):
        return None


if __name__ == "__main__":
    main()
