"""Specification of tests/support/linearizability.py: which register histories are linearizable and which are not.
Hand-written histories with known answers; the fault tests (tests/lab/test_manager_faults.py) feed it real ones."""

from __future__ import annotations

import random

import pytest

from tests.support.linearizability import INITIAL, Kind, Op, Outcome, SearchTooLarge, check, check_register, read, relevant_ops, write

OK, FAILED, UNKNOWN = Outcome.OK, Outcome.FAILED, Outcome.UNKNOWN


def test_empty_history_is_linearizable() -> None:
    assert check([]).ok


def test_sequential_writes_and_reads_are_linearizable() -> None:
    h = [write(1, "k", "a", 0, 1), read(2, "k", "a", 2, 3), write(1, "k", "b", 4, 5), read(2, "k", "b", 6, 7)]
    assert check(h).ok


def test_read_before_any_write_sees_the_initial_value() -> None:
    assert check([read(1, "k", INITIAL, 0, 1), write(2, "k", "a", 2, 3)]).ok


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in (INITIAL, "a"):
        assert check([write(1, "k", "a", 0, 10), read(2, "k", seen, 1, 2)]).ok, seen


def test_concurrent_writes_may_take_effect_in_either_order() -> None:
    for last in ("a", "b"):
        h = [write(1, "k", "a", 0, 5), write(2, "k", "b", 1, 6), read(3, "k", last, 7, 8)]
        assert check(h).ok, last


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    h = [write(1, "k", "a", 0, 1), write(1, "k", "b", 2, 3), read(2, "k", "a", 4, 5)]
    res = check(h)
    assert not res.ok
    assert res.key == "k"
    assert [op.value for op in res.prefix] == ["a", "b"]
    assert res.state == "b"
    assert h[2] in res.stuck


def test_two_reads_seeing_concurrent_writes_in_opposite_orders_is_not_linearizable() -> None:
    # both writes overlap both reads' window start, but client 3 sees a then b while client 4 sees b then a
    h = [
        write(1, "k", "a", 0, 100),
        write(2, "k", "b", 0, 100),
        read(3, "k", "a", 10, 11),
        read(3, "k", "b", 12, 13),
        read(4, "k", "b", 10, 11),
        read(4, "k", "a", 12, 13),
    ]
    assert not check(h).ok


def test_the_same_reads_in_a_consistent_order_are_linearizable() -> None:
    h = [
        write(1, "k", "a", 0, 100),
        write(2, "k", "b", 0, 100),
        read(3, "k", "a", 10, 11),
        read(3, "k", "b", 12, 13),
        read(4, "k", "a", 10, 11),
        read(4, "k", "b", 12, 13),
    ]
    assert check(h).ok


def test_lost_acknowledged_write_is_not_linearizable() -> None:
    h = [write(1, "k", "a", 0, 1), read(2, "k", INITIAL, 5, 6)]
    res = check(h)
    assert not res.ok
    assert res.state == "a"
    assert "key 'k' is not linearizable" in res.explain()


def test_read_of_a_value_nobody_wrote_is_not_linearizable() -> None:
    assert not check([write(1, "k", "a", 0, 1), read(2, "k", "zzz", 2, 3)]).ok


def test_unknown_write_may_have_taken_effect() -> None:
    h = [write(1, "k", "a", 0, 1), write(2, "k", "b", 2, 3, UNKNOWN), read(3, "k", "b", 50, 51)]
    assert check(h).ok


def test_unknown_write_may_not_have_taken_effect() -> None:
    h = [write(1, "k", "a", 0, 1), write(2, "k", "b", 2, 3, UNKNOWN), read(3, "k", "a", 50, 51)]
    assert check(h).ok


def test_unknown_write_may_take_effect_long_after_its_client_gave_up() -> None:
    h = [
        write(2, "k", "b", 0, 1, UNKNOWN),
        write(1, "k", "a", 2, 3),
        read(3, "k", "a", 4, 5),
        read(3, "k", "b", 6, 7),
    ]
    assert check(h).ok


def test_unknown_write_cannot_take_effect_before_it_was_invoked() -> None:
    h = [write(1, "k", "a", 0, 1), read(3, "k", "b", 2, 3), write(2, "k", "b", 10, 11, UNKNOWN)]
    assert not check(h).ok


def test_unknown_write_takes_effect_at_most_once() -> None:
    h = [
        write(2, "k", "b", 0, 1, UNKNOWN),
        read(3, "k", "b", 2, 3),
        write(1, "k", "a", 4, 5),
        read(3, "k", "a", 6, 7),
        read(3, "k", "b", 8, 9),
    ]
    assert not check(h).ok


def test_failed_write_must_not_be_observed() -> None:
    h = [write(1, "k", "a", 0, 1), write(2, "k", "b", 2, 3, FAILED), read(3, "k", "b", 4, 5)]
    assert not check(h).ok


def test_reads_of_unknown_outcome_constrain_nothing() -> None:
    h = [write(1, "k", "a", 0, 1), read(2, "k", "nonsense", 2, 3, UNKNOWN)]
    assert check(h).ok


def test_keys_are_checked_independently_and_the_bad_key_is_named() -> None:
    h = [
        write(1, "x", "a", 0, 1),
        read(2, "x", "a", 2, 3),
        write(1, "y", "a", 0, 1),
        read(2, "y", INITIAL, 2, 3),
    ]
    res = check(h)
    assert (res.ok, res.key) == (False, "y")


def test_relevant_ops_drops_unobserved_unknown_writes_and_failed_ops() -> None:
    kept = write(1, "k", "seen", 0, 1, UNKNOWN)
    h = [kept, write(1, "k", "unseen", 0, 1, UNKNOWN), write(1, "k", "f", 0, 1, FAILED), read(2, "k", "seen", 2, 3)]
    assert relevant_ops(h) == [kept, h[3]]


def test_op_completing_before_its_invocation_is_refused() -> None:
    with pytest.raises(ValueError, match="completes at 1 before its invocation at 2"):
        write(1, "k", "a", 2, 1)


def test_op_with_a_bad_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid op kind 'cas'"):
        Op(1, "cas", "k", 1, 0, 1, OK)  # type: ignore[arg-type]


def test_search_bound_is_reported() -> None:
    h = [write(i, "k", i, 0, 100) for i in range(12)] + [read(99, "k", -1, 101, 102)]
    with pytest.raises(SearchTooLarge, match="key 'k': more than 50 states explored"):
        check_register(h, max_states=50)


def _simulate(seed: int, clients: int = 6, ops: int = 300) -> list[Op]:
    """A real register driven by concurrent clients: each op takes effect at one instant inside its window."""
    rng = random.Random(seed)
    t = 0.0
    busy: dict[int, tuple[float, Op]] = {}
    value, n, out = INITIAL, 0, []
    while len(out) < ops:
        t += rng.random()
        for c in range(clients):
            if c not in busy and rng.random() < 0.5:
                if rng.random() < 0.5:
                    n += 1
                    op = Op(c, Kind.WRITE, "k", n, t, t, OK)
                else:
                    op = Op(c, Kind.READ, "k", None, t, t, OK)
                busy[c] = (t + rng.random() * 3, op)
        # the op with the earliest deadline takes effect at a random instant before it completes
        c = min(busy, key=lambda c: busy[c][0])
        effect, op = busy.pop(c)
        if op.kind is Kind.WRITE:
            value = op.value
        else:
            op.value = value
        op.complete = max(effect + rng.random(), op.invoke)
        t = max(t, effect)
        out.append(op)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_simulated_concurrent_register_histories_are_linearizable(seed: int) -> None:
    assert check(_simulate(seed)).ok


@pytest.mark.parametrize("seed", range(20))
def test_a_corrupted_read_in_a_simulated_history_is_caught(seed: int) -> None:
    h = _simulate(seed)
    reads = [op for op in h if op.kind is Kind.READ and op.value is not None]
    victim = random.Random(seed).choice(reads)
    victim.value = -victim.value  # a value no write ever wrote
    res = check(h)
    assert not res.ok
    assert victim in res.stuck
