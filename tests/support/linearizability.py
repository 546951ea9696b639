"""Linearizability checker for a key-value store modelled as one register per key (Wing & Gong / Lowe search).
Pure functions over a recorded history; used by tests/lab/test_manager_faults.py, tested in tests/unit/test_linearizability.py."""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

INITIAL = None  # the value of a register nobody has written


class Outcome(enum.Enum):
    OK = "ok"  # completed; a read's value is known
    FAILED = "failed"  # definitely did not take effect
    UNKNOWN = "unknown"  # timed out or lost: may or may not have taken effect, at any time after invocation


class Kind(enum.Enum):
    WRITE = "write"
    READ = "read"


@dataclass(slots=True)
class Op:
    """One client operation. `value` is the value written, or the value a read returned (INITIAL: none yet).
    Times come from one monotonic clock; `complete` is ignored for UNKNOWN outcomes (they never return)."""

    client: int
    kind: Kind
    key: Hashable
    value: Any
    invoke: float
    complete: float
    outcome: Outcome

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            raise ValueError(f"invalid op kind {self.kind!r}: expected Kind.WRITE or Kind.READ")
        if not isinstance(self.outcome, Outcome):
            raise ValueError(f"invalid op outcome {self.outcome!r}: expected an Outcome")
        if self.outcome is not Outcome.UNKNOWN and self.complete < self.invoke:
            raise ValueError(f"invalid op {self.describe()}: completes at {self.complete} before its invocation at {self.invoke}")

    def describe(self) -> str:
        what = f"write({self.key!r}, {self.value!r})" if self.kind is Kind.WRITE else f"read({self.key!r}) -> {self.value!r}"
        end = "?" if self.outcome is Outcome.UNKNOWN else f"{self.complete:.6f}"
        return f"client {self.client} {what} [{self.invoke:.6f}, {end}] {self.outcome.value}"


def write(client: int, key: Hashable, value: Any, invoke: float, complete: float, outcome: Outcome = Outcome.OK) -> Op:
    return Op(client, Kind.WRITE, key, value, invoke, complete, outcome)


def read(client: int, key: Hashable, value: Any, invoke: float, complete: float, outcome: Outcome = Outcome.OK) -> Op:
    return Op(client, Kind.READ, key, value, invoke, complete, outcome)


@dataclass(slots=True)
class Result:
    """ok, or the first non-linearizable key (in sorted order) with the longest linearizable prefix found,
    the register's value after it, and the operations none of which could come next."""

    ok: bool
    key: Hashable = None
    prefix: list[Op] = field(default_factory=list)
    state: Any = INITIAL
    stuck: list[Op] = field(default_factory=list)
    ops_checked: int = 0

    def explain(self) -> str:
        if self.ok:
            return f"linearizable ({self.ops_checked} operations)"
        lines = [f"key {self.key!r} is not linearizable: after {len(self.prefix)} operations the register holds {self.state!r}"]
        lines += [f"  then: {op.describe()}" for op in self.prefix[-5:]]
        lines += [f"  none of these can come next: {op.describe()}" for op in self.stuck[:8]]
        return "\n".join(lines)


def relevant_ops(ops: Iterable[Op]) -> list[Op]:
    """Drop what cannot constrain the search: failed ops (never happened), reads of unknown outcome (no value
    seen), and unknown writes whose value no successful read returned. Leaving such a write out is always as
    good as including it: no read sits between it and the next write, so removing it breaks nothing."""
    ops = list(ops)
    observed = {(op.key, _hashable(op.value)) for op in ops if op.kind is Kind.READ and op.outcome is Outcome.OK}
    keep = []
    for op in ops:
        if op.outcome is Outcome.FAILED:
            continue
        if op.outcome is Outcome.UNKNOWN and (op.kind is Kind.READ or (op.key, _hashable(op.value)) not in observed):
            continue
        keep.append(op)
    return keep


def _hashable(v: Any) -> Any:
    return v if isinstance(v, Hashable) else repr(v)


def check(history: Iterable[Op], max_states: int = 5_000_000) -> Result:
    """Check every key's sub-history separately (registers are independent, and linearizability is local)."""
    by_key: dict[Hashable, list[Op]] = defaultdict(list)
    total = 0
    for op in history:
        by_key[op.key].append(op)
        total += 1
    for key in sorted(by_key, key=repr):
        res = check_register(by_key[key], max_states)
        if not res.ok:
            res.ops_checked = total
            return res
    return Result(ok=True, ops_checked=total)


class SearchTooLarge(RuntimeError):
    """The search visited more than max_states (history, state) pairs without a verdict."""


@dataclass(slots=True)
class _Entry:
    op: Op | None
    op_id: int
    is_call: bool
    time: float
    match: _Entry | None = None  # call -> its return (None for ops that never return)
    prev: _Entry | None = None
    next: _Entry | None = None


def _step(state: Any, op: Op) -> tuple[bool, Any]:
    if op.kind is Kind.WRITE:
        return True, op.value
    return op.value == state, state


def _build_list(ops: list[Op]) -> tuple[_Entry, int]:
    """The event list: calls and returns by time, a call before a return at the same instant (so touching
    operations count as concurrent: the permissive reading when clocks tie). Unknown ops get no return."""
    events: list[tuple[float, int, int, _Entry]] = []
    returns = 0
    for i, op in enumerate(ops):
        call = _Entry(op, i, True, op.invoke)
        events.append((op.invoke, 0, i, call))
        if op.outcome is Outcome.OK:
            ret = _Entry(op, i, False, op.complete)
            call.match = ret
            events.append((op.complete, 1, i, ret))
            returns += 1
    events.sort(key=lambda e: e[:3])
    head = _Entry(None, -1, False, -math.inf)
    prev = head
    for *_, e in events:
        prev.next, e.prev = e, prev
        prev = e
    return head, returns


def _lift(e: _Entry) -> None:
    e.prev.next = e.next  # type: ignore[union-attr]
    if e.next is not None:
        e.next.prev = e.prev
    m = e.match
    if m is not None:
        m.prev.next = m.next  # type: ignore[union-attr]
        if m.next is not None:
            m.next.prev = m.prev


def _unlift(e: _Entry) -> None:
    m = e.match
    if m is not None:
        m.prev.next = m  # type: ignore[union-attr]
        if m.next is not None:
            m.next.prev = m
    e.prev.next = e  # type: ignore[union-attr]
    if e.next is not None:
        e.next.prev = e


def check_register(ops: Iterable[Op], max_states: int = 5_000_000) -> Result:
    """Lowe's WGL search for one register: linearize some pending call whose step the model accepts, memoize
    (set of linearized ops, state) pairs already explored, backtrack when the earliest return is not linearized.
    Succeeds once every OK op is linearized (unknown ops may be left out)."""
    all_ops = list(ops)
    key = all_ops[0].key if all_ops else None
    ops_ = relevant_ops(all_ops)
    head, remaining = _build_list(ops_)
    linearized = 0
    state: Any = INITIAL
    stack: list[tuple[_Entry, Any]] = []
    seen: set[tuple[int, Any]] = set()
    best: list[Op] = []
    best_state: Any = INITIAL
    best_stuck: list[Op] = []
    entry = head.next
    while remaining > 0:
        assert entry is not None  # an unlinearized return is always ahead while remaining > 0
        if entry.is_call:
            op = entry.op
            assert op is not None
            ok, new_state = _step(state, op)
            if ok:
                lin = linearized | (1 << entry.op_id)
                marker = (lin, _hashable(new_state))
                if marker not in seen:
                    if len(seen) >= max_states:
                        raise SearchTooLarge(f"key {key!r}: more than {max_states} states explored")
                    seen.add(marker)
                    stack.append((entry, state))
                    state, linearized = new_state, lin
                    if entry.match is not None:
                        remaining -= 1
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
            continue
        # the earliest pending return: its op was not linearized before it returned
        if len(stack) >= len(best):
            best = [e.op for e, _ in stack]  # type: ignore[misc]
            best_state = state
            best_stuck = _pending_before(head, entry)
        if not stack:
            return Result(False, key, best, best_state, best_stuck, len(all_ops))
        top, state = stack.pop()
        linearized &= ~(1 << top.op_id)
        if top.match is not None:
            remaining += 1
        _unlift(top)
        entry = top.next
    return Result(True, ops_checked=len(all_ops))


def _pending_before(head: _Entry, ret: _Entry) -> list[Op]:
    """Ops invoked before the stuck return and not yet linearized: the candidates that all failed."""
    out: list[Op] = []
    e = head.next
    while e is not None and e is not ret:
        if e.is_call and e.op is not None:
            out.append(e.op)
        e = e.next
    return out


def check_or_raise(history: Iterable[Op]) -> None:
    res = check(history)
    if not res.ok:
        raise AssertionError(res.explain())
