"""One storage layer for keys: every Redis key name is built in bus/store/keys.py only."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from bus.store import keys

ROOT = Path(__file__).resolve().parent.parent
KEY_TEXT = re.compile(r"busway:\S")  # "busway:{...}:q", "busway:trace"; not prose like "busway: ..."
# Modules still building a key themselves, owned elsewhere: remove each once it imports keys.
PENDING = {
    "deploy/grafana/dashboard.py",  # PromQL regexes over stream names, spelled out
}


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _formats_a_key(node: ast.JoinedStr) -> bool:
    """An f-string with values put into key text: f"busway:{{{tkey}}}:q"."""
    text = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
    return any(isinstance(part, ast.FormattedValue) for part in node.values) and bool(KEY_TEXT.search(text))


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "PREFIX":
            out.append(f"{node.lineno}: uses PREFIX")
        elif isinstance(node, ast.alias) and node.name == "PREFIX":
            out.append("imports PREFIX")
        elif isinstance(node, ast.JoinedStr) and _formats_a_key(node):
            out.append(f"{node.lineno}: formats a key")
        # deploy/k8s/from_rules.py may show the stream layout in the YAML comments it writes
        elif (path.parts[-3:-1] != ("deploy", "k8s") and isinstance(node, ast.Constant)
              and isinstance(node.value, str) and id(node) not in docs and KEY_TEXT.search(node.value)):
            out.append(f"{node.lineno}: spells a key: {node.value[:60]!r}")
    return out


def test_no_module_but_keys_builds_a_key_name():
    sources = sorted((ROOT / "bus").rglob("*.py")) + sorted((ROOT / "deploy").rglob("*.py"))
    found = {}
    for path in sources:
        name = path.relative_to(ROOT).as_posix()
        if name != "bus/store/keys.py" and name not in PENDING and (offences := _offences(path)):
            found[name] = offences
    assert found == {}


def test_pending_modules_are_still_pending():
    """An entry of PENDING that no longer builds keys is to be dropped from the list."""
    for name in PENDING:
        assert _offences(ROOT / name), f"{name} imports its keys now: remove it from PENDING"


def test_a_targets_keys_share_its_hash_tag():
    tkey = keys.target_key("default", "r", "t1")
    assert keys.stream_key(tkey) == "busway:{default/r/t1}:q"
    assert keys.delayed_key(tkey) == "busway:{default/r/t1}:delayed"


def test_a_dlq_name_comes_back_out_of_its_key():
    assert keys.dlq_name(keys.dlq_key("default/r/t1").encode()) == "default/r/t1"
    assert keys.dlq_name(keys.dlq_key(keys.INBOX_DLQ)) == keys.INBOX_DLQ


def test_the_shipped_slot_tag_table_is_the_one_build_slot_tags_computes():
    assert keys._slot_tags() == keys.build_slot_tags()


def test_every_slot_has_a_tag_that_hashes_to_it():
    assert all(keys.key_slot("{%s}" % keys.slot_tag(slot)) == slot for slot in range(keys.SLOTS))


def test_key_slot_hashes_only_a_non_empty_hash_tag():
    from redis.crc import key_slot as redis_py_key_slot  # redis-py's own, in Python; tests/test_cluster.py asks a server
    assert keys.key_slot("busway:{default/r/t1}:q") == keys.key_slot("default/r/t1")
    assert keys.key_slot("{x}y{z}") == keys.key_slot("x")  # only the first tag
    for key in ["a{}b", "x{y", "}{a}", "busway:{api}:rules", "plain", "\u00e9t\u00e9{\u2603}"]:
        assert keys.key_slot(key) == redis_py_key_slot(key.encode()), key
