"""Resolve `module.handler` references to callables in the functions directory, like Lambda."""
from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class FunctionLoadError(Exception):
    """The module or handler could not be loaded; a delivery error, not a worker crash."""


@dataclass(frozen=True)
class Function:
    ref: str
    handler: Callable[..., Any]
    is_async: bool


class FunctionLoader:
    def __init__(self, functions_dir: str | Path | None):
        self._cache: dict[str, Function] = {}
        if functions_dir is not None:
            path = str(Path(functions_dir).resolve())
            if path not in sys.path:
                sys.path.insert(0, path)

    def load(self, ref: str) -> Function:
        if ref not in self._cache:
            self._cache[ref] = _load(ref)
        return self._cache[ref]


def _load(ref: str) -> Function:
    module_name, _, attr = ref.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is this function's error
        raise FunctionLoadError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise FunctionLoadError(f"module {module_name!r} has no handler {attr!r}")
    return Function(ref, handler, inspect.iscoroutinefunction(handler))
