"""Dead-letter operations against a real Redis: redrive and purge count what they did, once."""
from __future__ import annotations

import asyncio
import json

import msgspec

from bus.store import deadletters, keys
from bus.store.deliveries import Delivery
from tests.conftest import with_client

DELIVERY = Delivery(id="req-1", event=msgspec.Raw(b'{"id": "ev-1", "detail": {}}'), bus="default", rule="r",
                    target="t1", function="probe.fail", first_enqueued=1.0, ingested=1.0, retries=2)
STREAM = keys.stream_key("default/r/t1")
DLQ = keys.dlq_key("default/r/t1")




def dead_letter(r, delivery: Delivery = DELIVERY, entry_id: str = "*") -> str:
    letter = deadletters.make_dead_letter(delivery, "Unhandled", "boom", 3, "MaximumRetryAttemptsExhausted")
    record = {keys.FIELD: deadletters.encode_dead_letter(letter)}
    return r.xadd(keys.dlq_key(delivery.target_key), record, id=entry_id).decode()


def test_two_concurrent_redrives_of_one_letter_enqueue_it_once(redis_url, r):
    dead_letter(r)

    async def both(client):
        letters = await deadletters.list_letters(client)
        return await asyncio.gather(deadletters.redrive(client, letters), deadletters.redrive(client, letters))
    counts = with_client(redis_url, both)
    assert r.xlen(STREAM) == 1
    assert sorted(counts) == [0, 1], "only the redrive that removed the letter counts it"


def test_redrive_puts_a_fresh_delivery_on_the_targets_queue_and_removes_the_letter(redis_url, r):
    dead_letter(r)
    assert with_client(redis_url, lambda c: _redrive_all(c)) == 1
    [(_, fields)] = r.xrange(STREAM)
    delivery = json.loads(fields[keys.FIELD])
    assert (delivery["id"], delivery["retries"], json.loads(json.dumps(delivery["event"]))["id"]) == ("req-1", 0, "ev-1")
    assert r.xlen(DLQ) == 0


def test_purge_counts_only_letters_it_removed(redis_url, r):
    dead_letter(r)

    async def twice(client):
        letters = await deadletters.list_letters(client)
        return await deadletters.purge(client, letters), await deadletters.purge(client, letters)
    assert with_client(redis_url, twice) == (1, 0)
    assert r.xlen(DLQ) == 0


async def _redrive_all(client) -> int:
    return await deadletters.redrive(client, await deadletters.list_letters(client))


def test_a_dead_letter_is_found_by_its_id_in_whichever_dlq_holds_it(redis_url, r):
    dead_letter(r, entry_id="1-0")
    wanted = dead_letter(r, msgspec.structs.replace(DELIVERY, target="t2", id="req-2"), entry_id="2-0")
    [found] = with_client(redis_url, lambda c: deadletters.find_letters(c, wanted))
    assert (found.dlq, found.id, found.letter.request_id) == ("default/r/t2", wanted, "req-2")


def test_finding_a_dead_letter_reads_only_that_entry_of_each_dlq(redis_url, r):
    for _ in range(3):
        wanted = dead_letter(r)
    r.config_set("slowlog-log-slower-than", 0)  # our own Redis: log every command with its arguments
    try:
        r.slowlog_reset()
        with_client(redis_url, lambda c: deadletters.find_letters(c, wanted))
        reads = [entry["command"].split() for entry in r.slowlog_get(128)
                 if entry["command"].upper().startswith((b"XRANGE", b"XREVRANGE", b"XREAD"))]
    finally:
        r.config_set("slowlog-log-slower-than", 10000)
    assert reads and all(args[2:4] == [wanted.encode()] * 2 for args in reads), reads


def test_a_malformed_or_partial_id_finds_no_dead_letter_instead_of_a_redis_error(redis_url, r):
    dead_letter(r, entry_id="123-0")
    for bad in ("abc", "123", "123-", "-0", "1-2-3", "123-0 ", "99999999999999999999-0", "+", "-"):
        assert with_client(redis_url, lambda c: deadletters.find_letters(c, bad)) == [], bad
        assert with_client(redis_url, lambda c: deadletters.list_letters(c, ids=[bad])) == [], bad
    assert with_client(redis_url, lambda c: deadletters.list_letters(c, ids=[123])) == [], "ids from a JSON body"
    assert len(with_client(redis_url, lambda c: deadletters.find_letters(c, "123-0"))) == 1


def test_bus_dlq_show_of_a_malformed_id_says_there_is_no_such_dead_letter(redis_url, r):
    import subprocess
    import sys
    dead_letter(r)
    result = subprocess.run([sys.executable, "-m", "bus", "dlq", "show", "not-an-id", "--redis", redis_url],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr.strip()) == (1, "bus: no dead letter not-an-id")
