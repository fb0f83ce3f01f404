"""The http invoker against real receivers: aiohttp servers on loopback, a real Redis for the
rate limit. Each test builds the TargetRecord a broker would publish and runs one or more
attempts through HttpInvoker, then checks what the receiver got and what the Result says."""
from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import time
from typing import Any, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bus import secrets
from bus.config.model import (
    ApiDestination, ApiKeyAuth, Authorization, BasicAuth, Connection, HttpParameters, HttpTarget,
    OAuthClientCredentials,
)
from bus.local.redisproc import free_port
from bus.store.deliveries import TargetRecord, new_delivery
from bus.store.queue import Queue
from bus.worker.invoker import THROTTLED, Invocation, Result
from bus.worker.invokers.http import HttpInvoker, fill_path, parse_retry_after
from bus.worker.rate_turns import RESERVE_SECONDS

EVENT = {"version": "0", "id": "e-1", "source": "shop", "detail-type": "OrderPlaced",
         "detail": {"id": 42, "kind": "big", "customer": {"name": "Ann"}}}
KEY = "k-3f9a-not-for-logs"
API_KEY = Authorization(api_key=ApiKeyAuth(header="x-api-key", value_from_env="HTTP_TEST_KEY"))


@pytest.fixture(autouse=True)
def api_key_env(monkeypatch):
    monkeypatch.setenv("HTTP_TEST_KEY", KEY)


class Receiver:
    """Records every request; answers with `answer(request, n)` (n: 1-based count), 200 by default."""

    def __init__(self, answer: Callable[[web.Request, int], Awaitable[web.StreamResponse]] | None = None):
        self.answer = answer
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append({"method": request.method, "path": request.raw_path.split("?")[0],
                          "query": dict(request.query), "headers": request.headers.copy(), "body": body,
                          "at": time.monotonic()})
        if self.answer:
            return await self.answer(request, len(self.seen))
        return web.Response(text="ok")


def record(endpoint: str, auth: Authorization = API_KEY, *, method: str = "POST", params: HttpParameters | None = None,
           connection_params: HttpParameters | None = None, rate: int = 1000, deauthorized: bool = False,
           name: str = "dest") -> TargetRecord:
    destination = ApiDestination(name=name, connection="conn", endpoint=endpoint, method=method,
                                 invocation_rate_limit_per_second=rate)
    connection = Connection(name="conn", authorization=auth, invocation_http_parameters=connection_params,
                            deauthorized=deauthorized)
    return TargetRecord(bus="default", rule="r", target=HttpTarget(id="t", http=name, http_parameters=params),
                        destination=destination, connection=connection)


def call(rec: TargetRecord, payload: bytes | None = None, is_json: bool = True) -> Invocation:
    d = new_delivery(json.dumps(EVENT).encode(), rec, time.time())
    return Invocation(rec, d, 1, "token", lambda: None, payload, is_json)


def run(redis_url: str, body: Callable[..., Awaitable[Any]], *receivers: Receiver, timeout: float = 5.0,
        rate_max_wait: float = 0.1) -> Any:
    """Start the receivers on loopback, then `body(invoker, *base_urls)`; everything stopped after."""
    async def main() -> Any:
        runners, urls = [], []
        for receiver in receivers:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", receiver.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{port}")
        client = aioredis.from_url(redis_url)
        invoker = HttpInvoker(Queue(client), timeout=timeout, rate_max_wait=rate_max_wait)
        try:
            return await asyncio.wait_for(body(invoker, *urls), 30)
        finally:
            await invoker.close()
            await client.aclose()
            for runner in runners:
                await runner.cleanup()
    return asyncio.run(main())


def invoke_once(redis_url: str, receiver: Receiver, path: str = "/hook", **kw) -> Result:
    async def body(invoker: HttpInvoker, url: str) -> Result:
        rec = record(url + path, **kw)
        return await invoker.invoke(call(rec), invoker.place(call(rec), True))
    return run(redis_url, body, receiver)


def answering(status: int, text: str = "", headers: dict[str, str] | None = None):
    async def answer(request: web.Request, n: int) -> web.Response:
        return web.Response(status=status, text=text, headers=headers)
    return answer


# --- the request --------------------------------------------------------------------------

def test_the_event_is_sent_as_json_with_eventbridges_headers(redis_url):
    receiver = Receiver()
    result = invoke_once(redis_url, receiver)
    assert result.ok and result.retryable
    [seen] = receiver.seen
    assert seen["method"] == "POST" and seen["path"] == "/hook"
    assert json.loads(seen["body"]) == EVENT
    assert seen["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert seen["headers"]["User-Agent"] == "Amazon/EventBridge/ApiDestinations"


def test_the_transformed_input_is_the_body(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> Result:
        c = call(record(url + "/hook"), payload=b"order 42 is big", is_json=False)
        return await invoker.invoke(c, invoker.place(c, True))
    assert run(redis_url, body, receiver).ok
    assert receiver.seen[0]["body"] == b"order 42 is big"


def test_the_destinations_method_is_used(redis_url):
    receiver = Receiver()
    assert invoke_once(redis_url, receiver, method="PUT").ok
    assert receiver.seen[0]["method"] == "PUT"


def test_path_values_fill_the_endpoints_stars_in_order_percent_encoded(redis_url):
    receiver = Receiver()
    params = HttpParameters(path_parameter_values=["a b/c", "x"])
    assert invoke_once(redis_url, receiver, path="/orders/*/items/*", params=params).ok
    assert receiver.seen[0]["path"] == "/orders/a%20b%2Fc/items/x"


def test_header_and_query_parameters_are_sent_and_the_connections_win(redis_url):
    receiver = Receiver()
    target = HttpParameters(header_parameters={"X-Team": "shop", "X-Both": "target"},
                            query_string_parameters={"q": "1", "both": "target"})
    connection = HttpParameters(header_parameters={"x-both": "connection"},
                                query_string_parameters={"both": "connection"})
    assert invoke_once(redis_url, receiver, params=target, connection_params=connection).ok
    seen = receiver.seen[0]
    assert seen["headers"]["X-Team"] == "shop" and seen["headers"]["X-Both"] == "connection"
    assert seen["query"] == {"q": "1", "both": "connection"}


def test_json_path_parameter_values_are_read_from_the_original_event(redis_url):
    receiver = Receiver()
    params = HttpParameters(header_parameters={"X-Kind": "$.detail.kind"},
                            query_string_parameters={"id": "$.detail.id"},
                            path_parameter_values=["$.detail.customer.name"])

    async def body(invoker: HttpInvoker, url: str) -> Result:
        c = call(record(url + "/customers/*", params=params), payload=b'{"other": true}')  # transformed input
        return await invoker.invoke(c, invoker.place(c, True))
    assert run(redis_url, body, receiver).ok
    seen = receiver.seen[0]
    assert (seen["path"], seen["query"], seen["headers"]["X-Kind"]) == ("/customers/Ann", {"id": "42"}, "big")


def test_a_json_path_that_finds_nothing_leaves_its_parameter_out(redis_url):
    receiver = Receiver()
    params = HttpParameters(header_parameters={"X-None": "$.detail.absent"},
                            query_string_parameters={"none": "$.detail.absent", "q": "1"})
    assert invoke_once(redis_url, receiver, params=params).ok
    assert "X-None" not in receiver.seen[0]["headers"] and receiver.seen[0]["query"] == {"q": "1"}


def test_fill_path_leaves_stars_without_a_value_empty():
    assert fill_path("http://h/a/*/b/*", ["1"]) == "http://h/a/1/b/"


# --- authorization ------------------------------------------------------------------------

def test_api_key_authorization_sends_the_key_in_its_header(redis_url):
    receiver = Receiver()
    assert invoke_once(redis_url, receiver).ok
    assert receiver.seen[0]["headers"]["x-api-key"] == KEY


def test_basic_authorization_sends_user_and_password(redis_url, monkeypatch):
    monkeypatch.setenv("HTTP_TEST_PASSWORD", "pw-secret")
    receiver = Receiver()
    auth = Authorization(basic=BasicAuth(username="ann", password_from_env="HTTP_TEST_PASSWORD"))
    assert invoke_once(redis_url, receiver, auth=auth).ok
    assert receiver.seen[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"ann:pw-secret").decode()


def test_a_sealed_secret_is_unsealed_for_the_request(redis_url, monkeypatch):
    monkeypatch.setenv(secrets.ENV, secrets.new_key())
    receiver = Receiver()
    auth = Authorization(api_key=ApiKeyAuth(header="x-api-key", value_sealed=secrets.seal("sealed-key")))
    assert invoke_once(redis_url, receiver, auth=auth).ok
    assert receiver.seen[0]["headers"]["x-api-key"] == "sealed-key"


class TokenServer(Receiver):
    """An OAuth token endpoint: token-1, token-2, ... each valid for `expires_in`."""

    def __init__(self, expires_in: float | None = 3600):
        super().__init__(self.issue)
        self.expires_in = expires_in

    async def issue(self, request: web.Request, n: int) -> web.Response:
        answer: dict[str, Any] = {"access_token": f"token-{n}", "token_type": "Bearer"}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return web.json_response(answer)


def oauth(token_url: str) -> Authorization:
    return Authorization(oauth_client_credentials=OAuthClientCredentials(
        token_url=token_url, client_id="cid", client_secret_from_env="HTTP_TEST_KEY", scope="orders:write",
        oauth_http_parameters=HttpParameters(header_parameters={"X-Tenant": "t1"},
                                             query_string_parameters={"audience": "crm"})))


def invoke_times(invoker: HttpInvoker, rec: TargetRecord, n: int, pause: float = 0.0):
    async def go() -> list[Result]:
        results = []
        for _ in range(n):
            c = call(rec)
            results.append(await invoker.invoke(c, invoker.place(c, True)))
            await asyncio.sleep(pause)
        return results
    return go()


def test_oauth_token_is_fetched_with_client_credentials_and_reused(redis_url):
    tokens, receiver = TokenServer(), Receiver()

    async def body(invoker: HttpInvoker, token_url: str, url: str) -> list[Result]:
        return await invoke_times(invoker, record(url + "/hook", auth=oauth(token_url + "/token")), 2)
    assert all(r.ok for r in run(redis_url, body, tokens, receiver))
    [fetch] = tokens.seen
    assert fetch["method"] == "POST" and fetch["path"] == "/token"
    assert fetch["headers"]["Authorization"] == "Basic " + base64.b64encode(f"cid:{KEY}".encode()).decode()
    assert fetch["body"] == b"grant_type=client_credentials&scope=orders%3Awrite"
    assert fetch["query"] == {"audience": "crm"} and fetch["headers"]["X-Tenant"] == "t1"
    assert [s["headers"]["Authorization"] for s in receiver.seen] == ["Bearer token-1", "Bearer token-1"]


def test_oauth_token_is_fetched_again_after_a_401(redis_url):
    tokens = TokenServer()
    receiver = Receiver(lambda request, n: answering(401 if n == 1 else 200)(request, n))

    async def body(invoker: HttpInvoker, token_url: str, url: str) -> list[Result]:
        return await invoke_times(invoker, record(url + "/hook", auth=oauth(token_url + "/token")), 2)
    first, second = run(redis_url, body, tokens, receiver)
    assert (first.ok, first.retryable, first.kind) == (False, True, "http_4xx")
    assert second.ok
    assert [s["headers"]["Authorization"] for s in receiver.seen] == ["Bearer token-1", "Bearer token-2"]


def test_oauth_token_is_fetched_again_once_it_expires(redis_url):
    tokens, receiver = TokenServer(expires_in=0.5), Receiver()

    async def body(invoker: HttpInvoker, token_url: str, url: str) -> list[Result]:
        return await invoke_times(invoker, record(url + "/hook", auth=oauth(token_url + "/token")), 2, pause=0.6)
    assert all(r.ok for r in run(redis_url, body, tokens, receiver))
    assert [s["headers"]["Authorization"] for s in receiver.seen] == ["Bearer token-1", "Bearer token-2"]


def test_a_token_endpoint_refusing_the_client_fails_without_retry_and_without_the_secret(redis_url):
    tokens = Receiver(lambda request, n: answering(400, f"bad client {KEY}")(request, n))
    receiver = Receiver()

    async def body(invoker: HttpInvoker, token_url: str, url: str) -> list[Result]:
        return await invoke_times(invoker, record(url + "/hook", auth=oauth(token_url + "/token")), 1)
    [result] = run(redis_url, body, tokens, receiver)
    assert (result.ok, result.retryable) == (False, False)
    assert "HTTP 400" in result.message and KEY not in result.message
    assert receiver.seen == []


# --- what answers mean ----------------------------------------------------------------------

@pytest.mark.parametrize("status, kind", [(500, "http_5xx"), (503, "http_5xx"), (401, "http_4xx"), (407, "http_4xx"),
                                          (409, "http_4xx"), (429, "http_4xx")])
def test_answers_aws_retries_are_retryable_failures(redis_url, status, kind):
    result = invoke_once(redis_url, Receiver(answering(status)))
    assert (result.ok, result.retryable, result.kind, result.error_type) == (False, True, kind, f"HTTP {status}")


@pytest.mark.parametrize("status, kind", [(400, "http_4xx"), (403, "http_4xx"), (404, "http_4xx"), (422, "http_4xx"),
                                          (301, "http_3xx"), (302, "http_3xx")])
def test_other_answers_fail_without_retry(redis_url, status, kind):
    result = invoke_once(redis_url, Receiver(answering(status, headers={"Location": "http://127.0.0.1:9/x"})))
    assert (result.ok, result.retryable, result.kind) == (False, False, kind)


def test_a_redirect_is_not_followed(redis_url):
    receiver = Receiver(lambda request, n: answering(307, headers={"Location": "/elsewhere"})(request, n))
    invoke_once(redis_url, receiver)
    assert [s["path"] for s in receiver.seen] == ["/hook"]


def test_a_failed_answer_carries_its_status_and_the_first_kilobyte_of_its_body(redis_url):
    body = "é" + "x" * 3000
    result = invoke_once(redis_url, Receiver(answering(400, body)))
    assert "400 Bad Request" in result.message
    assert ("é" + "x" * 1022) in result.message and "x" * 1023 not in result.message


def test_retry_after_in_seconds_becomes_the_results_retry_after(redis_url):
    result = invoke_once(redis_url, Receiver(answering(503, headers={"Retry-After": "7"})))
    assert result.retry_after == 7.0


def test_retry_after_as_an_http_date_counts_from_now():
    now = time.time()
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("-1", now) == -1.0  # AWS: a negative Retry-After stops the retries
    assert parse_retry_after("soon", now) is None


def test_no_answer_within_the_timeout_is_a_retryable_timeout(redis_url):
    async def slow(request: web.Request, n: int) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    async def body(invoker: HttpInvoker, url: str) -> tuple[Result, float]:
        c = call(record(url + "/hook"))
        started = time.monotonic()
        result = await invoker.invoke(c, invoker.place(c, True))
        return result, time.monotonic() - started
    result, seconds = run(redis_url, body, Receiver(slow), timeout=0.3)
    assert (result.ok, result.retryable, result.kind) == (False, True, "timeout")
    assert seconds < 1.5


def test_a_refused_connection_is_a_retryable_network_error(redis_url):
    async def body(invoker: HttpInvoker) -> Result:
        c = call(record(f"http://127.0.0.1:{free_port()}/hook"))
        return await invoker.invoke(c, invoker.place(c, True))
    result = run(redis_url, body)
    assert (result.ok, result.retryable, result.kind) == (False, True, "network")


# --- what cannot be sent ------------------------------------------------------------------------

def test_a_target_without_its_connection_fails_without_retry(redis_url):
    async def body(invoker: HttpInvoker) -> Result:
        rec = TargetRecord(bus="default", rule="r", target=HttpTarget(id="t", http="gone"))
        return await invoker.invoke(call(rec), object())
    result = run(redis_url, body)
    assert (result.ok, result.retryable) == (False, False)
    assert "api destination gone does not exist" in result.message


def test_a_deauthorized_connection_fails_without_retry(redis_url):
    receiver = Receiver()
    result = invoke_once(redis_url, receiver, deauthorized=True)
    assert (result.ok, result.retryable) == (False, False) and "deauthorized" in result.message
    assert receiver.seen == []


def test_a_secret_missing_from_the_environment_fails_naming_the_variable(redis_url, monkeypatch):
    monkeypatch.delenv("HTTP_TEST_KEY")
    result = invoke_once(redis_url, Receiver())
    assert (result.ok, result.retryable) == (False, False) and "HTTP_TEST_KEY" in result.message


def test_a_secret_echoed_by_the_receiver_is_scrubbed_from_the_message(redis_url):
    async def echo(request: web.Request, n: int) -> web.Response:
        return web.Response(status=400, text=f"your key {request.headers['x-api-key']} is wrong")
    result = invoke_once(redis_url, Receiver(echo))
    assert KEY not in result.message and "your key *** is wrong" in result.message


# --- the rate limit ---------------------------------------------------------------------------

def test_rate_turns_are_paced_one_interval_apart(redis_url):
    async def body(client) -> list:
        q = Queue(client)
        return [await q.take_rate("d", 10, max_wait=1.0) for _ in range(4)]
    turns = run_queue(redis_url, body)
    assert all(t.granted for t in turns)
    assert [round(t.wait, 1) for t in turns] == [0.0, 0.1, 0.2, 0.3]


def test_a_turn_beyond_the_longest_wait_is_refused_and_not_taken(redis_url):
    async def body(client) -> list:
        q = Queue(client)
        return [await q.take_rate("d", 2, max_wait=0.0) for _ in range(3)]
    first, second, third = run_queue(redis_url, body)
    assert first.granted and first.wait == 0
    assert not second.granted and second.wait == pytest.approx(0.5, abs=0.05)
    assert not third.granted and third.wait == pytest.approx(0.5, abs=0.05), "a refusal took nothing"


def run_queue(redis_url: str, body):
    async def main():
        client = aioredis.from_url(redis_url)
        try:
            return await body(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


def test_over_the_rate_limit_the_call_is_throttled_for_the_wait_and_not_sent(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> list[Result]:
        return await invoke_times(invoker, record(url + "/hook", rate=1), 2)
    first, second = run(redis_url, body, receiver, rate_max_wait=0.1)
    assert first.ok
    assert second.kind == THROTTLED and second.retry_after == pytest.approx(0.9, abs=0.1)
    assert len(receiver.seen) == 1


def test_a_turn_due_soon_is_waited_for_in_the_worker(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> list[Result]:
        return await invoke_times(invoker, record(url + "/hook", rate=10), 3)
    assert all(r.ok for r in run(redis_url, body, receiver, rate_max_wait=0.5))
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.seen, receiver.seen[1:])]
    assert all(gap >= 0.08 for gap in gaps), gaps


def test_take_rates_takes_consecutive_turns_in_one_call(redis_url):
    async def body(client) -> list:
        q = Queue(client)
        return [await q.take_rates("d", 10, 1.0, 3), await q.take_rate("d", 10, max_wait=1.0)]
    block, after = run_queue(redis_url, body)
    assert block.count == 3 and block.wait == 0 and block.interval == pytest.approx(0.1)
    assert after.granted and round(after.wait, 1) == 0.3, "the block moved the schedule on by 3 turns"


def test_take_rates_gives_only_the_turns_within_the_longest_wait(redis_url):
    async def body(client) -> list:
        q = Queue(client)
        return [await q.take_rates("d", 10, 0.25, 5), await q.take_rates("d", 10, 0.25, 5)]
    block, refused = run_queue(redis_url, body)
    assert block.count == 3, "turns at 0, 0.1 and 0.2 s"
    assert refused.count == 0 and refused.wait == pytest.approx(0.05, abs=0.02)


def test_calls_waiting_at_once_share_one_redis_call_and_keep_their_spacing(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> tuple[list[Result], int]:
        await invoke_times(invoker, record(url + "/warm", name="warm"), 1)  # the script is loaded
        before = await rate_script_calls(invoker.queue)
        calls = [call(record(url + "/hook", rate=20)) for _ in range(4)]
        results = await asyncio.gather(*(invoker.invoke(c, invoker.place(c, True)) for c in calls))
        return results, await rate_script_calls(invoker.queue) - before
    results, script_calls = run(redis_url, body, receiver, rate_max_wait=0.2)
    assert all(r.ok for r in results)
    assert script_calls == 1
    times = sorted(s["at"] for s in receiver.seen if s["path"] == "/hook")
    # Turns are 50 ms apart; what the receiver sees also holds each send's lateness (a loaded machine
    # wakes a sender late, and the next one on time), so each gap may look shorter, never the span
    # from the first send to the last by more than the first one's lateness.
    assert len(times) == 4 and all(b - a >= 0.025 for a, b in zip(times, times[1:])), times
    assert times[-1] - times[0] >= 0.13, times


def test_calls_a_shared_take_has_no_turn_for_are_throttled_until_one_is_near(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> list[Result]:
        calls = [call(record(url + "/hook", rate=10)) for _ in range(4)]
        return await asyncio.gather(*(invoker.invoke(c, invoker.place(c, True)) for c in calls))
    results = run(redis_url, body, receiver, rate_max_wait=0.1)
    assert [r.ok for r in results] == [True, True, False, False], "turns at 0 and 0.1 s only"
    assert all(r.kind == THROTTLED and r.retry_after == pytest.approx(0.1, abs=0.02) for r in results[2:])
    assert len(receiver.seen) == 2


def test_a_busy_worker_sends_on_turns_from_its_reserve_and_asks_redis_less(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> tuple[list[Result], int]:
        await invoke_times(invoker, record(url + "/warm", name="warm", rate=1), 1)  # the script is loaded
        before = await rate_script_calls(invoker.queue)
        results = await asyncio.gather(*(invoke_times(invoker, record(url + "/hook"), 10) for _ in range(4)))
        return [r for rs in results for r in rs], await rate_script_calls(invoker.queue) - before
    results, script_calls = run(redis_url, body, receiver)
    assert len(results) == 40 and all(r.ok for r in results)
    assert script_calls <= 10, f"{script_calls} Redis calls for 40 turns"


def test_a_reserved_turn_not_used_within_a_tenth_of_a_second_is_dropped(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> int:
        rec = record(url + "/hook")
        await asyncio.gather(*(invoke_times(invoker, rec, 3) for _ in range(4)))  # a reserve is held
        await asyncio.sleep(RESERVE_SECONDS + 0.05)
        before = await rate_script_calls(invoker.queue)
        await invoke_times(invoker, rec, 1)
        return await rate_script_calls(invoker.queue) - before
    assert run(redis_url, body, receiver) == 1, "the late reserve was not used: a new turn was taken"


def test_two_workers_with_reserves_keep_the_limit_in_every_window(redis_url):
    rate = 200
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> None:
        other_client = aioredis.from_url(redis_url)
        other = HttpInvoker(Queue(other_client), rate_max_wait=0.1)
        rec = record(url + "/hook", rate=rate)
        stop = time.monotonic() + 1.5

        async def keep_sending(inv: HttpInvoker, pause: float) -> None:
            while time.monotonic() < stop:
                c = call(rec)
                result = await inv.invoke(c, inv.place(c, True))
                await asyncio.sleep(min(result.retry_after or 0.0, 0.05) if result.kind == THROTTLED else pause)
        try:  # one worker below the limit (it keeps a reserve), the other pushing past it
            await asyncio.gather(*(keep_sending(invoker, 0.02) for _ in range(3)),
                                 *(keep_sending(other, 0.0) for _ in range(8)))
        finally:
            await other.close()
            await other_client.aclose()
    run(redis_url, body, receiver)
    times = sorted(s["at"] for s in receiver.seen)
    assert len(times) >= rate, "the limit was reached"
    for window in (1.0, 0.1):
        busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
        bound = rate * (window + RESERVE_SECONDS + 0.01) + 1  # 10 ms: loopback and loop jitter
        assert busiest <= bound, f"{busiest} requests in {window} s at {rate}/s"


async def rate_script_calls(queue: Queue) -> int:
    """EVALSHA calls Redis has run (INFO commandstats): the rate script is the only one here."""
    stats = await queue.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_while_redis_is_unreachable_the_call_is_throttled_and_not_sent(redis_url):
    receiver = Receiver()

    async def body(invoker: HttpInvoker, url: str) -> Result:
        invoker.queue = Queue(aioredis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5))
        c = call(record(url + "/hook"))
        return await invoker.invoke(c, invoker.place(c, True))
    result = run(redis_url, body, receiver)
    assert result.kind == THROTTLED and "Redis is unreachable" in result.message
    assert receiver.seen == []
