"""The Lua scripts: one file each, shipped with the package, and one way to call them (EVALSHA,
the body only after NOSCRIPT), alone, in pipelines and in the FINISH batcher."""
from __future__ import annotations

import ast
import asyncio
import fnmatch
import tomllib
from pathlib import Path


from bus.store import scripts
from bus.store.keys import FIELD, GROUP
from tests.conftest import with_client

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = ROOT / "bus" / "store" / "lua"
LUA_FILES = sorted(LUA_DIR.glob("*.lua"))




def test_every_lua_file_opens_with_a_comment_saying_what_its_keys_and_argv_are():
    assert LUA_FILES
    for path in LUA_FILES:
        header = [line for line in path.read_text().splitlines()][:8]
        comment = "\n".join(line for line in header if line.startswith("--"))
        assert header[0].startswith("-- "), path.name
        assert "KEYS" in comment and "ARGV" in comment, path.name


def test_every_lua_file_is_a_script_of_the_scripts_module_and_redis_compiles_it(redis_url):
    loaded = {value.name: value for value in vars(scripts).values() if isinstance(value, scripts.Lua)}
    assert set(loaded) == {path.stem for path in LUA_FILES}

    async def load_all(client):
        return {name: (await client.script_load(script.body), script.sha) for name, script in loaded.items()}
    for name, (sha_redis, sha_ours) in with_client(redis_url, load_all).items():
        assert sha_redis == sha_ours, name


def test_the_lua_files_are_package_data():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["bus.store"]
    for path in LUA_FILES:
        relative = path.relative_to(ROOT / "bus" / "store").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_no_python_module_holds_lua_or_calls_redis_scripts_another_way():
    for path in sorted((ROOT / "bus").rglob("*.py")):
        if path.name == "scripts.py" and path.parent.name == "store":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "redis.call(" not in node.value, f"{path}: Lua belongs in bus/store/lua/"
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("register_script", "evalsha", "eval", "script_load"), \
                    f"{path}:{node.lineno}: call scripts through bus.store.scripts"


def test_a_script_redis_forgot_is_sent_again_by_body(redis_url, r):
    r.script_flush()
    ids = with_client(redis_url, lambda c: scripts.run_script(c, scripts.ENQUEUE, ["-", "s1", "s2"], [0, FIELD, 2, b"a", b"b"]))
    assert len(ids) == 2 and r.xlen("s1") == r.xlen("s2") == 1
    assert r.script_exists(scripts.ENQUEUE.sha) == [True], "the next call goes by SHA again"


def test_a_pipeline_resends_only_the_calls_redis_answered_noscript(redis_url, r):
    r.script_flush()
    r.script_load(scripts.ENQUEUE.body)  # known: runs in the first round trip
    r.zadd("due", {b"x": 1})

    async def both(client):
        return await scripts.run_pipelined(client, [
            (scripts.ENQUEUE, ["-", "s1"], [0, FIELD, 1, b"a"]),
            (scripts.MOVE_DUE, ["due", "s2"], [10, 100, FIELD]),  # forgotten: goes again by body
        ])
    enqueued, moved = with_client(redis_url, both)
    assert len(enqueued) == 1 and moved == 1
    assert r.xlen("s1") == 1, "a call that ran is not run again"
    assert r.xlen("s2") == 1


def test_a_pipelined_call_that_fails_gives_its_error_as_its_result(redis_url, r):
    r.set("not-a-stream", "x")
    results = with_client(redis_url, lambda c: scripts.run_pipelined(c, [
        (scripts.ENQUEUE, ["-", "not-a-stream"], [0, FIELD, 1, b"a"]), (scripts.ENQUEUE, ["-", "s1"], [0, FIELD, 1, b"b"])]))
    assert isinstance(results[0], Exception) and "WRONGTYPE" in str(results[0])
    assert len(results[1]) == 1


def test_finish_batcher_finishes_entries_after_redis_forgot_the_script(redis_url, r):
    r.xgroup_create("s", GROUP, id="0", mkstream=True)
    first, second = r.xadd("s", {FIELD: b"1"}), r.xadd("s", {FIELD: b"2"})
    r.xreadgroup(GROUP, "c", {"s": ">"})
    r.script_flush()

    async def finish(client):
        batcher = scripts.Scripts(client).finish
        return await asyncio.gather(batcher("s", first, [("Z", "retry", 5, b"1")]), batcher("s", second, []),
                                    batcher("s", first, []))
    assert with_client(redis_url, finish) == [True, True, False], "the first finisher wins"
    assert r.xlen("s") == 0 and r.zcard("retry") == 1
