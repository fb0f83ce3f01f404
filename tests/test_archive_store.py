"""Archive storage against a real Redis: retention trimming keeps the byte count exact, works in
bounded chunks, and drops the events of archives that no longer exist."""
from __future__ import annotations

import time

from bus.broker.live import Broker
from bus.broker.retention import DAY_MS, cutoff_ms, gone, trim_once
from bus.config.model import Archive, empty_config
from bus.store import archives, resources
from bus.store.keys import archive_bytes_key, archive_events_key
from bus.store.queue import Archived, Queue
from tests.conftest import with_client


def _fill(redis_url: str, name: str, scores: list[int]) -> None:
    with_client(redis_url, lambda redis: Queue(redis).enqueue(
        [], [Archived(name, s, b'{"n":%d,"pad":"%s"}' % (s, b"x" * (s % 7))) for s in scores]))


def _sizes(r, name: str) -> int:
    return sum(len(m) for m in r.zrange(archive_events_key(name), 0, -1))


def test_enqueue_counts_the_bytes_of_new_members_only(redis_url, r):
    _fill(redis_url, "a", [1, 2, 3])
    _fill(redis_url, "a", [3, 4])  # 3 again: the same member
    assert r.zcard(archive_events_key("a")) == 4
    assert int(r.get(archive_bytes_key("a"))) == _sizes(r, "a")


def test_trim_removes_only_events_older_than_the_cutoff_and_keeps_the_byte_count_exact(redis_url, r):
    _fill(redis_url, "a", list(range(100)))
    removed = with_client(redis_url, lambda redis: archives.trim(redis, "a", 40, chunk=7))
    assert removed == 40
    assert [s for _, s in r.zrange(archive_events_key("a"), 0, 0, withscores=True)] == [40.0]
    assert int(r.get(archive_bytes_key("a"))) == _sizes(r, "a")


def test_trimming_everything_leaves_no_keys(redis_url, r):
    _fill(redis_url, "a", [1, 2])
    with_client(redis_url, lambda redis: archives.trim(redis, "a", 10))
    assert not r.exists(archive_events_key("a"), archive_bytes_key("a"))


def test_stats_answers_count_and_bytes_of_each_archive(redis_url, r):
    _fill(redis_url, "a", [1, 2])
    got = with_client(redis_url, lambda redis: archives.stats(redis, ["a", "none"]))
    assert got == {"a": (2, _sizes(r, "a")), "none": (0, 0)}


def test_retention_counts_days_from_the_event_time():
    assert cutoff_ms(Archive(name="a", retention_days=0), 1000.0) is None
    assert cutoff_ms(Archive(name="a", retention_days=2), 1000.0) == 1_000_000 - 2 * DAY_MS


def test_a_retention_pass_trims_each_archive_by_its_retention_and_drops_deleted_ones(redis_url, r):
    now_ms = int(time.time() * 1000)
    old, recent = now_ms - 3 * DAY_MS, now_ms - 1000
    for name in ("week", "day", "forever", "deleted"):
        _fill(redis_url, name, [old, recent])

    async def run(redis):
        for a in (Archive(name="week", retention_days=7), Archive(name="day", retention_days=1), Archive(name="forever")):
            await resources.create(redis, a)
        broker = Broker(redis, None, empty_config())
        await broker.start()
        return await trim_once(broker, known={"deleted"})  # a pass before saw it declared

    assert with_client(redis_url, run) == 1
    assert r.zcard(archive_events_key("week")) == 2
    assert [s for _, s in r.zrange(archive_events_key("day"), 0, -1, withscores=True)] == [float(recent)]
    assert r.zcard(archive_events_key("forever")) == 2
    assert not r.exists(archive_events_key("deleted"))


def test_a_retention_pass_keeps_the_events_of_an_archive_this_broker_never_knew(redis_url, r):
    _fill(redis_url, "newer-yaml", [1, 2])  # another broker's YAML archive, in rules newer than ours

    async def run(redis):
        broker = Broker(redis, None, empty_config())
        await broker.start()
        return await trim_once(broker, known=set())

    with_client(redis_url, run)
    assert r.zcard(archive_events_key("newer-yaml")) == 2


def test_an_archive_known_before_and_declared_no_more_is_gone():
    assert gone(stored={"a", "b", "c"}, declared={"a"}, known={"a", "b"}) == {"b"}


def test_a_page_reads_a_window_from_an_offset(redis_url):
    with_client(redis_url, lambda redis: Queue(redis).enqueue(
        [], [Archived("a", s, b"%d-%d" % (s, i)) for i, s in enumerate([5, 5, 5, 6, 9])]))
    got = with_client(redis_url, lambda redis: archives.page(redis, "a", 5, 9, 1, 10))
    assert [s for _, s in got] == [5.0, 5.0, 6.0]
