"""One Shaper per target: its input options compiled once, applied to every event it gets.

- no option: the event as stored, never decoded (`identity`);
- `input`: the constant JSON text, as written;
- `input_path`: the value at the path, as minified JSON (a string keeps its quotes, as AWS sends
  `"baz"`); several matches (a wildcard) are a JSON array; a path that matches nothing gives
  `null` (AWS documents nothing for it; a missing value is never an error in EventBridge's input
  options, so the target gets the event's absence of a value rather than a failed delivery);
- `input_transformer`: variables from `input_paths_map` and the predefined ones, written into the
  template (bus.transform.template, bus.transform.values);
- `input_jmespath` (busway's): the expression's result as JSON (no result: `null`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jmespath
import jmespath.exceptions
import msgspec

from bus.events import format_time
from bus.transform.jsonpath import Path, PathError, compile_path
from bus.transform.template import Template, compile_template
from bus.transform.values import MISSING

RULE_ARN = "aws.events.rule-arn"
RULE_NAME = "aws.events.rule-name"
INGESTION_TIME = "aws.events.event.ingestion-time"
EVENT = "aws.events.event"
EVENT_JSON = "aws.events.event.json"
PREDEFINED = frozenset({RULE_ARN, RULE_NAME, INGESTION_TIME, EVENT, EVENT_JSON})
JSON_VALUE_ONLY = frozenset({EVENT, EVENT_JSON})  # "only as a value for a JSON field"

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Shaped(NamedTuple):
    body: bytes  # what the target receives
    is_json: bool  # False: text (a template that is not JSON)


class TransformFailed(Exception):
    """The event cannot be shaped for this target (not JSON, a JMESPath runtime error, a broken
    option that escaped validation); retrying cannot help: the worker dead-letters it."""


class Shaper:
    """Applies one target's input option. `identity`: there is none, apply returns the event."""

    identity = False

    def apply(self, event: bytes, *, rule_arn: str = "", rule_name: str = "", ingestion_time: float = 0.0) -> Shaped:
        return Shaped(event, True)


class Identity(Shaper):
    identity = True


class Constant(Shaper):
    def __init__(self, text: str):
        self.shaped = Shaped(text.encode(), True)

    def apply(self, event: bytes, *, rule_arn: str = "", rule_name: str = "", ingestion_time: float = 0.0) -> Shaped:
        return self.shaped


class InputPath(Shaper):
    def __init__(self, path: Path):
        self.path = path

    def apply(self, event: bytes, *, rule_arn: str = "", rule_name: str = "", ingestion_time: float = 0.0) -> Shaped:
        value = self.path.get(decoded(event), MISSING)
        return Shaped(b"null" if value is MISSING else _encode(value), True)


class Transformer(Shaper):
    def __init__(self, paths: dict[str, Path], template: Template):
        self.template = template
        used = template.names
        # Only what the template uses is looked up; a defined name shadows nothing predefined
        # (validation refuses such names), so the predefined ones are filled in last.
        self.paths = tuple((name, path) for name, path in paths.items() if name in used and name not in PREDEFINED)
        self.predefined = used & PREDEFINED

    def apply(self, event: bytes, *, rule_arn: str = "", rule_name: str = "", ingestion_time: float = 0.0) -> Shaped:
        doc = decoded(event)
        values = {name: path.get(doc, MISSING) for name, path in self.paths}
        if self.predefined:
            values.update(_predefined(self.predefined, doc, rule_arn, rule_name, ingestion_time))
        return Shaped(self.template.render(values, MISSING), self.template.is_json)


class JmesPath(Shaper):
    def __init__(self, expression: Any):
        self.expression = expression

    def apply(self, event: bytes, *, rule_arn: str = "", rule_name: str = "", ingestion_time: float = 0.0) -> Shaped:
        try:
            result = self.expression.search(decoded(event))
        except Exception as exc:  # a function given a value of the wrong type, say: a retry gives the same
            raise TransformFailed(f"input_jmespath {self.expression.expression!r}: {exc}") from None
        return Shaped(_encode(result), True)


class Broken(Shaper):
    """A target whose option does not compile (validation was bypassed): every delivery fails."""

    def __init__(self, why: str):
        self.why = why

    def apply(self, event: bytes, *, rule_arn: str = "", rule_name: str = "", ingestion_time: float = 0.0) -> Shaped:
        raise TransformFailed(self.why)


def build(target: Any) -> Shaper:
    """The shaper of `target`'s input option (a Broken one if the option does not compile)."""
    try:
        if target.input is not None:
            return Constant(target.input)
        if target.input_path is not None:
            return InputPath(compile_path(target.input_path))
        if (t := target.input_transformer) is not None:
            paths = {name: compile_path(text) for name, text in t.input_paths_map.items()}
            return Transformer(paths, compile_template(t.input_template))
        if target.input_jmespath is not None:
            return JmesPath(jmespath.compile(target.input_jmespath))
    except PathError as exc:
        return Broken(str(exc))
    except jmespath.exceptions.JMESPathError as exc:
        return Broken(f"invalid JMESPath expression {target.input_jmespath!r}: {jmespath_reason(exc)}")
    return Identity()


def decoded(event: bytes) -> Any:
    try:
        return _decode(event)
    except msgspec.DecodeError as exc:
        raise TransformFailed(f"the event is not JSON: {exc}") from None


def _predefined(names: frozenset[str], doc: Any, rule_arn: str, rule_name: str, ingestion_time: float) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if RULE_ARN in names:
        values[RULE_ARN] = rule_arn
    if RULE_NAME in names:
        values[RULE_NAME] = rule_name
    if INGESTION_TIME in names:
        values[INGESTION_TIME] = format_time(ingestion_time)  # ISO 8601, as the event's `time`
    if EVENT in names:
        values[EVENT] = without_detail(doc)
    if EVENT_JSON in names:
        values[EVENT_JSON] = doc
    return values


def without_detail(doc: Any) -> Any:
    """`<aws.events.event>`: the event without `detail`, and (as AWS answers, recorded in
    LocalStack's AWS-validated snapshots) with `detail-type` spelled `detailType`."""
    if type(doc) is not dict:
        return doc
    return {("detailType" if key == "detail-type" else key): value for key, value in doc.items() if key != "detail"}


def jmespath_reason(exc: Exception) -> str:
    """jmespath's own messages span lines (a caret under the expression): one line instead."""
    E = jmespath.exceptions
    if isinstance(exc, E.EmptyExpressionError):
        return "it is empty"
    if isinstance(exc, E.IncompleteExpressionError):
        return "it ends too early"
    if isinstance(exc, E.LexerError):
        return f"unexpected {exc.lexer_value!r} at character {exc.lexer_position + 1}"
    if isinstance(exc, E.ParseError):
        return f"{exc.msg.lower()} at character {exc.lex_position + 1}"
    return str(exc).splitlines()[0]
