"""Which matching engine Matchers use: the compiled one (bus/patterns/_cengine.c) or pure Python.

The compiled engine is built by `pip install` where a C compiler is there (setup.py); it runs
the same walk and automaton several times faster, with the same answers. A build of
another layout than bus/patterns/cbuild.py's is ignored with a warning.
BUSWAY_PATTERNS_ENGINE=python forces the pure-Python engine even where C is built.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

from bus.patterns import cbuild

try:
    from bus.patterns import _cengine as compiled
except ImportError:  # pragma: no cover - depends on the build
    compiled = None
if compiled is not None and not cbuild.is_current(compiled):  # pragma: no cover
    warnings.warn("bus.patterns._cengine is a stale build (reinstall busway to rebuild it); "
                  "matching patterns in pure Python", RuntimeWarning, stacklevel=1)
    compiled = None
if compiled is not None:
    cbuild.setup(compiled)

# `compiled`: the compiled module when it is built (and current), else None.
ENGINES = ("c", "python") if compiled is not None else ("python",)
# `active`: the engine Matchers run on now: the compiled module, or None for pure Python.
active: ModuleType | None = compiled if os.environ.get("BUSWAY_PATTERNS_ENGINE", "c") != "python" else None


def engine() -> str:
    """Which matching engine Matchers use: "c" (compiled, when built) or "python"."""
    return "python" if active is None else "c"


def use_engine(name: str) -> None:
    """Switch every Matcher to an engine of ENGINES (tests and benchmarks compare them)."""
    global active
    if name not in ENGINES:
        raise ValueError(f"engine {name!r} is not available here (have: {', '.join(ENGINES)})")
    active = compiled if name == "c" else None


@contextmanager
def using_engine(name: str) -> Iterator[None]:
    """Run a block with every Matcher on the given engine (then switch back)."""
    previous = engine()
    use_engine(name)
    try:
        yield
    finally:
        use_engine(previous)
