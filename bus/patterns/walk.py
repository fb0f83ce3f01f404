"""The pure-Python engine: walk an event for the paths the rules mention, run the automaton."""
# The walk collects the scalars at every mentioned path into a flat list indexed by path id
# (straight-line code generated from the key trie, see `compile_walk`); the run then visits
# the states the event activates. bus/patterns/_cengine.c does both the same way, faster.

from __future__ import annotations

from typing import Any

from bus.patterns.dotted import dotted_at, has_dot
from bus.patterns.fields import State
from bus.patterns.ops import FALSE_KEY, TRUE_KEY

MISSING = object()


class Expand(Exception):
    """The walk met a dotted field name on a mentioned path: match the expanded event instead
    (bus.patterns.dotted)."""


class PathNode:
    """The event walk: a trie of the keys the rules mention."""

    __slots__ = ("kids", "path_id")

    def __init__(self) -> None:
        self.kids: list[tuple[str, PathNode]] = []
        self.path_id: int | None = None


def _walk(obj: dict, kids: list, flat: list, multi: set | None, in_multi: bool, dots: bool = True) -> set | None:
    """Collect the scalars at every mentioned path into `flat` (indexed by path id: MISSING,
    a scalar or a list; booleans as TRUE_KEY / FALSE_KEY so they never collide with 1 and 0
    in a dict).
    Returns the set of path ids that lie under an array of two or more objects (or None)."""
    for key, node in kids:
        v = obj.get(key, MISSING)
        if v is MISSING:
            continue
        t = type(v)
        if t is dict:
            if node.kids:
                multi = _walk(v, node.kids, flat, multi, in_multi, dots)
        elif t is list:
            multi = _walk_array(v, node, flat, multi, in_multi, dots)
        elif node.path_id is not None:
            pid = node.path_id
            if t is bool:
                v = TRUE_KEY if v else FALSE_KEY
            old = flat[pid]
            if old is MISSING:
                flat[pid] = v
            elif type(old) is list:
                old.append(v)
            else:
                flat[pid] = [old, v]
            if in_multi:
                multi = multi or set()
                multi.add(pid)
    if dots and any(node.kids for _, node in kids) and has_dot(obj) and dotted_at(obj, kids):
        raise Expand
    return multi


def _walk_array(items: list, node: PathNode, flat: list, multi: set | None, in_multi: bool,
                dots: bool = True) -> set | None:
    pid = node.path_id
    if pid is not None and not in_multi and flat[pid] is MISSING:
        # The usual array: scalars only (tags, resources).
        for element in items:
            t = type(element)
            if t is dict or t is list or t is bool:
                break
        else:
            if items:
                flat[pid] = list(items)
            return multi
    objects: list = []
    scalars: list = []
    pending = [items]
    while pending:
        for element in pending.pop():
            t = type(element)
            if t is dict:
                objects.append(element)
            elif t is list:
                pending.append(element)
            else:
                scalars.append(element if t is not bool else TRUE_KEY if element else FALSE_KEY)
    if scalars and pid is not None:
        old = flat[pid]
        if old is MISSING:
            flat[pid] = scalars
        elif type(old) is list:
            old.extend(scalars)
        else:
            flat[pid] = [old, *scalars]
        if in_multi:
            multi = multi or set()
            multi.add(pid)
    if objects and node.kids:
        nested_multi = in_multi or len(objects) > 1
        for obj in objects:
            multi = _walk(obj, node.kids, flat, multi, nested_multi, dots)
    return multi



_MAX_UNROLLED_DEPTH = 6


def compile_walk(kids: list) -> Any:
    """Generate straight-line code that walks an event along the key trie — the same walk
    as `_walk`, without its per-key loop overhead (it runs for every event). Arrays whose
    elements are all objects are unrolled too; other arrays, and subtrees deeper than
    _MAX_UNROLLED_DEPTH, are handed to the generic walker."""
    nodes: list[PathNode] = []
    levels: list[list] = []  # kids lists the walk checks for dotted names
    lines = ["def walk(o0, flat, dots=True):", "    multi = None"]

    def store(pid: int, indent: str, inside_array: bool, in_multi: str) -> None:
        if not inside_array:  # the only route to this path: nothing stored yet
            lines.append(f"{indent}flat[{pid}] = x")
            return
        lines.append(f"{indent}old = flat[{pid}]")
        lines.append(f"{indent}if old is M:")
        lines.append(f"{indent}    flat[{pid}] = x")
        lines.append(f"{indent}elif type(old) is list:")
        lines.append(f"{indent}    old.append(x)")
        lines.append(f"{indent}else:")
        lines.append(f"{indent}    flat[{pid}] = [old, x]")
        if in_multi != "False":
            lines.append(f"{indent}if {in_multi}:")
            lines.append(f"{indent}    multi = multi or set()")
            lines.append(f"{indent}    multi.add({pid})")

    def emit(kids: list, depth: int, indent: str, inside_array: bool, in_multi: str) -> None:
        parent = f"o{depth}"
        for key, node in kids:
            nodes.append(node)
            n = len(nodes) - 1
            deeper = depth + 1 < _MAX_UNROLLED_DEPTH
            lines.append(f"{indent}x = {parent}.get({key!r}, M)")
            lines.append(f"{indent}if x is not M:")
            lines.append(f"{indent}    t = type(x)")
            if node.kids:
                lines.append(f"{indent}    if t is dict:")
                if deeper:
                    lines.append(f"{indent}        o{depth + 1} = x")
                    emit(node.kids, depth + 1, indent + "        ", inside_array, in_multi)
                else:
                    lines.append(f"{indent}        multi = walk_object(x, N[{n}].kids, flat, multi, {in_multi}, dots)")
                lines.append(f"{indent}    elif t is list:")
                if deeper:
                    # An array of objects: each element is walked like an object, values
                    # accumulate, and with two or more elements their paths are "multi".
                    flag = f"m{depth + 1}"
                    lines.append(f"{indent}        if x and set(map(type, x)) == ONLY_OBJECTS:")
                    lines.append(f"{indent}            {flag} = {in_multi} or len(x) > 1")
                    lines.append(f"{indent}            for o{depth + 1} in x:")
                    emit(node.kids, depth + 1, indent + "                ", True, flag)
                    lines.append(f"{indent}        else:")
                    lines.append(f"{indent}            multi = walk_array(x, N[{n}], flat, multi, {in_multi}, dots)")
                else:
                    lines.append(f"{indent}        multi = walk_array(x, N[{n}], flat, multi, {in_multi}, dots)")
            else:
                lines.append(f"{indent}    if t is list:")
                lines.append(f"{indent}        multi = walk_array(x, N[{n}], flat, multi, {in_multi}, dots)")
            if node.path_id is not None:
                lines.append(f"{indent}    elif t is bool:")
                lines.append(f"{indent}        x = TRUE if x else FALSE")
                store(node.path_id, indent + "        ", inside_array, in_multi)
                lines.append(f"{indent}    elif t is not dict:")
                store(node.path_id, indent + "        ", inside_array, in_multi)
        if any(node.kids for _, node in kids):  # a dotted name here could reach a nested path
            levels.append(kids)
            lines.append(f"{indent}if dots and has_dot({parent}) and dotted_at({parent}, K[{len(levels) - 1}]):")
            lines.append(f"{indent}    raise Expand")

    emit(kids, 0, "    ", False, "False")
    lines.append("    return multi")
    namespace = {"M": MISSING, "N": nodes, "K": levels, "has_dot": has_dot, "dotted_at": dotted_at, "Expand": Expand,
                 "walk_array": _walk_array, "walk_object": _walk,
                 "TRUE": TRUE_KEY, "FALSE": FALSE_KEY, "ONLY_OBJECTS": {dict}}
    exec(compile("\n".join(lines), "<patterns event walk>", "exec"), namespace)
    return namespace["walk"]



def path_trie(path_ids: dict[tuple, int], in_use: dict[int, int]) -> list:
    """The key trie of the paths some rule mentions (`in_use` counts the rules per path id):
    the root's kids, as `compile_walk` and the compiled engine's trie take them."""
    root = PathNode()
    for path, pid in path_ids.items():
        if not in_use.get(pid):
            continue
        node = root
        for key in path:
            for existing_key, kid in node.kids:
                if existing_key == key:
                    node = kid
                    break
            else:
                kid = PathNode()
                node.kids.append((key, kid))
                node = kid
        node.path_id = pid
    return root.kids


def match_python(root: State, walk: Any, n_paths: int, event: dict,
                 dots: bool = True) -> tuple[list[int], set | None] | None:
    """Walk the event and run the automaton from `root`: the rule ids whose chains completed
    (with repeats) and the path ids under arrays of several objects; or None if the event has
    a dotted name on a mentioned path (`dots`: look for one), to be matched expanded.
    bus/patterns/_cengine.c's `match` does the same."""
    flat = [MISSING] * n_paths
    try:
        multi = walk(event, flat, dots)
    except Expand:
        return None

    # The automaton is a tree (every state has one parent link), so a state can only be
    # reached twice through the same field; that is where duplicates are dropped.
    stack = [root]
    push, pop = stack.extend, stack.pop
    found: list[int] = []
    while stack:
        state = pop()
        if state.rules:
            found.extend(state.rules)
        for pid, field, exact in state.trans:
            v = flat[pid]
            if v is MISSING:
                if field.absent:
                    push(field.absent)
                continue
            t = type(v)
            if t is list:
                hits: list = []
                field.collect(v, hits)
            elif exact is not None:
                hit = exact.get(v)  # booleans arrive as TRUE_KEY / FALSE_KEY (see _walk)
                if hit:
                    push(hit)
                continue
            else:
                hits = [field.present] if field.present else []
                for probe in (field.string_probes if t is str else
                              field.number_probes if t is int or t is float else field.other_probes):
                    probe(field, v, hits)
            if multi and field.absent and pid in multi:
                # Under an array of objects one element may lack the field even though
                # another has it: follow the absence branch and let the exact
                # evaluator decide.
                hits.append(field.absent)
            if len(hits) == 1:
                push(hits[0])
            elif hits:
                push(dict.fromkeys(s for states in hits for s in states))
    return found, multi
