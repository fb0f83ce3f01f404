"""Group commit (bus.store.groupcommit): who goes in which call, and who hears which outcome.

The store here is a coroutine that records its calls; on a real Redis see tests/test_queue.py.
"""
from __future__ import annotations

import asyncio

import pytest

from bus.store.groupcommit import GroupCommit, Part, combine, take_batch


def part(name: str, size: int = 10) -> Part:
    return Part([f"s:{name}"], [name.encode()], [f"a:{name}", f"b:{name}"], [1, 0, name], size=size)


class Store:
    """Records each call's streams; a call waits for `release` when `hold` is set."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[list[str]] = []
        self.fail = fail
        self.hold = asyncio.Event()
        self.hold.set()
        self.entered = asyncio.Event()

    async def send(self, combined: Part) -> None:
        self.calls.append(combined.streams)
        self.entered.set()
        await self.hold.wait()
        if self.fail & set(combined.streams):
            raise ConnectionError("store down")


def run(coro):
    return asyncio.run(coro)


async def busy(store: Store) -> tuple[GroupCommit, asyncio.Task]:
    """A GroupCommit whose first write, of part "a", is in its call and held there."""
    group = GroupCommit(store.send)
    store.hold.clear()
    first = asyncio.create_task(group.write(part("a")))
    await store.entered.wait()
    return group, first


def test_a_write_that_finds_the_store_idle_goes_at_once_alone():
    async def body():
        store = Store()
        group = GroupCommit(store.send)
        await group.write(part("x"))
        await group.write(part("y"))
        return store.calls
    assert run(body()) == [["s:x"], ["s:y"]]


def test_writes_arriving_during_a_call_share_the_next_one_in_arrival_order():
    async def body():
        store = Store()
        group, first = await busy(store)
        others = [asyncio.create_task(group.write(part(n))) for n in "bcd"]
        await asyncio.sleep(0)
        store.hold.set()
        await asyncio.gather(first, *others)
        return store.calls, group.calls, group.parts
    assert run(body()) == ([["s:a"], ["s:b", "s:c", "s:d"]], 2, 4)


def test_a_write_returns_only_once_the_call_carrying_it_is_done():
    async def body():
        store = Store()
        group, first = await busy(store)
        second = asyncio.create_task(group.write(part("b")))
        await asyncio.sleep(0.01)
        waiting = not first.done() and not second.done()
        store.hold.set()
        await asyncio.gather(first, second)
        return waiting
    assert run(body()) is True


def test_a_failed_call_fails_every_write_it_carried_and_no_other():
    async def body():
        store = Store(fail={"s:c"})
        group, first = await busy(store)
        carried = [asyncio.create_task(group.write(part(n))) for n in "bc"]
        await asyncio.sleep(0)
        store.hold.set()
        results = await asyncio.gather(first, *carried, return_exceptions=True)
        await group.write(part("d"))  # the store is usable again afterwards
        return [type(r).__name__ if r else None for r in results], store.calls[-1]
    outcomes, last = run(body())
    assert outcomes == [None, "ConnectionError", "ConnectionError"]
    assert last == ["s:d"]


def test_a_waiter_that_stops_waiting_does_not_cancel_the_call_carrying_the_others():
    async def body():
        store = Store()
        group, first = await busy(store)
        leaving = asyncio.create_task(group.write(part("b")))
        staying = asyncio.create_task(group.write(part("c")))
        await asyncio.sleep(0)
        leaving.cancel()
        store.hold.set()
        await asyncio.gather(first, staying)
        with pytest.raises(asyncio.CancelledError):
            await leaving
        return store.calls
    assert run(body()) == [["s:a"], ["s:b", "s:c"]], "b's deliveries are written all the same (at least once)"


def test_a_batch_stops_at_the_byte_cap_and_an_oversized_part_goes_alone():
    waiting = [part("a", 400), part("b", 400), part("c", 400), part("d", 5000)]
    assert take_batch(waiting, max_bytes=1000) == 2
    assert take_batch(waiting[2:], max_bytes=1000) == 1
    assert take_batch(waiting[3:], max_bytes=1000) == 1


def test_parts_combine_deliveries_first_then_every_archive_block():
    combined = combine([part("a"), part("b")])
    assert combined.streams == ["s:a", "s:b"]
    assert combined.payloads == [b"a", b"b"]
    assert combined.archive_keys == ["a:a", "b:a", "a:b", "b:b"]
    assert combined.archive_args == [1, 0, "a", 1, 0, "b"]
    assert combined.size == 20


def test_with_two_calls_allowed_in_flight_a_second_write_goes_at_once_and_a_third_waits():
    async def body():
        store = Store()
        group = GroupCommit(store.send, max_in_flight=2)
        store.hold.clear()
        tasks = [asyncio.create_task(group.write(part(n))) for n in "abcd"]
        await asyncio.sleep(0.01)
        started = list(store.calls)
        store.hold.set()
        await asyncio.gather(*tasks)
        return started, store.calls
    started, calls = run(body())
    assert started == [["s:a"], ["s:b"]]
    assert calls[2:] == [["s:c", "s:d"]], "the two that waited share the next call"
