"""YAML for every target kind: connections, API destinations, `http:` and `bus:` targets."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus.config.model import BusTarget, HttpTarget
from bus.config.rulesfile import ConfigError, load_config
from bus.store.deliveries import target_records

GOOD = """\
connections:
  - name: crm
    authorization:
      api_key: {header: x-api-key, value_from_env: CRM_KEY}
api_destinations:
  - name: crm-orders
    connection: crm
    endpoint: http://127.0.0.1:9/orders/*
buses:
  - name: other
rules:
  - name: r
    event_pattern: {source: [a]}
    targets:
      - id: h
        http: crm-orders
        http_parameters: {path_parameter_values: [$.detail.id], header_parameters: {x-tenant: t1}}
      - id: b
        bus: other
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(text))
    return tmp_path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return [str(e) for e in exc.value.errors]


def test_http_and_bus_targets_load_with_their_kind(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    http, bus = config.rules[("default", "r")].targets
    assert isinstance(http, HttpTarget) and http.http == "crm-orders"
    assert http.http_parameters.path_parameter_values == ["$.detail.id"]
    assert isinstance(bus, BusTarget) and bus.bus == "other"


def test_an_http_targets_record_carries_its_destination_and_connection(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    http_record, _ = target_records(config, config.rules[("default", "r")])
    assert http_record.destination.endpoint == "http://127.0.0.1:9/orders/*"
    assert http_record.destination.method == "POST" and http_record.destination.invocation_rate_limit_per_second == 300
    assert http_record.connection.authorization.api_key.value_from_env == "CRM_KEY"


def test_a_yaml_destination_has_a_stable_arn_id_from_its_name(tmp_path):
    first = load_config(write(tmp_path, GOOD)).api_destinations["crm-orders"].uuid
    again = load_config(write(tmp_path, GOOD)).api_destinations["crm-orders"].uuid
    assert first and first == again


def test_an_http_target_naming_an_undeclared_destination_names_file_line_and_key(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace("http: crm-orders", "http: nope"))
    assert err.endswith(":16: http: API destination 'nope' is not declared (declared: crm-orders)")


def test_a_bus_target_naming_an_undeclared_bus_is_an_error(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace("bus: other", "bus: elsewhere"))
    assert ":19: bus: bus 'elsewhere' is not declared" in err


def test_a_destination_naming_an_undeclared_connection_is_an_error(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace("connection: crm", "connection: erp"))
    assert ":7: connection: connection 'erp' is not declared (declared: crm)" in err


def test_a_connection_needs_exactly_one_authorization_kind(tmp_path):
    text = GOOD.replace("      api_key: {header: x-api-key, value_from_env: CRM_KEY}\n",
                        "      api_key: {header: x-api-key, value_from_env: CRM_KEY}\n"
                        "      basic: {username: u, password_from_env: P}\n")
    [err] = errors_of(tmp_path, text)
    assert ":3: authorization: exactly one of api_key, basic or oauth_client_credentials is needed" in err


def test_a_connection_secret_must_come_from_the_environment(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace(", value_from_env: CRM_KEY", ""))
    assert "exactly one of value_from_env or value_sealed is needed" in err


def test_a_secret_written_in_yaml_is_an_unknown_key(tmp_path):
    errs = errors_of(tmp_path, GOOD.replace("value_from_env: CRM_KEY", "value: hunter2"))
    assert ":4: value: unknown key" in errs[0] and "hunter2" not in "".join(errs)


def test_an_endpoint_must_be_an_http_url(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace("http://127.0.0.1:9/orders/*", "ftp://x/y"))
    assert ":8: endpoint: endpoint must be an http:// or https:// URL" in err


def test_connect_and_trace_are_not_methods_a_destination_may_use(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace("    endpoint: http", "    method: TRACE\n    endpoint: http"))
    assert "method: method must be one of POST, GET, HEAD, OPTIONS, PUT, PATCH, DELETE" in err


def test_the_id_of_an_arn_is_set_by_busway_not_in_yaml(tmp_path):
    errs = errors_of(tmp_path, GOOD.replace("    connection: crm\n", "    connection: crm\n    uuid: x\n"))
    assert ":8: uuid: 'uuid' is set by busway, not in YAML" in errs[0]


def test_a_destination_declared_twice_is_an_error(tmp_path):
    twice = GOOD.replace("buses:", "  - name: crm-orders\n    connection: crm\n    endpoint: http://x/\nbuses:")
    [err] = errors_of(tmp_path, twice)
    assert "API destination 'crm-orders' is declared twice" in err


def test_a_rule_may_have_a_pattern_and_a_schedule(tmp_path):
    config = load_config(write(tmp_path, GOOD.replace("    event_pattern: {source: [a]}\n",
                                                       "    event_pattern: {source: [a]}\n    schedule: rate(5 minutes)\n")))
    rule = config.rules[("default", "r")]
    assert rule.event_pattern == {"source": ["a"]} and rule.schedule == "rate(5 minutes)"


def test_a_header_value_that_could_add_a_header_of_its_own_is_refused(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace("{x-tenant: t1}", '{x-tenant: "t1\\r\\nx-admin: yes"}'))
    assert ":17: x-tenant: header_parameters 'x-tenant' is not valid" in err


def test_lambda_destinations_are_for_function_targets_only(tmp_path):
    [err] = errors_of(tmp_path, GOOD.replace("        bus: other\n", "        bus: other\n        on_failure: other\n"))
    assert ":20: on_failure: on_failure is for function targets (Lambda destinations)" in err
