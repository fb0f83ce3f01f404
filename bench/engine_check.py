"""Check the compiled pattern engine (bus/patterns/_cengine.c) under sanitizers and for line coverage.

For each of setup.py's build switches it copies the tree to a temporary directory (this
checkout's own build is never touched), builds the extension there with the switch, runs
the pattern tests against that build, and reports:

- sanitize (BUSWAY_BUILD_SANITIZE=1: ASan + UBSan): whether the tests pass with no
  sanitizer report. The interpreter is not instrumented, so libasan is preloaded
  (`gcc -print-file-name=libasan.so`); leak detection is off (CPython's own allocations
  would drown it), UBSan halts on the first error.
- coverage (BUSWAY_BUILD_COVERAGE=1: gcov): the share of _cengine.c's lines the tests ran
  (`--uncovered` lists the lines that never ran).

Usage: .venv/bin/python bench/engine_check.py [--only sanitize|coverage] [--uncovered] [--keep]
Needs gcc and gcov. Takes a few minutes (the sanitized run is the slow one).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_patterns.py", "tests/test_patterns_matcher.py", "tests/test_patterns_properties.py",
         "tests/test_patterns_validation.py", "tests/test_test_pattern.py", "tests/test_patterns_build.py"]
SWITCHES = {"sanitize": "BUSWAY_BUILD_SANITIZE", "coverage": "BUSWAY_BUILD_COVERAGE"}
ENGINE_SOURCE = "bus/patterns/_cengine.c"


def copy_tree(dest: Path) -> None:
    """The files the build and the pattern tests need, without any build of this checkout."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    junk = shutil.ignore_patterns("__pycache__", "*.so", "*.gcda", "*.gcno", "build")
    for name in ("bus", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=junk)


def run(command: list[str], cwd: Path, env: dict, log: Path) -> int:
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        return subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def check(mode: str, work: Path, args: argparse.Namespace) -> dict:
    tree = work / mode
    tree.mkdir()
    copy_tree(tree)
    log = work / f"{mode}.log"
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES.values() and k != "BUSWAY_PATTERNS_ENGINE"}
    env[SWITCHES[mode]] = "1"
    if run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], tree, env, log) != 0:
        return {"mode": mode, "ok": False, "why": f"the build failed (see {log})"}
    test_env = dict(env, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    if mode == "sanitize":
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        test_env.update(LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
                        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    # The tests must run on this build, not on the checkout's (the editable install points there).
    where = subprocess.run([sys.executable, "-c", "import bus.patterns._cengine as c; print(c.__file__)"],
                           cwd=tree, env=test_env, capture_output=True, text=True)
    if not where.stdout.strip().startswith(str(tree)):
        return {"mode": mode, "ok": False, "why": f"the engine loaded is not this build: {where.stdout}{where.stderr}"}
    started = time.monotonic()
    code = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], tree, test_env, log)
    text = log.read_text()
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", text, re.M)
    result = {"mode": mode, "ok": code == 0, "tests": summary[-1] if summary else f"pytest exit {code}",
              "seconds": round(time.monotonic() - started), "log": str(log)}
    if mode == "sanitize":
        reports = re.findall(r"(ERROR: AddressSanitizer.*|runtime error:.*)", text)
        result["sanitizer_reports"] = len(reports)
        result["ok"] = result["ok"] and not reports
        if reports:
            result["first_report"] = reports[0]
    else:
        result.update(coverage(tree, args.uncovered))
    return result


def coverage(tree: Path, uncovered: bool) -> dict:
    objects = next(tree.glob("build/temp*/bus/patterns"))
    out = subprocess.run(["gcov", "-o", str(objects), ENGINE_SOURCE], cwd=tree, capture_output=True, text=True).stdout
    found = re.search(r"File '[^']*_cengine\.c'\s*Lines executed:([\d.]+)% of (\d+)", out)
    if found is None:
        return {"coverage": f"gcov gave no figure: {out[-500:]}"}
    percent, lines = float(found.group(1)), int(found.group(2))
    result = {"coverage": f"{percent:.1f}% of {lines} lines", "lines_run": round(percent * lines / 100)}
    if uncovered:
        report = (tree / "_cengine.c.gcov").read_text().splitlines()
        result["never_run"] = [line.split(":", 2)[1].strip() for line in report if line.lstrip().startswith("#####")]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SWITCHES), help="run one check only")
    parser.add_argument("--uncovered", action="store_true", help="list the line numbers coverage never ran")
    parser.add_argument("--keep", action="store_true", help="keep the temporary trees and logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="busway-engine-check-"))
    failed = False
    try:
        for mode in [args.only] if args.only else ["sanitize", "coverage"]:
            result = check(mode, work, args)
            failed |= not result["ok"]
            print(f"{mode}: {'ok' if result['ok'] else 'FAILED'}")
            for key, value in result.items():
                if key not in ("mode", "ok") and (key != "log" or not result["ok"] or args.keep):
                    print(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
    finally:
        if args.keep or failed:
            print(f"trees and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
