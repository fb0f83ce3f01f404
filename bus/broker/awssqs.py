"""SQS's JSON protocol on the broker (`POST /` with `X-Amz-Target: AmazonSQS.<Op>`, AWS JSON 1.0), as
boto3's `sqs` client speaks it since botocore 1.34.90: CreateQueue, GetQueueUrl, ListQueues,
DeleteQueue, GetQueueAttributes, SetQueueAttributes, SendMessage(Batch), ReceiveMessage (long
polling), DeleteMessage(Batch), ChangeMessageVisibility(Batch), PurgeQueue.

Shapes, limits and errors follow ../shared/reference/aws-auth-invoke-sqs.md §3: errors are 400 with
`x-amzn-query-error: <Code>;Sender` and `{"__type": "com.amazonaws.sqs#<Shape>", "message"}`.
Standard queues only: a FIFO queue (`.fifo`, FifoQueue) is refused, not half-made.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Awaitable, Callable

import msgspec
from aiohttp import web

from bus import identity
from bus.broker.awsapi import origin_of
from bus.ids import new_id
from bus.observe import metrics
from bus.broker.sqsshapes import (
    CONTENT_TYPE, SqsError, attributes_md5, attributes_out, check_types, error_response, invalid, message_out,
    no_queue, parse_attributes,
)
from bus.config.model import QUEUE_NAME
from bus.store.sqs import Message, NoSuchQueue, QueueAttributes, SqsStore, new_message, parse_receipt

TARGET_PREFIX = "AmazonSQS."
MAX_BATCH = 10
MAX_BATCH_BYTES = 1048576
POLL_SECONDS = 0.05  # long polling: how often a waiting receive looks again (sends here wake it at once)
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

class Queues:
    """The broker's side of the queues: the store, and the receives waiting on each queue here."""

    def __init__(self, store: SqsStore):
        self.store = store
        self._arrived: dict[str, asyncio.Event] = {}

    def arrived(self, name: str) -> asyncio.Event:
        return self._arrived.setdefault(name, asyncio.Event())

    def notify(self, name: str) -> None:
        event = self._arrived.get(name)
        if event is not None:
            event.set()


async def handle(request: web.Request, raw: bytes) -> web.Response:
    """One SQS call, answered in its shapes."""
    target = request.headers.get("X-Amz-Target", "")
    op = OPERATIONS.get(target[len(TARGET_PREFIX):])
    try:
        if op is None:
            raise SqsError("InvalidAction", f"The action {target[len(TARGET_PREFIX):] or '(none)'} is not valid "
                                            "for this endpoint.")
        try:
            body = msgspec.json.decode(raw) if raw.strip() else {}
        except msgspec.DecodeError:
            raise SqsError("SerializationException", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise SqsError("SerializationException", "The request body must be a JSON object.")
        check_types(body)
        answer = await op(request, body)
    except SqsError as err:
        return error_response(err)
    return web.Response(body=msgspec.json.encode(answer), content_type=CONTENT_TYPE,
                        headers={"x-amzn-RequestId": new_id()})


def queues_of(request: web.Request) -> Queues:
    return request.app["broker"].sqs


# --- names, URLs and permissions -----------------------------------------------------------------

def queue_url(request: web.Request, name: str) -> str:
    return f"{request.scheme}://{request.host}/{identity.account()}/{name}"


def queue_arn(request: web.Request, name: str) -> str:
    who = origin_of(request)
    return f"arn:aws:sqs:{who.region}:{who.account}:{name}"


def name_of_url(url: Any) -> str:
    """The queue a QueueUrl names: its last path segment, whatever the host (boto3 never uses it)."""
    if not isinstance(url, str) or not url:
        raise invalid("Value for parameter QueueUrl is invalid. Reason: a QueueUrl is required.")
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if not QUEUE_NAME.match(name):
        raise no_queue()
    return name


def _principal_may(request: web.Request, name: str) -> bool:
    principal = request.get("principal")
    return principal is None or principal.may_use_queue(name)


def _check(request: web.Request, name: str, action: str) -> None:
    if not _principal_may(request, name):
        principal = request["principal"]
        raise SqsError("AccessDenied", f"User: arn:aws:iam::{identity.account()}:user/{principal.name} is not "
                                       f"authorized to perform: sqs:{action} on resource: {queue_arn(request, name)}",
                       "AccessDenied", 403)


def _admin(request: web.Request, action: str) -> None:
    principal = request.get("principal")
    if principal is not None and not principal.admin:
        raise SqsError("AccessDenied", f"User: arn:aws:iam::{identity.account()}:user/{principal.name} is not "
                                       f"authorized to perform: sqs:{action}: it is not an admin principal",
                       "AccessDenied", 403)


async def _existing(request: web.Request, body: dict, action: str) -> tuple[str, QueueAttributes]:
    name = name_of_url(body.get("QueueUrl"))
    _check(request, name, action)
    attrs = await queues_of(request).store.get(name)
    if attrs is None:
        raise no_queue()
    return name, attrs


# --- operations ----------------------------------------------------------------------------------

async def create_queue(request: web.Request, body: dict) -> dict:
    _admin(request, "CreateQueue")
    name = body.get("QueueName")
    if not isinstance(name, str) or not name:
        raise invalid("Value for parameter QueueName is invalid. Reason: a QueueName is required.")
    if name.endswith(".fifo"):
        raise invalid("FIFO queues are not supported by busway (standard queues only).")
    if not QUEUE_NAME.match(name):
        raise invalid("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")
    attrs = parse_attributes(body.get("Attributes"), QueueAttributes())
    existing = await queues_of(request).store.create(name, attrs)
    if existing is not None and _settings(existing) != _settings(attrs):
        raise SqsError("QueueAlreadyExists", "A queue already exists with the same name and a different value "
                                             "for attribute(s)", "QueueNameExists")
    return {"QueueUrl": queue_url(request, name)}


def _settings(a: QueueAttributes) -> QueueAttributes:
    return msgspec.structs.replace(a, created=0.0, modified=0.0, declared=False)


async def get_queue_url(request: web.Request, body: dict) -> dict:
    name = body.get("QueueName")
    if not isinstance(name, str) or not QUEUE_NAME.match(name):
        raise no_queue()
    _check(request, name, "GetQueueUrl")
    if await queues_of(request).store.get(name) is None:
        raise no_queue()
    return {"QueueUrl": queue_url(request, name)}


async def list_queues(request: web.Request, body: dict) -> dict:
    prefix = body.get("QueueNamePrefix") or ""
    limit = body.get("MaxResults", 1000)
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise invalid("Value for parameter MaxResults is invalid. Reason: must be between 1 and 1000.")
    names = sorted(n for n in await queues_of(request).store.all() if n.startswith(prefix) and _principal_may(request, n))
    after = body.get("NextToken")
    if after:
        names = [n for n in names if n > str(after)]
    page = names[:limit]
    out: dict[str, Any] = {"QueueUrls": [queue_url(request, n) for n in page]}
    if len(names) > limit:
        out["NextToken"] = page[-1]
    return out


async def delete_queue(request: web.Request, body: dict) -> dict:
    _admin(request, "DeleteQueue")
    name, attrs = await _existing(request, body, "DeleteQueue")
    if attrs.declared:
        raise invalid(f"Queue {name} is declared in a rules file's queues:; remove it there.")
    await queues_of(request).store.delete(name)
    return {}


async def purge_queue(request: web.Request, body: dict) -> dict:
    _admin(request, "PurgeQueue")
    name, _ = await _existing(request, body, "PurgeQueue")
    await queues_of(request).store.purge(name)
    return {}


async def get_queue_attributes(request: web.Request, body: dict) -> dict:
    name, attrs = await _existing(request, body, "GetQueueAttributes")
    wanted = body.get("AttributeNames") or []
    if not isinstance(wanted, list):
        raise invalid("AttributeNames must be a list.")
    counts = await queues_of(request).store.counts(name)
    return {"Attributes": attributes_out(lambda n: queue_arn(request, n), name, attrs, counts, wanted)}


async def set_queue_attributes(request: web.Request, body: dict) -> dict:
    _admin(request, "SetQueueAttributes")
    name, attrs = await _existing(request, body, "SetQueueAttributes")
    if attrs.declared:
        raise invalid(f"Queue {name} is declared in a rules file's queues:; change it there.")
    await queues_of(request).store.put(name, parse_attributes(body.get("Attributes") or {}, attrs))
    return {}


def _message_of(entry: dict, attrs: QueueAttributes, request: web.Request) -> tuple[Message, int]:
    body = entry.get("MessageBody")
    if not isinstance(body, str) or not body:
        raise invalid("The request must contain the parameter MessageBody.")
    delay = entry.get("DelaySeconds", attrs.delay_seconds)
    if not isinstance(delay, int) or not 0 <= delay <= 900:
        raise invalid("Value for parameter DelaySeconds is invalid. Reason: must be between 0 and 900.")
    if entry.get("MessageGroupId") or entry.get("MessageDeduplicationId"):
        raise invalid("MessageGroupId and MessageDeduplicationId are for FIFO queues, which busway does not have.")
    attributes = entry.get("MessageAttributes") or {}
    if not isinstance(attributes, dict) or len(attributes) > 10:
        raise invalid("MessageAttributes: at most 10, each {DataType, StringValue or BinaryValue}.")
    size = len(body.encode()) + sum(len(k) + len(json.dumps(v)) for k, v in attributes.items())
    if size > attrs.maximum_message_size:
        raise invalid(f"One or more parameters are invalid. Reason: Message must be shorter than "
                      f"{attrs.maximum_message_size} bytes.")
    if any(ch in body for ch in "\x00\ufffe\uffff"):
        raise invalid("Invalid characters found in the message body (see SQS's allowed Unicode characters).")
    system = entry.get("MessageSystemAttributes") or {}
    trace = (system.get("AWSTraceHeader") or {}).get("StringValue", "") if isinstance(system, dict) else ""
    principal = request.get("principal")
    sender = principal.access_key_id if principal is not None else "busway"
    return new_message(body, attributes, attributes_md5(attributes), sender, trace), delay


async def send_message(request: web.Request, body: dict) -> dict:
    name, attrs = await _existing(request, body, "SendMessage")
    message, delay = _message_of(body, attrs, request)
    await _send(request, name, [(message, delay)])
    out = {"MessageId": message.id, "MD5OfMessageBody": message.md5}
    if message.attributes_md5:
        out["MD5OfMessageAttributes"] = message.attributes_md5
    return out


async def send_message_batch(request: web.Request, body: dict) -> dict:
    name, attrs = await _existing(request, body, "SendMessage")
    entries = _batch(body)
    total = sum(len(str(e.get("MessageBody", "")).encode()) for e in entries)
    if total > MAX_BATCH_BYTES:
        raise SqsError("AWS.SimpleQueueService.BatchRequestTooLong", "Batch requests cannot be longer than "
                                                                     f"{MAX_BATCH_BYTES} bytes.", "BatchRequestTooLong")
    good, failed = [], []
    for entry in entries:
        try:
            good.append((entry["Id"], *_message_of(entry, attrs, request)))
        except SqsError as err:
            failed.append({"Id": entry["Id"], "SenderFault": True, "Code": err.code, "Message": err.message})
    if good:
        await _send(request, name, [(m, d) for _, m, d in good])
    ok = [{"Id": i, "MessageId": m.id, "MD5OfMessageBody": m.md5,
           **({"MD5OfMessageAttributes": m.attributes_md5} if m.attributes_md5 else {})} for i, m, _ in good]
    return {"Successful": ok, "Failed": failed}


async def _send(request: web.Request, name: str, messages: list[tuple[Message, int]]) -> None:
    queues = queues_of(request)
    try:
        await queues.store.send(name, messages)
    except NoSuchQueue:
        raise no_queue() from None
    metrics.SQS_MESSAGES.labels(name, "sent").inc(len(messages))
    queues.notify(name)


def _batch(body: dict) -> list[dict]:
    entries = body.get("Entries")
    if not isinstance(entries, list) or not entries:
        raise SqsError("AWS.SimpleQueueService.EmptyBatchRequest", "There should be at least one "
                                                                   "SendMessageBatchRequestEntry in the request.",
                       "EmptyBatchRequest")
    if len(entries) > MAX_BATCH:
        raise SqsError("AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                       f"Maximum number of entries per request are {MAX_BATCH}.", "TooManyEntriesInBatchRequest")
    ids = [e.get("Id") if isinstance(e, dict) else None for e in entries]
    if any(not isinstance(i, str) or not _BATCH_ID.match(i) for i in ids):
        raise SqsError("AWS.SimpleQueueService.InvalidBatchEntryId", "A batch entry id can only contain "
                                                                     "alphanumeric characters, hyphens and underscores. "
                                                                     "It can be at most 80 letters long.",
                       "InvalidBatchEntryId")
    if len(set(ids)) != len(ids):
        raise SqsError("AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "Two or more batch entries in the "
                                                                          "request have the same Id.",
                       "BatchEntryIdsNotDistinct")
    return entries


async def receive_message(request: web.Request, body: dict) -> dict:
    name, attrs = await _existing(request, body, "ReceiveMessage")
    count = _int(body, "MaxNumberOfMessages", 1, 1, 10)
    wait = _int(body, "WaitTimeSeconds", attrs.receive_message_wait_time_seconds, 0, 20)
    visibility = _int(body, "VisibilityTimeout", None, 0, 43200)
    queues = queues_of(request)
    deadline = time.monotonic() + wait
    while True:
        arrived = queues.arrived(name)
        arrived.clear()
        try:
            got = await queues.store.receive(name, attrs, count, visibility)
        except NoSuchQueue:
            raise no_queue() from None
        left = deadline - time.monotonic()
        if got or left <= 0:
            break
        try:
            await asyncio.wait_for(arrived.wait(), min(POLL_SECONDS, left))
        except asyncio.TimeoutError:
            pass
    if got:
        metrics.SQS_MESSAGES.labels(name, "received").inc(len(got))
    system = set(body.get("MessageSystemAttributeNames") or []) | set(body.get("AttributeNames") or [])
    wanted_attrs = body.get("MessageAttributeNames") or []
    messages = [message_out(r, system, wanted_attrs) for r in got]
    return {"Messages": messages} if messages else {}


def _int(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"Value {value} for parameter {key} is invalid. Reason: must be between {low} and {high}.")
    return value


def _receipt(handle: Any) -> tuple[str, str]:
    parsed = parse_receipt(handle) if isinstance(handle, str) else None
    if parsed is None:
        raise SqsError("ReceiptHandleIsInvalid", f"The input receipt handle \"{handle}\" is not a valid receipt handle.")
    return parsed


async def delete_message(request: web.Request, body: dict) -> dict:
    name, _ = await _existing(request, body, "DeleteMessage")
    results = await queues_of(request).store.delete_messages(name, [_receipt(body.get("ReceiptHandle"))])
    metrics.SQS_MESSAGES.labels(name, "deleted").inc(results.count(1))
    return {}  # a stale receipt or a deleted message succeeds too, as on SQS


async def delete_message_batch(request: web.Request, body: dict) -> dict:
    name, _ = await _existing(request, body, "DeleteMessage")
    entries = _batch(body)
    ok, failed, receipts = [], [], []
    for entry in entries:
        parsed = parse_receipt(entry.get("ReceiptHandle")) if isinstance(entry.get("ReceiptHandle"), str) else None
        if parsed is None:
            failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid",
                           "Message": "The receipt handle is not valid."})
        else:
            receipts.append((entry["Id"], parsed))
    if receipts:
        results = await queues_of(request).store.delete_messages(name, [p for _, p in receipts])
        metrics.SQS_MESSAGES.labels(name, "deleted").inc(results.count(1))
        ok = [{"Id": i} for i, _ in receipts]
    return {"Successful": ok, "Failed": failed}


async def change_message_visibility(request: web.Request, body: dict) -> dict:
    name, _ = await _existing(request, body, "ChangeMessageVisibility")
    seconds = _int(body, "VisibilityTimeout", None, 0, 43200)
    if seconds is None:
        raise invalid("The request must contain the parameter VisibilityTimeout.")
    [result] = await queues_of(request).store.change_visibility(name, [_receipt(body.get("ReceiptHandle"))], seconds)
    if result == -2:
        raise SqsError("AWS.SimpleQueueService.MessageNotInflight", "Message does not exist or is not available "
                                                                    "for visibility timeout change.", "MessageNotInflight")
    return {}


async def change_message_visibility_batch(request: web.Request, body: dict) -> dict:
    name, _ = await _existing(request, body, "ChangeMessageVisibility")
    ok, failed = [], []
    for entry in _batch(body):
        parsed = parse_receipt(entry.get("ReceiptHandle")) if isinstance(entry.get("ReceiptHandle"), str) else None
        seconds = entry.get("VisibilityTimeout")
        if parsed is None or not isinstance(seconds, int) or not 0 <= seconds <= 43200:
            failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "InvalidParameterValue",
                           "Message": "A valid ReceiptHandle and a VisibilityTimeout of 0 to 43200 are required."})
            continue
        [result] = await queues_of(request).store.change_visibility(name, [parsed], seconds)
        if result == -2:
            failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "AWS.SimpleQueueService.MessageNotInflight",
                           "Message": "Message does not exist or is not available for visibility timeout change."})
        else:
            ok.append({"Id": entry["Id"]})
    return {"Successful": ok, "Failed": failed}


Operation = Callable[[web.Request, dict], Awaitable[dict]]
OPERATIONS: dict[str, Operation] = {
    "CreateQueue": create_queue, "GetQueueUrl": get_queue_url, "ListQueues": list_queues,
    "DeleteQueue": delete_queue, "PurgeQueue": purge_queue, "GetQueueAttributes": get_queue_attributes,
    "SetQueueAttributes": set_queue_attributes, "SendMessage": send_message, "SendMessageBatch": send_message_batch,
    "ReceiveMessage": receive_message, "DeleteMessage": delete_message, "DeleteMessageBatch": delete_message_batch,
    "ChangeMessageVisibility": change_message_visibility,
    "ChangeMessageVisibilityBatch": change_message_visibility_batch,
}
