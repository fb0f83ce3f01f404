"""Authentication and authorization through a real `bus serve --credentials`: boto3 with the
configured keys, raw signed and unsigned requests, and bearer tokens on the native API."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ADMIN = ("AKIAADMIN0000001", "admin-secret")
SHOP = ("AKIASHOP00000001", "shop-secret")
SHOP_TOKEN = "shop-token-0123456789"
CREDENTIALS = f"""\
principals:
  - name: admin
    access_key_id: {ADMIN[0]}
    secret_access_key: {ADMIN[1]}
    buses: ["*"]
    admin: true
  - name: shop
    access_key_id: {SHOP[0]}
    secret_access_key_from_env: SHOP_SECRET
    token: {SHOP_TOKEN}
    buses: [shop]
"""
RULES = """\
buses:
  - name: shop
rules:
  - name: seen
    event_pattern: {source: [s]}
    targets:
      - {id: t, function: handlers.record}
"""
ENTRY = {"Source": "s", "DetailType": "d", "Detail": "{}"}


@pytest.fixture
def broker(stack, tmp_path):
    (tmp_path / "credentials.yaml").write_text(CREDENTIALS)
    stack.env["SHOP_SECRET"] = SHOP[1]
    stack.write_rules(RULES)
    return stack.start_broker(extra=("--credentials", str(tmp_path / "credentials.yaml")))


def request(url: str, body: bytes, headers: dict[str, str], method: str = "POST"):
    """(status, headers, JSON body) of a raw request, errors included."""
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


def sign(url: str, body: bytes, key: tuple[str, str], headers: dict[str, str], region: str = "us-east-1"):
    """Headers botocore would send for this request, signed with `key`."""
    req = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(*key), "events", region).add_auth(req)
    return dict(req.headers.items())


def aws_headers(op: str) -> dict[str, str]:
    return {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"AWSEvents.{op}"}


def error_code(call) -> tuple[str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_boto3_with_the_admin_keys_puts_events_and_rules(broker, events_client):
    admin = events_client(broker.url, *ADMIN, region="eu-central-1")  # any region signs
    assert admin.put_events(Entries=[ENTRY])["FailedEntryCount"] == 0
    admin.put_rule(Name="new", EventPattern='{"source":["x"]}')
    assert "new" in [r["Name"] for r in admin.list_rules()["Rules"]]


def test_a_wrong_secret_an_unknown_key_and_no_signature_each_get_their_code(broker, events_client):
    assert error_code(lambda: events_client(broker.url, ADMIN[0], "wrong").put_events(Entries=[ENTRY])) == \
        ("InvalidSignatureException", 400)
    assert error_code(lambda: events_client(broker.url, "AKIANOBODY000001", "x").put_events(Entries=[ENTRY])) == \
        ("UnrecognizedClientException", 400)
    status, headers, body = request(broker.url + "/", b'{"Entries":[]}', aws_headers("PutEvents"))
    assert (status, headers["x-amzn-ErrorType"], body) == (
        400, "MissingAuthenticationTokenException",
        {"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"})
    status, _, body = request(broker.url + "/events", b'{"source":"s","detail-type":"d","detail":{}}', {})
    assert (status, body["__type"]) == (400, "MissingAuthenticationTokenException")


def test_a_body_changed_after_signing_fails_and_the_untouched_one_passes(broker):
    body = json.dumps({"Entries": [ENTRY]}).encode()
    headers = sign(broker.url + "/", body, ADMIN, aws_headers("PutEvents"))
    tampered = body.replace(b'"Source": "s"', b'"Source": "t"')
    status, _, answer = request(broker.url + "/", tampered, headers)
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")
    status, _, answer = request(broker.url + "/", body, headers)
    assert status == 200 and answer["FailedEntryCount"] == 0


def test_a_non_admin_may_read_rules_but_not_change_them(broker, events_client):
    shop = events_client(broker.url, *SHOP)
    assert [r["Name"] for r in shop.list_rules()["Rules"]] == ["seen"]
    assert error_code(lambda: shop.put_rule(Name="mine", EventPattern='{"source":["x"]}')) == ("AccessDeniedException", 400)
    assert error_code(lambda: shop.delete_rule(Name="seen")) == ("AccessDeniedException", 400)
    assert [r["Name"] for r in shop.list_rules()["Rules"]] == ["seen"]


def test_a_non_admin_may_read_api_destinations_but_not_connections_nor_create_either(broker, events_client):
    shop = events_client(broker.url, *SHOP)
    assert shop.list_api_destinations()["ApiDestinations"] == []
    assert error_code(lambda: shop.list_connections()) == ("AccessDeniedException", 400)
    assert error_code(lambda: shop.create_connection(
        Name="c", AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "k", "ApiKeyValue": "v"}})) == ("AccessDeniedException", 400)


def test_put_events_to_a_bus_outside_buses_fails_that_entry_alone(broker, events_client):
    shop = events_client(broker.url, *SHOP)
    answer = shop.put_events(Entries=[{**ENTRY, "EventBusName": "shop"}, ENTRY, {**ENTRY, "EventBusName": "shop"}])
    ok1, denied, ok2 = answer["Entries"]
    assert answer["FailedEntryCount"] == 1 and "EventId" in ok1 and "EventId" in ok2
    assert denied["ErrorCode"] == "AccessDeniedException"
    assert denied["ErrorMessage"] == ("User: arn:aws:iam::000000000000:user/shop is not authorized to perform: "
                                      "events:PutEvents on resource: arn:aws:events:us-east-1:000000000000:event-bus/default")


def test_a_bearer_token_posts_native_events_and_a_wrong_one_is_unrecognized(broker):
    event = json.dumps([{"source": "s", "detail-type": "d", "detail": {}, "bus": "shop"},
                        {"source": "s", "detail-type": "d", "detail": {}}]).encode()
    status, _, body = request(broker.url + "/events", event, {"Authorization": f"Bearer {SHOP_TOKEN}"})
    assert status == 200 and body["FailedEntryCount"] == 1
    assert "EventId" in body["Entries"][0] and body["Entries"][1]["ErrorCode"] == "AccessDeniedException"
    status, _, body = request(broker.url + "/events", event, {"Authorization": "Bearer not-the-token-at-all"})
    assert (status, body["__type"]) == (400, "UnrecognizedClientException")
    status, _, body = request(broker.url + "/", b"{}", {"Authorization": f"Bearer {SHOP_TOKEN}", **aws_headers("ListRules")})
    assert (status, body["__type"]) == (400, "IncompleteSignatureException")  # the AWS API is SigV4 only


def test_the_native_api_takes_sigv4_too_and_dlq_is_admin_only(broker):
    event = b'{"source":"s","detail-type":"d","detail":{},"bus":"shop"}'
    status, _, body = request(broker.url + "/events", event, sign(broker.url + "/events", event, SHOP, {}))
    assert status == 200 and body["FailedEntryCount"] == 0
    status, _, body = request(broker.url + "/dlq/purge", b"{}", sign(broker.url + "/dlq/purge", b"{}", SHOP, {}))
    assert (status, body["__type"]) == (400, "AccessDeniedException")
    status, _, body = request(broker.url + "/dlq/purge", b"{}", sign(broker.url + "/dlq/purge", b"{}", ADMIN, {}))
    assert (status, body) == (200, {"purged": 0})


def sqs_client(url: str, key: tuple[str, str]):
    import boto3
    from botocore.config import Config
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key[0],
                        aws_secret_access_key=key[1], config=Config(retries={"total_max_attempts": 1}))


def test_sqs_auth_failures_carry_sqs_codes_for_boto3(broker):
    assert sqs_client(broker.url, ADMIN).list_queues().get("QueueUrls", []) == []  # the keys work: no queues yet
    assert error_code(lambda: sqs_client(broker.url, (ADMIN[0], "wrong")).list_queues()) == \
        ("SignatureDoesNotMatch", 403)
    assert error_code(lambda: sqs_client(broker.url, ("AKIANOBODY000001", "x")).list_queues()) == \
        ("InvalidClientTokenId", 403)
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"}
    status, answer_headers, _ = request(broker.url + "/", b"{}", headers)
    assert (status, answer_headers["x-amzn-query-error"]) == (403, "MissingAuthenticationToken;Sender")


def test_metrics_and_healthz_stay_open(broker):
    for path in ("/metrics", "/healthz"):
        with urllib.request.urlopen(broker.url + path, timeout=10) as resp:
            assert resp.status == 200


@pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI is not installed")
def test_the_aws_cli_signs_with_the_configured_keys(broker, tmp_path):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=SHOP[0], AWS_SECRET_ACCESS_KEY=SHOP[1], AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    done = subprocess.run(["aws", "--endpoint-url", broker.url, "events", "put-events", "--entries",
                           json.dumps([{**ENTRY, "EventBusName": "shop"}])], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["FailedEntryCount"] == 0, done.stderr
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    done = subprocess.run(["aws", "--endpoint-url", broker.url, "events", "list-rules"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "(InvalidSignatureException)" in done.stderr
