"""busway's SQS-compatible queues through boto3's `sqs` client (JSON protocol): queues, messages,
visibility, long polling, batches, redrive to a dead-letter queue, and SQS's errors."""
from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config


@pytest.fixture
def sqs(stack):
    stack.write_rules("")
    stack.start_broker()
    return boto3.client("sqs", endpoint_url=stack.url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def test_create_get_list_and_delete_a_queue(sqs):
    url = sqs.create_queue(QueueName="orders")["QueueUrl"]
    assert url.endswith("/000000000000/orders") or url.endswith("/orders")
    assert sqs.create_queue(QueueName="orders")["QueueUrl"] == url  # the same attributes: the same queue
    assert sqs.get_queue_url(QueueName="orders")["QueueUrl"] == url
    sqs.create_queue(QueueName="other")
    assert [u.rsplit("/", 1)[1] for u in sqs.list_queues()["QueueUrls"]] == ["orders", "other"]
    assert [u.rsplit("/", 1)[1] for u in sqs.list_queues(QueueNamePrefix="ord")["QueueUrls"]] == ["orders"]
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="orders")


def test_creating_a_queue_again_with_other_attributes_is_queue_name_exists(sqs):
    sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "10"})
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "20"})


def test_a_sent_message_is_received_with_its_attributes_and_md5(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello", MessageAttributes={
        "kind": {"DataType": "String", "StringValue": "greeting"}})
    assert sent["MD5OfMessageBody"] == "5d41402abc4b2a76b9719d911017c592"
    [m] = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"])["Messages"]
    assert m["Body"] == "hello" and m["MessageId"] == sent["MessageId"] and m["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert m["MessageAttributes"]["kind"]["StringValue"] == "greeting"
    assert m["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert m["Attributes"]["ApproximateReceiveCount"] == "1" and int(m["Attributes"]["SentTimestamp"]) > 0


def test_a_received_message_is_invisible_until_its_visibility_timeout_ends(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="once")
    [first] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    time.sleep(1.2)
    [again] = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert again["MessageId"] == first["MessageId"] and again["ReceiptHandle"] != first["ReceiptHandle"]
    assert again["Attributes"] == {"ApproximateReceiveCount": "2"}


def test_deleting_with_the_latest_receipt_deletes_and_a_stale_one_does_not(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    [old] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
    [new] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=old["ReceiptHandle"])  # succeeds, as on SQS, and keeps it
    [kept] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"]
    assert kept["MessageId"] == new["MessageId"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=kept["ReceiptHandle"])
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")


def test_change_message_visibility_makes_a_message_visible_at_once(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    [m] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=300)["Messages"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    [again] = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_a_long_poll_returns_as_soon_as_a_message_arrives(sqs):
    import threading
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    threading.Timer(0.5, lambda: sqs.send_message(QueueUrl=url, MessageBody="late")).start()
    started = time.monotonic()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)["Messages"]
    waited = time.monotonic() - started
    assert got[0]["Body"] == "late" and 0.4 < waited < 2.0


def test_a_long_poll_with_nothing_arriving_waits_its_time_and_answers_empty(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - started >= 0.95


def test_batches_send_and_delete_up_to_ten_with_per_entry_failures(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": f"m{i}"} for i in range(9)]
                                  + [{"Id": "bad", "MessageBody": "x", "DelaySeconds": 901}])
    assert len(sent["Successful"]) == 9 and [f["Id"] for f in sent["Failed"]] == ["bad"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in got) == sorted(f"m{i}" for i in range(9))
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]}
                                                               for i, m in enumerate(got)])
    assert len(deleted["Successful"]) == 9 and deleted["Failed"] == []
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": "m"} for i in range(11)])


def test_after_max_receive_count_a_message_moves_to_the_dead_letter_queue(sqs):
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="work", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]["Body"] == "poison"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # the third receive moves it instead
    [moved] = sqs.receive_message(QueueUrl=dlq)["Messages"]
    assert moved["Body"] == "poison"
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    assert policy == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}


def test_delayed_messages_wait_their_delay(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attrs["Attributes"] == {"ApproximateNumberOfMessagesDelayed": "1"}
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=3)["Messages"][0]["Body"] == "later"


def test_purge_queue_removes_every_message(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(5)])
    sqs.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)


def test_bad_parameters_are_invalid_parameter_value_and_unknown_queues_do_not_exist(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for call in (lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11),
                 lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=25),
                 lambda: sqs.create_queue(QueueName="bad name!"),
                 lambda: sqs.create_queue(QueueName="f.fifo", Attributes={"FifoQueue": "true"})):
        with pytest.raises(sqs.exceptions.ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url.rsplit("/", 1)[0] + "/nope", MessageBody="m")
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.create_queue(QueueName="q2", Attributes={"Colour": "blue"})


@pytest.mark.parametrize("operation, body", [
    ("ReceiveMessage", {"AttributeNames": 5}),
    ("ReceiveMessage", {"MessageSystemAttributeNames": [[1]]}),
    ("SendMessage", {"MessageBody": "x", "MessageSystemAttributes": {"AWSTraceHeader": 5}}),
    ("SendMessage", {"MessageBody": "x", "MessageAttributes": {"k": {"DataType": 5}}}),
    ("ListQueues", {"QueueNamePrefix": 5}),
])
def test_a_member_of_the_wrong_type_is_invalid_parameter_value(stack, sqs, operation, body):
    import urllib.error
    import urllib.request
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    req = urllib.request.Request(stack.url + "/", data=json.dumps({"QueueUrl": url, **body}).encode(),
                                 headers={"X-Amz-Target": f"AmazonSQS.{operation}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400
    assert err.value.headers["x-amzn-query-error"] == "InvalidParameterValue;Sender"
