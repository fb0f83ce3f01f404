"""Archive retention: every broker trims, once a minute, each archive's events older than its
RetentionDays (counted from the event's `time`), and drops the events of archives that no longer
exist (a broker that had not yet seen a DeleteArchive may have added some).

A trim is one atomic script call per chunk (bus.store.archives.trim), so brokers may race: the
second finds nothing to remove. An event is kept at most `interval` past its retention.

Only the events of an archive this broker has known (declared in its YAML, or stored through the
API, at some pass) are dropped when it is gone. An archive it never knew may be another broker's
YAML archive, declared in rules newer than this broker's (a rolling deploy): its events are not
ours to judge, and dropping them would lose events that were answered with an EventId.
"""
from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from bus.config.model import Archive
from bus.store import archives, resources

log = logging.getLogger("bus.retention")
DAY_MS = 86_400_000


def cutoff_ms(archive: Archive, now: float) -> int | None:
    """Events scored below this are past the archive's retention; None: kept forever."""
    if archive.retention_days <= 0:
        return None
    return int(now * 1000) - archive.retention_days * DAY_MS


def gone(stored: set[str], declared: set[str], known: set[str]) -> set[str]:
    """The archives whose stored events should be dropped: not declared now, but known before."""
    return (stored - declared) & known


async def trim_once(broker, now: float | None = None, known: set[str] | None = None) -> int:
    """One pass over every archive; the number of events removed. `known` (updated here) is every
    archive name this broker has seen declared, kept across passes by the caller."""
    now = time.time() if now is None else now
    known = set() if known is None else known
    removed = 0
    for archive in list(broker.declared.archives.values()):
        cutoff = cutoff_ms(archive, now)
        if cutoff is not None:
            removed += await archives.trim(broker.redis, archive.name, cutoff)
    # Fresh from Redis, not this broker's view: an archive made a moment ago on another broker
    # already has events before this broker's poll shows it.
    declared = set(broker.yaml_config.archives) | set((await resources.load(broker.redis)).archives)
    known |= declared | set(broker.declared.archives)
    for name in gone(await archives.stored_names(broker.redis), declared, known):
        log.info("dropping the events of archive %s, which no longer exists", name)
        await archives.drop(broker.redis, name)
    return removed


async def trim_archives(broker, interval: float = 60.0) -> None:
    """Run in every broker until cancelled; every error is logged, never fatal."""
    known: set[str] = set()
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await trim_once(broker, known=known)
            if removed:
                log.info("retention removed %d archived events", removed)
        except RedisError as exc:
            log.warning("archive retention pass failed: %s", exc)
        except Exception:  # a chore that dies silently would let archives grow for ever
            log.exception("archive retention pass failed")
