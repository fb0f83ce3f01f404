"""Load rules YAML into a typed Config, or report every error as `file:line: key: what is wrong`.

PyYAML's node tree gives each key its line; msgspec validates each bus, rule and function
entry on its own, so one bad rule does not hide the errors of the next.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from bus.config.model import (
    BUS_NAME, DEFAULT_BUS, FUNCTION_REF, TARGET_KINDS,
    ApiDestination, Archive, Bus, Config, Connection, EventSourceMapping, FunctionSettings, QueueDecl, Rule, RulesFile,
    Target, stable_uuid, with_kind,
)
from bus.config.validate import (
    MAX_TARGETS_PER_RULE, function_bus_problems, function_problems, mapping_problems, queue_problems,
    validate_api_destination, validate_archive, validate_connection, validate_rule,
)

__all__ = ["ConfigError", "LoadError", "MAX_TARGETS_PER_RULE", "load_config", "rule_files"]


@dataclass(frozen=True)
class LoadError:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class ConfigError(Exception):
    """Raised with every LoadError found; str() lists them one per line."""

    def __init__(self, errors: list[LoadError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


Path_ = tuple[Any, ...]


class _Doc:
    """One YAML file as plain data plus the line of every key and list item."""

    def __init__(self, file: str, text: str):
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.dup_keys: list[LoadError] = []
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.data = self._build(loader, node, ()) if node is not None else {}
        finally:
            loader.dispose()

    def _build(self, loader: yaml.SafeLoader, node: yaml.Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if key in out:
                    self.dup_keys.append(LoadError(self.file, key_node.start_mark.line + 1, str(key), "duplicate key"))
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = self._build(loader, value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(loader, item, path + (i,)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def line(self, path: Path_) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: Path_, message: str, key: str | None = None) -> LoadError:
        name = key if key is not None else _key_name(path)
        return LoadError(self.file, self.line(path), name, message)


def _key_name(path: Path_) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return "(top level)"


_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_PATH_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def _convert(doc: _Doc, value: Any, typ: type, path: Path_, errors: list[LoadError]) -> Any:
    """msgspec.convert one entry; turn its error into file:line: key: message."""
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        errors.append(_explain(doc, str(exc), typ, path))
        return None


def _explain(doc: _Doc, text: str, typ: type, base: Path_) -> LoadError:
    found = _MSGSPEC_PATH.search(text)
    message = text[: found.start()] if found else text
    path = base
    if found:
        for name, index in _PATH_PART.findall(found.group(1)):
            path += (name,) if name else (int(index),)
    if m := _UNKNOWN.search(message):
        key = m.group(1)
        allowed = _fields_at(typ, path[len(base):])
        hint = difflib.get_close_matches(key, allowed, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return doc.error(path + (key,), f"unknown key{suggestion}; allowed: {', '.join(allowed)}", key)
    if m := _MISSING.search(message):
        return doc.error(path, f"required key '{m.group(1)}' is missing", m.group(1))
    return doc.error(path, message)


def _fields_at(typ: Any, rel: Path_) -> list[str]:
    """The field names of the Struct found by walking `rel` from `typ` (for did-you-mean)."""
    info = msgspec.inspect.type_info(typ)
    for part in rel:
        while isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.DictType)):
            info = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
        if isinstance(info, msgspec.inspect.StructType) and isinstance(part, str):
            info = next((f.type for f in info.fields if f.name == part), info)
    while isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.DictType)):
        info = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
    if isinstance(info, msgspec.inspect.UnionType):
        info = next((t for t in info.types if isinstance(t, msgspec.inspect.StructType)), info)
    if isinstance(info, msgspec.inspect.StructType):
        return [f.name for f in info.fields]
    return []


def rule_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError([LoadError(str(p), 1, "(path)", "no such file or directory")])
    return sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())


def load_config(path: str | Path) -> Config:
    """Load every *.yaml/*.yml under `path` (or one file); raise ConfigError listing all errors."""
    errors: list[LoadError] = []
    docs: list[_Doc] = []
    for file in rule_files(path):
        try:
            doc = _Doc(str(file), file.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else 1
            errors.append(LoadError(str(file), line, "(yaml)", str(getattr(exc, "problem", exc))))
            continue
        errors.extend(doc.dup_keys)
        docs.append(doc)
    config, more = _assemble(docs)
    errors.extend(more)
    if errors:
        raise ConfigError(errors)
    return config


def _assemble(docs: list[_Doc]) -> tuple[Config, list[LoadError]]:
    errors: list[LoadError] = []
    buses: dict[str, Bus] = {DEFAULT_BUS: Bus(DEFAULT_BUS)}
    rules: dict[tuple[str, str], Rule] = {}
    functions: dict[str, FunctionSettings] = {}
    connections: dict[str, Connection] = {}
    destinations: dict[str, ApiDestination] = {}
    archives: dict[str, Archive] = {}
    pending_archives: list[tuple[_Doc, Path_, Archive]] = []
    pending_rules: list[tuple[_Doc, Path_, Rule]] = []
    pending_functions: list[tuple[_Doc, Path_, str, FunctionSettings]] = []
    queues: dict[str, QueueDecl] = {}
    pending_queues: list[tuple[_Doc, Path_, QueueDecl]] = []
    pending_mappings: list[tuple[_Doc, Path_, EventSourceMapping]] = []
    pending_destinations: list[tuple[_Doc, Path_, ApiDestination]] = []
    for doc in docs:
        top = _convert(doc, doc.data if doc.data is not None else {}, RulesFile, (), errors)
        if top is None:
            continue
        for i, raw in enumerate(top.buses):
            bus = _convert(doc, raw, Bus, ("buses", i), errors)
            if bus is None:
                continue
            if not BUS_NAME.match(bus.name):
                errors.append(doc.error(("buses", i, "name"), f"invalid bus name {bus.name!r}"))
            buses[bus.name] = bus
        for ref, raw in top.functions.items():
            path = ("functions", ref)
            settings = _convert(doc, raw if raw is not None else {}, FunctionSettings, path, errors)
            if settings is not None:
                errors.extend(_check_function(doc, path, ref, settings))
                functions[ref] = settings
                pending_functions.append((doc, path, ref, settings))
        for i, raw in enumerate(top.connections):
            connection = _convert_named(doc, raw, Connection, ("connections", i), errors)
            if connection is not None:
                errors.extend(doc.error(("connections", i) + p.path, p.message) for p in validate_connection(connection))
                _keep_once(doc, ("connections", i), connections, connection, "connection", errors)
        for i, raw in enumerate(top.api_destinations):
            destination = _convert_named(doc, raw, ApiDestination, ("api_destinations", i), errors)
            if destination is not None:
                pending_destinations.append((doc, ("api_destinations", i), destination))
        for i, raw in enumerate(top.archives):
            archive = _convert_archive(doc, raw, ("archives", i), errors)
            if archive is not None:
                pending_archives.append((doc, ("archives", i), archive))
        for i, raw in enumerate(top.queues):
            queue = _convert(doc, raw, QueueDecl, ("queues", i), errors)
            if queue is not None:
                pending_queues.append((doc, ("queues", i), queue))
                _keep_once(doc, ("queues", i), queues, queue, "queue", errors)
        for i, raw in enumerate(top.event_source_mappings):
            mapping = _convert(doc, raw, EventSourceMapping, ("event_source_mappings", i), errors)
            if mapping is not None:
                pending_mappings.append((doc, ("event_source_mappings", i), mapping))
        for i, raw in enumerate(top.rules):
            rule = _convert_rule(doc, raw, ("rules", i), errors)
            if rule is not None:
                pending_rules.append((doc, ("rules", i), rule))
    for doc, path, destination in pending_destinations:  # a destination may name a connection of another file
        errors.extend(doc.error(path + p.path, p.message) for p in validate_api_destination(destination, connections))
        _keep_once(doc, path, destinations, destination, "API destination", errors)
    for doc, path, archive in pending_archives:  # an archive may be on a bus of another file
        errors.extend(doc.error(path + p.path, p.message) for p in validate_archive(archive, buses))
        _keep_once(doc, path, archives, archive, "archive", errors)
    for doc, path, ref, settings in pending_functions:  # destinations may be buses of another file
        errors.extend(doc.error(path + p.path, p.message) for p in function_bus_problems(settings, buses))
    for doc, path, queue in pending_queues:  # a dead-letter queue may be declared in another file
        errors.extend(doc.error(path + p.path, p.message) for p in queue_problems(queue, queues))
    for doc, path, mapping in pending_mappings:
        errors.extend(doc.error(path + p.path, p.message) for p in mapping_problems(mapping, queues, functions))
    for doc, path, rule in pending_rules:  # after every file: a rule may name a bus declared in another
        errors.extend(doc.error(path + p.path, p.message, p.key)
                      for p in validate_rule(rule, buses, destinations, queues=queues))
        key = (rule.bus, rule.name)
        if key in rules:
            errors.append(doc.error(path + ("name",), f"rule {rule.name!r} is declared twice on bus {rule.bus!r}"))
        rules[key] = rule
    return Config(buses=buses, rules=rules, functions=functions, connections=connections,
                  api_destinations=destinations, archives=archives, queues=queues,
                  event_source_mappings=[m for _, _, m in pending_mappings]), errors


# Set by busway, never written in YAML (the API shows them).
_MANAGED_KEYS = ("uuid", "created", "modified", "deauthorized")


def _convert_named(doc: _Doc, raw: Any, typ: type, path: Path_, errors: list[LoadError]) -> Any:
    """A connection or API destination; its ARN's id is derived from its name, so it is stable."""
    if isinstance(raw, dict):
        for key in _MANAGED_KEYS:
            if key in raw:
                errors.append(doc.error(path + (key,), f"'{key}' is set by busway, not in YAML"))
                return None
    value = _convert(doc, raw, typ, path, errors)
    if value is None:
        return None
    return msgspec.structs.replace(value, uuid=stable_uuid(typ, value.name))


def _convert_archive(doc: _Doc, raw: Any, path: Path_, errors: list[LoadError]) -> Archive | None:
    if isinstance(raw, dict):
        for key in ("created", "modified"):
            if key in raw:
                errors.append(doc.error(path + (key,), f"'{key}' is set by busway, not in YAML"))
                return None
    return _convert(doc, raw, Archive, path, errors)


def _keep_once(doc: _Doc, path: Path_, into: dict, value: Any, what: str, errors: list[LoadError]) -> None:
    if value.name in into:
        errors.append(doc.error(path + ("name",), f"{what} {value.name!r} is declared twice"))
    into[value.name] = value


def _check_function(doc: _Doc, path: Path_, ref: str, s: FunctionSettings) -> list[LoadError]:
    out = []
    if not FUNCTION_REF.match(ref):
        out.append(doc.error(path, "function must be written module.handler", ref))
    else:
        from bus.config.function_refs import refusal  # Invoke may name it: never stdlib or busway
        if why := refusal(ref):
            out.append(doc.error(path, why, ref))
    if not 0 < s.timeout <= 900:
        out.append(doc.error(path + ("timeout",), "timeout must be more than 0 and at most 900 seconds"))
    if s.reserved_concurrency is not None and s.reserved_concurrency < 0:
        out.append(doc.error(path + ("reserved_concurrency",), "reserved_concurrency must be 0 or more"))
    out += [doc.error(path + p.path, p.message) for p in function_problems(s)]
    return out


def _convert_rule(doc: _Doc, raw: Any, path: Path_, errors: list[LoadError]) -> Rule | None:
    """A rule, its targets converted one by one so each is given its kind from its key first."""
    targets = raw.get("targets") if isinstance(raw, dict) else None
    if not isinstance(targets, list):  # absent or the wrong type: msgspec says which, at its line
        return _convert(doc, raw, Rule, path, errors)
    converted = [_convert_target(doc, t, path + ("targets", i), errors) for i, t in enumerate(targets)]
    rule = _convert(doc, {**raw, "targets": []}, Rule, path, errors)
    if rule is None or any(t is None for t in converted):
        return None
    return msgspec.structs.replace(rule, targets=converted)


def _convert_target(doc: _Doc, raw: Any, path: Path_, errors: list[LoadError]) -> Target | None:
    raw = with_kind(raw)
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if isinstance(kind, str) and kind in TARGET_KINDS:
        return _convert(doc, raw, TARGET_KINDS[kind], path, errors)
    if kind is not None or not isinstance(raw, dict):
        return _convert(doc, raw, Target, path, errors)  # msgspec names the bad `kind` or the wrong type
    # No kind's key at all (a typo like `functon`): check it as the kind it most looks like, so the
    # error is "unknown key ... did you mean 'function'" rather than a `kind` YAML never spells.
    return _convert(doc, raw, TARGET_KINDS[_likely_kind(raw)], path, errors)


def _likely_kind(raw: dict) -> str:
    kinds = list(TARGET_KINDS)
    for key in raw:
        if isinstance(key, str) and (close := difflib.get_close_matches(key, kinds, n=1)):
            return close[0]
    return kinds[0]
