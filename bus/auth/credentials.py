"""The credentials YAML (`bus serve --credentials FILE`, or BUS_CREDENTIALS) -> Credentials.

    principals:
      - name: ci
        access_key_id: AKIABUSWAYCI0000001
        secret_access_key_from_env: BUSWAY_CI_SECRET   # or secret_access_key: "..."
        token_from_env: BUSWAY_CI_TOKEN                # optional, for Authorization: Bearer
        buses: [orders]                                # or ["*"]
        functions: [orders.record_order]               # optional: may Invoke and read these (or ["*"])
        queues: [orders-in]                            # optional: may send to, receive from these SQS queues
        admin: false

Errors read like the rules loader's (bus.config.rulesfile): `file:line: key: message`, all of
them at once, never a traceback. Secrets are never echoed in a message.
"""
from __future__ import annotations

import difflib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bus.config.model import BUS_NAME
from bus.config.rulesfile import ConfigError, LoadError, _Doc

__all__ = ["ConfigError", "Credentials", "Principal", "load_credentials", "ENV_VAR"]

ENV_VAR = "BUS_CREDENTIALS"
ALL_BUSES = "*"
MIN_TOKEN_LENGTH = 16  # a bearer token is a password sent as is: no short ones
# AWS access key ids are 16-128 word characters; '/' would break the Credential= scope.
_ACCESS_KEY_ID = re.compile(r"^[A-Za-z0-9_]{4,128}$")
_KEYS = ("name", "access_key_id", "secret_access_key", "secret_access_key_from_env",
         "token", "token_from_env", "buses", "functions", "queues", "admin")


@dataclass(frozen=True)
class Principal:
    """One caller: its keys, where it may put events, and whether it may manage rules and DLQs."""

    name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    buses: frozenset[str] = frozenset()
    admin: bool = False
    functions: frozenset[str] = frozenset()  # Lambda API: may invoke and read these ("*": all)
    queues: frozenset[str] = frozenset()  # SQS API: may send, receive, delete and read these ("*": all)

    def may_put_to(self, bus: str) -> bool:
        return ALL_BUSES in self.buses or bus in self.buses

    def may_use_function(self, ref: str) -> bool:
        return self.admin or ALL_BUSES in self.functions or ref in self.functions

    def may_use_queue(self, name: str) -> bool:
        return self.admin or ALL_BUSES in self.queues or name in self.queues


@dataclass(frozen=True)
class Credentials:
    """Every principal, found by access key id (SigV4) or by bearer token."""

    principals: tuple[Principal, ...]

    def by_access_key(self, access_key_id: str) -> Principal | None:
        return next((p for p in self.principals if p.access_key_id == access_key_id), None)

    def by_token(self, token: str) -> Principal | None:
        # compare_digest on every principal: the time taken says nothing about which token is close
        found = None
        for p in self.principals:
            if p.token is not None and hmac.compare_digest(p.token.encode(), token.encode()):
                found = p
        return found


def load_credentials(path: str | Path) -> Credentials:
    """Read and check the file; raise ConfigError listing every problem as file:line: key: message."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([LoadError(file, 1, "(file)", exc.strerror or str(exc))]) from None
    try:
        doc = _Doc(file, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError([LoadError(file, mark.line + 1 if mark else 1, "(yaml)",
                                     str(getattr(exc, "problem", exc)))]) from None
    errors: list[LoadError] = list(doc.dup_keys)
    principals = _principals(doc, errors)
    if errors:
        raise ConfigError(errors)
    return Credentials(tuple(principals))


def _principals(doc: _Doc, errors: list[LoadError]) -> list[Principal]:
    data = doc.data
    if not isinstance(data, dict):
        errors.append(doc.error((), "expected a mapping with a 'principals' list", "(top level)"))
        return []
    for key in data:
        if key != "principals":
            errors.append(doc.error((key,), "unknown key; allowed: principals", str(key)))
    items = data.get("principals")
    if not isinstance(items, list) or not items:
        errors.append(doc.error(("principals",), "required: a non-empty list of principals", "principals"))
        return []
    out: list[Principal] = []
    for i, item in enumerate(items):
        path = ("principals", i)
        if not isinstance(item, dict):
            errors.append(doc.error(path, "expected a mapping (name, access_key_id, ...)", f"principals[{i}]"))
            continue
        principal = _principal(doc, path, item, errors)
        if principal:
            out.append(principal)
    _unique(doc, items, "name", errors)
    _unique(doc, items, "access_key_id", errors)
    _unique(doc, items, "token", errors)
    return out


def _principal(doc: _Doc, path: tuple, item: dict[str, Any], errors: list[LoadError]) -> Principal | None:
    before = len(errors)
    for key in item:
        if key not in _KEYS:
            hint = difflib.get_close_matches(str(key), _KEYS, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            errors.append(doc.error(path + (key,), f"unknown key{suggestion}; allowed: {', '.join(_KEYS)}", str(key)))
    name = _string(doc, path, item, "name", errors)
    key_id = _string(doc, path, item, "access_key_id", errors)
    if key_id is not None and not _ACCESS_KEY_ID.match(key_id):
        errors.append(doc.error(path + ("access_key_id",), "must be 4-128 letters, digits or '_'"))
    secret = _secret(doc, path, item, "secret_access_key", errors, required=True)
    token = _secret(doc, path, item, "token", errors, required=False)
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        key = "token" if "token" in item else "token_from_env"
        errors.append(doc.error(path + (key,), f"a token must be at least {MIN_TOKEN_LENGTH} characters"))
    buses = _buses(doc, path, item, errors)
    functions = _names(doc, path, item, "functions", "module.handler names", errors)
    queues = _names(doc, path, item, "queues", "queue names", errors)
    admin = item.get("admin", False)
    if not isinstance(admin, bool):
        errors.append(doc.error(path + ("admin",), "must be true or false"))
    if len(errors) > before or name is None or key_id is None or secret is None or buses is None:
        return None
    return Principal(name=name, access_key_id=key_id, secret_access_key=secret, token=token,
                     buses=buses, admin=admin, functions=functions, queues=queues)


def _string(doc: _Doc, path: tuple, item: dict, key: str, errors: list[LoadError]) -> str | None:
    value = item.get(key)
    if value is None:
        errors.append(doc.error(path, f"required key '{key}' is missing", key))
        return None
    if not isinstance(value, str) or not value.strip():
        errors.append(doc.error(path + (key,), "must be a non-empty string"))
        return None
    return value


def _secret(doc: _Doc, path: tuple, item: dict, key: str, errors: list[LoadError], required: bool) -> str | None:
    """`key` inline, or `key_from_env` naming an environment variable; exactly one of them."""
    env_key = f"{key}_from_env"
    if key in item and env_key in item:
        errors.append(doc.error(path + (env_key,), f"give '{key}' or '{env_key}', not both"))
        return None
    if env_key in item:
        var = item[env_key]
        if not isinstance(var, str) or not var:
            errors.append(doc.error(path + (env_key,), "must name an environment variable"))
            return None
        value = os.environ.get(var)
        if not value:
            errors.append(doc.error(path + (env_key,), f"environment variable {var} is not set or empty"))
            return None
        return value
    if key in item:
        value = item[key]
        if not isinstance(value, str) or not value:
            errors.append(doc.error(path + (key,), "must be a non-empty string (quote it in YAML)"))
            return None
        return value
    if required:
        errors.append(doc.error(path, f"required key '{key}' (or '{env_key}') is missing", key))
    return None


def _buses(doc: _Doc, path: tuple, item: dict, errors: list[LoadError]) -> frozenset[str] | None:
    if "buses" not in item:
        errors.append(doc.error(path, "required key 'buses' is missing (bus names, or [\"*\"] for all)", "buses"))
        return None
    value = item["buses"]
    if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
        errors.append(doc.error(path + ("buses",), "must be a list of bus names, or [\"*\"] for all"))
        return None
    for i, bus in enumerate(value):
        if bus != ALL_BUSES and not BUS_NAME.match(bus):
            errors.append(doc.error(path + ("buses", i), f"'{bus}' is not a valid bus name", "buses"))
            return None
    return frozenset(value)


def _names(doc: _Doc, path: tuple, item: dict, key: str, what: str, errors: list[LoadError]) -> frozenset[str]:
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(f, str) and f for f in value):
        errors.append(doc.error(path + (key,), f"must be a list of {what}, or [\"*\"] for all"))
        return frozenset()
    return frozenset(value)


def _unique(doc: _Doc, items: list, key: str, errors: list[LoadError]) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        value = _resolved(item, key)
        if value is None:
            continue
        if value in seen:
            shown = "" if key == "token" else f" '{value}'"  # never echo a secret
            errors.append(doc.error(("principals", i, key if key in item else f"{key}_from_env"),
                                    f"duplicate {key}{shown} (also principals[{seen[value]}])"))
        else:
            seen[value] = i


def _resolved(item: dict, key: str) -> str | None:
    value = item.get(key)
    if value is None and isinstance(item.get(f"{key}_from_env"), str):
        value = os.environ.get(item[f"{key}_from_env"])
    return value if isinstance(value, str) and value else None
