"""Connection hygiene through a real `bus serve` (bus.broker.limits): slow headers and slow
bodies are cut off, idle keep-alive connections are closed, connections beyond the cap are
refused at once, and an oversize body is refused on every route, never with a 5xx.

The timeouts are set low through the broker's environment (BUS_HEADER_TIMEOUT and friends),
so each test waits a few seconds at most; raw sockets play the misbehaving clients."""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from bus.broker.limits import Limits
from tests.conftest import wait_for

RULES = """
rules:
  - name: orders
    event_pattern: {source: [shop.orders]}
    targets:
      - {id: rec, function: probe.record}
"""
MAX_BODY = Limits().max_body
EVENT = json.dumps({"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {}}).encode()


def _broker(stack, **env: str):
    stack.env.update(env)
    stack.write_rules(RULES)
    return stack.start_broker()


def _healthz_status(url: str, timeout: float = 2.0) -> int | str:
    """The status of GET /healthz, or the name of the error that stopped it."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError as err:
        return type(err).__name__


def _connect(stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", stack.port), timeout=5)


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """What the server sent, and when (monotonic) it closed the connection; None if still open."""
    sock.settimeout(0.05)
    received, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return received, time.monotonic()
        if not chunk:
            return received, time.monotonic()
        received += chunk
    return received, None


def test_slowloris_headers_are_cut_off_after_header_timeout_while_a_normal_client_is_served(stack):
    _broker(stack, BUS_HEADER_TIMEOUT="2")
    request = b"POST /events HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    sock = _connect(stack)
    opened = time.monotonic()
    served, received, closed_at = [], b"", None
    for byte in request[:8]:  # one byte a second: 8 s if nothing cuts it off
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed_at = time.monotonic()
            break
        served.append(_healthz_status(stack.url))  # the broker keeps serving others meanwhile
        more, closed_at = _read_until_closed(sock, 1.0)
        received += more
        if closed_at:
            break
    sock.close()
    assert closed_at is not None, "slowloris connection was never closed"
    assert 1.5 <= closed_at - opened <= 4.0
    assert received.startswith(b"HTTP/1.1 408")  # it had begun a request: it is told why
    assert served and all(status == 200 for status in served), served


def test_connection_that_sends_nothing_is_closed_silently_after_header_timeout(stack):
    _broker(stack, BUS_HEADER_TIMEOUT="1")
    sock = _connect(stack)
    opened = time.monotonic()
    received, closed_at = _read_until_closed(sock, 4.0)
    sock.close()
    assert closed_at is not None and 0.8 <= closed_at - opened <= 2.5
    assert received == b""  # no unasked-for 408 a client could take for its next answer


def test_slow_headers_on_a_kept_alive_connection_are_cut_off_after_header_timeout(stack):
    _broker(stack, BUS_HEADER_TIMEOUT="1", BUS_KEEPALIVE_TIMEOUT="30")
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() and conn.sock is not None
    conn.sock.sendall(b"GET /hea")  # the next request starts, and stalls
    started = time.monotonic()
    received, closed_at = _read_until_closed(conn.sock, 4.0)
    conn.close()
    assert closed_at is not None and closed_at - started <= 2.5
    assert received.startswith(b"HTTP/1.1 408")


def test_idle_keep_alive_connection_is_closed_after_idle_timeout_not_header_timeout(stack):
    _broker(stack, BUS_HEADER_TIMEOUT="0.5", BUS_KEEPALIVE_TIMEOUT="2")
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() and conn.sock is not None
    answered = time.monotonic()
    received, closed_at = _read_until_closed(conn.sock, 5.0)
    conn.close()
    assert received == b""
    assert closed_at is not None and 1.5 <= closed_at - answered <= 3.5


def test_slow_body_is_answered_408_after_body_timeout(stack):
    _broker(stack, BUS_BODY_TIMEOUT="2")
    sock = _connect(stack)
    sock.sendall(b"POST /events HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n[")
    started = time.monotonic()
    received, answered = b"", None
    for _ in range(10):  # a byte every half second: 5 s if nothing cuts it off
        sock.sendall(b" ")
        received += _read_until_closed(sock, 0.5)[0]
        if b"\r\n\r\n" in received:
            answered = time.monotonic()
            break
    sock.close()
    assert answered is not None, "slow body was never answered"
    assert 1.5 <= answered - started <= 3.5
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
    assert b"RequestTimeoutException" in body


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # uvloop's transports are no asyncio.WriteTransport
def test_connections_beyond_the_cap_are_refused_at_once_and_a_normal_client_is_served_once_they_close(stack, loop):
    cap = 10
    _broker(stack, BUS_MAX_CONNECTIONS=str(cap), BUS_HEADER_TIMEOUT="30", BUS_EVENT_LOOP=loop)
    held = [_connect(stack) for _ in range(cap)]
    extra = [_connect(stack) for _ in range(3)]
    try:
        for sock in extra:
            received, closed_at = _read_until_closed(sock, 2.0)
            assert closed_at is not None, "a connection beyond the cap was kept open"
            assert received.startswith(b"HTTP/1.1 503") and b"ThrottlingException" in received
        for sock in held:  # the first `cap` are still open
            assert _read_until_closed(sock, 0.05) == (b"", None)
        started = time.monotonic()
        assert _healthz_status(stack.url) != 200  # full: refused, not queued
        assert time.monotonic() - started < 2.0
    finally:
        for sock in held + extra:
            sock.close()
    assert wait_for(lambda: _healthz_status(stack.url) == 200, timeout=3, what="healthz once the flood closed")


ROUTES = [
    ("POST", "/"), ("POST", "/events"), ("POST", "/test-event-pattern"),
    ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/dlq"), ("GET", "/dlq/some-id"),
    ("POST", "/dlq/redrive"), ("POST", "/dlq/purge"), ("POST", "/no-such-route"),
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_body_is_refused_on_every_route_without_a_5xx(stack, chunked):
    _broker(stack)
    oversize = b"x" * (MAX_BODY + 1)
    for method, path in ROUTES:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        headers = {"X-Amz-Target": "AWSEvents.PutEvents", "Content-Type": "application/x-amz-json-1.1"}
        if chunked:  # no Content-Length to refuse it by: the limit applies while reading
            conn.request(method, path, body=iter([oversize[:MAX_BODY // 2], oversize[MAX_BODY // 2:]]),
                         headers=headers, encode_chunked=True)
        else:
            conn.request(method, path, body=oversize, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        assert resp.status in (400, 413), (method, path, resp.status)
        body = json.loads(raw)
        if path in ("/", "/events", "/test-event-pattern"):  # what AWS and botocore's callers expect
            assert (resp.status, body["__type"]) == (400, "ValidationException"), (method, path, body)
            assert "over the limit" in body["message"]
        else:
            assert (resp.status, body["__type"]) == (413, "RequestEntityTooLargeException"), (method, path, body)
    assert _healthz_status(stack.url) == 200


def test_body_at_the_limit_still_reaches_the_route(stack):
    _broker(stack)
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    conn.request("POST", "/events", body=EVENT + b" " * (MAX_BODY - len(EVENT)),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 200 and body["FailedEntryCount"] == 0


def test_limits_come_from_the_environment():
    limits = Limits.from_env({"BUS_HEADER_TIMEOUT": "3", "BUS_BODY_TIMEOUT": "4.5",
                              "BUS_KEEPALIVE_TIMEOUT": "6", "BUS_MAX_CONNECTIONS": "50"})
    assert (limits.header_timeout, limits.body_timeout, limits.idle_timeout, limits.max_connections) == (3, 4.5, 6, 50)
    assert Limits.from_env({}) == Limits()
    with pytest.raises(ValueError, match="BUS_MAX_CONNECTIONS"):
        Limits.from_env({"BUS_MAX_CONNECTIONS": "0"})
