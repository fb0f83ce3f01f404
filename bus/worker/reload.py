"""`bus worker --reload` (and `bus up --reload`): notice an edit in the functions directory, so
the worker restarts its slots and the next calls run the new code (bus.worker.slots retires the
slots that have the old modules loaded; the worker itself never imports user code).

A snapshot of every .py file's (mtime, size) under the directory, taken each CHECK_SECONDS: a
change, a new file or a removed one is a change. Each generation of slots compiles into a
bytecode cache of its own (sys.pycache_prefix, inherited by the forked slots), because Python
checks a cached .pyc only by the source's whole-second mtime and size: an edit within the same
second that keeps the size would otherwise run the old code.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

CHECK_SECONDS = 0.5  # an edit is running within about this long plus a slot's fork


class CodeWatch:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._seen = self._snapshot()
        self._caches = Path(tempfile.mkdtemp(prefix="busway-pycache-"))
        self._generation = 0
        sys.pycache_prefix = str(self._caches / "0")

    def changed(self) -> bool:
        """Whether a .py file changed since the last call (or since the watch began)."""
        now = self._snapshot()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def new_generation(self) -> None:
        """Slots forked from now on compile the functions afresh."""
        self._generation += 1
        sys.pycache_prefix = str(self._caches / str(self._generation))

    def close(self) -> None:
        sys.pycache_prefix = None
        shutil.rmtree(self._caches, ignore_errors=True)

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for folder, dirs, files in os.walk(self.root, followlinks=True):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path)
                    except OSError:  # removed between the walk and the stat: the next look sees it
                        continue
                    out[path] = (st.st_mtime_ns, st.st_size)
        return out
