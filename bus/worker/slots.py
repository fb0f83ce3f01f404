"""A pool of slots (bus.worker.slot) that run sync handlers with an enforced timeout.

A slot that times out is killed (SIGKILL) and replaced; a slot that dies mid-call is the
handler's "killed" error. Idle slots are reused.

Queueing behind running calls: the worker may send a busy slot more calls of a fast
function behind the one it is running, as many as that function's recent mean duration says
will start within QUEUE_WAIT_SECONDS (at most MAX_DEPTH in all), and calls sent to one slot
in a loop turn go in one write. The slot then runs them back to back without sleeping in
between, which saves two process wakeups per call: most of what a no-op sync call costs. A
queued call is not running: the pool counts it in `queued`, its timeout starts with its
turn, and if its slot dies before its turn it never ran and runs on another slot. The price
is head-of-line waiting: it waits for the calls ahead of it, which that function's recent
calls say is short and their timeouts bound.

The worker side of a slot is a bare asyncio protocol that cuts reply frames out of the pipe
and resolves the waiting calls' futures: no stream reader or extra task, because this round
trip is most of what a sync delivery costs the worker.
"""
from __future__ import annotations

import asyncio
import os
import signal
from collections import deque
from typing import Any, Callable

import msgspec

from bus.worker.functions import FunctionLoader
from bus.worker.slot import HEADER, Call, Reply, child_main

QUEUE_WAIT_SECONDS = 0.002  # a queued call expects to wait at most this long for the calls ahead of it
MAX_DEPTH = 8  # calls sent to one slot at once, the running one included
_RECENT_WEIGHT = 0.2  # of the newest call in a function's moving mean duration

_encode = msgspec.msgpack.Encoder().encode
_decode_reply = msgspec.msgpack.Decoder(Reply).decode


class SlotDied(Exception):
    pass


class _Pending:
    """One call sent to a slot: its reply, and for a queued call, its turn.

    `turn` resolves when the calls ahead of it are done, or fails with SlotDied if the slot
    died first (the call never ran).
    """

    __slots__ = ("reply", "turn", "queued", "began")

    def __init__(self, reply: asyncio.Future, turn: asyncio.Future | None, began: Callable[[], None] | None):
        self.reply = reply
        self.turn = turn  # None: the call began when it was sent
        self.queued = turn is not None
        self.began = began  # called as the call begins


class _Replies(asyncio.Protocol):
    """Reads reply frames from a slot's pipe; each resolves the oldest pending call.

    `on_turn` runs synchronously when a queued call stops being queued (its turn began, or its
    slot died first), so the pool's count of queued calls is right before any task resumes.
    """

    def __init__(self, on_turn: Callable[[], None]) -> None:
        self.buffer = bytearray()
        self.pending: deque[_Pending] = deque()
        self.closed = False
        self.on_turn = on_turn

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            end = HEADER.size + size
            if len(self.buffer) < end:
                return
            frame = bytes(self.buffer[HEADER.size:end])
            del self.buffer[:end]
            if self.pending:
                done = self.pending.popleft()
                if not done.reply.done():
                    done.reply.set_result(frame)
            if self.pending and self.pending[0].queued:
                self._end_queueing(self.pending[0], None)

    def _end_queueing(self, entry: _Pending, died: SlotDied | None) -> None:
        entry.queued = False
        self.on_turn()
        if died is None and entry.began is not None:
            entry.began()
        if not entry.turn.done():  # cancelled: its task was cancelled while it waited
            if died is None:
                entry.turn.set_result(None)
            else:
                entry.turn.set_exception(died)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail_all("the slot's reply pipe closed")

    def fail_all(self, why: str) -> None:
        self.closed = True
        pending, self.pending = self.pending, deque()
        for entry in pending:
            if entry.queued:  # never ran: it runs elsewhere, in the place of the call that died
                self._end_queueing(entry, SlotDied(why))
            elif not entry.reply.done():
                entry.reply.set_exception(SlotDied(why))


class Slot:
    def __init__(self, pid: int, replies: _Replies, calls: asyncio.WriteTransport):
        self.pid = pid
        self.replies = replies
        self.calls = calls
        self.exit_status: int | None = None
        self.idle = False
        self._unsent: list[bytes] = []  # frames written at the end of this loop turn, in one write

    @classmethod
    async def start(cls, loader: FunctionLoader, on_turn: Callable[[], None]) -> "Slot":
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
        _, replies = await loop.connect_read_pipe(lambda: _Replies(on_turn), os.fdopen(replies_r, "rb", 0))
        calls, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(calls_w, "wb", 0))
        return cls(pid, replies, calls)

    @property
    def alive(self) -> bool:
        return not (self.replies.closed or self.calls.is_closing())

    def outstanding(self) -> int:
        return len(self.replies.pending)

    def send(self, call: Call, queued: bool = False, began: Callable[[], None] | None = None) -> _Pending:
        """Write one call; its reply comes after those of the calls sent before it."""
        if not self.alive:
            raise SlotDied("the slot's pipes are closed")
        loop = asyncio.get_running_loop()
        entry = _Pending(loop.create_future(), loop.create_future() if queued else None, began)
        if not queued and began is not None:
            began()
        self.replies.pending.append(entry)
        payload = _encode(call)
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent += (HEADER.pack(len(payload)), payload)
        return entry

    def _flush(self) -> None:
        """One write for the calls sent to this slot in a loop turn: one wakeup of the slot.

        The pipe buffer takes the frames at once in all but huge events; if not, the transport
        buffers the rest, and no reply can come before the slot has read its call whole.
        """
        frames, self._unsent = self._unsent, []
        if frames and not self.calls.is_closing():
            self.calls.write(b"".join(frames))

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
        self.replies.fail_all("the slot was killed")

    def describe_exit(self) -> str:
        status = self.exit_status or 0
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
            return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else "killed"


class Ticket:
    """A call placed on a slot (SlotPool.place): queued behind others, sent, or waiting for a new slot."""

    __slots__ = ("slot", "call", "entry", "began")

    def __init__(self, slot: Slot | None, call: Call, entry: _Pending | None, began: Callable[[], None] | None):
        self.slot, self.call, self.entry, self.began = slot, call, entry, began


class SlotPool:
    def __init__(self, loader: FunctionLoader):
        self.loader = loader
        self.queued = 0  # calls sent to a slot whose turn has not begun
        self._idle: list[Slot] = []
        self._lent: set[Slot] = set()
        self._recent: dict[str, float] = {}  # function -> moving mean of its call durations (s)

    def _turn_began(self) -> None:
        self.queued -= 1

    def _depth(self, ref: str) -> int:
        """How many calls of `ref` one slot may have at once (1: none queue)."""
        mean = self._recent.get(ref)
        if mean is None:  # never seen: maybe slow
            return 1
        return max(1, min(MAX_DEPTH, int(QUEUE_WAIT_SECONDS / max(mean, 1e-6))))

    def _queue_slot(self, ref: str) -> Slot | None:
        """The busy slot a call of `ref` would queue in now, if any: the one with the most calls
        already sent, since a slot that wakes once for several calls costs far less than several
        slots woken once each."""
        depth, best, most = self._depth(ref), None, 0
        for slot in self._lent:
            n = slot.outstanding()
            if most < n < depth and slot.alive:
                best, most = slot, n
        return best

    def can_queue(self, ref: str) -> bool:
        """Whether a call of `ref` would queue in a slot now (place's first choice)."""
        return self._queue_slot(ref) is not None

    def place(self, call: Call, may_run: bool = True, began: Callable[[], None] | None = None,
              queue: bool = True) -> Ticket | None:
        """Queue `call` behind running ones if its function is fast enough, else (if `may_run`)
        send it to an idle slot; None if neither is allowed now. `began` is called as the
        handler starts: for a queued call, when the calls ahead of it are done.
        """
        if queue and (busy := self._queue_slot(call.ref)) is not None:
            self.queued += 1
            return Ticket(busy, call, busy.send(call, queued=True, began=began), began)
        if not may_run:
            return None
        slot = self._take_idle()
        return Ticket(slot, call, slot.send(call, began=began) if slot else None, began)

    def _take_idle(self) -> Slot | None:
        while self._idle:
            slot = self._idle.pop()
            slot.idle = False
            if slot.alive:
                self._lent.add(slot)
                return slot
            slot.kill()  # died while idle (reaped here)
        return None

    async def run(self, ref: str, event: bytes, context: dict[str, Any], timeout: float,
                  began: Callable[[], None] | None = None) -> Reply:
        """Run one call now (on an idle or a new slot); `began` is called as the handler starts."""
        return await self.run_ticket(self.place(Call(ref, event, context, timeout), began=began, queue=False))

    async def run_ticket(self, ticket: Ticket) -> Reply:
        """Wait for a placed call's turn, then for its reply; a queued call whose slot died
        before its turn never ran, and runs on another slot."""
        entry, slot, call = ticket.entry, ticket.slot, ticket.call
        if entry is not None and entry.turn is not None:
            try:
                await entry.turn
            except SlotDied:
                entry = None
            except BaseException:
                slot.kill()  # cancelled while queued: what the slot would run is no longer wanted
                raise
        if entry is None:  # no idle slot when it was placed, or its slot died before its turn
            slot = self._take_idle() or await self._new_slot()
            entry = slot.send(call, began=ticket.began)
        return await self._await_reply(slot, call, entry)

    async def _new_slot(self) -> Slot:
        slot = await Slot.start(self.loader, self._turn_began)
        self._lent.add(slot)
        return slot

    async def _await_reply(self, slot: Slot, call: Call, entry: _Pending) -> Reply:
        loop = asyncio.get_running_loop()
        # A bare timer on the reply future: cheaper than asyncio.timeout's cancel machinery.
        timer = loop.call_at(loop.time() + call.timeout, _expire, entry.reply)
        try:
            frame = await entry.reply
        except TimeoutError:
            slot.kill()
            reply = Reply(False, "timeout", "Sandbox.Timedout", f"Task timed out after {call.timeout:.2f} seconds")
        except SlotDied:
            slot.kill()
            reply = Reply(False, "killed", "Runtime.ExitError",
                          f"the handler's process exited ({slot.describe_exit()}) before returning")
        except BaseException:
            slot.kill()  # cancelled mid-call: the slot's state is unknown
            raise
        else:
            reply = _decode_reply(frame)
        finally:
            timer.cancel()
            self._returned(slot)
        self._note(call.ref, reply.seconds if reply.ok or reply.kind == "exception" else call.timeout)
        return reply

    def _returned(self, slot: Slot) -> None:
        if slot.outstanding():
            return  # a queued call runs on it next
        self._lent.discard(slot)
        if slot.alive and not slot.idle:  # a killed slot's pipes are closed
            slot.idle = True
            self._idle.append(slot)

    def _note(self, ref: str, seconds: float) -> None:
        mean = self._recent.get(ref)
        self._recent[ref] = seconds if mean is None else mean + _RECENT_WEIGHT * (seconds - mean)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for slot in idle:
            slot.kill()


def _expire(reply: asyncio.Future) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())
