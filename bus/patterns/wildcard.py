"""Wildcard complexity: refuse rules whose wildcards make AWS's automaton too non-deterministic."""
from __future__ import annotations

from typing import Any

from bus.patterns.ops import AnythingBut, Wildcard
from bus.patterns.syntax import MAX_WILDCARD_COMPLEXITY, TOO_COMPLEX_WILDCARD, Alternative, Path, PatternError

# --- wildcard complexity -------------------------------------------------------------------
#
# AWS rejects rules whose wildcards make its byte automaton too non-deterministic. This
# follows event-ruler's MachineComplexityEvaluator in spirit: build the automaton for all
# wildcard operands of one field (determinate prefixes shared, as in the real machine),
# explore which states can be active together for any input, and weigh each state by the
# number of operands running through it. More than MAX_WILDCARD_COMPLEXITY fails.

_STAR = object()
_OTHER = object()  # stands for every character no operand mentions
_MAX_EXPLORED_STATE_SETS = 4000


def _wildcard_tokens(operand: str) -> list:
    tokens: list = ['"']
    i = 0
    while i < len(operand):
        if operand[i] == "\\":
            tokens.append(operand[i + 1])
            i += 2
            continue
        tokens.append(_STAR if operand[i] == "*" else operand[i])
        i += 1
    tokens.append('"')
    return tokens


def wildcard_complexity(operands: list[str]) -> int:
    literal: list[dict] = [{}]      # state -> {char: [next states]}
    epsilon: list[list[int]] = [[]]  # state -> states reached without input (after a `*`)
    loops: list[bool] = [False]      # state consumes any character and stays (it follows a `*`)
    weight: list[set[int]] = [set()]
    shared: dict[tuple[int, Any], int] = {}

    def new_state() -> int:
        literal.append({})
        epsilon.append([])
        loops.append(False)
        weight.append(set())
        return len(literal) - 1

    for index, operand in enumerate(dict.fromkeys(operands)):
        current, determinate = 0, True
        for token in _wildcard_tokens(operand):
            nxt = shared.get((current, token)) if determinate else None
            if nxt is None:
                nxt = new_state()
                if determinate:
                    shared[(current, token)] = nxt
                if token is _STAR:
                    epsilon[current].append(nxt)
                    loops[nxt] = True
                else:
                    literal[current].setdefault(token, []).append(nxt)
            if token is _STAR:
                determinate = False
            weight[nxt].add(index)
            current = nxt

    closures: dict[int, frozenset[int]] = {}

    def closure_of(state: int) -> frozenset[int]:
        found = closures.get(state)
        if found is None:
            pending, seen = [state], {state}
            while pending:
                for nxt in epsilon[pending.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        pending.append(nxt)
            found = closures[state] = frozenset(seen)
        return found

    start = closure_of(0)
    seen_sets, pending_sets, worst = {start}, [start], 0
    while pending_sets and len(seen_sets) < _MAX_EXPLORED_STATE_SETS:
        active = pending_sets.pop()
        looping = [state for state in active if loops[state]]
        # Characters without a literal transition from these states all lead to the same
        # set (the looping states), so one representative stands for them.
        chars: set = {ch for state in active for ch in literal[state]}
        for char in [_OTHER, *sorted(chars)]:
            nxt: set[int] = set()
            for state in looping:
                nxt |= closure_of(state)
            if char is not _OTHER:
                for state in active:
                    for target in literal[state].get(char, ()):
                        nxt |= closure_of(target)
            if not nxt:
                continue
            reached = frozenset(nxt)
            worst = max(worst, sum(len(weight[s]) for s in reached))
            if worst > MAX_WILDCARD_COMPLEXITY:
                return worst
            if reached not in seen_sets:
                seen_sets.add(reached)
                pending_sets.append(reached)
    return worst


def check_wildcard_complexity(alternatives: list[Alternative]) -> None:
    by_path: dict[Path, list[str]] = {}
    for alternative in alternatives:
        for path, conditions in alternative.items():
            for condition in conditions:
                inner = condition.inner if isinstance(condition, AnythingBut) else (condition,)
                for c in inner:
                    if isinstance(c, Wildcard):
                        by_path.setdefault(path, []).append(c.text)
    for path, operands in by_path.items():
        if wildcard_complexity(operands) > MAX_WILDCARD_COMPLEXITY:
            raise PatternError(TOO_COMPLEX_WILDCARD, ".".join(path))
