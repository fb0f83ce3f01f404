"""A pool of slots (bus.slot) that run sync handlers with an enforced timeout.

A slot that times out is killed (SIGKILL) and replaced; a slot that dies mid-call is the
handler's "killed" error. Idle slots are reused.
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


class Slot:
    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.pid = pid
        self.reader = reader
        self.writer = writer
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
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(replies_r, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(calls_w, "wb", 0))
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        return cls(pid, reader, writer)

    async def call(self, call: Call) -> Reply:
        payload = _encode(call)
        try:
            self.writer.write(HEADER.pack(len(payload)) + payload)
            await self.writer.drain()
            (size,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
            return _decode_reply(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
            raise SlotDied(str(exc)) from None

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
        self.writer.close()

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
            reply = await asyncio.wait_for(slot.call(Call(ref, event, context, timeout)), timeout)
        except asyncio.TimeoutError:
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
