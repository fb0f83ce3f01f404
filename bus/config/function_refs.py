"""Which `module.handler` refs can never be a user function, decided without the functions directory.

A target runs a handler from the worker's functions directory, which the broker (and
`bus validate`) may not have: so these checks refuse only what cannot be a user's file there,
and keep refs of modules that do not exist yet. The worker decides the rest
(bus.worker.functions finds the file inside its directory itself):

- a dunder segment (`__import__`, `x.__class__`, `pkg.__init__.h`): a way into Python's
  machinery, never a handler's name;
- a standard-library or built-in top-level module (`os.system`, `builtins.print`);
- busway itself (`bus.cli.main`): the worker is made of it;
- (`refusal` only) a top-level module this interpreter can import from outside the current
  directory: an installed package (`msgspec.json.decode`). The current directory is left out
  because a functions directory may be it (`bus worker --functions .`).
"""
from __future__ import annotations

import functools
import os
import sys
from importlib.machinery import PathFinder

OWN_PACKAGE = "bus"  # busway's own top-level package


def never_a_function(ref: str) -> str | None:
    """Why `ref` can be no user function on any machine, or None. Needs no sys.path."""
    parts = ref.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return f"function {ref!r} is not module.handler"
    dunder = next((p for p in parts if p.startswith("__") and p.endswith("__")), None)
    if dunder is not None:
        return f"function {ref!r} names {dunder!r}: dunder names are never handlers"
    top = parts[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return f"function {ref!r} is in the standard library ({top!r}), not the functions directory"
    if top == OWN_PACKAGE:
        return f"function {ref!r} is part of busway ({top!r}), not the functions directory"
    return None


def refusal(ref: str) -> str | None:
    """Why `ref` can be no user function here, or None: never_a_function, or an installed module."""
    why = never_a_function(ref)
    if why is None and _importable_elsewhere(top := ref.split(".", 1)[0]):
        why = f"function {ref!r} names the installed module {top!r}, not one in the functions directory"
    return why


def _importable_elsewhere(top: str) -> bool:
    """Whether `import top` would find a module outside the current directory (nothing is imported)."""
    return _importable_from(top, os.path.realpath(os.getcwd()), tuple(sys.path))


@functools.lru_cache(maxsize=4096)  # a path search per target: a rules file names the same modules again and again
def _importable_from(top: str, here: str, path: tuple[str, ...]) -> bool:
    entries = [p for p in path if p and os.path.realpath(p) != here]
    if PathFinder.find_spec(top, entries) is not None:
        return True
    for finder in sys.meta_path:  # editable installs and the like find packages sys.path does not list
        if finder is PathFinder or not hasattr(finder, "find_spec"):
            continue
        try:
            spec = finder.find_spec(top, None)
        except Exception:  # a third-party finder's failure says nothing about this name
            continue
        if spec is not None and not _under(spec.origin, here):
            return True
    return False


def _under(origin: str | None, directory: str) -> bool:
    if not origin or not os.path.isabs(origin):
        return False
    return os.path.realpath(origin).startswith(directory + os.sep)
