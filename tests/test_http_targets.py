"""`http` targets end to end: PutEvents into `bus serve`, `bus worker` sends each event to an API
destination declared in YAML, and an aiohttp receiver the test runs on loopback (in a thread of
this process) checks what arrives: authorization of each kind, retries of what AWS retries,
straight to the DLQ otherwise, the rate limit across two workers, and no secret in any log."""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from typing import Any, Callable

import pytest
from aiohttp import web

from bus.local.redisproc import free_port
from tests.conftest import wait_for
from tests.httpc import get_text, metric, post

API_KEY = "key-7c1d-never-logged"
PASSWORD = "pw-42e8-never-logged"
CLIENT_SECRET = "cs-9b03-never-logged"
SECRETS_ENV = {"CRM_KEY": API_KEY, "CRM_PASSWORD": PASSWORD, "CRM_CLIENT_SECRET": CLIENT_SECRET}
FAST_RETRY = "{maximum_retry_attempts: 5, backoff_base_seconds: 0.05, backoff_max_seconds: 0.2}"


class Receiver:
    """An aiohttp server on loopback, in a thread: records requests, answers with `answer(n)`
    ((status, body) for the n-th request, 1-based; (200, "ok") by default)."""

    def __init__(self, answer: Callable[[int, web.Request], tuple[int, Any]] | None = None):
        self.answer = answer or (lambda n, request: (200, "ok"))
        self.seen: list[dict[str, Any]] = []
        self.port = free_port()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Receiver":
        self._thread.start()
        assert self._ready.wait(5), "receiver did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({"path": request.raw_path.split("?")[0], "headers": request.headers.copy(),
                          "body": body, "at": time.time()})
        status, answer = self.answer(len(self.seen), request)
        if isinstance(answer, (dict, list)):
            return web.json_response(answer, status=status)
        return web.Response(status=status, text=answer)

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return wait_for(lambda: len(self.seen) >= n and list(self.seen), timeout, what=f"{n} requests")


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make(answer=None) -> Receiver:
        started.append(Receiver(answer).start())
        return started[-1]
    yield make
    for receiver in started:
        receiver.stop()


def yaml(endpoint: str, authorization: str = "api_key: {header: x-api-key, value_from_env: CRM_KEY}",
         rate: int = 300, target_extra: str = "") -> str:
    return f"""
connections:
  - name: crm
    authorization:
      {authorization}
api_destinations:
  - name: crm-orders
    connection: crm
    endpoint: {endpoint}
    invocation_rate_limit_per_second: {rate}
rules:
  - name: orders
    event_pattern: {{source: [shop]}}
    targets:
      - id: crm
        http: crm-orders
        dead_letter: true
        retry_policy: {FAST_RETRY}
        {target_extra}
"""


def start(stack, rules: str, workers: int = 1, **kw) -> None:
    stack.env.update(SECRETS_ENV)
    stack.write_rules(rules)
    stack.start_broker()
    for _ in range(workers):
        stack.start_worker(**kw)


def put(stack, n: int = 1, **detail) -> list[str]:
    entries = [{"source": "shop", "detail-type": "OrderPlaced", "detail": {"n": i, **detail}} for i in range(n)]
    ids = []
    for i in range(0, n, 10):
        status, body = post(stack.url + "/events", entries[i:i + 10])
        assert status == 200 and body["FailedEntryCount"] == 0, body
        ids += [e["EventId"] for e in body["Entries"]]
    return ids


def test_an_event_reaches_its_api_destination_with_the_api_key_and_path_from_the_event(stack, receivers):
    receiver = receivers()
    start(stack, yaml(receiver.url + "/orders/*", target_extra="http_parameters: {path_parameter_values: [$.detail.id]}"))
    [event_id] = put(stack, id="o-17")
    [seen] = receiver.wait_requests(1)
    assert seen["path"] == "/orders/o-17"
    assert seen["headers"]["x-api-key"] == API_KEY
    assert seen["headers"]["User-Agent"] == "Amazon/EventBridge/ApiDestinations"
    event = json.loads(seen["body"])
    assert event["id"] == event_id and event["detail"]["id"] == "o-17"


def test_basic_authorization_reaches_the_receiver(stack, receivers):
    receiver = receivers()
    start(stack, yaml(receiver.url + "/hook", authorization="basic: {username: shop, password_from_env: CRM_PASSWORD}"))
    put(stack)
    [seen] = receiver.wait_requests(1)
    assert seen["headers"]["Authorization"] == "Basic " + base64.b64encode(f"shop:{PASSWORD}".encode()).decode()


def test_oauth_client_credentials_reach_the_token_endpoint_and_the_token_the_receiver(stack, receivers):
    tokens = receivers(lambda n, request: (200, {"access_token": f"tok-{n}", "expires_in": 3600}))
    receiver = receivers()
    auth = (f"oauth_client_credentials: {{token_url: {tokens.url}/oauth/token, client_id: shop, "
            f"client_secret_from_env: CRM_CLIENT_SECRET, scope: orders}}")
    start(stack, yaml(receiver.url + "/hook", authorization=auth))
    put(stack, 2)
    receiver.wait_requests(2)
    [fetch] = tokens.seen
    assert fetch["headers"]["Authorization"] == "Basic " + base64.b64encode(f"shop:{CLIENT_SECRET}".encode()).decode()
    assert fetch["body"] == b"grant_type=client_credentials&scope=orders"
    assert [s["headers"]["Authorization"] for s in receiver.seen] == ["Bearer tok-1", "Bearer tok-1"]


def test_a_receiver_answering_500_twice_then_200_gets_the_event_on_attempt_3(stack, receivers):
    receiver = receivers(lambda n, request: (500, "busy") if n <= 2 else (200, "ok"))
    start(stack, yaml(receiver.url + "/hook"))
    [event_id] = put(stack)
    seen = receiver.wait_requests(3)
    time.sleep(0.5)  # room for a wrong fourth request
    assert len(receiver.seen) == 3
    assert {json.loads(s["body"])["id"] for s in seen} == {event_id}
    assert stack.bus("dlq", "list").stdout == ""


def test_a_receiver_answering_400_sends_the_event_straight_to_the_dlq_with_the_status(stack, receivers):
    receiver = receivers(lambda n, request: (400, '{"error": "no such customer"}'))
    start(stack, yaml(receiver.url + "/hook"))
    [event_id] = put(stack)
    [line] = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="a dead letter")
    letter = json.loads(stack.bus("dlq", "show", line.split()[0]).stdout)
    assert len(receiver.seen) == 1
    assert letter["event"]["id"] == event_id
    assert letter["exhausted_retry_condition"] == "NonRetryableError"
    assert "HTTP 400" in letter["error_message"] and "no such customer" in letter["error_message"]
    assert letter["error_code"] == "HTTP_4XX"


def test_the_rate_limit_holds_across_two_workers(stack, receivers):
    rate, events = 10, 40
    receiver = receivers()
    ports = [free_port(), free_port()]
    stack.env.update(SECRETS_ENV)
    stack.write_rules(yaml(receiver.url + "/hook", rate=rate))
    stack.start_broker()
    for port in ports:
        stack.start_worker(concurrency=20, metrics_port=port)
    wait_for(lambda: all(_scrape(p) for p in ports), what="both workers' /metrics")
    put(stack, events)
    seen = receiver.wait_requests(events, timeout=30)
    times = sorted(s["at"] for s in seen)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= rate * 1.2, f"{busiest} requests in one second at a limit of {rate}/s"
    assert len({json.loads(s["body"])["id"] for s in seen}) == events, "every event once"
    texts = [_scrape(p) for p in ports]
    key = dict(function="default/orders/crm", target="default/orders/crm")
    assert all(metric(t, "busway_invocations_total", **key) > 0 for t in texts), "both workers sent some"
    assert sum(metric(t, "busway_throttles_total", **key) for t in texts) > 0
    assert stack.bus("dlq", "list").stdout == ""


def test_secrets_never_appear_in_logs_or_dead_letters(stack, receivers):
    # The receiver echoes the credentials it got into a 400 answer, which ends in the DLQ.
    def echo(n: int, request: web.Request) -> tuple[int, str]:
        return 400, f"refused {request.headers.get('x-api-key')} {request.headers.get('Authorization')}"
    receiver = receivers(echo)
    tokens = receivers(lambda n, request: (200, {"access_token": f"tok-secret-{n}", "expires_in": 3600}))
    stack.env["BUS_LOG_LEVEL"] = "DEBUG"
    rules = yaml(receiver.url + "/hook") + """
  - name: basic
    event_pattern: {source: [shop]}
    targets: [{id: b, http: basic-dest, dead_letter: true}]
  - name: oauth
    event_pattern: {source: [shop]}
    targets: [{id: o, http: oauth-dest, dead_letter: true}]
"""
    rules = rules.replace("api_destinations:\n", f"""  - name: basic-conn
    authorization: {{basic: {{username: shop, password_from_env: CRM_PASSWORD}}}}
  - name: oauth-conn
    authorization:
      oauth_client_credentials: {{token_url: {tokens.url}/token, client_id: shop, client_secret_from_env: CRM_CLIENT_SECRET}}
api_destinations:
  - {{name: basic-dest, connection: basic-conn, endpoint: {receiver.url}/b}}
  - {{name: oauth-dest, connection: oauth-conn, endpoint: {receiver.url}/o}}
""")
    start(stack, rules)
    put(stack)
    lines = wait_for(lambda: len(out := stack.bus("dlq", "list").stdout.splitlines()) >= 3 and out,
                     what="three dead letters")
    letters = " ".join(stack.bus("dlq", "show", line.split()[0]).stdout for line in lines)
    assert "refused" in letters and "***" in letters
    basic = base64.b64encode(f"shop:{PASSWORD}".encode()).decode()
    for secret in (API_KEY, PASSWORD, CLIENT_SECRET, basic, "tok-secret-1"):
        assert secret not in stack.logs(), secret
        assert secret not in letters, secret


def _scrape(port: int) -> str:
    try:
        return get_text(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return ""
