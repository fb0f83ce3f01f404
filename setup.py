"""Build configuration beyond pyproject.toml: the optional compiled pattern engine.

bus/_patterns_c.c speeds up Matcher (see docs/benchmarks.md, "Pattern matching"). It is
optional: without a C compiler or Python headers the build goes on without it and
bus.patterns_index uses its pure-Python engine, which gives the same answers."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("bus._patterns_c", ["bus/_patterns_c.c"], optional=True,
                             extra_compile_args=["-O2"])])
