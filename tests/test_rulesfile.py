"""Rules YAML: typed loading, and errors that name the file, the line and the key."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.config.model import TARGET_KINDS, FunctionTarget, _TargetBase
from bus.config.rulesfile import ConfigError, load_config

GOOD = """
buses:
  - name: shop
functions:
  orders.record: {timeout: 10, reserved_concurrency: 2}
rules:
  - name: orders
    bus: shop
    description: all orders
    event_pattern: {source: [shop.orders]}
    targets:
      - id: rec
        function: orders.record
        retry_policy: {maximum_retry_attempts: 2}
        dead_letter: true
"""


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    return [str(e) for e in exc.value.errors]


def test_valid_file_loads_into_typed_objects(tmp_path):
    write(tmp_path, GOOD)
    config = load_config(tmp_path)
    rule = config.rules[("shop", "orders")]
    assert rule.targets[0].retry_policy.maximum_retry_attempts == 2
    assert rule.targets[0].retry_policy.maximum_event_age_seconds == 86400
    assert config.function("orders.record").timeout == 10
    assert config.function("other.fn").timeout == 3  # Lambda's default


def test_misspelt_key_names_file_line_and_key_with_a_suggestion(tmp_path):
    [err] = errors_of(tmp_path, """\
        rules:
          - name: orders
            evnt_pattern: {source: [x]}
            targets: []
        """)
    assert err.startswith(f"{tmp_path / 'rules.yaml'}:3: evnt_pattern: unknown key")
    assert "did you mean 'event_pattern'" in err


def test_errors_in_several_rules_are_all_reported(tmp_path):
    errs = errors_of(tmp_path, """\
        rules:
          - name: a
            event_pattern: {source: [x]}
            targets:
              - {id: t, functon: m.f}
          - name: b
            bus: nowhere
            event_pattern: {source: [x]}
        """)
    assert any(":5: functon: unknown key" in e for e in errs)
    assert any(":7: bus: bus 'nowhere' is not declared" in e for e in errs)


def test_wrong_type_names_the_key(tmp_path):
    [err] = errors_of(tmp_path, """\
        rules:
          - name: a
            event_pattern: {source: [x]}
            targets:
              - id: t
                function: m.f
                retry_policy: {maximum_retry_attempts: lots}
        """)
    assert ":7: maximum_retry_attempts: Expected `int`, got `str`" in err


def test_invalid_pattern_fails_with_line_of_event_pattern(tmp_path):
    [err] = errors_of(tmp_path, """\
        rules:
          - name: a
            event_pattern:
              source: shop.orders
        """)
    assert ":3: event_pattern:" in err


def test_rule_needs_a_pattern_or_a_schedule(tmp_path):
    [err] = errors_of(tmp_path, "rules:\n  - name: a\n    targets: []\n")
    assert "needs an event_pattern or a schedule" in err


def test_retry_policy_bounds_are_aws_bounds(tmp_path):
    errs = errors_of(tmp_path, """\
        rules:
          - name: a
            event_pattern: {source: [x]}
            targets:
              - id: t
                function: m.f
                retry_policy: {maximum_retry_attempts: 186, maximum_event_age_seconds: 59}
        """)
    assert any("maximum_retry_attempts: must be from 0 to 185" in e for e in errs)
    assert any("maximum_event_age_seconds: must be from 60 to 86400" in e for e in errs)


def test_duplicate_rule_names_on_one_bus_are_an_error(tmp_path):
    write(tmp_path, "rules:\n  - {name: a, event_pattern: {source: [x]}}\n", "one.yaml")
    write(tmp_path, "rules:\n  - {name: a, event_pattern: {source: [y]}}\n", "two.yaml")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    assert "two.yaml:2: name: rule 'a' is declared twice" in str(exc.value)


def test_broken_yaml_names_file_and_line(tmp_path):
    [err] = errors_of(tmp_path, "rules:\n  - name: a\n    event_pattern: {source: [x]\n")
    assert err.startswith(f"{tmp_path / 'rules.yaml'}:")
    assert "(yaml)" in err


def test_bus_validate_exits_nonzero_and_prints_each_error(tmp_path):
    write(tmp_path, "rules:\n  - name: a\n    evnt_pattern: {}\n")
    proc = subprocess.run([sys.executable, "-m", "bus", "validate", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{tmp_path / 'rules.yaml'}:3: evnt_pattern: unknown key" in proc.stderr


def test_bus_validate_accepts_the_shipped_examples():
    root = Path(__file__).parent.parent
    proc = subprocess.run([sys.executable, "-m", "bus", "validate", str(root / "rules")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_invalid_schedule_fails_with_file_line_and_aws_message(tmp_path):
    [err] = errors_of(tmp_path, """\
        rules:
          - name: nightly
            schedule: cron(0 2 * * * *)
            targets: []
        """)
    assert err.startswith(f"{tmp_path / 'rules.yaml'}:3: schedule: Parameter ScheduleExpression is not valid")


def test_rate_with_plural_value_and_singular_unit_is_rejected(tmp_path):
    [err] = errors_of(tmp_path, "rules:\n  - name: r\n    schedule: rate(5 minute)\n")
    assert ":3: schedule:" in err


def test_a_destination_naming_an_undeclared_bus_is_an_error(tmp_path):
    errs = errors_of(tmp_path, """\
        rules:
          - name: a
            event_pattern: {source: [x]}
            targets:
              - id: t
                function: m.f
                on_success: nowhere
                on_failure: default
        """)
    assert errs == [f"{tmp_path / 'rules.yaml'}:7: on_success: bus 'nowhere' is not declared (declared: default)"]


def test_a_destination_may_name_a_bus_declared_in_another_file(tmp_path):
    write(tmp_path, "buses:\n  - name: results\n", "z-buses.yaml")
    write(tmp_path, """\
        rules:
          - name: a
            event_pattern: {source: [x]}
            targets: [{id: t, function: m.f, on_failure: results}]
        """, "a-rules.yaml")
    assert load_config(tmp_path).rules[("default", "a")].targets[0].on_failure == "results"


class EchoTarget(_TargetBase, frozen=True, tag="echo"):
    """A made-up second target kind, as a new kind would be declared in bus.config.model."""

    echo: str


def test_a_new_target_kind_is_loaded_by_its_key_with_no_change_to_the_loader(tmp_path, monkeypatch):
    monkeypatch.setitem(TARGET_KINDS, "echo", EchoTarget)
    write(tmp_path, """\
        rules:
          - name: a
            event_pattern: {source: [x]}
            targets:
              - {id: f, function: m.f}
              - {id: e, echo: hello}
        """)
    f, e = load_config(tmp_path).rules[("default", "a")].targets
    assert (type(f), type(e), e.echo) == (FunctionTarget, EchoTarget, "hello")


def test_an_unknown_key_in_a_second_kind_of_target_names_its_line(tmp_path, monkeypatch):
    monkeypatch.setitem(TARGET_KINDS, "echo", EchoTarget)
    [err] = errors_of(tmp_path, """\
        rules:
          - name: a
            event_pattern: {source: [x]}
            targets:
              - id: e
                echo: hello
                retry_polcy: {}
        """)
    assert err.startswith(f"{tmp_path / 'rules.yaml'}:7: retry_polcy: unknown key (did you mean 'retry_policy'?)")


def test_a_target_naming_no_kind_is_told_the_key_it_lacks(tmp_path):
    [err] = errors_of(tmp_path, "rules:\n  - name: a\n    event_pattern: {source: [x]}\n    targets:\n      - id: t\n")
    assert err == f"{tmp_path / 'rules.yaml'}:5: function: required key 'function' is missing"


def test_function_settings_take_an_environment_and_lambdas_async_invoke_settings(tmp_path):
    write(tmp_path, """
        buses: [{name: results}]
        functions:
          orders.record:
            environment: {TABLE: orders, API_URL: "http://x"}
            maximum_retry_attempts: 0
            maximum_event_age_seconds: 60
            on_failure: results
            dead_letter: true
    """)
    s = load_config(tmp_path).functions["orders.record"]
    assert s.environment == {"TABLE": "orders", "API_URL": "http://x"}
    assert (s.maximum_retry_attempts, s.maximum_event_age_seconds, s.on_failure, s.dead_letter) == (0, 60, "results", True)


def test_bad_function_settings_name_their_keys(tmp_path):
    errors = errors_of(tmp_path, """
        functions:
          orders.record:
            environment: {AWS_REGION: x, 9lives: y}
            maximum_retry_attempts: 3
            maximum_event_age_seconds: 30
            on_success: nowhere
          os.system: {}
    """)
    text = "\n".join(errors)
    assert "rules.yaml:4: AWS_REGION: AWS_REGION is reserved" in text
    assert "rules.yaml:4: 9lives: an environment variable's name" in text
    assert "rules.yaml:5: maximum_retry_attempts: maximum_retry_attempts must be 0 to 2" in text
    assert "rules.yaml:6: maximum_event_age_seconds:" in text
    assert "rules.yaml:7: on_success:" in text and "nowhere" in text
    assert "rules.yaml:8: os.system:" in text


def test_queues_and_event_source_mappings_load(tmp_path):
    write(tmp_path, """
        queues:
          - {name: work, visibility_timeout: 60, redrive_policy: {dead_letter_queue: dead, max_receive_count: 3}}
          - {name: dead}
        event_source_mappings:
          - {queue: work, function: orders.take, batch_size: 100, maximum_batching_window_seconds: 2}
        rules:
          - name: r
            event_pattern: {source: [s]}
            targets: [{id: q, queue: work}]
    """)
    config = load_config(tmp_path)
    assert config.queues["work"].redrive_policy.max_receive_count == 3
    assert config.event_source_mappings[0].batch_size == 100
    assert config.rules[("default", "r")].targets[0].queue == "work"


def test_bad_queues_and_mappings_name_their_keys(tmp_path):
    errors = "\n".join(errors_of(tmp_path, """
        queues:
          - {name: work, visibility_timeout: 2, redrive_policy: {dead_letter_queue: nowhere, max_receive_count: 0}}
          - {name: "bad name"}
        functions:
          slow.fn: {timeout: 10}
        event_source_mappings:
          - {queue: missing, function: orders.take}
          - {queue: work, function: slow.fn, batch_size: 50}
        rules:
          - name: r
            event_pattern: {source: [s]}
            targets: [{id: q, queue: unknown}]
    """))
    assert "rules.yaml:3: dead_letter_queue:" in errors and "rules.yaml:3: max_receive_count:" in errors
    assert "rules.yaml:4: name: invalid queue name" in errors
    assert "rules.yaml:8: queue: queue 'missing' is not declared" in errors
    assert "rules.yaml:9: batch_size: a batch_size over 10 needs" in errors
    assert "rules.yaml:9: function: the function's timeout (10 s) is over queue work's visibility_timeout" in errors
    assert "rules.yaml:13: queue: queue 'unknown' is not declared in queues:" in errors
