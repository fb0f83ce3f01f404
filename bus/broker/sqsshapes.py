"""SQS's wire shapes for bus.broker.awssqs, pure: the request members and their types, SQS's errors,
queue attributes in and out, a received message out, and the message-attribute MD5."""
from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any, Callable

import msgspec
from aiohttp import web

from bus.config.model import QUEUE_BOUNDS
from bus.ids import new_id
from bus.store.sqs import QueueAttributes, Received

CONTENT_TYPE = "application/x-amz-json-1.0"

# AWS attribute name -> (QueueAttributes field, low, high): the bounds a rules file's queue has too
_NUMERIC = {name: (field, *QUEUE_BOUNDS[field]) for name, field in (
    ("VisibilityTimeout", "visibility_timeout"), ("MessageRetentionPeriod", "message_retention_period"),
    ("DelaySeconds", "delay_seconds"), ("ReceiveMessageWaitTimeSeconds", "receive_message_wait_time_seconds"),
    ("MaximumMessageSize", "maximum_message_size"))}
_SETTABLE = {*_NUMERIC, "RedrivePolicy", "RedriveAllowPolicy", "Policy", "SqsManagedSseEnabled",
             "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"}


# --- the request's members and their types (checked before any operation reads them) -------------

class _Members(msgspec.Struct):
    """Members as SQS's model types them; absent ones are None (each operation says what it needs)."""


class MessageAttributeValue(_Members, rename="pascal"):
    data_type: str | None = None
    string_value: str | None = None
    binary_value: str | None = None  # base64 in the JSON protocol
    string_list_values: list[str] | None = None
    binary_list_values: list[str] | None = None


class BatchEntry(_Members, rename="pascal"):
    id: str | None = None
    message_body: str | None = None
    delay_seconds: int | None = None
    message_attributes: dict[str, MessageAttributeValue] | None = None
    message_system_attributes: dict[str, MessageAttributeValue] | None = None
    message_group_id: str | None = None
    message_deduplication_id: str | None = None
    receipt_handle: str | None = None
    visibility_timeout: int | None = None


class SqsRequest(BatchEntry, rename="pascal"):
    queue_name: str | None = None
    queue_url: str | None = None
    queue_name_prefix: str | None = None
    queue_owner_a_w_s_account_id: str | None = None
    attributes: dict[str, str] | None = None
    tags: dict[str, str] | None = msgspec.field(default=None, name="tags")  # lower case in SQS's model
    attribute_names: list[str] | None = None
    message_attribute_names: list[str] | None = None
    message_system_attribute_names: list[str] | None = None
    max_number_of_messages: int | None = None
    wait_time_seconds: int | None = None
    receive_request_attempt_id: str | None = None
    max_results: int | None = None
    next_token: str | None = None
    entries: list[BatchEntry] | None = None


def check_types(body: dict) -> None:
    """A member of the wrong type is SQS's InvalidParameterValue, before anything reads it."""
    try:
        msgspec.convert(body, SqsRequest)
    except msgspec.ValidationError as exc:
        raise invalid(f"A member has the wrong type: {exc}") from None


class SqsError(Exception):
    def __init__(self, code: str, message: str, shape: str | None = None, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.shape, self.status = code, message, shape or code, status


def error_response(err: SqsError) -> web.Response:
    body = {"__type": f"com.amazonaws.sqs#{err.shape}", "message": err.message}
    return web.Response(body=msgspec.json.encode(body), status=err.status, content_type=CONTENT_TYPE,
                        headers={"x-amzn-query-error": f"{err.code};Sender", "x-amzn-RequestId": new_id()})


def no_queue() -> SqsError:
    return SqsError("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.", "QueueDoesNotExist")


def invalid(message: str) -> SqsError:
    return SqsError("InvalidParameterValue", message)


# --- attributes ----------------------------------------------------------------------------------

def parse_attributes(raw: Any, base: QueueAttributes) -> QueueAttributes:
    """SQS's string attributes onto `base`; InvalidAttributeName / InvalidAttributeValue as SQS says."""
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise invalid("Attributes must be a map of names to strings.")
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"):
            raise invalid(f"{key}: FIFO queues are not supported by busway (standard queues only).")
        if key not in _SETTABLE:
            raise SqsError("InvalidAttributeName", f"Unknown Attribute {key}.")
        if key in _NUMERIC:
            field, low, high = _NUMERIC[key]
            try:
                number = int(str(value))
            except ValueError:
                number = low - 1
            if not low <= number <= high:
                raise SqsError("InvalidAttributeValue", f"Invalid value for the parameter {key}: must be "
                                                        f"{low} to {high}.")
            changes[field] = number
        elif key == "RedrivePolicy":
            changes.update(_redrive(value))
        elif key == "RedriveAllowPolicy":
            changes["redrive_allow_policy"] = str(value)
        # Policy and encryption settings are accepted and not enforced (busway's auth decides; Redis holds it).
    return msgspec.structs.replace(base, **changes)


def _redrive(value: Any) -> dict[str, Any]:
    if value in ("", None):
        return {"dead_letter_queue": "", "max_receive_count": 0}
    try:
        policy = json.loads(value) if isinstance(value, str) else value
        arn, count = policy["deadLetterTargetArn"], int(policy["maxReceiveCount"])
    except (ValueError, TypeError, KeyError):
        raise SqsError("InvalidAttributeValue", "Invalid value for the parameter RedrivePolicy: it is JSON with "
                                                "deadLetterTargetArn and maxReceiveCount.") from None
    if not 1 <= count <= 1000:
        raise SqsError("InvalidAttributeValue", "Value for parameter RedrivePolicy maxReceiveCount must be 1 to 1000.")
    return {"dead_letter_queue": str(arn).rsplit(":", 1)[-1], "max_receive_count": count}


def attributes_out(arn_of: Callable[[str], str], name: str, attrs: QueueAttributes, counts: tuple[int, int, int],
                   wanted: list[str]) -> dict[str, str]:
    """GetQueueAttributes' answer; `arn_of` names a queue's ARN (in the caller's region)."""
    visible, in_flight, delayed = counts
    every = {
        "QueueArn": arn_of(name),
        "ApproximateNumberOfMessages": str(visible),
        "ApproximateNumberOfMessagesNotVisible": str(in_flight),
        "ApproximateNumberOfMessagesDelayed": str(delayed),
        "CreatedTimestamp": str(int(attrs.created)),
        "LastModifiedTimestamp": str(int(attrs.modified)),
        "VisibilityTimeout": str(attrs.visibility_timeout),
        "MessageRetentionPeriod": str(attrs.message_retention_period),
        "DelaySeconds": str(attrs.delay_seconds),
        "ReceiveMessageWaitTimeSeconds": str(attrs.receive_message_wait_time_seconds),
        "MaximumMessageSize": str(attrs.maximum_message_size),
        "SqsManagedSseEnabled": "false",
    }
    if attrs.dead_letter_queue:
        every["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn_of(attrs.dead_letter_queue),
                                             "maxReceiveCount": attrs.max_receive_count}, separators=(",", ":"))
    if attrs.redrive_allow_policy:
        every["RedriveAllowPolicy"] = attrs.redrive_allow_policy
    if not wanted or "All" in wanted:
        return every
    unknown = [w for w in wanted if w not in every and w not in _SETTABLE and w != "Policy"]
    if unknown:
        raise SqsError("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
    return {k: v for k, v in every.items() if k in wanted}


def message_out(r: Received, system: set[str], wanted: list[str]) -> dict:
    """A received message as ReceiveMessage lists it: the system attributes and message attributes asked for."""
    m = r.message
    every = {"SenderId": m.sender, "SentTimestamp": str(m.sent), "ApproximateReceiveCount": str(r.receive_count),
             "ApproximateFirstReceiveTimestamp": str(r.first_received)}
    if m.trace_header:
        every["AWSTraceHeader"] = m.trace_header
    out: dict[str, Any] = {"MessageId": m.id, "ReceiptHandle": r.receipt, "MD5OfBody": m.md5, "Body": m.body}
    if system:
        out["Attributes"] = every if "All" in system else {k: v for k, v in every.items() if k in system}
    if wanted and m.attributes:
        picked = {k: v for k, v in m.attributes.items()
                  if "All" in wanted or ".*" in wanted or k in wanted
                  or any(w.endswith(".*") and k.startswith(w[:-1]) for w in wanted)}
        if picked:
            out["MessageAttributes"] = picked
            out["MD5OfMessageAttributes"] = attributes_md5(picked)
    return out


# --- message attribute MD5 (SQS's encoding: sorted names, each length-prefixed) -----------------

def attributes_md5(attributes: dict[str, Any]) -> str:
    if not attributes:
        return ""
    digest = hashlib.md5()
    for name in sorted(attributes):
        value = attributes[name] if isinstance(attributes[name], dict) else {}
        data_type = str(value.get("DataType", ""))
        _put(digest, name.encode())
        _put(digest, data_type.encode())
        if "BinaryValue" in value:
            digest.update(b"\x02")
            binary = value["BinaryValue"]
            _put(digest, base64.b64decode(binary) if isinstance(binary, str) else bytes(binary))
        else:
            digest.update(b"\x01")
            _put(digest, str(value.get("StringValue", "")).encode())
    return digest.hexdigest()


def _put(digest, data: bytes) -> None:
    digest.update(struct.pack(">I", len(data)))
    digest.update(data)
