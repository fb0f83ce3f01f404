"""What an archive costs at ingest, and what an archived event costs in Redis memory (issue 14).

    .venv/bin/python bench/archive.py            # about a minute
    .venv/bin/python bench/archive.py --quick

In one process, against one private redis-server (AOF, appendfsync --fsync, default `everysec`, so
Redis's disk is not what is measured), the broker's Ingestor (PutEvents minus HTTP) stores batches
of 10 events, each matching one rule with one target, from --clients concurrent tasks, in three
set-ups run in interleaved rounds (best kept: neighbours only ever slow a phase down):
  - baseline: no archive on the bus;
  - archive-all: one archive with no pattern (every event is kept);
  - archive-pattern: one archive whose pattern matches half the events.
It prints events/s for each and the ratio to the baseline, then the Redis memory per archived event
(used_memory before and after archiving --memory-events events of about --detail-bytes each,
divided by their count) beside the event's JSON length.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bus.broker.envelope import Entry  # noqa: E402
from bus.broker.live import Broker  # noqa: E402
from bus.config.model import Archive, Bus, Config, FunctionTarget, Rule  # noqa: E402
from bus.identity import from_env  # noqa: E402
from bus.local.redisproc import RedisProcess  # noqa: E402
from bus.store.keys import archive_events_key  # noqa: E402

SETUPS = {
    "baseline": {},
    "archive-all": {"all": Archive(name="all")},
    "archive-pattern": {"half": Archive(name="half", event_pattern={"detail": {"n": [{"numeric": ["<", 5]}]}})},
}


def config(archives: dict[str, Archive]) -> Config:
    rule = Rule(name="bench", event_pattern={"source": ["bench"]},
                targets=[FunctionTarget(id="noop", function="noop.handler")])
    return Config(buses={"default": Bus("default")}, rules={("default", "bench"): rule}, functions={},
                  archives=archives)


def batch(i: int, detail_bytes: int) -> list[Entry]:
    pad = "x" * max(0, detail_bytes - 40)
    return [Entry(source="bench", detail_type="tick", detail=json.dumps({"n": k, "i": i, "pad": pad}))
            for k in range(10)]


async def phase(redis: aioredis.Redis, archives: dict[str, Archive], requests: int, clients: int,
                detail_bytes: int) -> float:
    await redis.flushdb()
    broker = Broker(redis, None, config(archives))
    await broker.start()
    origin = from_env()
    todo = iter(range(requests))

    async def client() -> None:
        for i in todo:
            results = await broker.ingestor.put_events(batch(i, detail_bytes), origin)
            assert all("EventId" in r for r in results), results

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return requests * 10 / (time.perf_counter() - started)


async def memory_per_event(redis: aioredis.Redis, events: int, detail_bytes: int) -> tuple[float, int]:
    await redis.flushdb()
    broker = Broker(redis, None, config({"all": Archive(name="all")}))
    await broker.start()
    broker.router.remove_rule("default", "bench")  # archive only: no delivery streams in the figure
    origin = from_env()
    await broker.ingestor.put_events(batch(0, detail_bytes), origin)  # the keys exist before the first reading
    before = (await redis.info("memory"))["used_memory"]
    for i in range(1, events // 10):
        await broker.ingestor.put_events(batch(i, detail_bytes), origin)
    after = (await redis.info("memory"))["used_memory"]
    count = await redis.zcard(archive_events_key("all"))
    member = (await redis.zrange(archive_events_key("all"), 0, 0))[0]
    return (after - before) / (count - 10), len(member)


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(Path(tmp), fsync=args.fsync).start()
        redis = aioredis.from_url(server.url)
        try:
            print(f"# bench/archive.py  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
                  f"{platform.processor() or platform.machine()}  python {platform.python_version()}  "
                  f"fsync={args.fsync}  requests={args.requests}x10  clients={args.clients}")
            best: dict[str, float] = {}
            for round_ in range(args.rounds):
                for name, archives in SETUPS.items():
                    rate = await phase(redis, archives, args.requests, args.clients, args.detail_bytes)
                    best[name] = max(best.get(name, 0.0), rate)
                    print(f"  round {round_ + 1}  {name:16} {rate:10,.0f} events/s")
            print("best of rounds:")
            for name, rate in best.items():
                print(f"  {name:16} {rate:10,.0f} events/s  {rate / best['baseline']:.2f}x baseline")
            per_event, length = await memory_per_event(redis, args.memory_events, args.detail_bytes)
            print(f"memory: {per_event:,.0f} bytes of Redis used_memory per archived event "
                  f"(event JSON {length} bytes; {args.memory_events:,} events)")
        finally:
            await redis.aclose()
            server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--requests", type=int, default=None, help="PutEvents requests of 10 per phase (2000; quick 300)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; quick 1)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--detail-bytes", type=int, default=100, help="about this many bytes of detail per event")
    p.add_argument("--memory-events", type=int, default=None, help="events archived for the memory figure (20000; quick 2000)")
    p.add_argument("--fsync", choices=["always", "everysec", "no"], default="everysec")
    a = p.parse_args()
    a.requests = a.requests or (300 if a.quick else 2000)
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.memory_events = a.memory_events or (2000 if a.quick else 20000)
    asyncio.run(main(a))
