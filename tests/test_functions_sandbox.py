"""Functions only from the functions directory, and user code that exits costs an attempt, not the worker.

A target's function must be a file in the worker's functions directory: the API and YAML refuse
what never can be (stdlib, installed packages, busway, dunders), and a worker refuses the rest
itself, before any import, however the target record reached Redis.
"""
from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from bus.config.model import FunctionSettings, FunctionTarget, RetryPolicy
from bus.config.rulesfile import ConfigError, load_config
from bus.store.deadletters import DeadLetter, list_letters
from bus.store.deliveries import TargetRecord, new_delivery
from bus.store.queue import Queue
from bus.worker.functions import FunctionLoader, FunctionLoadError
from bus.worker.invoker import Invocation
from bus.worker.invokers.function import FunctionInvoker
from tests.conftest import wait_for, with_client
from tests.httpc import post

NEVER_FUNCTIONS = {  # ref -> words the refusal must say
    "os.system": "standard library",
    "builtins.print": "standard library",
    "venv.__main__.main": "dunder",
    "probe.__class__": "dunder",
    "msgspec.json.decode": "installed module",
    "bus.cli.main": "busway",
}
FAST = RetryPolicy(maximum_retry_attempts=0, backoff_base_seconds=0.05, backoff_max_seconds=0.2)


@pytest.fixture
def clean_imports():
    """FunctionLoader puts its directory on sys.path and modules in sys.modules: undo both."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


# --- (a) refused where rules come in: YAML and PutTargets --------------------------------------

def _yaml(function: str) -> str:
    return textwrap.dedent(f"""
        rules:
          - name: r
            event_pattern: {{source: [t]}}
            targets:
              - id: t1
                function: {function}
        """)


@pytest.mark.parametrize("ref", NEVER_FUNCTIONS)
def test_a_yaml_target_naming_a_function_outside_the_functions_directory_is_an_error_at_its_line(tmp_path, ref):
    (tmp_path / "rules.yaml").write_text(_yaml(ref))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    [error] = [str(e) for e in exc.value.errors]
    assert error.startswith(f"{tmp_path / 'rules.yaml'}:7: function:"), error
    assert repr(ref) in error and NEVER_FUNCTIONS[ref] in error


def test_a_yaml_target_naming_a_module_that_does_not_exist_yet_is_valid(tmp_path):
    (tmp_path / "rules.yaml").write_text(_yaml("not_written_yet.handler"))
    config = load_config(tmp_path)
    assert [t.function for t in config.rules[("default", "r")].targets] == ["not_written_yet.handler"]


def test_put_targets_naming_a_function_outside_the_functions_directory_fails_that_entry_with_the_reason(
        stack, events_client):
    stack.start_broker()
    client = events_client(stack.url)
    client.put_rule(Name="r", EventPattern='{"source": ["x"]}')
    for ref, reason in NEVER_FUNCTIONS.items():
        resp = client.put_targets(Rule="r", Targets=[
            {"Id": "bad", "Arn": f"arn:aws:lambda:us-east-1:000000000000:function:{ref}"},
            {"Id": "good", "Arn": "arn:aws:lambda:us-east-1:000000000000:function:not_written_yet.handler"}])
        [failed] = resp["FailedEntries"]
        assert failed["TargetId"] == "bad" and failed["ErrorCode"] == "ValidationException"
        assert repr(ref) in failed["ErrorMessage"] and reason in failed["ErrorMessage"], failed
    assert [t["Id"] for t in client.list_targets_by_rule(Rule="r")["Targets"]] == ["good"]


# --- (b) refused by the worker itself, before any import ---------------------------------------

def _functions_with_an_escape(root: Path) -> tuple[Path, Path]:
    """A functions directory with one good handler and a symlink to a file outside it, and that
    outside directory (a sys.path entry in the tests that want one); handlers record their call."""
    functions, outside = root / "fns", root / "outside"
    functions.mkdir()
    outside.mkdir()
    handler = textwrap.dedent("""
        import os, pathlib
        def touch(event, context):
            (pathlib.Path(os.environ["BUSWAY_TEST_OUT"]) / f"ran-{__name__}-{event['id']}").write_text("ran")
            return {"ran": __name__}
        """)
    (outside / "evil.py").write_text(handler)
    (functions / "good.py").write_text(handler)
    (functions / "link.py").symlink_to(outside / "evil.py")
    (functions / "linked_pkg").symlink_to(outside, target_is_directory=True)
    return functions, outside


def test_a_worker_never_runs_a_target_record_naming_a_function_outside_its_directory(stack, tmp_path):
    functions, outside = _functions_with_an_escape(tmp_path)
    refs = ["os.system", "builtins.print", "probe.__class__", "evil.touch", "link.touch", "linked_pkg.evil.touch"]
    records = [TargetRecord(bus="default", rule="r", function=FunctionSettings(),
                            target=FunctionTarget(id=f"t{i}", function=ref, retry_policy=FAST, dead_letter=True))
               for i, ref in enumerate(refs + ["good.touch"])]

    async def bypass_the_api(client):  # as an attacker with Redis access would
        queue = Queue(client)
        await queue.publish_targets(records)
        await queue.enqueue([new_delivery(json.dumps({"id": f"ev{i}", "detail": {}}).encode(), rec, 0.0)
                             for i, rec in enumerate(records)])
    with_client(stack.redis_url, bypass_the_api)
    stack.env["PYTHONPATH"] = str(outside)  # evil.touch is importable through sys.path, but not a function
    worker = stack.start_worker(extra=("--functions", str(functions)))

    letters = wait_for(lambda: len(got := _letters(stack.redis_url)) >= len(refs) and got,
                       what="a dead letter per refused target")
    assert sorted(letters) == [f"t{i}" for i in range(len(refs))]
    for i, ref in enumerate(refs):
        assert letters[f"t{i}"].error_code == "IMPORT_ERROR", (ref, letters[f"t{i}"])
        assert letters[f"t{i}"].retry_attempts == 0
    assert "outside the functions directory" in letters["t4"].error_message
    wait_for(lambda: (stack.out_dir / f"ran-good-ev{len(refs)}").exists(), what="the good target's call")
    assert sorted(p.name for p in stack.out_dir.iterdir()) == [f"ran-good-ev{len(refs)}"], "nothing else ran"
    assert worker.poll() is None


def _letters(redis_url: str) -> dict[str, DeadLetter]:
    """Every dead letter by target id (`bus dlq show` takes an id, which each DLQ numbers alike)."""
    async def read(client):
        return {item.letter.target: item.letter for item in await list_letters(client)}
    return with_client(redis_url, read)


def test_a_symlink_from_the_functions_directory_to_a_file_outside_is_refused(tmp_path, clean_imports):
    functions, outside = _functions_with_an_escape(tmp_path)
    sys.path.insert(0, str(outside))  # even where sys.path would find the file
    loader = FunctionLoader(functions)
    for ref in ("link.touch", "linked_pkg.evil.touch"):
        with pytest.raises(FunctionLoadError, match="outside the functions directory"):
            loader.load(ref)
    assert loader.load("good.touch").handler.__module__ == "good"


def test_a_functions_directory_that_is_itself_a_symlink_still_loads_its_handlers(tmp_path, clean_imports):
    functions, _ = _functions_with_an_escape(tmp_path)
    (tmp_path / "alias").symlink_to(functions, target_is_directory=True)
    assert callable(FunctionLoader(tmp_path / "alias").load("good.touch").handler)


def test_a_ref_shadowed_by_a_module_loaded_from_elsewhere_is_refused(tmp_path, clean_imports):
    (tmp_path / "textwrap_user.py").write_text("def h(event, context):\n    return 1\n")
    sys.modules["textwrap_user"] = textwrap  # a module of that name, loaded from outside
    with pytest.raises(FunctionLoadError, match="already loaded from outside"):
        FunctionLoader(tmp_path).load("textwrap_user.h")


# --- (c) SystemExit, KeyboardInterrupt: one failed attempt, never the worker -------------------

def _two_rules(function: str) -> str:
    return textwrap.dedent(f"""
        rules:
          - name: poison
            event_pattern: {{source: [poison]}}
            targets:
              - id: t1
                function: {function}
                retry_policy: {{maximum_retry_attempts: 1, backoff_base_seconds: 0.05, backoff_max_seconds: 0.2}}
                dead_letter: true
          - name: fine
            event_pattern: {{source: [fine]}}
            targets: [{{id: t1, function: probe.record}}]
        """)


@pytest.mark.parametrize("function, code, error", [
    ("exit_at_import.handler", "IMPORT_ERROR", "SystemExit: exit_at_import: leaving at import time"),
    ("poison.exit_async", "EXCEPTION", "SystemExit: 3"),
    ("poison.interrupt_async", "EXCEPTION", "KeyboardInterrupt: interrupt_async"),
])
def test_user_code_raising_system_exit_or_keyboard_interrupt_costs_one_attempt_and_the_worker_keeps_serving(
        stack, function, code, error):
    stack.write_rules(_two_rules(function))
    stack.start_broker()
    worker = stack.start_worker()
    post(stack.url + "/events", {"source": "poison", "detail-type": "T", "detail": {}})
    [line] = wait_for(lambda: stack.bus("dlq", "list").stdout.splitlines(), what="a dead letter")
    letter = json.loads(stack.bus("dlq", "show", line.split()[0]).stdout)
    assert (letter["error_code"], letter["retry_attempts"]) == (code, 1), letter
    assert error in letter["error_message"]
    assert worker.poll() is None, "the worker is still running"
    post(stack.url + "/events", {"source": "fine", "detail-type": "T", "detail": {}})
    [call] = stack.wait_records(1)
    assert call["context"]["rule_name"] == "fine"


def _invocation(function: str) -> Invocation:
    record = TargetRecord(bus="default", rule="r", target=FunctionTarget(id="t", function=function),
                          function=FunctionSettings(timeout=5.0))
    return Invocation(record, new_delivery(b'{"id": "ev", "detail": {}}', record, 0.0), 1, "token", lambda: None)


def _invoke(function: str, body=None):
    from tests.conftest import FUNCTIONS
    invoker = FunctionInvoker(None, FunctionLoader(FUNCTIONS), "w", 30.0)  # type: ignore[arg-type]: no leases

    async def main():
        call = _invocation(function)
        try:
            task = asyncio.ensure_future(invoker.invoke(call, invoker.place(call, True)))
            return await (body(task) if body else task)
        finally:
            await invoker.close()
    return asyncio.run(main())


def test_a_cancelled_error_an_async_handler_raises_itself_is_its_failure(clean_imports):
    result = _invoke("poison.cancel_async")
    assert (result.ok, result.kind, result.error_type) == (False, "exception", "CancelledError")


def test_the_workers_own_cancellation_of_an_async_handler_is_not_swallowed(clean_imports):
    async def cancel_soon(task):
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"
    assert _invoke("poison.hang_async", cancel_soon) == "cancelled"


def test_a_slot_reports_system_exit_at_import_as_an_import_error_and_serves_the_next_call(tmp_path, clean_imports):
    from bus.worker.slots import SlotPool
    (tmp_path / "exits.py").write_text("raise SystemExit(7)\n")
    (tmp_path / "fine.py").write_text("def h(event, context):\n    return 'fine'\n")
    context = dict(request_id="req-1", function="f", rule="r", target="t", bus="default", attempt=1, memory=128,
                   worker="w")
    pool = SlotPool(FunctionLoader(tmp_path))

    async def main():
        try:
            first = await pool.run("exits.h", b"{}", context, 5.0)
            second = await pool.run("fine.h", b"{}", context, 5.0)
            return first, second
        finally:
            await pool.close()
    first, second = asyncio.run(main())
    assert (first.ok, first.kind, first.error_type) == (False, "import", "Runtime.ImportModuleError")
    assert "SystemExit: 7" in first.message
    assert second.ok and msgspec.json.decode(second.result) == "fine"
