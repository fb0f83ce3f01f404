"""The `context` a handler receives: Lambda's Python context object, plus attempt and rule_name."""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from bus import identity


@dataclass
class LambdaContext:
    aws_request_id: str
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    deadline: float  # time.monotonic() at which the invocation times out
    attempt: int
    rule_name: str
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: object = None
    client_context: object = None
    target_id: str = ""
    bus_name: str = ""
    extra: dict = field(default_factory=dict)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@functools.lru_cache(maxsize=4096)
def _function_arn(function: str) -> str:
    return identity.function_arn(identity.from_env(), function)


def client_context_of(text: str) -> object:
    """Invoke's client context as Lambda's Python runtime gives it: `.client`, `.custom`, `.env`."""
    if not text:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    raw = raw if isinstance(raw, dict) else {}
    return SimpleNamespace(client=raw.get("client"), custom=raw.get("custom"), env=raw.get("env"))


def make_context(*, request_id: str, function: str, rule: str, target: str, bus: str,
                 attempt: int, timeout: float, memory: int, worker: str = "", client_context: str = "") -> LambdaContext:
    return LambdaContext(
        client_context=client_context_of(client_context),
        aws_request_id=request_id,
        function_name=function,
        invoked_function_arn=_function_arn(function),
        memory_limit_in_mb=memory,
        deadline=time.monotonic() + timeout,
        attempt=attempt,
        rule_name=rule,
        log_group_name=f"/busway/{function}",
        log_stream_name=worker or f"{os.uname().nodename}-{os.getpid()}",  # one stream per worker, like one per Lambda instance
        target_id=target,
        bus_name=bus,
    )
