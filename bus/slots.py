"""A pool of slots (bus.slot) that run sync handlers with an enforced timeout.

A slot that times out is killed (SIGKILL) and replaced; a slot that dies mid-call is the
handler's "killed" error. Idle slots are reused.

The worker side of a slot is a bare asyncio protocol that cuts reply frames out of the pipe
and resolves the waiting call's future: one wakeup per reply, no stream reader or extra task,
because this round trip is most of what a sync delivery costs the worker.
"""
from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import msgspec

from bus.functions import FunctionLoader
from bus.slot import HEADER, Call, Reply, child_main

_encode = msgspec.msgpack.Encoder().encode
_decode_reply = msgspec.msgpack.Decoder(Reply).decode


class SlotDied(Exception):
    pass


class _Replies(asyncio.Protocol):
    """Reads reply frames from a slot's pipe; each resolves the pending call's future."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < HEADER.size:
            return
        (size,) = HEADER.unpack_from(self.buffer)
        end = HEADER.size + size
        if len(self.buffer) < end:
            return
        frame = bytes(self.buffer[HEADER.size:end])
        del self.buffer[:end]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(SlotDied("the slot's reply pipe closed"))


class Slot:
    def __init__(self, pid: int, replies: _Replies, calls: asyncio.WriteTransport):
        self.pid = pid
        self.replies = replies
        self.calls = calls
        self.exit_status: int | None = None

    @classmethod
    async def start(cls, loader: FunctionLoader) -> "Slot":
        calls_r, calls_w = os.pipe()
        replies_r, replies_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(calls_w)
            os.close(replies_r)
            child_main(calls_r, replies_w, loader)
        os.close(calls_r)
        os.close(replies_w)
        loop = asyncio.get_running_loop()
        _, replies = await loop.connect_read_pipe(_Replies, os.fdopen(replies_r, "rb", 0))
        calls, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(calls_w, "wb", 0))
        return cls(pid, replies, calls)

    async def call(self, call: Call) -> Reply:
        """Send one call and wait for its reply (the caller bounds the wait)."""
        if self.replies.closed or self.calls.is_closing():
            raise SlotDied("the slot's pipes are closed")
        payload = _encode(call)
        waiter = self.replies.waiter = asyncio.get_running_loop().create_future()
        # The pipe buffer takes a whole frame at once in all but huge events; if not, the
        # transport buffers the rest and the reply cannot come before the slot has read it all.
        self.calls.write(HEADER.pack(len(payload)) + payload)
        try:
            frame = await waiter
        finally:
            self.replies.waiter = None
        return _decode_reply(frame)

    def kill(self) -> None:
        """SIGKILL and reap (a killed process is gone within microseconds)."""
        if self.exit_status is not None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(self.pid, 0)
        self.exit_status = status
        self.calls.close()

    def describe_exit(self) -> str:
        status = self.exit_status or 0
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
            return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else "killed"


class SlotPool:
    def __init__(self, loader: FunctionLoader):
        self.loader = loader
        self._idle: list[Slot] = []

    async def run(self, ref: str, event: bytes, context: dict[str, Any], timeout: float) -> Reply:
        slot = self._idle.pop() if self._idle else await Slot.start(self.loader)
        try:
            async with asyncio.timeout(timeout):  # no extra task per call, unlike wait_for
                reply = await slot.call(Call(ref, event, context, timeout))
        except TimeoutError:
            slot.kill()
            return Reply(False, "timeout", "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
        except SlotDied:
            slot.kill()
            return Reply(False, "killed", "Runtime.ExitError",
                         f"the handler's process exited ({slot.describe_exit()}) before returning")
        except BaseException:
            slot.kill()  # cancelled mid-call: the slot's state is unknown
            raise
        self._idle.append(slot)
        return reply

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for slot in idle:
            slot.kill()
