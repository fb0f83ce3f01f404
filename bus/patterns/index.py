"""The multi-rule index: every rule of a bus compiled into one shared automaton (event-ruler style)."""
# Each alternative of each rule becomes a chain of steps, one per field: first its rarest
# field (selectivity is estimated from the rule set itself, see selectivity.py), then the
# others in one global order, most used paths first. Chains that start alike share states,
# so a thousand rules on the same condition cost one lookup, not a thousand. Every state
# keeps, per field path, a `FieldIndex` over the conditions leaving it (fields.py).
# Which engine runs it is engine.py's business; the compiled engine's copy of it is
# cbuild.py's.
#
# Matching walks the event once for the paths the rules mention (with generated code), then
# runs the automaton (walk.py, or the compiled engine): the work depends on how many states the event activates — roughly,
# how many rules its rarest field lets through — not on how many rules exist.
#
# Arrays of objects: AWS requires the fields of one nested pattern to come from the same
# array element. The automaton looks at each path independently, which can only accept
# more (and, for `exists: false` under such an array, is made to), so when the event has an
# array of two or more objects, a rule the automaton accepts is confirmed with the exact
# evaluator if two of its fields under one top-level key, or one `exists: false` field,
# got values from under such an array (see `_Rule.needs_check`). One field alone is
# matched exactly by the automaton: "some element has it" is what the union of values says.

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from bus.patterns import cbuild, engine
from bus.patterns.dotted import expand_event
from bus.patterns.evaluate import PatternEvaluator
from bus.patterns.fields import FieldIndex, State
from bus.patterns.ops import Condition, Exact, Exists
from bus.patterns.parse import Path
from bus.patterns.selectivity import Selectivity
from bus.patterns.walk import compile_walk, match_python, path_trie

# Where the compiled engine is built, every state is one it can read (engine.py may switch
# engines at run time, so this does not depend on the one in use).
_new_state = cbuild.CState if engine.compiled is not None else State


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building the automaton allocates many small objects that all stay alive; the cyclic
    GC would re-traverse the growing structure again and again for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Rule:
    __slots__ = ("rule_id", "name", "evaluator", "chains", "path_ids", "groups", "absent_ids", "risky")

    def __init__(self, rule_id: int, name: str, evaluator: PatternEvaluator) -> None:
        self.rule_id, self.name, self.evaluator = rule_id, name, evaluator
        self.chains: list[list[tuple]] = []
        self.path_ids: frozenset[int] = frozenset()
        self.groups: tuple[frozenset[int], ...] = ()   # per alternative and top-level key, 2+ fields
        self.absent_ids: frozenset[int] = frozenset()  # fields with an `exists: false`
        self.risky = False                             # groups or absent_ids: see needs_check

    def needs_check(self, multi: set) -> bool:
        """Whether the automaton's answer could differ from the exact one, given the path ids
        that got values from under an array of two or more objects. Two fields can only have
        to come from one element when an array lies on their common path, which is under one
        top-level key, and then both got their values there."""
        if multi.isdisjoint(self.path_ids):
            return False
        return not multi.isdisjoint(self.absent_ids) or any(len(group & multi) > 1 for group in self.groups)


class RuleIndex:
    """All the rules of one bus; `match` returns the names of the rules an event matches.

    Matching may run on several threads at once; adding and removing rules must not
    overlap with anything else (the broker replaces rules from one place)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, _Rule] = {}
        self._by_id: dict[int, _Rule] = {}
        self._next_id = 0
        self._selectivity = Selectivity()
        self._path_ids: dict[Path, int] = {}
        self._changes = 0     # adds and removes since the last full rebuild
        self._stale = True    # something changed since the last refresh
        self._reset_automaton()

    def _reset_automaton(self) -> None:
        self._root = _new_state()
        self._path_refs: dict[int, int] = {}
        self._walk: Any = compile_walk([])
        # The compiled engine's view of the automaton, wherever that engine is built.
        self._c = cbuild.CAutomaton(engine.compiled) if engine.compiled is not None else None
        self._ctrie: tuple = ()
        self._dirty_fields: set[FieldIndex] = set()
        self._dirty_states: set[State] = {self._root}
        self._dirty_paths = True

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: str) -> bool:
        return name in self._rules

    # -- adding and removing ------------------------------------------------------------

    def add(self, name: str, evaluator: PatternEvaluator) -> None:
        if name in self._rules:
            self.remove(name)
        rule = _Rule(self._next_id, name, evaluator)
        self._next_id += 1
        self._selectivity.count(evaluator.alternatives, +1)
        self._rules[name] = rule
        self._by_id[rule.rule_id] = rule
        self._changes += 1
        self._stale = True
        if not self._rebuild_due():  # else the next refresh threads every rule anyway
            self._insert(rule)

    def _rebuild_due(self) -> bool:
        return self._changes > len(self._rules) // 2

    def remove(self, name: str) -> None:
        rule = self._rules.pop(name, None)
        if rule is None:
            return
        del self._by_id[rule.rule_id]
        self._selectivity.count(rule.evaluator.alternatives, -1)
        for chain in rule.chains:
            terminal = chain[-1][3]
            terminal.rules.remove(rule.rule_id)
            self._dirty_states.add(terminal)  # its frozen transitions list the rules ending there
            for state, pid, conditions, child in reversed(chain):
                self._unstep(state, pid, conditions, child)
        self._changes += 1
        self._stale = True

    def _insert(self, rule: _Rule) -> None:
        """Thread each alternative of the rule through the automaton: its rarest field
        first (so few events get past the root), then the rest in one global order, most
        used paths first (so rules that share a state mostly continue on the same path,
        and an event that gets past the root costs one lookup per step, not one per rule).

        Before the rarest field comes, when the rule tests it for plain equality, the path
        most rules test (in practice `source`): one lookup splits the automaton into one
        part per value. Rarest-first alone makes the root test every path some rule starts
        with (a dozen probes per event in a bus of many kinds of rules), and most of the
        states those probes reach end at the next step, on a source the event does not
        have; split by source first, an event meets only the rules of its own source."""
        estimate, uses = self._selectivity.field, self._selectivity.uses
        partition = self._selectivity.partition()
        rule.chains = []
        path_ids = set()
        for alternative in rule.evaluator.alternatives:
            items = list(alternative.items())
            lead = []
            conditions = alternative.get(partition) if partition is not None else None
            if conditions and len(items) > 1 and all(type(c) is Exact for c in conditions):
                lead = [(partition, conditions)]
                items.remove(lead[0])
            first = min(items, key=lambda item: (estimate(*item), len(item[0]), item[0]))
            items.remove(first)
            fields = lead + [first] + sorted(items, key=lambda item: (-uses.get(item[0], 0), item[0]))
            chain: list[tuple] = []
            state = self._root
            for path, conditions in fields:
                pid = self._path_id(path)
                path_ids.add(pid)
                state = self._step(state, pid, conditions, chain)
            state.rules.append(rule.rule_id)
            self._dirty_states.add(state)
            rule.chains.append(chain)
        rule.path_ids = frozenset(path_ids)
        groups, absent = set(), set()
        for alternative in rule.evaluator.alternatives:
            by_key: dict[str, set] = {}
            for path, conditions in alternative.items():
                by_key.setdefault(path[0], set()).add(self._path_ids[path])
                if any(type(c) is Exists and not c.present for c in conditions):
                    absent.add(self._path_ids[path])
            groups.update(frozenset(g) for g in by_key.values() if len(g) > 1)
        rule.groups, rule.absent_ids = tuple(groups), frozenset(absent)
        rule.risky = bool(groups or absent)

    def _rebuild(self) -> None:
        """Re-thread every rule with today's selectivity estimates (the estimates drift
        as rules come and go; answers never depend on the order, only speed does)."""
        self._reset_automaton()
        for rule_id in sorted(self._by_id):
            self._insert(self._by_id[rule_id])
        self._changes = 0

    def _path_id(self, path: Path) -> int:
        pid = self._path_ids.get(path)
        if pid is None:
            pid = self._path_ids[path] = len(self._path_ids)
        refs = self._path_refs.get(pid, 0)
        if not refs:
            self._dirty_paths = True
        self._path_refs[pid] = refs + 1
        return pid

    def _step(self, state: State, pid: int, conditions: tuple[Condition, ...], chain: list) -> State:
        key = (pid, frozenset(c.key for c in conditions))
        link = state.children.get(key)
        if link is None:
            link = state.children[key] = [_new_state(), 0]
            field = state.fields.get(pid)
            if field is None:
                field = state.fields[pid] = FieldIndex()
                self._dirty_states.add(state)
            for condition in conditions:
                field.add(condition, link[0])
            self._dirty_fields.add(field)
            self._dirty_states.add(state)  # its frozen `trans` holds the field's old tables
        link[1] += 1
        chain.append((state, pid, conditions, link[0]))
        return link[0]

    def _unstep(self, state: State, pid: int, conditions: tuple[Condition, ...], child: State) -> None:
        key = (pid, frozenset(c.key for c in conditions))
        link = state.children[key]
        link[1] -= 1
        refs = self._path_refs[pid] - 1
        self._path_refs[pid] = refs
        if not refs:
            self._dirty_paths = True
        if link[1]:
            return
        del state.children[key]
        field = state.fields[pid]
        for condition in conditions:
            field.remove(condition, child)
        if field.conditions:
            self._dirty_fields.add(field)
            self._dirty_states.add(state)
        else:
            del state.fields[pid]
            self._dirty_fields.discard(field)
            if self._c is not None:
                self._c.forget(field)
            self._dirty_states.add(state)

    def _refresh(self) -> None:
        """Bring the automaton up to date (once, before matching). After many changes
        relative to the number of rules, re-thread everything; otherwise just rebuild the
        lookup structures that changed."""
        if self._rebuild_due():
            with _gc_paused():
                self._rebuild()
                # Everything is new: build it state by state, depth first, so that what one
                # event reads along a chain was allocated together (fewer cache misses).
                order, stack = [], [self._root]
                while stack:
                    state = stack.pop()
                    order.append(state)
                    stack.extend(link[0] for link in reversed(state.children.values()))
                for state in order:
                    for field in state.fields.values():
                        field.rebuild()
                    self._freeze(state)
        else:
            for field in self._dirty_fields:
                field.rebuild()
                if self._c is not None:
                    self._c.rebuilt(field)
            for state in self._dirty_states:
                self._freeze(state)
        self._dirty_fields.clear()
        self._dirty_states.clear()
        if self._dirty_paths:
            self._rebuild_walk()
            self._dirty_paths = False
        self._stale = False

    def _freeze(self, state: State) -> None:
        state.trans = tuple((pid, field, field.exact if field.exact_only else None)
                            for pid, field in state.fields.items())
        if self._c is not None:
            self._c.freeze(state)

    def _rebuild_walk(self) -> None:
        kids = path_trie(self._path_ids, self._path_refs)
        self._walk = compile_walk(kids)
        self._ctrie = cbuild.trie(kids)

    # -- matching -----------------------------------------------------------------------

    def match(self, event: Any) -> list[str]:
        if self._stale:
            with self._lock:  # the lazy refresh mutates the automaton: one thread does it
                if self._stale:
                    self._refresh()
        if type(event) is not dict:
            return []
        compiled = engine.active
        if compiled is not None:
            walked = compiled.match(event, self._ctrie, len(self._path_ids), self._root)
            if walked is None:  # a dotted field name on a mentioned path (bus.patterns.dotted)
                event = expand_event(event)
                walked = compiled.match(event, self._ctrie, len(self._path_ids), self._root, False)
        else:
            walked = match_python(self._root, self._walk, len(self._path_ids), event)
            if walked is None:
                event = expand_event(event)
                walked = match_python(self._root, self._walk, len(self._path_ids), event, False)
        found, multi = walked
        if not found:
            return []
        by_id = self._by_id
        if len(found) == 1:  # the usual hit
            rule = by_id[found[0]]
            if multi and rule.risky and rule.needs_check(multi) and not rule.evaluator.matches(event):
                return []
            return [rule.name]
        ids = sorted(set(found))
        if multi:
            return [by_id[i].name for i in ids if not by_id[i].risky or not by_id[i].needs_check(multi)
                    or by_id[i].evaluator.matches(event)]
        return [by_id[i].name for i in ids]
