"""`bus replay start|status|cancel`: replays through Redis directly (bus.store.replays), as
`bus dlq` does dead letters; the leading broker runs them.

    bus replay start NAME --archive A --from T --to T [--rule R ...] [--rules DIR]
    bus replay status [NAME]        all replays, one line each; or one as JSON
    bus replay cancel NAME

Times are ISO 8601 (a time without an offset is UTC) or epoch seconds. The archive must be a
stored (API) archive, or one declared in the YAML of --rules DIR; the rules named must be on
the archive's bus (API rules, or YAML ones with --rules).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec


def add_commands(sub, redis_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the subcommands to the `bus` parser's subparsers; `redis_option(parser)` adds --redis."""
    replay = sub.add_parser("replay", help="replays of archived events: start, status, cancel")
    replay_sub = replay.add_subparsers(dest="replay_command", required=True)

    start = replay_sub.add_parser("start", help="replay an archive's window of events to its bus's rules")
    start.add_argument("name")
    start.add_argument("--archive", required=True)
    start.add_argument("--from", dest="start", required=True, help="event time to start at (ISO 8601 or epoch s)")
    start.add_argument("--to", dest="end", required=True, help="event time to stop before (ISO 8601 or epoch s)")
    start.add_argument("--rule", action="append", dest="rule_names", metavar="RULE",
                       help="only this rule of the archive's bus (repeat for more; default: every rule)")
    start.add_argument("--description", default="")
    start.add_argument("--rules", metavar="DIR", help="YAML rules directory, for archives and rules declared there")
    status = replay_sub.add_parser("status", help="every replay, or one as JSON")
    status.add_argument("name", nargs="?")
    cancel = replay_sub.add_parser("cancel", help="stop a running replay")
    cancel.add_argument("name")
    for parser in (start, status, cancel):
        redis_option(parser)
        parser.set_defaults(func=cmd_replay)


def parse_time(text: str) -> float:
    """Epoch seconds from epoch seconds or ISO 8601 (no offset: UTC); ValueError otherwise."""
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def cmd_replay(args) -> int:
    from bus.store.connect import connect
    if not args.redis:
        sys.exit("bus: no Redis: pass --redis URL or set BUS_REDIS_URL (or run `bus up` here first)")

    async def run() -> int:
        redis = connect(args.redis)
        try:
            return await _COMMANDS[args.replay_command](redis, args)
        finally:
            await redis.aclose()
    return asyncio.run(run())


def _fail(message: str) -> int:
    print(f"bus replay: {message}", file=sys.stderr)
    return 2


async def _start(redis, args) -> int:
    from bus.store import replays
    try:
        start, end = parse_time(args.start), parse_time(args.end)
    except ValueError as exc:
        return _fail(f"not a time (ISO 8601 or epoch seconds): {exc}")
    if not start < end:
        return _fail("--from must be before --to")
    now = time.time()
    if end > now:
        return _fail("--to is in the future: a replay's window must have ended")
    from bus.config.rulesfile import ConfigError
    try:
        archives, rules, where = await _declared(redis, args.rules)
    except ConfigError as exc:
        return _fail(f"--rules {args.rules} does not load:\n{exc}")
    archive = archives.get(args.archive)
    if archive is None:
        return _fail(f"no archive {args.archive} in {where}")
    for rule in args.rule_names or ():
        if (archive.bus, rule) not in rules:
            return _fail(f"no rule {rule} on bus {archive.bus} in {where}")
    replay = replays.Replay(name=args.name, archive=archive.name, bus=archive.bus, event_start_ms=int(start * 1000),
                            event_end_ms=int(end * 1000), rules=list(dict.fromkeys(args.rule_names)) if args.rule_names else None, description=args.description, replay_start=now)
    try:
        await replays.create(redis, replay)
    except replays.Exists:
        return _fail(f"replay {args.name} already exists")
    except replays.OverCap:
        return _fail(f"{replays.MAX_ACTIVE} replays are already active; wait for one to end or cancel one")
    print(f"replay {args.name} STARTING: archive {archive.name} -> bus {archive.bus}, "
          f"{_iso(start * 1000)} to {_iso(end * 1000)}")
    return 0


async def _declared(redis, rules_dir: str | None) -> tuple[dict, set, str]:
    """The archives and (bus, rule) pairs known: stored ones, and the YAML of rules_dir."""
    from bus.store import apirules, resources
    archives = dict((await resources.load(redis)).archives)
    rules = set(await apirules.load(redis))
    where = "the stored (API) archives and rules"
    if rules_dir:
        from bus.config.rulesfile import load_config
        config = load_config(rules_dir)
        archives.update(config.archives)
        rules |= set(config.rules)
        where += f" or the YAML of {rules_dir}"
    else:
        where += " (pass --rules DIR for ones declared in YAML)"
    return archives, rules, where


async def _status(redis, args) -> int:
    from bus.store import replays
    if args.name:
        stored = await replays.get(redis, args.name)
        if stored is None:
            return _fail(f"no replay {args.name}")
        print(json.dumps(msgspec.to_builtins(stored.replay), indent=2))
        return 0
    found = sorted((s.replay for s in (await replays.load(redis)).values()), key=lambda r: r.name)
    if not found:
        print("no replays")
    for r in found:
        last = _iso(r.event_last_replayed_ms) if r.event_last_replayed_ms is not None else "-"
        reason = f"  ({r.state_reason})" if r.state_reason else ""
        print(f"{r.name}  {r.state}  archive={r.archive}  {_iso(r.event_start_ms)}..{_iso(r.event_end_ms)}  "
              f"replayed={r.replayed}  last={last}{reason}")
    return 0


async def _cancel(redis, args) -> int:
    from bus.store import replays
    try:
        await replays.request_cancel(redis, args.name)
    except replays.NotFound:
        return _fail(f"no replay {args.name}")
    except replays.Finished as exc:
        return _fail(f"replay {args.name} is {exc.args[0]}: nothing to cancel")
    except replays.Changed:
        return _fail(f"replay {args.name} kept changing; try again")
    print(f"replay {args.name} CANCELLING")
    return 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


_COMMANDS = {"start": _start, "status": _status, "cancel": _cancel}
