"""A pool of slots (bus.worker.slot) that run handlers, sync and async, with an enforced timeout.

A slot that times out is killed (SIGKILL) and replaced; a slot that dies mid-call is the
handler's "killed" error. Idle slots are reused. The pool never imports a handler: whether a
function is async it learns from its first reply (`Reply.is_async`), and until then the
function's calls run one to a slot.

Sharing a slot between async calls: calls of one function the slot said is async may run in
the same slot at once, up to ASYNC_PER_SLOT, each starting as it is sent (they are running,
not queued). The slot cancels one that overruns its timeout itself; the worker's timer for
an async call fires ASYNC_KILL_GRACE later and kills the slot only when its loop is blocked.
The price of sharing: calls of that function sharing a slot with one that blocks its loop
past its timeout die with it ("killed", one attempt each). Calls of other functions never
share it.

Queueing behind running calls: the worker may send a busy slot more calls of a fast
function behind the one it is running, as many as that function's recent mean duration says
will start within QUEUE_WAIT_SECONDS (at most MAX_DEPTH in all), and calls sent to one slot
in a loop turn go in one write. The slot then runs them back to back without sleeping in
between, which saves two process wakeups per call: most of what a no-op sync call costs. A
queued call is not running: the pool counts it in `queued`, its timeout starts with its
turn, and if its slot dies before its turn it never ran and runs on another slot. The price
is head-of-line waiting: it waits for the calls ahead of it, which that function's recent
calls say is short and their timeouts bound.

Environments: a function with an `environment:` has slots of its own. A slot that has run its
code never runs another function's (whose module could read what that one left in the process),
and it never runs in a slot where another function's code was loaded. Functions without one share
slots. The environment itself is set in the slot, per call (bus.worker.slot).

The worker side of a slot is a bare asyncio protocol that cuts reply frames out of the pipe
and resolves the waiting calls' futures: no stream reader or extra task, because this round
trip is most of what a sync delivery costs the worker.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
from typing import Any, Callable

import msgspec

from bus.worker.functions import FunctionLoader
from bus.worker.slot import HEADER, Call, Reply, child_main

QUEUE_WAIT_SECONDS = 0.002  # a queued call expects to wait at most this long for the calls ahead of it
MAX_DEPTH = 8  # calls sent to one slot at once, the running one included
ASYNC_PER_SLOT = 32  # calls of one async function running at once in one slot
ASYNC_KILL_GRACE = 0.25  # s past its timeout before a call not known to be sync kills its slot: the slot's own
# asyncio.timeout answers first unless its loop is blocked
_RECENT_WEIGHT = 0.2  # of the newest call in a function's moving mean duration

_encode = msgspec.msgpack.Encoder().encode
_decode_reply = msgspec.msgpack.Decoder(Reply).decode
_call_ids = itertools.count(1)


class SlotDied(Exception):
    pass


class _Pending:
    """One call sent to a slot: its reply, and for a queued call, its turn.

    `turn` resolves when the calls ahead of it are done, or fails with SlotDied if the slot
    died first (the call never ran).
    """

    __slots__ = ("reply", "turn", "queued", "began", "sync")

    def __init__(self, reply: asyncio.Future, turn: asyncio.Future | None, began: Callable[[], None] | None,
                 sync: bool):
        self.reply = reply  # resolves to the Reply
        self.turn = turn  # None: the call began when it was sent
        self.queued = turn is not None
        self.began = began  # called as the call begins
        self.sync = sync  # its function is known to be sync: it runs alone, its timeout is exact


class _Replies(asyncio.Protocol):
    """Reads reply frames from a slot's pipe; each resolves the pending call of its id.

    `on_turn` runs synchronously when a queued call stops being queued (its turn began, or its
    slot died first), so the pool's count of queued calls is right before any task resumes.
    """

    def __init__(self, on_turn: Callable[[], None]) -> None:
        self.buffer = bytearray()
        self.pending: dict[int, _Pending] = {}  # by call id, in the order sent
        self.unsure = 0  # pending calls not known to be sync: nothing may queue behind them
        self.closed = False
        self.on_turn = on_turn

    def add(self, call_id: int, entry: _Pending) -> None:
        self.pending[call_id] = entry
        self.unsure += not entry.sync

    def _remove(self, call_id: int) -> _Pending | None:
        entry = self.pending.pop(call_id, None)
        if entry is not None:
            self.unsure -= not entry.sync
        return entry

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            end = HEADER.size + size
            if len(self.buffer) < end:
                return
            reply = _decode_reply(self.buffer[HEADER.size:end])
            del self.buffer[:end]
            done = self._remove(reply.id)
            if done is not None:
                if done.queued:  # ended before the worker saw its turn begin (it ran behind an async call)
                    self._end_queueing(done, None)
                if not done.reply.done():
                    done.reply.set_result(reply)
            first = next(iter(self.pending.values()), None)
            if first is not None and first.queued:  # in send order, the calls ahead of it are done
                self._end_queueing(first, None)

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
        pending, self.pending, self.unsure = self.pending, {}, 0
        for entry in pending.values():
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
        self.shared: str | None = None  # the async function whose calls run here at once, if any
        # Whose code it has run: None: nobody's yet; "": functions without an environment only;
        # else the one function with an environment that it is kept for (see the module's docstring).
        self.owner: str | None = None
        self.generation = 0  # the pool's generation when it was forked (SlotPool.retire)
        self.killed_for = ""  # why the worker killed it, for the calls that die with it
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

    def send(self, call: Call, queued: bool = False, began: Callable[[], None] | None = None,
             sync: bool = False) -> _Pending:
        """Write one call; a sync call's reply comes after those of the calls sent before it."""
        if not self.alive:
            raise SlotDied("the slot's pipes are closed")
        loop = asyncio.get_running_loop()
        entry = _Pending(loop.create_future(), loop.create_future() if queued else None, began, sync)
        if not queued and began is not None:
            began()
        call.id = next(_call_ids)  # anew on each send: a call re-sent to another slot is a new call there
        self.replies.add(call.id, entry)
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

    def kill(self, why: str = "") -> None:
        """SIGKILL and reap (a killed process is gone within microseconds)."""
        if self.exit_status is not None:
            return
        self.killed_for = why
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
        if self.killed_for:
            return f"killed: {self.killed_for}"
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
            return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else "killed"


def owner_of(call: Call) -> str:
    """The slot owner a call needs: its function when it has an environment, else the shared ""."""
    return call.ref if call.environment else ""


def _fits(slot: Slot, owner: str) -> bool:
    return slot.owner is None or slot.owner == owner


class Ticket:
    """A call placed on a slot (SlotPool.place): queued behind others, sent, or waiting for a new slot."""

    __slots__ = ("slot", "call", "entry", "began")

    def __init__(self, slot: Slot | None, call: Call, entry: _Pending | None, began: Callable[[], None] | None):
        self.slot, self.call, self.entry, self.began = slot, call, entry, began


class SlotPool:
    def __init__(self, loader: FunctionLoader, queue_wait: float = QUEUE_WAIT_SECONDS):
        self.loader = loader  # handed to the slots, which load handlers; the pool never does
        self.queue_wait = queue_wait  # a queued call's expected wait: with the mean, how deep a slot's queue may be
        self.queued = 0  # calls sent to a slot whose turn has not begun
        self._idle: list[Slot] = []
        self._lent: set[Slot] = set()
        self._recent: dict[str, float] = {}  # function -> moving mean of its call durations (s)
        self._async: dict[str, bool] = {}  # function -> is async, as its last reply from a slot said
        self.generation = 0  # moves when the functions' code changed (retire): older slots take no new calls

    def _turn_began(self) -> None:
        self.queued -= 1

    def _depth(self, ref: str) -> int:
        """How many calls of `ref` one slot may have at once (1: none queue)."""
        mean = self._recent.get(ref)
        if mean is None or self._async.get(ref) is not False:  # never seen, maybe slow; or not a sync function
            return 1
        return max(1, min(MAX_DEPTH, int(self.queue_wait / max(mean, 1e-6))))

    def _queue_slot(self, ref: str, owner: str = "") -> Slot | None:
        """The busy slot a call of `ref` would queue in now, if any: the one with the most calls
        already sent, since a slot that wakes once for several calls costs far less than several
        slots woken once each. Only behind calls known to be sync, which run one at a time."""
        depth, best, most = self._depth(ref), None, 0
        if depth == 1:
            return None
        for slot in self._lent:
            n = slot.outstanding()
            if most < n < depth and slot.replies.unsure == 0 and slot.alive and _fits(slot, owner) \
                    and slot.generation == self.generation:
                best, most = slot, n
        return best

    def _shared_slot(self, ref: str) -> Slot | None:
        """A slot already running calls of async function `ref` with room for one more."""
        if not self._async.get(ref):
            return None
        for slot in self._lent:
            if slot.shared == ref and slot.outstanding() < ASYNC_PER_SLOT and slot.alive \
                    and slot.generation == self.generation:
                return slot
        return None

    def place(self, call: Call, may_run: bool = True, began: Callable[[], None] | None = None,
              queue: bool = True) -> Ticket | None:
        """Queue `call` behind running ones if its function is fast and sync, else (if `may_run`)
        run it beside calls of its async function in their slot, or send it to an idle slot; None
        if none is allowed now. `began` is called as the handler starts: for a queued call, when
        the calls ahead of it are done.
        """
        sync = self._async.get(call.ref) is False
        owner = owner_of(call)
        if queue and (busy := self._queue_slot(call.ref, owner)) is not None:
            self.queued += 1
            return Ticket(busy, call, busy.send(call, queued=True, began=began, sync=True), began)
        if not may_run:
            return None
        if (shared := self._shared_slot(call.ref)) is not None:
            return Ticket(shared, call, shared.send(call, began=began), began)
        slot = self._take_idle(owner)
        if slot is not None:
            self._lend(slot, call)
        return Ticket(slot, call, slot.send(call, began=began, sync=sync) if slot else None, began)

    def _lend(self, slot: Slot, call: Call) -> None:
        """`slot` takes its first call since it was idle: it is shared if that call's function is async."""
        self._lent.add(slot)
        slot.shared = call.ref if self._async.get(call.ref) else None
        slot.owner = owner_of(call)

    def _take_idle(self, owner: str) -> Slot | None:
        """An idle slot that may run calls for `owner` (the newest first), or None."""
        for i in range(len(self._idle) - 1, -1, -1):
            slot = self._idle[i]
            if not slot.alive:
                del self._idle[i]
                slot.idle = False
                slot.kill()  # died while idle (reaped here)
            elif _fits(slot, owner):
                del self._idle[i]
                slot.idle = False
                return slot
        return None

    def _retire_idle(self) -> None:
        """Before forking a slot no idle one fits: end an idle one, so the pool does not grow past
        what runs at once however many owners there are."""
        if self._idle:
            slot = self._idle.pop(0)  # the longest idle
            slot.idle = False
            slot.kill()

    async def run(self, ref: str, event: bytes, context: dict[str, Any], timeout: float,
                  began: Callable[[], None] | None = None) -> Reply:
        """Run one call now (beside calls of its async function, or on an idle or a new slot),
        never queued; `began` is called as the handler starts."""
        return await self.run_call(Call(ref, event, context, timeout), began)

    async def run_call(self, call: Call, began: Callable[[], None] | None = None) -> Reply:
        """`run` for a Call made already (with its environment and tail)."""
        return await self.run_ticket(self.place(call, began=began, queue=False))

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
                slot.kill("a call queued in it was cancelled")  # what the slot would run is no longer wanted
                raise
        if entry is None:  # no idle slot when it was placed, or its slot died before its turn
            owner = owner_of(call)
            slot = self._shared_slot(call.ref) or self._take_idle(owner)
            if slot is None:
                self._retire_idle()
                slot = await self._new_slot()
            if slot not in self._lent:
                self._lend(slot, call)
            entry = slot.send(call, began=ticket.began, sync=self._async.get(call.ref) is False)
        return await self._await_reply(slot, call, entry)

    async def _new_slot(self) -> Slot:
        slot = await Slot.start(self.loader, self._turn_began)
        slot.generation = self.generation
        return slot

    def retire(self) -> int:
        """The functions' code changed: end the idle slots now and the busy ones as their calls
        return (they run to their end on the old code); calls from now on get new slots. How many
        slots were retired."""
        self.generation += 1
        idle, self._idle = self._idle, []
        for slot in idle:
            slot.idle = False
            slot.kill()
        return len(idle) + len(self._lent)

    async def _await_reply(self, slot: Slot, call: Call, entry: _Pending) -> Reply:
        loop = asyncio.get_running_loop()
        # A bare timer on the reply future: cheaper than asyncio.timeout's cancel machinery. A call
        # that may be async gets a grace: its slot cancels it itself unless its loop is blocked.
        timer = loop.call_at(loop.time() + call.timeout + (0 if entry.sync else ASYNC_KILL_GRACE), _expire, entry.reply)
        try:
            reply = await entry.reply
        except TimeoutError:
            slot.kill(f"a call of {call.ref} in it overran its timeout")
            reply = Reply(False, "timeout", "Sandbox.Timedout", f"Task timed out after {call.timeout:.2f} seconds")
        except SlotDied:
            slot.kill()
            reply = Reply(False, "killed", "Runtime.ExitError",
                          f"the handler's process exited ({slot.describe_exit()}) before returning")
        except BaseException:
            slot.kill("a call in it was cancelled")  # cancelled mid-call: the slot's state is unknown
            raise
        finally:
            timer.cancel()
            self._returned(slot)
        if reply.ok or reply.kind == "exception":  # the slot loaded the handler and ran it
            self._async[call.ref] = reply.is_async
        self._note(call.ref, reply.seconds if reply.ok or reply.kind == "exception" else call.timeout)
        return reply

    def _returned(self, slot: Slot) -> None:
        if slot.outstanding():
            return  # a queued call runs on it next, or calls sharing it still run
        self._lent.discard(slot)
        slot.shared = None
        if slot.generation != self.generation:  # it has the old code loaded
            slot.kill()
            return
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
