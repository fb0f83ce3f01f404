"""A pool of slot processes (bus.slot) that run sync handlers with an enforced timeout.

A slot that times out is killed (SIGKILL) and replaced; a slot that dies mid-call is the
handler's "killed" error. Idle slots are reused, so a process start is paid once per slot.
"""
from __future__ import annotations

import asyncio
import sys
from typing import Any

import msgspec

from bus.slot import HEADER, Call, Reply

_encode = msgspec.msgpack.Encoder().encode
_decode_reply = msgspec.msgpack.Decoder(Reply).decode


class SlotDied(Exception):
    pass


class Slot:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    @classmethod
    async def start(cls, functions_dir: str | None) -> "Slot":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bus.slot", functions_dir or "",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def call(self, call: Call) -> Reply:
        payload = _encode(call)
        try:
            self.proc.stdin.write(HEADER.pack(len(payload)) + payload)
            await self.proc.stdin.drain()
            header = await self.proc.stdout.readexactly(HEADER.size)
            (size,) = HEADER.unpack(header)
            return _decode_reply(await self.proc.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
            raise SlotDied(str(exc)) from None

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 2)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class SlotPool:
    def __init__(self, functions_dir: str | None):
        self.functions_dir = functions_dir
        self._idle: list[Slot] = []

    async def run(self, ref: str, event: bytes, context: dict[str, Any], timeout: float) -> Reply:
        slot = self._idle.pop() if self._idle else await Slot.start(self.functions_dir)
        try:
            reply = await asyncio.wait_for(slot.call(Call(ref, event, context, timeout)), timeout)
        except asyncio.TimeoutError:
            await self._discard(slot)
            return Reply(False, "timeout", "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
        except SlotDied:
            await self._discard(slot)
            return Reply(False, "killed", "Runtime.ExitError",
                         f"the handler's process exited (code {slot.proc.returncode}) before returning")
        except BaseException:
            await self._discard(slot)  # cancelled mid-call: the slot's state is unknown
            raise
        self._idle.append(slot)
        return reply

    async def _discard(self, slot: Slot) -> None:
        slot.kill()
        await slot.proc.wait()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(slot.close() for slot in idle))
