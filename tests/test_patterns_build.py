"""The compiled pattern engine is built, and used, wherever it can be."""
from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
from pathlib import Path

import pytest

from bus.patterns import cbuild, engine


def _can_build_c() -> bool:
    """What setup.py asks before it makes the compiled engine required: a C compiler and Python.h."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(cc) and shutil.which(cc[0]) is not None and headers.is_file()


@pytest.mark.skipif(not _can_build_c(), reason="no C compiler or Python.h: busway matches in pure Python here")
def test_the_compiled_engine_is_built_wherever_a_compiler_is_there():
    # A broken or stale build would otherwise pass every other test on the pure-Python engine.
    from bus.patterns import _cengine  # noqa: F401  (ImportError: the build failed or was skipped)
    assert cbuild.is_current(_cengine), "bus/patterns/_cengine is a stale build: reinstall busway"
    assert "c" in engine.ENGINES


def test_the_compiled_engine_reads_the_spec_the_builder_lays_out():
    if engine.compiled is None:
        pytest.skip("the compiled engine is not built here")
    assert tuple(engine.compiled.SPEC) == cbuild.SPEC
    assert engine.compiled.LAYOUT == cbuild.LAYOUT
