"""Replays end to end: boto3 against `bus serve`, a worker running tests/functions/probe.record.

Events are put with explicit past Times so a window [FROM, TO) holds some and not others; the
archive is stored through bus.store.resources before the broker starts (it loads stored
archives at start)."""
from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from bus.config.model import Archive
from bus.store import resources
from bus.store.keys import API_REPLAYS, REPLAY_LEADER_KEY
from tests.conftest import sync_client, wait_for, with_client

RULES = """
rules:
  - name: all
    event_pattern: {source: [app]}
    targets:
      - id: t
        function: probe.record
  - name: picky
    event_pattern: {source: [app]}
    targets:
      - id: t
        function: probe.record
"""
ACCOUNT = "123456789012"
REGION = "us-east-1"
ARCHIVE_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:archive/arch"
BUS_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
PICKY_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/picky"


def setup(stack, redis_url: str, **env: str):
    stack.env.update({"BUS_ACCOUNT": ACCOUNT, "BUS_REGION": REGION, **env})
    stack.write_rules(RULES)
    with_client(redis_url, lambda redis: resources.create(redis, Archive(name="arch", bus="default")))


def put_window(client, base: int, inside: int) -> tuple[list[str], list[str]]:
    """One event 5 s before the window [base, base + inside), `inside` in it, one 5 s after it;
    (ids inside, ids outside)."""
    times = [base - 5] + [base + i for i in range(inside)] + [base + inside + 5]
    entries = [{"Source": "app", "DetailType": "d", "Detail": json.dumps({"n": n}),
                "Time": datetime.fromtimestamp(t, UTC)} for n, t in enumerate(times)]
    ids = []
    for i in range(0, len(entries), 10):
        out = client.put_events(Entries=entries[i:i + 10])
        assert out["FailedEntryCount"] == 0
        ids += [e["EventId"] for e in out["Entries"]]
    return ids[1:-1], [ids[0], ids[-1]]


def start(client, name: str, base: int, inside: int, **destination):
    return client.start_replay(ReplayName=name, EventSourceArn=ARCHIVE_ARN,
                               EventStartTime=datetime.fromtimestamp(base, UTC),
                               EventEndTime=datetime.fromtimestamp(base + inside, UTC),
                               Destination={"Arn": BUS_ARN, **destination})


def replayed(stack, name: str) -> list[dict]:
    return [rec for rec in stack.records() if rec["event"].get("replay-name") == name]


def state(client, name: str) -> dict:
    return client.describe_replay(ReplayName=name)


def wait_state(client, name: str, wanted: str, timeout: float = 20) -> dict:
    return wait_for(lambda: (d := state(client, name))["State"] == wanted and d, timeout, what=f"{name} {wanted}")


@pytest.mark.cluster
def test_replay_sends_exactly_the_windows_events_again_with_replay_name_and_original_id_and_time(
        stack, redis_url, events_client):
    setup(stack, redis_url)
    client = events_client(stack.start_broker().url)
    stack.start_worker()
    base = int(time.time()) - 3600
    inside, outside = put_window(client, base, 10)
    originals = {rec["event"]["id"]: rec["event"] for rec in stack.wait_records(24)}
    out = start(client, "r1", base, 10)
    assert (out["ReplayArn"], out["State"]) == (f"arn:aws:events:{REGION}:{ACCOUNT}:replay/r1", "STARTING")
    done = wait_state(client, "r1", "COMPLETED")
    recs = wait_for(lambda: len(got := replayed(stack, "r1")) >= 20 and got, what="20 replayed calls")
    assert sorted((r["context"]["rule_name"], r["event"]["id"]) for r in recs) == sorted(
        (rule, i) for rule in ("all", "picky") for i in inside)
    for rec in recs:
        assert {k: v for k, v in rec["event"].items() if k != "replay-name"} == originals[rec["event"]["id"]]
    assert not {r["event"]["id"] for r in recs} & set(outside)
    assert done["EventLastReplayedTime"].timestamp() == base + 9
    assert done["ReplayEndTime"] >= done["ReplayStartTime"]
    assert done["Destination"] == {"Arn": BUS_ARN}


def test_filter_arns_send_the_replay_only_to_the_rules_named(stack, redis_url, events_client):
    setup(stack, redis_url)
    client = events_client(stack.start_broker().url)
    stack.start_worker()
    base = int(time.time()) - 3600
    inside, _ = put_window(client, base, 3)
    stack.wait_records(10)
    start(client, "only-picky", base, 3, FilterArns=[PICKY_ARN])
    wait_state(client, "only-picky", "COMPLETED")
    recs = wait_for(lambda: len(got := replayed(stack, "only-picky")) >= 3 and got, what="3 replayed calls")
    assert sorted((r["context"]["rule_name"], r["event"]["id"]) for r in recs) == sorted(("picky", i) for i in inside)
    assert state(client, "only-picky")["Destination"]["FilterArns"] == [PICKY_ARN]


@pytest.mark.cluster
def test_cancel_stops_a_running_replay(stack, redis_url, events_client):
    setup(stack, redis_url, BUS_REPLAY_RATE="2")  # one event per half second
    client = events_client(stack.start_broker().url)
    stack.start_worker()
    base = int(time.time()) - 3600
    put_window(client, base, 20)
    stack.wait_records(44)
    start(client, "slow", base, 20, FilterArns=[PICKY_ARN])
    wait_for(lambda: state(client, "slow").get("EventLastReplayedTime"), what="a first replayed event")
    assert client.cancel_replay(ReplayName="slow")["State"] == "CANCELLING"
    wait_state(client, "slow", "CANCELLED")
    replayed_count = json.loads(sync_client(redis_url).hget(API_REPLAYS, "slow"))["replayed"]
    assert 1 <= replayed_count < 20
    wait_for(lambda: len(replayed(stack, "slow")) >= replayed_count, what="the replayed calls")
    with pytest.raises(ClientError) as err:
        client.cancel_replay(ReplayName="slow")
    assert err.value.response["Error"]["Code"] == "IllegalStatusException"


@pytest.mark.cluster
def test_a_replay_survives_its_leaders_sigkill_with_no_event_missing_or_repeated(stack, redis_url, events_client):
    setup(stack, redis_url, BUS_REPLAY_RATE="5", BUS_REPLAY_LOCK_TTL="1")
    r = sync_client(redis_url)
    stack.start_broker()
    leader = stack.procs[-1]
    wait_for(lambda: r.exists(REPLAY_LEADER_KEY), what="the first broker to lead replays")
    client = events_client(stack.start_broker().url)  # the second broker: the one that survives
    stack.start_worker()
    base = int(time.time()) - 3600
    inside, _ = put_window(client, base, 20)
    stack.wait_records(44)
    start(client, "survivor", base, 20, FilterArns=[PICKY_ARN])
    wait_for(lambda: (state(client, "survivor").get("EventLastReplayedTime") or datetime.min.replace(tzinfo=UTC)
                      ).timestamp() >= base + 4, what="5 events replayed by the first leader")
    leader.send_signal(signal.SIGKILL)
    leader.wait(10)
    done = wait_state(client, "survivor", "COMPLETED", timeout=40)
    assert done["EventLastReplayedTime"].timestamp() == base + 19
    recs = wait_for(lambda: len(got := replayed(stack, "survivor")) >= 20 and got, what="20 replayed calls")
    ids = [rec["event"]["id"] for rec in recs]
    assert sorted(set(ids)) == sorted(inside)
    assert len(ids) - len(set(ids)) == 0  # each step is atomic with its checkpoint: no duplicates
    survivor_log = (stack.root / "broker-1.log").read_text()
    assert "this broker now runs replays" in survivor_log  # it did take over


def error(call) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def test_start_replay_errors_are_awss(stack, redis_url, events_client):
    setup(stack, redis_url)
    stack.write_rules("buses:\n  - name: other\n", "buses.yaml")
    client = events_client(stack.start_broker().url)
    base = int(time.time()) - 3600
    start(client, "taken", base, 10)
    assert error(lambda: start(client, "taken", base, 10)) == (
        "ResourceAlreadyExistsException", "Replay taken already exists.")
    assert error(lambda: client.start_replay(
        ReplayName="x", EventSourceArn=ARCHIVE_ARN.replace("/arch", "/nope"), EventStartTime=base,
        EventEndTime=base + 10, Destination={"Arn": BUS_ARN})) == (
        "ValidationException", "Parameter EventSourceArn is not valid. Reason: Archive nope does not exist.")
    assert error(lambda: start(client, "x", base, 0)) == (
        "ValidationException", "Parameter EventEndTime is not valid. Reason: EventStartTime must be before EventEndTime.")
    assert error(lambda: start(client, "x", base, 7200))[0] == "ValidationException"
    assert error(lambda: client.start_replay(
        ReplayName="x", EventSourceArn=ARCHIVE_ARN, EventStartTime=base, EventEndTime=base + 10,
        Destination={"Arn": BUS_ARN.replace("/default", "/other")})) == (
        "ValidationException", "Parameter Destination.Arn is not valid. Reason: Cross event bus replay is not permitted.")
    assert error(lambda: client.start_replay(
        ReplayName="x", EventSourceArn=ARCHIVE_ARN, EventStartTime=base, EventEndTime=base + 10,
        Destination={"Arn": BUS_ARN.replace("/default", "/nope")})) == (
        "ResourceNotFoundException", "Event bus nope does not exist.")
    assert error(lambda: start(client, "x", base, 10, FilterArns=[PICKY_ARN.replace("picky", "nope")])) == (
        "ResourceNotFoundException", "Rule nope does not exist on EventBus default.")
    assert error(lambda: client.describe_replay(ReplayName="x")) == (
        "ResourceNotFoundException", "Replay x does not exist.")
    assert error(lambda: client.cancel_replay(ReplayName="x"))[0] == "ResourceNotFoundException"


def test_list_replays_filters_by_one_of_prefix_state_or_archive(stack, redis_url, events_client):
    setup(stack, redis_url)
    client = events_client(stack.start_broker().url)
    base = int(time.time()) - 3600
    for name in ("a-1", "a-2", "b-1"):
        start(client, name, base, 10)
    assert [x["ReplayName"] for x in client.list_replays(NamePrefix="a-")["Replays"]] == ["a-1", "a-2"]
    assert [x["EventSourceArn"] for x in client.list_replays(EventSourceArn=ARCHIVE_ARN)["Replays"]] == [ARCHIVE_ARN] * 3
    page = client.list_replays(Limit=2)
    assert len(page["Replays"]) == 2 and client.list_replays(NextToken=page["NextToken"])["Replays"][0]["ReplayName"] == "b-1"
    wait_for(lambda: len(client.list_replays(State="COMPLETED")["Replays"]) == 3, what="3 completed replays")
    assert error(lambda: client.list_replays(NamePrefix="a", State="RUNNING"))[0] == "ValidationException"


@pytest.mark.cluster
def test_cli_starts_shows_and_refuses_to_cancel_a_finished_replay(stack, redis_url):
    setup(stack, redis_url)
    stack.start_broker()
    base = int(time.time()) - 3600
    frm, to = datetime.fromtimestamp(base, UTC).isoformat(), str(base + 10)
    missing = stack.bus("replay", "start", "c1", "--archive", "nope", "--from", frm, "--to", to)
    assert missing.returncode == 2 and "no archive nope" in missing.stderr
    unknown_rule = stack.bus("replay", "start", "c1", "--archive", "arch", "--from", frm, "--to", to, "--rule", "zzz")
    assert unknown_rule.returncode == 2 and "no rule zzz on bus default" in unknown_rule.stderr
    ok = stack.bus("replay", "start", "c1", "--archive", "arch", "--from", frm, "--to", to,
                   "--rule", "picky", "--rules", str(stack.rules_dir))
    assert ok.returncode == 0, ok.stderr
    shown = wait_for(lambda: (s := json.loads(stack.bus("replay", "status", "c1").stdout))["state"] == "COMPLETED" and s,
                     what="c1 COMPLETED")
    assert (shown["rules"], shown["archive"], shown["event_start_ms"]) == (["picky"], "arch", base * 1000)
    assert "c1  COMPLETED" in stack.bus("replay", "status").stdout
    cancel = stack.bus("replay", "cancel", "c1")
    assert cancel.returncode == 2 and "is COMPLETED" in cancel.stderr


def test_an_archive_made_through_boto3_is_replayed_and_replayed_events_are_not_archived_again(
        stack, redis_url, events_client):
    stack.env.update({"BUS_ACCOUNT": ACCOUNT, "BUS_REGION": REGION})
    stack.write_rules(RULES)
    client = events_client(stack.start_broker().url)
    stack.start_worker()
    client.create_archive(ArchiveName="arch", EventSourceArn=BUS_ARN)
    base = int(time.time()) - 3600
    inside, _ = put_window(client, base, 4)
    stack.wait_records(12)
    assert client.describe_archive(ArchiveName="arch")["EventCount"] == 6
    start(client, "via-boto3", base, 4, FilterArns=[PICKY_ARN])
    wait_state(client, "via-boto3", "COMPLETED")
    recs = wait_for(lambda: len(got := replayed(stack, "via-boto3")) >= 4 and got, what="4 replayed calls")
    assert sorted(r["event"]["id"] for r in recs) == sorted(inside)
    assert client.describe_archive(ArchiveName="arch")["EventCount"] == 6
