"""Resolve `module.handler` references to handlers in the functions directory, like Lambda.

Only files in the functions directory are handlers. The loader finds `a/b.py` (or
`a/b/__init__.py`) under the directory itself, resolving symlinks, and executes that file:
it never asks sys.path which `a.b` to import, so a target record, however it got into Redis,
cannot name `os.system`, an installed package or busway (bus.config.function_refs says what a
ref may never be), nor reach a file outside through a symlink. The directory is still put on
sys.path, as Lambda does, so handler modules can import their neighbours.

Loading runs user code (a module's top level), so only slot processes (bus.worker.slot) load
handlers: the worker hands them its loader and never calls it. Anything a load raises,
SystemExit and KeyboardInterrupt included, is that function's FunctionLoadError. Whether a
handler is async is `inspect.iscoroutinefunction` of the loaded object; a sync wrapper around
a coroutine function is run as sync, and the slot awaits what it returns (conservative: such
calls never share a slot).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from bus.config.function_refs import never_a_function


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
        self.root = os.path.realpath(functions_dir) if functions_dir is not None else None
        if self.root is not None and self.root not in sys.path:
            sys.path.insert(0, self.root)

    def load(self, ref: str) -> Function:
        if ref not in self._cache:
            self._cache[ref] = _load(self.root, ref)
        return self._cache[ref]


def _load(root: str | None, ref: str) -> Function:
    if root is None:
        raise FunctionLoadError(f"cannot import {ref!r}: this worker has no functions directory")
    if (why := never_a_function(ref)) is not None:
        raise FunctionLoadError(why)
    module_name, _, attr = ref.rpartition(".")
    module = _import(root, module_name)
    try:  # a module __getattr__ is user code too
        handler = getattr(module, attr, None)
        is_async = callable(handler) and inspect.iscoroutinefunction(handler)
    except BaseException as exc:
        raise FunctionLoadError(f"cannot load handler {ref!r}: {describe(exc)}") from exc
    if not callable(handler):
        raise FunctionLoadError(f"module {module_name!r} has no handler {attr!r}")
    return Function(ref, handler, is_async)


def _import(root: str, name: str) -> ModuleType:
    """Module `name` from its file under `root`, importing its parent packages the same way."""
    directory, module = root, None
    parts = name.split(".")
    for i, part in enumerate(parts):
        qualname = ".".join(parts[:i + 1])
        file, package_dir = _locate(root, directory, part, qualname)
        if i < len(parts) - 1 and package_dir is None:
            raise FunctionLoadError(f"cannot import module {name!r}: {qualname!r} is not a package")
        module = _module(qualname, file, package_dir)
        directory = package_dir or directory
    assert module is not None
    return module


def _locate(root: str, directory: str, part: str, qualname: str) -> tuple[str | None, str | None]:
    """(file to execute, package directory) of `part` in `directory`, in Python's order: a
    package, a module, a namespace package. Either is None when it does not apply."""
    base = os.path.join(directory, part)
    for file, package_dir in ((os.path.join(base, "__init__.py"), base), (base + ".py", None), (None, base)):
        where = file or package_dir
        if not (os.path.isfile(where) if file else os.path.isdir(where)):
            continue
        real = os.path.realpath(where)
        if not real.startswith(root + os.sep):
            raise FunctionLoadError(f"cannot import module {qualname!r}: {where} resolves to {real}, "
                                    f"outside the functions directory {root}")
        return (real, os.path.dirname(real) if package_dir else None) if file else (None, real)
    raise FunctionLoadError(f"cannot import module {qualname!r}: no {qualname.replace('.', '/')}.py "
                            f"in the functions directory {root}")


def _module(qualname: str, file: str | None, package_dir: str | None) -> ModuleType:
    """The module `qualname` executed from `file` (a namespace package if None), or the one already
    loaded from there; a module of that name loaded from anywhere else is refused, not reused."""
    loaded = sys.modules.get(qualname)
    if loaded is not None:
        if _comes_from(loaded, file, package_dir):
            return loaded
        raise FunctionLoadError(f"cannot import module {qualname!r}: a module of that name is already "
                                "loaded from outside the functions directory")
    if file is None:
        spec = importlib.machinery.ModuleSpec(qualname, None, is_package=True)
        spec.submodule_search_locations = [package_dir]
    else:
        spec = importlib.util.spec_from_file_location(
            qualname, file, submodule_search_locations=[package_dir] if package_dir else None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualname] = module  # before executing, as import does: the module may import itself
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt at import are this function's failure
        sys.modules.pop(qualname, None)
        raise FunctionLoadError(f"cannot import module {qualname!r}: {describe(exc)}") from exc
    parent, _, child = qualname.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _comes_from(module: ModuleType, file: str | None, package_dir: str | None) -> bool:
    if file is not None:
        origin = getattr(module, "__file__", None)
        return isinstance(origin, str) and os.path.realpath(origin) == file
    return package_dir in {os.path.realpath(p) for p in getattr(module, "__path__", ())}


def describe(exc: BaseException) -> str:
    """`Type: message` of an exception from user code."""
    return f"{type(exc).__name__}: {message_of(exc)}"


def message_of(exc: BaseException) -> str:
    """str(exc), even for an exception whose __str__ fails (it is user code too)."""
    try:
        return str(exc)
    except BaseException:
        return "<unprintable>"
