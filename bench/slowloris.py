"""Slowloris against a broker, measured: does a normal client stay served while --clients
connections trickle their headers one byte every --interval seconds?

    ./dev bench bench/slowloris.py [--clients 200] [--seconds 15] [--header-timeout 5] [--max-connections 1000]

Starts a private redis-server and one `bus serve` (BUS_HEADER_TIMEOUT and BUS_MAX_CONNECTIONS
as given), opens the slow connections, and meanwhile times GET /healthz from a normal client
every 50 ms. Prints the normal client's p50/p99/max and failures, how many slow connections
the broker closed, and after how long (expect about --header-timeout). Loopback only; every
process it starts is stopped at the end.
"""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from bus.local.redisproc import RedisProcess, free_port

REQUEST = b"POST /events HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 4000


def healthz_ms(url: str) -> float | None:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            resp.read()
            return (time.perf_counter() - started) * 1000 if resp.status == 200 else None
    except OSError:
        return None


def wait_healthy(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthz_ms(url) is not None:
            return
        time.sleep(0.1)
    raise SystemExit("broker did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between a slow client's bytes")
    ap.add_argument("--header-timeout", type=float, default=5)
    ap.add_argument("--max-connections", type=int, default=1000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="busway-slowloris-") as tmp:
        redis = RedisProcess(tmp, fsync="no").start()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, BUS_HEADER_TIMEOUT=str(args.header_timeout),
                   BUS_MAX_CONNECTIONS=str(args.max_connections))
        os.makedirs(f"{tmp}/rules")
        with open(f"{tmp}/broker.log", "w") as log:
            broker = subprocess.Popen([sys.executable, "-m", "bus", "serve", "--rules", f"{tmp}/rules",
                                       "--port", str(port), "--redis", redis.url],
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url)
            run(url, port, args)
        finally:
            broker.terminate()
            broker.wait(10)
            redis.stop()


def run(url: str, port: int, args: argparse.Namespace) -> None:
    sel = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    sent: dict[socket.socket, int] = {}
    for _ in range(args.clients):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        opened[sock], sent[sock] = time.monotonic(), 0
    closed_after: list[float] = []
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + args.seconds
    next_byte = time.monotonic()
    while time.monotonic() < end:
        if time.monotonic() >= next_byte:
            for sock in list(opened):
                try:
                    sock.send(REQUEST[sent[sock] % len(REQUEST):][:1])
                    sent[sock] += 1
                except OSError:
                    pass  # the broker closed it: the selector reports it
            next_byte += args.interval
        for key, _ in sel.select(timeout=0):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data or b"\r\n\r\n" in data:
                closed_after.append(time.monotonic() - opened.pop(sock))
                sel.unregister(sock)
                sock.close()
        ms = healthz_ms(url)
        if ms is None:
            failures += 1
        else:
            latencies.append(ms)
        time.sleep(0.05)
    for sock in opened:
        sock.close()

    print(f"slow clients: {args.clients}, one byte every {args.interval:g} s; header timeout {args.header_timeout:g} s")
    if closed_after:
        print(f"  closed by the broker: {len(closed_after)}, after {min(closed_after):.2f}..{max(closed_after):.2f} s")
    print(f"  still open after {args.seconds:g} s: {len(opened)}")
    if latencies:
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"normal client GET /healthz: {len(latencies)} ok, {failures} failed; "
              f"p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")
    else:
        print(f"normal client GET /healthz: none served, {failures} failed")


if __name__ == "__main__":
    main()
