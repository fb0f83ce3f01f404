"""Who this bus is in AWS's terms: its account and region, and every ARN built from or read out of them.

Account and region come from BUS_ACCOUNT / BUS_REGION (read when asked, so a test or a process
that sets them late is obeyed); the AWS API may take the region from a request's SigV4 scope
instead, which is why every builder takes an Identity rather than reading the environment itself.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from bus.config.model import DEFAULT_BUS

DEFAULT_ACCOUNT = "000000000000"
DEFAULT_REGION = "us-east-1"

# Any partition (aws, aws-cn, aws-us-gov), any region and account: clients send ARNs from anywhere.
_BUS_ARN = re.compile(r"^arn:aws[\w-]*:events:[^:]*:[^:]*:event-bus/(.+)$")
_FUNCTION_ARN = re.compile(r"^arn:aws[\w-]*:lambda:[^:]*:[^:]*:function:([^:]+)(?::[^:]+)?$")
# api-destination/<name>/<id>: the id (a uuid) is AWS's; busway finds a destination by its name.
_API_DESTINATION_ARN = re.compile(r"^arn:aws[\w-]*:events:[^:]*:[^:]*:api-destination/([^/]+)(?:/[^/]+)?$")
# arn:<partition>:<service>:<region>:<account>:<resource>; region and account may be empty (IAM, S3).
_ARN = re.compile(r"^arn:(aws[\w-]*):([a-z0-9][a-z0-9-]*):([^:]*):([^:]*):(.+)$")


@dataclass(frozen=True)
class Arn:
    """An ARN's parts: arn:<partition>:<service>:<region>:<account>:<resource>."""

    partition: str
    service: str
    region: str
    account: str
    resource: str


@dataclass(frozen=True)
class Identity:
    """The account and region that events, rules and functions belong to."""

    account: str
    region: str


def account() -> str:
    return os.environ.get("BUS_ACCOUNT", DEFAULT_ACCOUNT)


def region() -> str:
    return os.environ.get("BUS_REGION", DEFAULT_REGION)


def from_env(region_override: str | None = None) -> Identity:
    """BUS_ACCOUNT and BUS_REGION; `region_override` (a SigV4 credential scope) wins over BUS_REGION."""
    return Identity(account=account(), region=region_override or region())


# --- builders ------------------------------------------------------------------------------

def event_bus_arn(who: Identity, bus: str) -> str:
    return f"arn:aws:events:{who.region}:{who.account}:event-bus/{bus}"


def rule_arn(who: Identity, bus: str, name: str) -> str:
    """AWS leaves the bus out of a default-bus rule's ARN: rule/<name>, else rule/<bus>/<name>."""
    path = name if bus == DEFAULT_BUS else f"{bus}/{name}"
    return f"arn:aws:events:{who.region}:{who.account}:rule/{path}"


def archive_arn(who: Identity, name: str) -> str:
    return f"arn:aws:events:{who.region}:{who.account}:archive/{name}"


def replay_arn(who: Identity, name: str) -> str:
    return f"arn:aws:events:{who.region}:{who.account}:replay/{name}"


def function_arn(who: Identity, function: str) -> str:
    return f"arn:aws:lambda:{who.region}:{who.account}:function:{function}"


def api_destination_arn(who: Identity, name: str, uuid: str) -> str:
    return f"arn:aws:events:{who.region}:{who.account}:api-destination/{name}/{uuid}"


def connection_arn(who: Identity, name: str, uuid: str) -> str:
    return f"arn:aws:events:{who.region}:{who.account}:connection/{name}/{uuid}"


def queue_arn(who: Identity, queue: str) -> str:
    """An SQS queue ARN: how the API shows a target's dead-letter queue."""
    return f"arn:aws:sqs:{who.region}:{who.account}:{queue}"


# --- parsers -------------------------------------------------------------------------------

def function_name(arn: str) -> str | None:
    """The function of a Lambda function ARN (a version or alias suffix is dropped); None if not one."""
    m = _FUNCTION_ARN.match(arn)
    return m.group(1) if m else None


def parse_arn(text: str) -> Arn | None:
    """`text`'s parts if it is an ARN in AWS's format (any partition, service, region, account); else None."""
    m = _ARN.match(text)
    return Arn(*m.groups()) if m else None


def api_destination_name(arn: str) -> str | None:
    """The API destination an api-destination ARN names (its id is left out); None if not one."""
    m = _API_DESTINATION_ARN.match(arn)
    return m.group(1) if m else None


def bus_name(arn: str) -> str | None:
    """The bus of an event bus ARN; None if `arn` is not one (it may be a plain bus name)."""
    m = _BUS_ARN.match(arn)
    return m.group(1) if m else None


def queue_name(arn: str) -> str:
    """The queue of an SQS ARN (its last segment); a plain name is returned as it is."""
    return arn.rsplit(":", 1)[-1]
