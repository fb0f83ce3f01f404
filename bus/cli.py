"""The `bus` command: up, serve, worker, validate, test-pattern."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

DEFAULT_DATA_DIR = ".busway"
DEFAULT_WORKER_METRICS_PORT = 9101


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_format, args.log_level)
    try:
        return args.func(args) or 0
    except BrokenPipeError:  # `bus dlq list | head`: the reader left, which is fine
        sys.stderr.close()
        return 0


def _durability_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--durability", choices=["acked", "replicated"], default=os.environ.get("BUS_DURABILITY", "acked"),
                   help="when PutEvents answers: acked (default) once Redis acknowledged the write; "
                        "replicated once a replica has it too (WAIT 1; env BUS_DURABILITY)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bus", description="busway: an EventBridge-like event bus on Redis.")
    p.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("BUS_LOG_FORMAT", "text"))
    p.add_argument("--log-level", default=os.environ.get("BUS_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="private Redis + broker + worker, with ./rules and ./workers")
    up.add_argument("--rules", default="rules")
    up.add_argument("--functions", default="workers")
    up.add_argument("--reload", action="store_true",
                    help="restart the worker's handler processes when a file in --functions changes")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    up.add_argument("--fsync", choices=["always", "everysec"], default="always",
                    help="Redis appendfsync for the private Redis (default: always)")
    _redis_option(up, default=None)
    _durability_option(up)
    _auth_options(up)
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="the broker alone")
    serve.add_argument("--rules", default="rules")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1")
    _redis_option(serve)
    _durability_option(serve)
    _auth_options(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="a worker alone")
    worker.add_argument("--functions", default="workers")
    worker.add_argument("--reload", action="store_true",
                        help="restart the handler processes when a file in --functions changes (development)")
    worker.add_argument("--concurrency", type=int, default=10)
    worker.add_argument("--prefetch", type=int, default=None,
                        help="deliveries read ahead of free slots so the next handler starts at once "
                             "(default: = --concurrency; 0: read only for free slots)")
    worker.add_argument("--lease-seconds", type=float, default=3.0,
                        help="a delivery whose worker is silent this long is redelivered (default 3)")
    worker.add_argument("--grace-seconds", type=float, default=30.0,
                        help="on SIGTERM, how long in-flight handlers may finish (default 30)")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help=f"port for the worker's /metrics (0: none; env BUS_WORKER_METRICS_PORT; default "
                             f"{DEFAULT_WORKER_METRICS_PORT}, or a free port, logged, while that one is taken)")
    worker.add_argument("--metrics-host", default=os.environ.get("BUS_WORKER_METRICS_HOST", "127.0.0.1"),
                        help="address for the worker's /metrics (env BUS_WORKER_METRICS_HOST; 0.0.0.0 in containers)")
    _redis_option(worker)
    worker.set_defaults(func=cmd_worker)

    validate = sub.add_parser("validate", help="check rules YAML; print file:line: key: error")
    validate.add_argument("path", nargs="?", default="rules")
    validate.set_defaults(func=cmd_validate)

    dlq = sub.add_parser("dlq", help="dead letters: list, show, redrive, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, help_ in [("list", "one line per dead letter"), ("show", "one dead letter as JSON"),
                        ("redrive", "back to the target's queue, attempts reset"), ("purge", "delete")]:
        c = dlq_sub.add_parser(name, help=help_)
        if name == "show":
            c.add_argument("id")
        else:
            c.add_argument("--target", help="bus/rule/target-id")
        if name in ("redrive", "purge"):
            c.add_argument("--ids", nargs="+", help="dead-letter ids (from `bus dlq list`)")
        _redis_option(c)
        c.set_defaults(func=cmd_dlq)

    from bus import cli_archives, cli_replays
    cli_archives.add_commands(sub, _redis_option)
    cli_replays.add_commands(sub, _redis_option)

    tail = sub.add_parser("tail", help="events as they arrive and what happened to each")
    tail.add_argument("--bus", help="only this bus")
    tail.add_argument("--pattern", help="only events matching this event pattern (JSON)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events (else: recent ones, then exit)")
    tail.add_argument("--json", action="store_true", help="one JSON record per line")
    _redis_option(tail)
    tail.set_defaults(func=cmd_tail)

    tp = sub.add_parser("test-pattern", help="does EVENT_FILE match PATTERN_FILE? exit 0 yes, 1 no, 2 invalid")
    tp.add_argument("pattern_file")
    tp.add_argument("event_file")
    tp.set_defaults(func=cmd_test_pattern)
    return p


def _redis_option(p: argparse.ArgumentParser, default: str | None | bool = True) -> None:
    p.add_argument("--redis", default=resolve_redis_url() if default else os.environ.get("BUS_REDIS_URL"),
                   help="Redis URL (env BUS_REDIS_URL; default: the running `bus up`'s private Redis)")


def _auth_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--credentials", default=os.environ.get("BUS_CREDENTIALS") or None, metavar="FILE",
                   help="principals YAML: SigV4 keys, bearer tokens, buses, admin (env BUS_CREDENTIALS; "
                        "without it the broker serves loopback only)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="listen beyond loopback with no authentication at all")


def _auth_refusal(args) -> str | None:
    """One line saying why not to start (a non-loopback --host without credentials), else None."""
    from bus.auth.bind import bind_refusal
    return bind_refusal(args.host, args.credentials, args.insecure_no_auth)


def resolve_redis_url() -> str | None:
    if os.environ.get("BUS_REDIS_URL"):
        return os.environ["BUS_REDIS_URL"]
    url_file = Path(DEFAULT_DATA_DIR) / "redis.url"
    if url_file.exists():
        return url_file.read_text().strip()
    return None


def _need_redis(args) -> str:
    if not args.redis:
        sys.exit("bus: no Redis: pass --redis URL or set BUS_REDIS_URL (or run `bus up` here first)")
    return args.redis


def cmd_up(args) -> int:
    from bus.auth.credentials import load_credentials
    from bus.config.rulesfile import ConfigError
    from bus.local.up import up
    if refusal := _auth_refusal(args):
        print(refusal, file=sys.stderr)
        return 2
    if args.credentials:
        try:  # here, so a bad file is one clear message before anything starts
            load_credentials(args.credentials)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    if args.durability == "replicated" and not args.redis:
        print("bus: --durability replicated needs --redis: the private Redis of bus up has no replica, "
              "so no event could ever be confirmed", file=sys.stderr)
        return 2
    os.environ["BUS_DURABILITY"] = args.durability  # the broker bus up starts inherits it
    return up(args.rules, args.functions, args.port, args.data_dir, args.redis,
              host=args.host, fsync=args.fsync, log_format=args.log_format,
              credentials=args.credentials, insecure_no_auth=args.insecure_no_auth, reload=args.reload)


def cmd_serve(args) -> int:
    from bus.broker.app import serve
    from bus.config.rulesfile import ConfigError
    if refusal := _auth_refusal(args):
        print(refusal, file=sys.stderr)
        return 2
    url = _need_redis(args)
    try:
        return _run_until_signal(lambda stop: _serve_until(stop, serve(url, args.rules, args.host, args.port,
                                                                       credentials_path=args.credentials,
                                                                       durability=args.durability)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


async def _serve_until(stop: asyncio.Event, server) -> None:
    task = asyncio.create_task(server)
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    waiter.cancel()
    if task in done:
        task.result()  # a startup error (bad rules, port in use) ends the process with it
    try:
        await task
    except asyncio.CancelledError:
        pass


def cmd_worker(args) -> int:
    import errno

    from bus.worker.loop import WorkerSettings
    from bus.worker.process import run_worker
    url = _need_redis(args)
    port = _worker_metrics_port(args.metrics_port, args.metrics_host)
    if port is None:
        return 1
    settings = WorkerSettings(concurrency=args.concurrency, prefetch=args.prefetch,
                              lease_seconds=args.lease_seconds, grace_seconds=args.grace_seconds,
                              reload=args.reload)
    try:
        return _run_until_signal(lambda stop: run_worker(url, args.functions, settings, port or None, stop,
                                                         host=args.metrics_host))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # Taken between our check and the worker's bind: the same one line, not a traceback.
        print(_metrics_port_taken(port, args.metrics_host), file=sys.stderr)
        return 1


def _worker_metrics_port(flag: int | None, host: str) -> int | None:
    """The port for the worker's /metrics (0: none), or None after one line on stderr.

    A port asked for (flag or BUS_WORKER_METRICS_PORT) must be free: a scrape config points at
    it. The default moves to a free port while 9101 is taken, so several `bus worker` with
    default options run on one host (each logs its port)."""
    from bus.local.ports import free_port, port_free
    asked: int | str | None = flag if flag is not None else os.environ.get("BUS_WORKER_METRICS_PORT")
    if asked is not None:
        if not str(asked).isdigit():
            print(f"bus: worker metrics port is not a port number: {asked!r}", file=sys.stderr)
            return None
        if int(asked) and not port_free(host, int(asked)):
            print(_metrics_port_taken(int(asked), host), file=sys.stderr)
            return None
        return int(asked)
    if port_free(host, DEFAULT_WORKER_METRICS_PORT):
        return DEFAULT_WORKER_METRICS_PORT
    port = free_port(host)
    logging.getLogger("bus.worker").warning("metrics port %d is taken (another worker?); using port %d instead",
                                            DEFAULT_WORKER_METRICS_PORT, port)
    return port


def _metrics_port_taken(port: int, host: str) -> str:
    return f"bus: worker metrics port {port} on {host} is taken: pass another --metrics-port N (0: none)"


def _run_until_signal(make) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        heap.tune()
        loop.call_later(heap.SETTLE_SECONDS, heap.settle)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await make(stop)

    from bus import heap
    from bus.eventloop import EventLoopError, run
    try:
        run(main())
    except EventLoopError as exc:
        print(f"bus: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_dlq(args) -> int:
    from bus.store import deadletters
    from bus.store.connect import connect
    url = _need_redis(args)

    async def run() -> int:
        redis = connect(url)
        try:
            if args.dlq_command == "show":
                found = await deadletters.find_letters(redis, args.id)
                if not found:
                    print(f"bus: no dead letter {args.id}", file=sys.stderr)
                    return 1
                print(json.dumps(found[0].as_dict(), indent=2))
                return 0
            letters = await deadletters.list_letters(redis, target=args.target, ids=getattr(args, "ids", None))
            if args.dlq_command == "list":
                for item in letters:
                    _print_letter(item)
                return 0
            action = deadletters.redrive if args.dlq_command == "redrive" else deadletters.purge
            print(f"{args.dlq_command}: {await action(redis, letters)} dead letters")
            return 0
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _print_letter(item) -> None:
    from datetime import datetime, timezone
    letter = item.letter
    event_id = json.loads(bytes(letter.event)).get("id")
    failed = datetime.fromtimestamp(letter.failed_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{item.id}  {letter.target_key}  event={event_id}  {letter.exhausted_retry_condition}  "
          f"{letter.error_code}  retries={letter.retry_attempts}  failed={failed}  dlq={item.dlq}")


def cmd_tail(args) -> int:
    from bus.observe.tail import tail
    from bus.patterns import PatternError
    url = _need_redis(args)
    try:
        return _run_until_signal(lambda stop: tail(url, args.bus, args.pattern, args.follow, args.json, stop=stop))
    except PatternError as exc:
        print(f"bus: invalid --pattern: {exc}", file=sys.stderr)
        return 2


def cmd_validate(args) -> int:
    from bus.config.rulesfile import ConfigError, load_config
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.path}: ok ({len(config.rules)} rules on {len(config.buses)} buses)")
    return 0


def cmd_test_pattern(args) -> int:
    from bus.broker.envelope import RequestError
    from bus.broker.testpattern import event_matches_pattern
    try:
        matched = event_matches_pattern(Path(args.pattern_file).read_text(), Path(args.event_file).read_text())
    except RequestError as err:
        print(f"{err.type}: {err.message}", file=sys.stderr)
        return 2
    print(json.dumps({"Result": matched}))
    return 0 if matched else 1


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
