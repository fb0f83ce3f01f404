"""A slot: a child process forked from the worker that runs handlers, sync and async, so a
handler that overruns its timeout, blocks its event loop or crashes can be killed and
replaced without touching the worker.

Why async handlers run here too: in the worker's own loop, an async handler that blocks
(time.sleep, a CPU loop, a blocking client) stalls every other delivery and the lease
renewals, so its lease lapses, another worker runs it again, and asyncio.timeout cannot fire
until it returns; an os._exit or a segfault in it kills the worker. In a slot the worker's
timer kills it like a sync handler, and the worker never runs (or even imports) user code.

The child serves its calls from an asyncio loop of its own. A sync handler runs inline, one
call at a time, with the loop marked not running (so a handler may call asyncio.run); its
reply is written before the next call starts. An async handler runs as a task under
asyncio.timeout, so a slot may run several calls of one async function at once and one that
merely overruns is cancelled here, without killing the slot; one that blocks the loop is
killed by the worker a little later (bus.worker.slots). Whether a handler is async is decided
here, where it is loaded, and told to the worker in each Reply (`is_async`): the worker
learns it from the first reply instead of importing the module. A sync handler that returns
an awaitable (a wrapper around a coroutine) has it awaited here too.

Forking (not spawning) makes a slot cost milliseconds. Protocol on a pair of pipes: 4-byte
big-endian length, then a msgpack Call or Reply, matched by `id` (async calls end in any
order). The handler's prints go to stderr. Whatever a handler or its first import raises,
SystemExit, KeyboardInterrupt and CancelledError included, is a failed Reply: the slot lives
on, and the call costs one attempt.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import signal
import struct
import sys
import time
import traceback
from typing import Any, Awaitable

import msgspec

HEADER = struct.Struct(">I")
TAIL_BYTES = 4096  # Lambda's LogType Tail: the last 4 KB

# The output of the call running now, when its Call asked for it (Call.tail). A context variable,
# so async calls sharing the slot's loop each keep their own (a task copies it when created).
_captured: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("busway_captured", default=None)


class Call(msgspec.Struct, omit_defaults=True):
    ref: str
    event: bytes  # JSON
    context: dict[str, Any]
    timeout: float
    id: int = 0  # set by the worker as it sends the call; its Reply carries it back
    environment: dict[str, str] = {}  # the function's `environment:`, set for its calls only
    tail: bool = False  # keep the handler's output (Invoke with LogType Tail): Reply.log


class Reply(msgspec.Struct, omit_defaults=True):
    ok: bool
    kind: str = ""
    error_type: str = ""
    message: str = ""
    result: bytes | None = None  # JSON, when the result is JSON-serialisable
    seconds: float = 0.0  # how long the handler ran, measured in the slot
    id: int = 0  # the Call's
    is_async: bool = False  # the handler is a coroutine function: its calls may share a slot
    # Set by invokers other than the function one (never sent by a slot):
    retryable: bool = True  # False: no retry, straight to the DLQ (an HTTP 400, a bus loop)
    retry_after: float | None = None  # seconds the target asked us to wait (HTTP Retry-After)
    forward: bytes | None = None  # an inbox item (bus.worker.destinations.InboxItem) to write with the ack
    stack: list[str] = []  # a failed call's traceback, as Lambda's stackTrace lists it
    log: bytes = b""  # Call.tail: the last TAIL_BYTES of what the handler printed or logged


class Frames:
    """Cuts length-prefixed frames out of the bytes read from a pipe."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = bytearray()

    def read(self) -> bool:
        """One read(2) of up to 64 KiB (one per burst, not two per frame); False at end of file."""
        chunk = os.read(self.fd, 1 << 16)
        self.buffer += chunk
        return bool(chunk)

    def take(self) -> bytes | None:
        """A complete frame from what was read, if there is one."""
        if len(self.buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.buffer)
        end = HEADER.size + size
        if len(self.buffer) < end:
            return None
        frame = bytes(self.buffer[HEADER.size:end])
        del self.buffer[:end]
        return frame


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
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
    # Forked from inside the worker's running loop: that loop is not ours (Python 3.11 does not
    # forget it at fork), and our own must be able to run.
    asyncio.events._set_running_loop(None)
    os.dup2(2, 1)  # print() in a handler lands in the worker's log, not in the protocol
    sys.stdout, sys.stderr = _Tee(sys.stdout), _Tee(sys.stderr)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned slot still exits at its next read, when the pipe closes


class _Tee:
    """A text stream that writes through and also keeps what a call that asked for it writes."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        kept = _captured.get()
        if kept is not None:
            kept.append(text)
            if len(kept) > 64:  # keep it short: only the end is wanted
                kept[:] = ["".join(kept)[-TAIL_BYTES:]]
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _tail(kept: list[str]) -> bytes:
    return "".join(kept).encode("utf-8", errors="replace")[-TAIL_BYTES:]


HIDDEN_ENV = frozenset({"BUS_SECRETS_KEY"})  # bus.secrets.ENV: the worker's, not its handlers'
# Also hidden: the variables the worker's connections read their secrets from (`*_from_env`). The
# worker sets them (hide_env) before forking a slot; a slot takes the set it was forked with.
_hidden_env: frozenset[str] = HIDDEN_ENV


def hide_env(names: frozenset[str]) -> None:
    """Hide these variables, with HIDDEN_ENV, from handlers in slots forked from now on."""
    global _hidden_env
    _hidden_env = HIDDEN_ENV | names


class _Environment:
    """os.environ as one function's calls see it: the slot's own, plus what Lambda sets, plus the
    function's `environment:`. Changed only when the function changes (setting it costs putenv calls)."""

    def __init__(self) -> None:
        # Never the worker's own secret: with it a handler could open every sealed connection secret.
        self._base = {k: v for k, v in os.environ.items() if k not in _hidden_env}
        self._for: tuple | None = None

    def use(self, call: "Call") -> None:
        key = (call.ref, tuple(call.environment.items()))
        if key == self._for:
            return
        wanted = {**self._base, "AWS_LAMBDA_FUNCTION_NAME": call.ref, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                  "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(call.context.get("memory", 128)), **call.environment}
        for name in [n for n in os.environ if n not in wanted]:
            del os.environ[name]
        for name, value in wanted.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        self._for = key


def serve(calls_fd: int, replies_fd: int, loader) -> None:
    """Serve calls until the worker closes the calls pipe."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_Server(loop, calls_fd, replies_fd, loader).run())
    finally:
        loop.close()


class _Server:
    def __init__(self, loop: asyncio.AbstractEventLoop, calls_fd: int, replies_fd: int, loader) -> None:
        from bus.worker.context import make_context
        from bus.worker.functions import FunctionLoadError, message_of
        self.make_context, self.load_error, self.message_of = make_context, FunctionLoadError, message_of
        self.loop, self.loader, self.replies_fd = loop, loader, replies_fd
        self.calls = Frames(calls_fd)
        self.decode_call = msgspec.msgpack.Decoder(Call).decode
        self.encode = msgspec.msgpack.Encoder().encode
        self.closed = loop.create_future()
        self.tasks: set[asyncio.Task] = set()
        self.unsent: list[bytes] = []  # async replies finished in this loop turn: one write
        self.environment = _Environment()

    async def run(self) -> None:
        self.loop.add_reader(self.calls.fd, self._readable)
        await self.closed

    def _readable(self) -> None:
        if not self.calls.read():
            self.loop.remove_reader(self.calls.fd)
            if not self.closed.done():
                self.closed.set_result(None)  # the worker is gone or killed us: calls still running die with us
            return
        while (frame := self.calls.take()) is not None:
            self._start(self.decode_call(frame))

    def _start(self, call: Call) -> None:
        started = time.perf_counter()
        self.environment.use(call)  # before the import: a module's top level reads its environment too
        try:
            function = self.loader.load(call.ref)
        except self.load_error as exc:
            self._reply(Reply(False, "import", "Runtime.ImportModuleError", str(exc), id=call.id), started)
            return
        context = self.make_context(timeout=call.timeout, **call.context)
        kept: list[str] | None = [] if call.tail else None
        if function.is_async:
            try:  # calling a coroutine function runs none of it, but its arguments may not fit
                coroutine = function.handler(msgspec.json.decode(call.event), context)
            except BaseException as exc:
                self._reply(self._failure(call, exc), started)
            else:
                self._spawn(call, coroutine, time.perf_counter(), is_async=True, kept=kept)
            return
        started = time.perf_counter()  # the handler's own time: a first import is not its speed
        asyncio.events._set_running_loop(None)  # a sync handler may run a loop of its own (asyncio.run)
        capture = _captured.set(kept)
        try:
            result = function.handler(msgspec.json.decode(call.event), context)
        except BaseException as exc:  # SystemExit and friends are the handler's failure too
            self._reply(self._failure(call, exc, kept), started)
            return
        finally:
            _captured.reset(capture)
            asyncio.events._set_running_loop(self.loop)
        if inspect.isawaitable(result):  # a sync wrapper around a coroutine: await what it gave
            self._spawn(call, result, started, is_async=False, kept=kept)
        else:
            reply = Reply(True, result=_json_or_none(result), id=call.id)
            if kept is not None:
                reply.log = _tail(kept)
            self._reply(reply, started)

    def _spawn(self, call: Call, awaitable: Awaitable[Any], started: float, is_async: bool,
               kept: list[str] | None = None) -> None:
        task = self.loop.create_task(self._await(call, awaitable, started, is_async, kept))
        self.tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self.tasks.discard)

    async def _await(self, call: Call, awaitable: Awaitable[Any], started: float, is_async: bool,
                     kept: list[str] | None) -> None:
        _captured.set(kept)  # this task's own context
        timeout = asyncio.timeout(call.timeout)
        try:
            async with timeout:
                result = await awaitable
            reply = Reply(True, result=_json_or_none(result))
        except BaseException as exc:  # CancelledError too: nothing but asyncio.timeout cancels a call here
            if timeout.expired():
                reply = Reply(False, "timeout", "Sandbox.Timedout", f"Task timed out after {call.timeout:.2f} seconds")
            else:
                reply = self._failure(call, exc)
        reply.id, reply.is_async = call.id, is_async
        if kept is not None:
            reply.log = _tail(kept)
        self._reply(reply, started, batch=True)

    def _failure(self, call: Call, exc: BaseException, kept: list[str] | None = None) -> Reply:
        reply = Reply(False, "exception", type(exc).__name__, self.message_of(exc), id=call.id, stack=_stack(exc))
        if kept is not None:
            reply.log = _tail(kept)
        return reply

    def _reply(self, reply: Reply, started: float, batch: bool = False) -> None:
        """Send a reply: an async call's at the end of this loop turn with the others that ended in
        it; a sync call's at once (with any waiting), since the next call may run long."""
        reply.seconds = time.perf_counter() - started
        payload = self.encode(reply)
        if batch and not self.unsent:
            self.loop.call_soon(self._flush)
        self.unsent += (HEADER.pack(len(payload)), payload)
        if not batch:
            self._flush()

    def _flush(self) -> None:
        frames, self.unsent = self.unsent, []
        if frames:
            write_all(self.replies_fd, b"".join(frames))


_OWN_FILES = (__file__,)


def _stack(exc: BaseException) -> list[str]:
    """The traceback's frames in the handler's code, one string each, as Lambda's stackTrace has them."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename not in _OWN_FILES]
    return traceback.format_list(frames)[-50:]


def _json_or_none(result: Any) -> bytes | None:
    try:
        return msgspec.json.encode(result)
    except (TypeError, msgspec.EncodeError):
        return None
