"""Input transformation: what a target receives, after its input option (EventBridge's `Input`,
`InputPath`, `InputTransformer`, and busway's `input_jmespath`), for every target kind.

Pure: bytes in, bytes out, no I/O. The public face:

- `input_problems(target)`: for bus.config.validate, each problem at its path inside the target;
- `shaper_for(target)`: the target's Shaper, compiled once and cached per target object;
  `Shaper.apply(event, rule_arn=, rule_name=, ingestion_time=)` -> `Shaped(body, is_json)`;
  `Shaper.identity` is True when the target has no input option (apply then returns the
  event's bytes without decoding them);
- `TransformFailed`: raised by apply when the event cannot be shaped (the worker dead-letters
  it: retrying cannot help).

Modules: jsonpath.py (AWS's JSONPath subset), template.py (an InputTemplate, read once),
values.py (how a value is written where it stands), shapers.py (one Shaper per option),
checks.py (the validation).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from bus.transform.checks import input_problems
from bus.transform.jsonpath import Path, PathError, compile_path
from bus.transform.shapers import Shaped, Shaper, TransformFailed, build

__all__ = ["Path", "PathError", "Shaped", "Shaper", "TransformFailed", "compile_path", "input_problems", "shaper_for"]

# Targets are frozen Structs holding dicts, so they cannot be hashed: the cache is keyed by the
# object's id and holds the object, so that id cannot be reused while its entry lives. Bounded:
# every reload of the rules makes new target objects.
_MAX_CACHED = 4096
_cache: OrderedDict[int, tuple[Any, Shaper]] = OrderedDict()


def shaper_for(target: Any) -> Shaper:
    """`target`'s Shaper, built on first use."""
    entry = _cache.get(id(target))
    if entry is not None and entry[0] is target:
        return entry[1]
    shaper = build(target)
    _cache[id(target)] = (target, shaper)
    if len(_cache) > _MAX_CACHED:
        _cache.popitem(last=False)
    return shaper
