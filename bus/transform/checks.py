"""The problems of a target's input options, for bus.config.validate (YAML and the AWS API).

AWS's limits (the events API model: TargetInput, TargetInputPath, TransformerPaths,
InputTransformerPathKey, TransformerInput) and rules (eb-transform-target-input.html):
at most one option; `input` JSON of at most 8,192 characters; paths of at most 256; at most 100
variables named [A-Za-z0-9_-]{1,256}, not starting with "AWS" nor a predefined name; a template
of 1 to 8,192 characters whose placeholders are never object keys, name a defined or
predefined variable (PutTargets answers "InputTemplate for target X contains invalid
placeholder Y." otherwise, as AWS-validated LocalStack snapshots record), and use
`<aws.events.event>` and `<aws.events.event.json>` only as JSON values.
"""
from __future__ import annotations

import re
from typing import Any

import jmespath
import jmespath.exceptions
import msgspec

from bus.transform.jsonpath import PathError, compile_path
from bus.transform.shapers import JSON_VALUE_ONLY, PREDEFINED, jmespath_reason
from bus.transform.template import compile_template
from bus.transform.values import VALUE

OPTIONS = ("input", "input_path", "input_transformer", "input_jmespath")
MAX_INPUT_CHARS = 8192
MAX_TEMPLATE_CHARS = 8192
MAX_VARIABLES = 100
VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

PathPart = str | int
Problems = list[tuple[tuple[PathPart, ...], str]]


def input_problems(target: Any) -> Problems:
    """Every problem with `target`'s input options, each at its path inside the target."""
    out: Problems = []
    given = [name for name in OPTIONS if getattr(target, name, None) is not None]
    if len(given) > 1:
        out.append(((given[1],), f"at most one of {', '.join(OPTIONS)} may be set (found {', '.join(given)})"))
    if target.input is not None:
        out.extend(_input(target.input))
    if target.input_path is not None:
        out.extend(_path(("input_path",), target.input_path))
    if target.input_transformer is not None:
        out.extend(_transformer(target.input_transformer))
    if target.input_jmespath is not None:
        out.extend(_jmespath(target.input_jmespath))
    return out


def _input(text: str) -> Problems:
    if len(text) > MAX_INPUT_CHARS:
        return [(("input",), f"at most {MAX_INPUT_CHARS} characters (this has {len(text)})")]
    try:
        msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        return [(("input",), f"must be JSON text: {exc}")]
    return []


def _path(where: tuple[PathPart, ...], text: str) -> Problems:
    try:
        compile_path(text)
    except PathError as exc:
        return [(where, str(exc))]
    return []


def _transformer(t: Any) -> Problems:
    out: Problems = []
    where = ("input_transformer", "input_paths_map")
    if len(t.input_paths_map) > MAX_VARIABLES:
        out.append((where, f"at most {MAX_VARIABLES} variables (this has {len(t.input_paths_map)})"))
    for name, path in t.input_paths_map.items():
        if name in PREDEFINED:
            out.append((where + (name,), f"{name!r} is a predefined variable and cannot be defined"))
        elif not VARIABLE_NAME.match(name):
            out.append((where + (name,), f"invalid variable name {name!r} (1-256 of A-Z a-z 0-9 _ -)"))
        elif name.startswith("AWS"):
            out.append((where + (name,), f"variable names may not start with AWS ({name!r})"))
        out.extend(_path(where + (name,), path))
    out.extend(_template(t.input_template, set(t.input_paths_map)))
    return out


def _template(text: str, defined: set[str]) -> Problems:
    where = ("input_transformer", "input_template")
    if not 1 <= len(text) <= MAX_TEMPLATE_CHARS:
        return [(where, f"must have 1 to {MAX_TEMPLATE_CHARS} characters (this has {len(text)})")]
    template = compile_template(text)
    out: Problems = []
    said: set[str] = set()
    for o in template.occurrences:
        if o.name not in defined and o.name not in PREDEFINED:
            if o.name not in said:
                out.append((where, f"placeholder <{o.name}> is neither in input_paths_map nor predefined"))
            said.add(o.name)
        elif o.is_key and template.starts_object:
            out.append((where, f"placeholder <{o.name}> cannot be used as an object key"))
        elif o.name in JSON_VALUE_ONLY and o.context != VALUE:
            out.append((where, f"<{o.name}> can only be used as a JSON value (as in {{\"event\": <{o.name}>}}), "
                               "not inside a string or a template that is not JSON"))
    return out


def _jmespath(expression: str) -> Problems:
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        return [(("input_jmespath",), f"invalid JMESPath expression {expression!r}: {jmespath_reason(exc)}")]
    return []
