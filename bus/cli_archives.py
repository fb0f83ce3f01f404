"""`bus archive list|show`: archives read from Redis directly (definitions from bus.store.resources,
counts from bus.store.archives), as `bus dlq` reads dead letters; YAML ones with --rules DIR.

    bus archive list [--rules DIR]     one line each: name, bus, events, bytes, retention, pattern
    bus archive show NAME [--rules DIR] one as JSON, like DescribeArchive
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime


def add_commands(sub, redis_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the subcommands to the `bus` parser's subparsers; `redis_option(parser)` adds --redis."""
    archive = sub.add_parser("archive", help="archives of events: list, show")
    archive_sub = archive.add_subparsers(dest="archive_command", required=True)
    listing = archive_sub.add_parser("list", help="one line per archive")
    show = archive_sub.add_parser("show", help="one archive as JSON")
    show.add_argument("name")
    for parser in (listing, show):
        parser.add_argument("--rules", metavar="DIR", default="rules" if _is_dir("rules") else None,
                            help="YAML rules directory, for archives declared there (default: ./rules if it exists)")
        redis_option(parser)
        parser.set_defaults(func=cmd_archive)


def _is_dir(path: str) -> bool:
    import os
    return os.path.isdir(path)


def cmd_archive(args) -> int:
    from bus.config.rulesfile import ConfigError
    from bus.store.connect import connect
    if not args.redis:
        sys.exit("bus: no Redis: pass --redis URL or set BUS_REDIS_URL (or run `bus up` here first)")

    async def run() -> int:
        redis = connect(args.redis)
        try:
            found = await _archives(redis, args.rules)
            if args.archive_command == "show":
                return await _show(redis, found, args.name)
            return await _list(redis, found)
        except ConfigError as exc:
            print(f"bus archive: --rules {args.rules} does not load:\n{exc}", file=sys.stderr)
            return 2
        finally:
            await redis.aclose()
    return asyncio.run(run())


async def _archives(redis, rules_dir: str | None) -> dict:
    from bus.store import resources
    found = dict((await resources.load(redis)).archives)
    if rules_dir:
        from bus.config.rulesfile import load_config
        found.update(load_config(rules_dir).archives)  # YAML wins a clash, as in the broker
    return found


async def _list(redis, found: dict) -> int:
    from bus.store import archives
    counts = await archives.stats(redis, sorted(found))
    if not found:
        print("no archives")
    for name in sorted(found):
        a = found[name]
        events, size = counts[name]
        retention = f"{a.retention_days}d" if a.retention_days else "forever"
        print(f"{name}  bus={a.bus}  events={events}  bytes={size}  retention={retention}  "
              f"pattern={'yes' if a.event_pattern is not None else 'none'}")
    return 0


async def _show(redis, found: dict, name: str) -> int:
    from bus.store import archives
    a = found.get(name)
    if a is None:
        print(f"bus archive: no archive {name}", file=sys.stderr)
        return 1
    events, size = (await archives.stats(redis, [name]))[name]
    out = {"ArchiveName": a.name, "Bus": a.bus, "EventPattern": a.event_pattern, "RetentionDays": a.retention_days,
           "Description": a.description, "EventCount": events, "SizeBytes": size,
           "CreationTime": datetime.fromtimestamp(a.created, UTC).isoformat() if a.created else None}
    print(json.dumps(out, indent=2))
    return 0
