"""Build configuration beyond pyproject.toml: the optional compiled pattern engine.

bus/patterns/_cengine.c speeds up Matcher (see docs/benchmarks.md, "Pattern matching"). It is
optional: without a C compiler or Python headers the build goes on without it and
bus.patterns.index uses its pure-Python engine, which gives the same answers."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("bus.patterns._cengine", ["bus/patterns/_cengine.c"], optional=True,
                             extra_compile_args=["-O2"])])
