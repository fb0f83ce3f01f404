"""YAML `archives:`: loaded into Config.archives, and each mistake named by file, line and key."""
from __future__ import annotations

import pytest

from bus.config.model import Archive
from bus.config.rulesfile import ConfigError, load_config

GOOD = """\
buses:
  - name: shop
archives:
  - name: shop-all
    bus: shop
    retention_days: 7
    event_pattern: {source: [orders]}
"""


def _errors(tmp_path, text: str) -> str:
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    return str(err.value)


def test_an_archive_in_yaml_is_loaded(tmp_path):
    (tmp_path / "r.yaml").write_text(GOOD)
    assert load_config(tmp_path).archives == {
        "shop-all": Archive(name="shop-all", bus="shop", retention_days=7, event_pattern={"source": ["orders"]})}


def test_an_archive_on_a_bus_of_another_file_is_loaded(tmp_path):
    (tmp_path / "a.yaml").write_text("archives:\n  - {name: x, bus: shop}\n")
    (tmp_path / "b.yaml").write_text("buses:\n  - name: shop\n")
    assert load_config(tmp_path).archives["x"].bus == "shop"


@pytest.mark.parametrize("body, line, key", [
    ("  - {name: 'bad name'}\n", 2, "name"),
    ("  - {name: a, bus: nope}\n", 2, "bus"),
    ("  - name: a\n    retention_days: -1\n", 3, "retention_days"),
    ("  - name: a\n    event_pattern: {source: orders}\n", 3, "event_pattern"),
    ("  - name: a\n    colour: red\n", 3, "colour"),
    ("  - name: a\n    created: 5\n", 3, "created"),
    ("  - {name: a}\n  - {name: a}\n", 3, "name"),
])
def test_each_archive_mistake_names_file_line_and_key(tmp_path, body, line, key):
    assert f"r.yaml:{line}: {key}:" in _errors(tmp_path, "archives:\n" + body)
