"""A slot: a child process forked from the worker that runs sync handlers one call at a time,
so a handler that overruns its timeout or crashes can be killed and replaced without
touching the worker.

Forking (not spawning) makes a slot cost milliseconds and gives it the handler modules the
worker already imported: Lambda's warm start. Protocol on a pair of pipes: 4-byte big-endian
length, then a msgpack Call or Reply. The handler's prints go to stderr. Whatever a handler
or its first import raises, SystemExit and KeyboardInterrupt included, is a failed Reply:
the slot lives on, and the call costs one attempt.
"""
from __future__ import annotations

import os
import signal
import struct
import time
from typing import Any

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
    seconds: float = 0.0  # how long the handler ran, measured in the slot


class Frames:
    """Reads length-prefixed frames from a pipe fd with one read(2) per burst, not two per frame."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = bytearray()

    def next(self) -> bytes | None:
        while True:
            if len(self.buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self.buffer)
                end = HEADER.size + size
                if len(self.buffer) >= end:
                    frame = bytes(self.buffer[HEADER.size:end])
                    del self.buffer[:end]
                    return frame
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk


def write_frame(fd: int, payload: bytes) -> None:
    view = memoryview(HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def child_main(calls_fd: int, replies_fd: int, loader) -> None:
    """Runs in the forked child; never returns."""
    try:
        _become_slot()
        serve(calls_fd, replies_fd, loader)
    finally:
        os._exit(0)


def _become_slot() -> None:
    # The worker's asyncio signal handling must not run here: default dispositions, no wakeup fd.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    os.dup2(2, 1)  # print() in a handler lands in the worker's log, not in the protocol
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned slot still exits at its next read, when the pipe closes


def serve(calls_fd: int, replies_fd: int, loader) -> None:
    from bus.worker.context import make_context
    from bus.worker.functions import FunctionLoadError, message_of

    decode_call = msgspec.msgpack.Decoder(Call).decode
    encode = msgspec.msgpack.Encoder().encode
    calls = Frames(calls_fd)
    while (frame := calls.next()) is not None:
        call = decode_call(frame)
        started = time.perf_counter()
        try:
            handler = loader.load(call.ref).handler
            context = make_context(timeout=call.timeout, **call.context)
            started = time.perf_counter()  # the handler's own time: a first import is not its speed
            result = handler(msgspec.json.decode(call.event), context)
            reply = Reply(True, result=_json_or_none(result))
        except FunctionLoadError as exc:
            reply = Reply(False, "import", "Runtime.ImportModuleError", str(exc))
        except BaseException as exc:  # SystemExit and friends are the handler's failure too
            reply = Reply(False, "exception", type(exc).__name__, message_of(exc))
        reply.seconds = time.perf_counter() - started
        write_frame(replies_fd, encode(reply))


def _json_or_none(result: Any) -> bytes | None:
    try:
        return msgspec.json.encode(result)
    except (TypeError, msgspec.EncodeError):
        return None
