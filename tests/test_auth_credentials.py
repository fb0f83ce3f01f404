"""The credentials YAML: what loads, and every mistake reported as file:line: key: message."""
from __future__ import annotations

import pytest

from bus.auth.credentials import load_credentials
from bus.config.rulesfile import ConfigError

GOOD = """\
principals:
  - name: admin
    access_key_id: AKIAADMIN0000001
    secret_access_key: admin-secret
    token: admin-token-0123456789
    buses: ["*"]
    admin: true
  - name: shop
    access_key_id: AKIASHOP00000001
    secret_access_key_from_env: SHOP_SECRET
    buses: [shop]
"""


def load(tmp_path, text: str):
    path = tmp_path / "credentials.yaml"
    path.write_text(text)
    return load_credentials(path)


def errors(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def test_a_good_file_gives_principals_by_key_and_by_token(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOP_SECRET", "from-env")
    creds = load(tmp_path, GOOD)
    admin, shop = creds.principals
    assert creds.by_access_key("AKIASHOP00000001") is shop and shop.secret_access_key == "from-env"
    assert creds.by_token("admin-token-0123456789") is admin and creds.by_token("nope-nope-nope-nope") is None
    assert admin.admin and admin.may_put_to("anything")
    assert not shop.admin and shop.may_put_to("shop") and not shop.may_put_to("default")


def test_an_unset_secret_env_var_is_named_with_its_line(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOP_SECRET", raising=False)
    assert errors(tmp_path, GOOD) == (f"{tmp_path}/credentials.yaml:10: secret_access_key_from_env: "
                                      "environment variable SHOP_SECRET is not set or empty")


def test_every_mistake_is_reported_at_once_with_file_line_and_key(tmp_path):
    text = errors(tmp_path, """\
principals:
  - name: a
    access_key_id: AKIA/BAD
    secret_acess_key: x
    buses: [ok, "bad bus!"]
    admin: "yes"
  - name: a
    access_key_id: AKIAGOOD00000001
    secret_access_key: s
    token: short
""")
    lines = text.splitlines()
    f = f"{tmp_path}/credentials.yaml"
    assert f"{f}:4: secret_acess_key: unknown key (did you mean 'secret_access_key'?); allowed: " in text
    assert f"{f}:3: access_key_id: must be 4-128 letters, digits or '_'" in lines
    assert f"{f}:2: secret_access_key: required key 'secret_access_key' (or 'secret_access_key_from_env') is missing" in lines
    assert f"{f}:5: buses: 'bad bus!' is not a valid bus name" in lines
    assert f"{f}:6: admin: must be true or false" in lines
    assert f"{f}:10: token: a token must be at least 16 characters" in lines
    assert f"{f}:7: name: duplicate name 'a' (also principals[0])" in lines
    assert f"{f}:7: buses: required key 'buses' is missing (bus names, or [\"*\"] for all)" in lines


def test_duplicate_tokens_are_reported_without_echoing_the_token(tmp_path):
    text = errors(tmp_path, """\
principals:
  - {name: a, access_key_id: AKIAA0000001, secret_access_key: s, token: same-token-0123456789, buses: []}
  - {name: b, access_key_id: AKIAB0000001, secret_access_key: s, token: same-token-0123456789, buses: []}
""")
    assert text == f"{tmp_path}/credentials.yaml:3: token: duplicate token (also principals[0])"


def test_a_missing_file_and_broken_yaml_are_one_line_each(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_credentials(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path}/nope.yaml:1: (file): No such file or directory"
    assert errors(tmp_path, "principals: [\n").startswith(f"{tmp_path}/credentials.yaml:2: (yaml): ")
    assert errors(tmp_path, "{}\n") == f"{tmp_path}/credentials.yaml:1: principals: required: a non-empty list of principals"
