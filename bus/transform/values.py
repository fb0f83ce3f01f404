"""How a value taken from an event is written into an input template, by where it stands.

EventBridge's rules (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html,
"Common issues"; the outputs AWS gives are recorded in LocalStack's AWS-validated snapshots,
tests/aws/services/events/test_events_inputs.snapshot.json):

- VALUE, a bare JSON value (`{"s": <v>}`): a string gets quotes ("EventBridge automatically adds
  quotes to string variable values"); numbers, booleans, null, objects and arrays go in as JSON.
- IN_STRING, inside a JSON string (`"<v>"`, `"x <v> y"`): a string goes in as it is (so `"<v>"`
  gives `"RUNNING"`, quotes not doubled); an object or array loses its internal quotes
  (`{acc_id:0a787ecb-4015,sf_id:baz}`, `[ACTIVE,INACTIVE]`, as AWS answers); numbers and
  booleans as their JSON text.
- TEXT, a template that is not JSON: strings as they are, anything else as JSON.

Where busway differs, on purpose: AWS does not escape the values it writes into strings, so a
`"` or a newline in an event breaks the JSON the target gets. busway escapes them (the JSON
string escapes), so a JSON template always gives valid JSON.

MISSING is a variable whose path matched nothing: AWS leaves it out ("that variable isn't
created and won't appear in the output"), which its recorded answers show as nothing inside a
string and as `""` where a bare value stood (`{"command": ""}`).
"""
from __future__ import annotations

from typing import Any

import msgspec

VALUE, IN_STRING, TEXT = "value", "in_string", "text"

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

_encode = msgspec.json.Encoder().encode  # compact: minified JSON, as AWS sends


def as_value(value: Any) -> bytes:
    return b'""' if value is MISSING else _encode(value)


def in_string(value: Any) -> bytes:
    if value is MISSING:
        return b""
    if type(value) is str:
        return _encode(value)[1:-1]  # escaped, without its quotes
    if type(value) is dict or type(value) is list:
        return _encode(unquoted(value))[1:-1]
    return _encode(value)  # number, boolean, null: their JSON text


def as_text(value: Any) -> bytes:
    if value is MISSING:
        return b""
    if type(value) is str:
        return value.encode()
    return _encode(value)


RENDER = {VALUE: as_value, IN_STRING: in_string, TEXT: as_text}


def unquoted(value: Any) -> str:
    """An object or array as minified JSON without any quotes, as AWS writes one into a string."""
    if type(value) is dict:
        return "{" + ",".join(f"{key}:{unquoted(item)}" for key, item in value.items()) + "}"
    if type(value) is list:
        return "[" + ",".join(unquoted(item) for item in value) + "]"
    if type(value) is str:
        return value
    return _encode(value).decode()
