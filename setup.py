"""Build configuration beyond pyproject.toml: the compiled pattern engine, bus/patterns/_cengine.c.

It speeds up Matcher (see docs/benchmarks.md, "Pattern matching"). Where a C compiler and
Python's headers are there it must build: a compile error fails the install (and so CI)
instead of leaving busway to match in pure Python unnoticed. Without them the build goes on
without it and bus.patterns matches in pure Python, with the same answers.

Switches (environment), for bench/engine_check.py:
    BUSWAY_BUILD_SANITIZE=1   AddressSanitizer + UndefinedBehaviorSanitizer, -O1 -g
    BUSWAY_BUILD_COVERAGE=1   gcov line coverage (--coverage -O0)
"""
from __future__ import annotations

import os
import shlex
import shutil
import sysconfig

from setuptools import Extension, setup


def can_build_c() -> bool:
    """Whether this machine has what building the extension needs: the C compiler Python
    was configured with (or $CC) on PATH, and Python.h."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return bool(cc) and shutil.which(cc[0]) is not None and os.path.isfile(headers)


def flags() -> tuple[list[str], list[str]]:
    """(compile, link) flags for the switches above."""
    if os.environ.get("BUSWAY_BUILD_SANITIZE") == "1":
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
        return [*sanitize, "-fno-omit-frame-pointer", "-g", "-O1"], sanitize
    if os.environ.get("BUSWAY_BUILD_COVERAGE") == "1":
        return ["--coverage", "-O0", "-g"], ["--coverage"]
    return ["-O2"], []


compile_args, link_args = flags()
setup(ext_modules=[Extension("bus.patterns._cengine", ["bus/patterns/_cengine.c"],
                             optional=not can_build_c(),
                             extra_compile_args=compile_args, extra_link_args=link_args)])
