"""The replicated store as a deterministic state machine: transactions, proposals, apply, snapshots, watches.
Drives manager.store.MemoryStore directly with prepare()/apply(), the way the raft shell does, with no raft."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from manager.store import (
    MAX_ACTIONS,
    MAX_PROPOSAL_BYTES,
    NAME_CONFLICT,
    MemoryStore,
    StoreError,
    WriteTx,
    name_of,
)
from proto import objects_pb2 as pb


def config(object_id: str, name: str, data: bytes = b"data") -> pb.Config:
    return pb.Config(id=object_id, spec=pb.ConfigSpec(annotations=pb.Annotations(name=name), data=data))


def network(object_id: str, name: str) -> pb.Network:
    return pb.Network(id=object_id, spec=pb.NetworkSpec(annotations=pb.Annotations(name=name), driver="overlay"))


def new_store() -> MemoryStore:
    return MemoryStore(clock=lambda: 1_700_000_000.0)


class Log:
    """Hands out raft-like increasing indexes (the bootstrap snapshot holds index 1)."""

    def __init__(self) -> None:
        self.index = 1

    def next(self) -> int:
        self.index += 1
        return self.index


def commit(store: MemoryStore, log: Log, fn: Callable[[WriteTx], Any], request_id: str):
    data, _ = store.prepare(fn, request_id)
    return store.apply(log.next(), data)


def create(kind: str, obj) -> Callable[[WriteTx], None]:
    return lambda tx: tx.create(kind, obj)


# ---- create / read ----

def test_created_object_is_readable_by_id_by_name_and_in_list() -> None:
    store, log = new_store(), Log()
    result = commit(store, log, create("config", config("c1", "app.conf", b"hello")), "r1")
    assert result.error is None
    got = store.view().get("config", "c1")
    assert got.spec.data == b"hello"
    assert got.meta.version.index == 2
    assert store.view().find_by_name("config", "app.conf").id == "c1"
    assert [c.id for c in store.view().list("config")] == ["c1"]


def test_list_is_sorted_by_id() -> None:
    store, log = new_store(), Log()
    for object_id in ["cz", "ca", "cm"]:
        commit(store, log, create("config", config(object_id, f"n-{object_id}")), f"r-{object_id}")
    assert [c.id for c in store.view().list("config")] == ["ca", "cm", "cz"]


def test_missing_object_reads_as_none() -> None:
    store = new_store()
    assert store.view().get("network", "nope") is None
    assert store.view().find_by_name("network", "nope") is None


def test_create_stamps_created_and_updated_at_from_the_proposing_clock() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    meta = store.view().get("config", "c1").meta
    assert meta.created_at.seconds == 1_700_000_000
    assert meta.updated_at == meta.created_at


def test_objects_handed_out_are_copies() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a", b"orig")), "r1")
    store.view().get("config", "c1").spec.data = b"mutated"
    store.view().list("config")[0].spec.data = b"mutated"
    assert store.view().get("config", "c1").spec.data == b"orig"


def test_view_does_not_see_later_commits() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    view = store.view()
    commit(store, log, create("config", config("c2", "b")), "r2")
    commit(store, log, lambda tx: tx.remove("config", "c1"), "r3")
    assert [c.id for c in view.list("config")] == ["c1"]
    assert [c.id for c in store.view().list("config")] == ["c2"]


def test_write_tx_sees_its_own_writes() -> None:
    store = new_store()

    def fn(tx: WriteTx) -> list[str]:
        tx.create("network", network("n1", "front"))
        return [n.id for n in tx.list("network")] + [tx.find_by_name("network", "front").id]

    _, seen = store.prepare(fn, "r1")
    assert seen == ["n1", "n1"]
    assert store.view().get("network", "n1") is None  # prepare changes nothing


def test_all_kinds_are_stored_generically() -> None:
    store, log = new_store(), Log()
    objects = {
        "network": network("n1", "net"),
        "config": config("c1", "conf"),
        "node": pb.Node(id="nd1", spec=pb.NodeSpec(annotations=pb.Annotations(name="host1"))),
        "service": pb.Service(id="s1", spec=pb.ServiceSpec(annotations=pb.Annotations(name="web"))),
        "task": pb.Task(id="t1", service_id="s1", annotations=pb.Annotations(name="web.1.t1")),
        "cluster": pb.Cluster(id="cl1", spec=pb.ClusterSpec(annotations=pb.Annotations(name="default"))),
    }

    def fn(tx: WriteTx) -> None:
        for kind, obj in objects.items():
            tx.create(kind, obj)

    assert commit(store, log, fn, "r1").error is None
    for kind, obj in objects.items():
        assert store.view().find_by_name(kind, name_of(kind, obj)).id == obj.id


# ---- names and ids ----

def test_create_with_a_taken_name_is_a_name_conflict() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "app")), "r1")
    with pytest.raises(StoreError) as raised:
        store.prepare(create("config", config("c2", "app")), "r2")
    assert (raised.value.code, raised.value.message) == ("ALREADY_EXISTS", NAME_CONFLICT)
    assert NAME_CONFLICT == "name conflicts with an existing object"


def test_names_conflict_case_insensitively_as_in_swarmkit() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("network", network("n1", "Web")), "r1")
    with pytest.raises(StoreError, match=NAME_CONFLICT):
        store.prepare(create("network", network("n2", "web")), "r2")
    assert store.view().find_by_name("network", "WEB").id == "n1"


def test_same_name_in_different_kinds_does_not_conflict() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("network", network("n1", "shared")), "r1")
    assert commit(store, log, create("config", config("c1", "shared")), "r2").error is None


def test_task_names_need_not_be_unique() -> None:
    store, log = new_store(), Log()

    def fn(tx: WriteTx) -> None:
        tx.create("task", pb.Task(id="t1", annotations=pb.Annotations(name="same")))
        tx.create("task", pb.Task(id="t2", annotations=pb.Annotations(name="same")))

    assert commit(store, log, fn, "r1").error is None
    assert store.view().find_by_name("task", "same").id == "t1"


def test_create_with_a_taken_id_is_refused() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    with pytest.raises(StoreError) as raised:
        store.prepare(create("config", config("c1", "b")), "r2")
    assert (raised.value.code, raised.value.message) == ("ALREADY_EXISTS", "config c1 already exists")


def test_removed_name_can_be_taken_in_the_same_transaction() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "app")), "r1")

    def fn(tx: WriteTx) -> None:
        tx.remove("config", "c1")
        tx.create("config", config("c2", "app"))

    assert commit(store, log, fn, "r2").error is None
    assert store.view().find_by_name("config", "app").id == "c2"


def test_names_can_be_swapped_within_one_transaction() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("network", network("n1", "x")), "r1")
    commit(store, log, create("network", network("n2", "y")), "r2")

    def swap(tx: WriteTx) -> None:
        a, b = tx.get("network", "n1"), tx.get("network", "n2")
        a.spec.annotations.name = "tmp"
        tx.update("network", a)
        b.spec.annotations.name = "x"
        tx.update("network", b)
        a = tx.get("network", "n1")
        a.spec.annotations.name = "y"
        tx.update("network", a)

    assert commit(store, log, swap, "r3").error is None
    view = store.view()
    assert (view.find_by_name("network", "x").id, view.find_by_name("network", "y").id) == ("n2", "n1")
    assert view.find_by_name("network", "tmp") is None


def test_unknown_kind_and_wrong_type_are_invalid_arguments() -> None:
    store = new_store()
    with pytest.raises(StoreError) as raised:
        store.view().get("volume", "x")
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "unknown object kind 'volume'" in raised.value.message
    with pytest.raises(StoreError) as raised:
        store.prepare(create("network", config("c1", "a")), "r1")
    assert raised.value.message == "network object must be a shoal.v1.Network, not Config"
    with pytest.raises(StoreError) as raised:
        store.prepare(create("config", config("", "a")), "r1")
    assert raised.value.message == "config id must not be empty"


# ---- updates and removes ----

def test_update_with_the_read_version_applies_and_bumps_the_version() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    current = store.view().get("config", "c1")
    current.spec.annotations.labels["k"] = "v"
    result = commit(store, log, lambda tx: tx.update("config", current), "r2")
    assert result.error is None
    got = store.view().get("config", "c1")
    assert (got.meta.version.index, got.spec.annotations.labels["k"]) == (3, "v")
    assert result.events[0].old.meta.version.index == 2


def test_stale_update_is_out_of_sequence_and_changes_nothing() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    stale = store.view().get("config", "c1")
    fresh = store.view().get("config", "c1")
    fresh.spec.annotations.labels["by"] = "first"
    commit(store, log, lambda tx: tx.update("config", fresh), "r2")
    before = store.snapshot()
    stale.spec.annotations.labels["by"] = "second"
    with pytest.raises(StoreError) as raised:
        store.prepare(lambda tx: tx.update("config", stale), "r3")
    assert (raised.value.code, raised.value.message) == ("UNKNOWN", "update out of sequence")
    assert store.snapshot() == before
    assert store.view().get("config", "c1").spec.annotations.labels["by"] == "first"


def test_update_of_a_missing_object_is_not_found() -> None:
    store = new_store()
    with pytest.raises(StoreError) as raised:
        store.prepare(lambda tx: tx.update("config", config("c9", "a")), "r1")
    assert (raised.value.code, raised.value.message) == ("NOT_FOUND", "config c9 not found")


def test_remove_deletes_and_frees_the_name() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "app")), "r1")
    result = commit(store, log, lambda tx: tx.remove("config", "c1"), "r2")
    assert result.error is None
    assert [(e.action, e.object.spec.annotations.name) for e in result.events] == [("remove", "app")]
    assert store.view().get("config", "c1") is None
    assert commit(store, log, create("config", config("c2", "app")), "r3").error is None


def test_remove_of_a_missing_object_is_not_found() -> None:
    store = new_store()
    with pytest.raises(StoreError) as raised:
        store.prepare(lambda tx: tx.remove("network", "n9"), "r1")
    assert (raised.value.code, raised.value.message) == ("NOT_FOUND", "network n9 not found")


def test_create_then_update_in_one_transaction() -> None:
    store, log = new_store(), Log()

    def fn(tx: WriteTx) -> None:
        tx.create("config", config("c1", "a"))
        obj = tx.get("config", "c1")
        obj.spec.annotations.labels["step"] = "2"
        tx.update("config", obj)

    result = commit(store, log, fn, "r1")
    assert result.error is None
    assert [(e.action, e.object.meta.version.index) for e in result.events] == [("create", 2), ("update", 2)]
    assert store.view().get("config", "c1").spec.annotations.labels["step"] == "2"


# ---- atomicity, concurrency, caps ----

def test_proposal_whose_second_action_conflicts_applies_nothing() -> None:
    store, log = new_store(), Log()
    # Prepared on an empty store, so both creates pass at prepare time...
    data, _ = store.prepare(lambda tx: (tx.create("config", config("c1", "one")),
                                        tx.create("config", config("c2", "taken"))), "batch")
    # ...but by the time it commits, "taken" is taken.
    commit(store, log, create("config", config("c0", "taken")), "r0")
    before = store.snapshot()
    result = store.apply(log.next(), data)
    assert result.error == StoreError("ALREADY_EXISTS", NAME_CONFLICT)
    assert result.events == []
    assert store.view().get("config", "c1") is None
    assert _objects(store) == _objects_from(before)


def test_concurrent_proposals_on_the_same_state_second_is_out_of_sequence() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")

    def label(value: str) -> Callable[[WriteTx], None]:
        def fn(tx: WriteTx) -> None:
            obj = tx.get("config", "c1")
            obj.spec.annotations.labels["by"] = value
            tx.update("config", obj)
        return fn

    first, _ = store.prepare(label("first"), "p1")
    second, _ = store.prepare(label("second"), "p2")
    assert store.apply(log.next(), first).error is None
    result = store.apply(log.next(), second)
    assert result.error == StoreError("UNKNOWN", "update out of sequence")
    assert store.view().get("config", "c1").spec.annotations.labels["by"] == "first"
    assert store.last_index == log.index


def test_too_many_actions_is_refused_at_prepare() -> None:
    store = new_store()

    def fn(tx: WriteTx) -> None:
        for n in range(MAX_ACTIONS + 1):
            tx.create("config", config(f"c{n}", f"name{n}"))

    with pytest.raises(StoreError) as raised:
        store.prepare(fn, "big")
    assert (raised.value.code, raised.value.message) == (
        "INVALID_ARGUMENT", "transaction too large: 201 actions exceeds 200")


def test_exactly_max_actions_is_accepted() -> None:
    store, log = new_store(), Log()

    def fn(tx: WriteTx) -> None:
        for n in range(MAX_ACTIONS):
            tx.create("config", config(f"c{n:03}", f"name{n}"))

    assert commit(store, log, fn, "r1").error is None
    assert len(store.view().list("config")) == 200


def test_too_many_bytes_is_refused_at_prepare() -> None:
    store = new_store()
    with pytest.raises(StoreError) as raised:
        # two configs, each under the config size limit, over the transaction's together
        half = MAX_PROPOSAL_BYTES // 2 + 1
        store.prepare(lambda tx: (tx.create("config", config("c1", "big1", b"x" * half)),
                                  tx.create("config", config("c2", "big2", b"x" * half))), "big")
    assert raised.value.code == "INVALID_ARGUMENT"
    assert raised.value.message.startswith("transaction too large: ")
    assert raised.value.message.endswith(" bytes exceeds 1572864")
    size = int(raised.value.message.split()[3])
    assert size > MAX_PROPOSAL_BYTES


def test_oversized_entry_is_refused_at_apply_too() -> None:
    store, log = new_store(), Log()
    proposal = pb.StoreProposal(request_id="sneaky")
    for n in range(MAX_ACTIONS + 1):
        proposal.actions.add(action=pb.StoreAction.CREATE, config=config(f"c{n}", f"n{n}"))
    result = store.apply(log.next(), proposal.SerializeToString())
    assert result.error == StoreError("INVALID_ARGUMENT", "transaction too large: 201 actions exceeds 200")
    assert store.view().list("config") == []


# ---- bad entries ----

def test_garbage_entry_is_an_error_result_and_changes_nothing() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    before = store.snapshot()
    result = store.apply(log.next(), b"\xff\xff\xff\xff")
    assert result.error.code == "INVALID_ARGUMENT"
    assert result.error.message.startswith(f"invalid store proposal at index {log.index}: ")
    assert (result.events, _objects(store)) == ([], _objects_from(before))


def test_action_without_object_or_kind_is_invalid() -> None:
    store, log = new_store(), Log()
    no_object = pb.StoreProposal(request_id="a", actions=[pb.StoreAction(action=pb.StoreAction.CREATE)])
    no_kind = pb.StoreProposal(request_id="b", actions=[pb.StoreAction(config=config("c1", "x"))])
    assert store.apply(log.next(), no_object.SerializeToString()).error == StoreError(
        "INVALID_ARGUMENT", "store action 0 has no object")
    assert store.apply(log.next(), no_kind.SerializeToString()).error == StoreError(
        "INVALID_ARGUMENT", "store action 0 has unknown action 0")
    assert store.view().list("config") == []


def test_entry_at_or_below_last_index_is_ignored() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    data, _ = store.prepare(create("config", config("c2", "b")), "r2")
    result = store.apply(log.index, data)
    assert (result.error, result.events) == (None, [])
    assert store.view().get("config", "c2") is None


# ---- de-duplication ----

def test_duplicate_request_id_is_a_no_op_with_the_earlier_outcome() -> None:
    store, log = new_store(), Log()
    data, _ = store.prepare(create("config", config("c1", "a")), "req-1")
    first = store.apply(log.next(), data)
    again = store.apply(log.next(), data)
    assert (first.error, first.duplicate, len(first.events)) == (None, False, 1)
    assert (again.request_id, again.error, again.events, again.duplicate) == ("req-1", None, [], True)
    assert store.view().get("config", "c1").meta.version.index == first.index


def test_duplicate_of_a_failed_request_repeats_its_error() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c0", "a")), "r0")
    data, _ = MemoryStore().prepare(create("config", config("c1", "a")), "req-x")
    assert store.apply(log.next(), data).error == StoreError("ALREADY_EXISTS", NAME_CONFLICT)
    commit(store, log, lambda tx: tx.remove("config", "c0"), "r1")
    again = store.apply(log.next(), data)  # would now succeed, but it is the same request
    assert (again.error, again.duplicate) == (StoreError("ALREADY_EXISTS", NAME_CONFLICT), True)
    assert store.view().get("config", "c1") is None


def test_dedupe_window_forgets_the_oldest_request_ids() -> None:
    store, log = MemoryStore(dedupe_window=2), Log()
    data, _ = store.prepare(create("config", config("c1", "a")), "old")
    store.apply(log.next(), data)
    commit(store, log, create("config", config("c2", "b")), "mid")
    commit(store, log, create("config", config("c3", "c")), "new")
    result = store.apply(log.next(), data)
    assert (result.duplicate, result.error) == (False, StoreError("ALREADY_EXISTS", "config c1 already exists"))


# ---- snapshots ----

def _objects(store: MemoryStore) -> dict[str, list[bytes]]:
    view = store.view()
    return {kind: [o.SerializeToString(deterministic=True) for o in view.list(kind)]
            for kind in ("network", "config", "node", "service", "task", "cluster")}


def _objects_from(snapshot: bytes) -> dict[str, list[bytes]]:
    fresh = MemoryStore()
    fresh.restore(snapshot)
    return _objects(fresh)


def _populate(store: MemoryStore, log: Log) -> bytes:
    commit(store, log, create("network", network("n1", "front")), "r1")
    commit(store, log, create("config", config("c1", "a", b"1")), "r2")
    commit(store, log, create("config", config("c2", "b", b"2")), "r3")
    dup, _ = store.prepare(create("service", pb.Service(id="s1", spec=pb.ServiceSpec(
        annotations=pb.Annotations(name="web")))), "r4")
    store.apply(log.next(), dup)
    commit(store, log, lambda tx: tx.remove("config", "c1"), "r5")
    return dup


def test_snapshot_restore_round_trip_gives_identical_views_and_index() -> None:
    store, log = new_store(), Log()
    _populate(store, log)
    restored = MemoryStore()
    restored.restore(store.snapshot())
    assert _objects(restored) == _objects(store)
    assert restored.last_index == store.last_index == log.index
    assert restored.view().find_by_name("network", "front").id == "n1"
    assert restored.snapshot() == store.snapshot()


def test_restored_store_keeps_dedupe_behaviour() -> None:
    store, log = new_store(), Log()
    dup = _populate(store, log)
    restored = MemoryStore()
    restored.restore(store.snapshot())
    index = log.next()
    original_result, restored_result = store.apply(index, dup), restored.apply(index, dup)
    assert restored_result == original_result
    assert (restored_result.duplicate, restored_result.error, restored_result.events) == (True, None, [])
    assert restored.snapshot() == store.snapshot()


def test_restore_of_garbage_is_refused_and_changes_nothing() -> None:
    store, log = new_store(), Log()
    _populate(store, log)
    before = store.snapshot()
    with pytest.raises(StoreError) as raised:
        store.restore(b"\x0a\xff\xff")
    assert raised.value.code == "INVALID_ARGUMENT"
    assert raised.value.message.startswith("invalid store snapshot: ")
    assert store.snapshot() == before


def test_restore_refuses_duplicate_names() -> None:
    snap = pb.StoreSnapshot(configs=[config("c1", "same"), config("c2", "SAME")], last_index=5)
    store = MemoryStore()
    with pytest.raises(StoreError) as raised:
        store.restore(snap.SerializeToString())
    assert raised.value.message == "store snapshot has two configs named 'SAME'"
    assert store.last_index == 0


def test_two_stores_applying_the_same_entries_end_byte_identical() -> None:
    leader, follower, log = new_store(), MemoryStore(clock=lambda: 0.0), Log()
    entries: list[tuple[int, bytes]] = []

    def propose(fn: Callable[[WriteTx], Any], request_id: str) -> None:
        data, _ = leader.prepare(fn, request_id)
        index = log.next()
        entries.append((index, data))
        leader.apply(index, data)

    propose(create("network", network("n1", "front")), "a")
    propose(lambda tx: [tx.create("config", config(f"c{n}", f"conf{n}", bytes([n]))) for n in range(5)], "b")
    propose(lambda tx: tx.remove("config", "c3"), "c")
    # Prepared on stale (empty) state: fails at apply, name taken. Then garbage.
    stale, _ = new_store().prepare(create("config", config("c9", "conf0")), "d")
    for data in (stale, b"garbage"):
        entries.append((log.next(), data))
        assert leader.apply(*entries[-1]).error is not None
    for index, data in entries:
        follower.apply(index, data)
    assert follower.snapshot() == leader.snapshot()


# ---- watches ----

def test_watch_gets_events_in_commit_order_only_of_the_kinds_asked() -> None:
    async def scenario() -> list[tuple[int, str, str, str]]:
        store, log = new_store(), Log()
        watch = store.watch({"config"})
        commit(store, log, create("network", network("n1", "net")), "r1")
        commit(store, log, create("config", config("c1", "a")), "r2")
        current = store.view().get("config", "c1")
        current.spec.data = b"new"
        commit(store, log, lambda tx: tx.update("config", current), "r3")
        commit(store, log, lambda tx: tx.remove("config", "c1"), "r4")
        seen = []
        async for event in watch:
            seen.append((event.index, event.action, event.kind, event.object.id))
            if len(seen) == 3:
                watch.close()
        return seen

    assert asyncio.run(scenario()) == [(3, "create", "config", "c1"), (4, "update", "config", "c1"),
                                       (5, "remove", "config", "c1")]


def test_watch_waits_for_a_later_commit() -> None:
    async def scenario() -> str:
        store, log = new_store(), Log()
        watch = store.watch()

        async def consume() -> str:
            async for event in watch:
                return event.object.id
            return "none"

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # let the consumer park on the empty watch
        commit(store, log, create("network", network("n1", "net")), "r1")
        return await asyncio.wait_for(consumer, timeout=5)

    assert asyncio.run(scenario()) == "n1"


def test_failed_and_duplicate_entries_produce_no_events() -> None:
    store, log = new_store(), Log()
    watch = store.watch()
    data, _ = store.prepare(create("config", config("c1", "a")), "r1")
    store.apply(log.next(), data)
    store.apply(log.next(), data)
    store.apply(log.next(), b"\xff\xff")
    assert [(e.index, e.action) for e in watch.drain()] == [(2, "create")]


def test_watch_that_falls_behind_is_closed_with_an_error_after_its_buffer() -> None:
    async def scenario() -> tuple[int, StoreError]:
        store, log = MemoryStore(watch_buffer=2), Log()
        watch = store.watch()
        for n in range(4):
            commit(store, log, create("config", config(f"c{n}", f"n{n}")), f"r{n}")
        received = 0
        with pytest.raises(StoreError) as raised:
            async for _ in watch:
                received += 1
        return received, raised.value

    received, error = asyncio.run(scenario())
    assert received == 2
    assert error == StoreError("RESOURCE_EXHAUSTED", "watch fell behind: 2 events unread at index 4")


def test_watch_poll_gives_buffered_events_in_order_then_none_without_waiting() -> None:
    store, log = new_store(), Log()
    watch = store.watch({"config"})
    assert watch.poll() is None
    commit(store, log, create("config", config("c1", "a")), "r1")
    commit(store, log, create("config", config("c2", "b")), "r2")
    assert [watch.poll().object.id, watch.poll().object.id, watch.poll()] == ["c1", "c2", None]


def test_next_or_none_takes_a_buffered_watch_event_without_arming_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from common import aiowait

    real_timeout = aiowait.asyncio.timeout
    armed: list[float] = []

    def counting_timeout(delay: float):  # type: ignore[no-untyped-def]
        armed.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(aiowait.asyncio, "timeout", counting_timeout)

    async def scenario() -> list[str | None]:
        store, log = new_store(), Log()
        watch = store.watch({"config"})
        commit(store, log, create("config", config("c1", "a")), "r1")
        first = await aiowait.next_or_none(watch, 1.0)
        second = await aiowait.next_or_none(watch, 0.01)  # nothing buffered: waits out its timeout
        return [first.object.id if first else None, second.object.id if second else None]

    assert asyncio.run(scenario()) == ["c1", None]
    assert armed == [0.01]


def test_closed_watch_stops_receiving() -> None:
    store, log = new_store(), Log()
    watch = store.watch()
    watch.close()
    commit(store, log, create("config", config("c1", "a")), "r1")
    assert watch.drain() == []


def test_restore_ends_open_watches() -> None:
    store, log = new_store(), Log()
    _populate(store, log)
    watch = store.watch()
    store.restore(store.snapshot())
    assert watch.closed
    assert watch.error == StoreError(
        "FAILED_PRECONDITION", f"store replaced by a snapshot at index {log.index}: watch again")


def test_watch_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(StoreError, match="unknown object kind 'secrets'"):
        new_store().watch({"secrets"})


def test_store_error_with_an_unknown_code_becomes_unknown() -> None:
    error = StoreError("BOGUS", "from a peer")
    assert (error.code, error.message, str(error)) == ("UNKNOWN", "from a peer", "from a peer")


# ---- validation at apply: a committed entry that bypassed the control API creates nothing ----

def _raw_create(kind: str, obj: Any, request_id: str = "raw") -> bytes:
    """A StoreProposal built by hand, as a hostile or buggy member could put it in the log."""
    action = pb.StoreAction(action=pb.StoreAction.CREATE)
    getattr(action, kind).CopyFrom(obj)
    return pb.StoreProposal(request_id=request_id, actions=[action]).SerializeToString()


NAME_RULE = ("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, "
             "and the start and end character must be [a-zA-Z0-9]")


def test_committed_config_with_an_invalid_name_is_not_applied() -> None:
    store, log = new_store(), Log()
    result = store.apply(log.next(), _raw_create("config", config("c1", "bad name with spaces!")))
    assert result.error == StoreError("INVALID_ARGUMENT", NAME_RULE)
    assert (result.events, store.view().list("config")) == ([], [])


def test_committed_config_with_empty_data_is_not_applied() -> None:
    store, log = new_store(), Log()
    result = store.apply(log.next(), _raw_create("config", config("c1", "empty", b"")))
    assert result.error == StoreError("INVALID_ARGUMENT", "config data must be larger than 0 and less than 1024000 bytes")
    assert store.view().list("config") == []


def test_committed_object_with_an_invalid_id_is_not_applied() -> None:
    store, log = new_store(), Log()
    result = store.apply(log.next(), _raw_create("network", network("../n1", "front")))
    assert result.error == StoreError(
        "INVALID_ARGUMENT", "invalid network id '../n1': 1 to 64 characters [a-zA-Z0-9_.-], starting with a letter or digit")
    assert store.view().list("network") == []


def test_committed_network_with_a_control_character_in_its_name_is_not_applied() -> None:
    store, log = new_store(), Log()
    result = store.apply(log.next(), _raw_create("network", network("n1", "front\n")))
    assert result.error == StoreError(
        "INVALID_ARGUMENT", "invalid network name 'front\\n': at most 64 characters, no control characters")
    assert store.view().list("network") == []


def test_service_referring_to_a_missing_config_is_refused() -> None:
    store = new_store()
    svc = pb.Service(id="s1", spec=pb.ServiceSpec(annotations=pb.Annotations(name="web")))
    svc.spec.task.container.configs.add(config_id="c9", config_name="gone")
    with pytest.raises(StoreError) as raised:
        store.prepare(create("service", svc), "r1")
    assert raised.value == StoreError("INVALID_ARGUMENT", "config c9 not found")
    assert store.apply(2, _raw_create("service", svc)).error == StoreError("INVALID_ARGUMENT", "config c9 not found")
    assert store.view().list("service") == []


def test_task_referring_to_a_missing_service_is_not_applied() -> None:
    store, log = new_store(), Log()
    task = pb.Task(id="t1", service_id="s9", annotations=pb.Annotations(name="web.1.t1"))
    assert store.apply(log.next(), _raw_create("task", task)).error == StoreError("INVALID_ARGUMENT", "service s9 not found")
    assert store.view().list("task") == []


def test_config_used_by_a_service_is_not_removed() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "app.conf")), "r1")
    svc = pb.Service(id="s1", spec=pb.ServiceSpec(annotations=pb.Annotations(name="web")))
    svc.spec.task.container.configs.add(config_id="c1", config_name="app.conf")
    assert commit(store, log, create("service", svc), "r2").error is None
    with pytest.raises(StoreError) as raised:
        store.prepare(lambda tx: tx.remove("config", "c1"), "r3")
    assert raised.value == StoreError("INVALID_ARGUMENT", "config 'app.conf' is in use by the following service: web")
    assert store.view().get("config", "c1") is not None


# ---- one entry's events reach a watcher in one push ----

def _entry_of_three_configs_and_a_network(tx: WriteTx) -> None:
    tx.create("config", config("c1", "a"))
    tx.create("network", network("n1", "net"))
    tx.create("config", config("c2", "b"))
    tx.create("config", config("c3", "c"))


def test_an_entry_wakes_a_parked_watcher_once_with_all_its_events_in_order() -> None:
    store, log = new_store(), Log()
    watch = store.watch({"config"})
    wakes = []
    watch._wake = lambda: wakes.append(len(watch._buffer))  # type: ignore[method-assign]
    commit(store, log, _entry_of_three_configs_and_a_network, "r1")
    assert wakes == [3]
    assert [(e.index, e.object.id) for e in watch.drain()] == [(2, "c1"), (2, "c2"), (2, "c3")]


def test_watchers_of_the_same_kinds_each_get_the_entry_and_others_only_theirs() -> None:
    store, log = new_store(), Log()
    configs_a, configs_b, networks, everything = (store.watch({"config"}), store.watch({"config"}),
                                                  store.watch({"network"}), store.watch())
    commit(store, log, _entry_of_three_configs_and_a_network, "r1")
    assert [e.object.id for e in configs_a.drain()] == ["c1", "c2", "c3"]
    assert [e.object.id for e in configs_b.drain()] == ["c1", "c2", "c3"]
    assert [e.object.id for e in networks.drain()] == ["n1"]
    assert [e.object.id for e in everything.drain()] == ["c1", "n1", "c2", "c3"]


def test_an_entry_that_overflows_a_watch_keeps_what_fits_and_names_the_first_event_left_out() -> None:
    async def scenario() -> tuple[list[str], StoreError]:
        store, log = MemoryStore(watch_buffer=2), Log()
        watch = store.watch({"config"})
        commit(store, log, _entry_of_three_configs_and_a_network, "r1")
        received = []
        with pytest.raises(StoreError) as raised:
            async for event in watch:
                received.append(event.object.id)
        return received, raised.value

    received, error = asyncio.run(scenario())
    assert received == ["c1", "c2"]
    assert error == StoreError("RESOURCE_EXHAUSTED", "watch fell behind: 2 events unread at index 2")


def test_exists_answers_for_committed_objects_and_a_transactions_own_writes() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c1", "a")), "r1")
    assert store.view().exists("config", "c1") and not store.view().exists("config", "c2")

    def tx(t: WriteTx) -> tuple[bool, bool]:
        t.create("config", config("c2", "b"))
        t.remove("config", "c1")
        return t.exists("config", "c2"), t.exists("config", "c1")

    assert store.prepare(tx, "r2")[1] == (True, False)


def test_ids_lists_the_ids_of_a_kind_sorted_and_sees_a_transactions_writes() -> None:
    store, log = new_store(), Log()
    commit(store, log, create("config", config("c2", "a")), "r1")
    commit(store, log, create("config", config("c1", "b")), "r2")
    assert (store.view().ids("config"), store.view().ids("secret")) == (["c1", "c2"], [])

    def tx(t: WriteTx) -> list[str]:
        t.create("config", config("c0", "c"))
        t.remove("config", "c2")
        return t.ids("config")

    assert store.prepare(tx, "r3")[1] == ["c0", "c1"]


def test_select_copies_only_the_accepted_objects_sorted_by_id_and_sees_a_transactions_writes() -> None:
    store, log = new_store(), Log()
    commit(store, log, lambda tx: [tx.create("config", config(f"c{n}", f"n{n}", b"big" if n % 2 else b"x"))
                                   for n in (3, 1, 2)], "r1")
    chosen = store.view().select("config", lambda c: c.spec.data == b"big")
    assert [c.id for c in chosen] == ["c1", "c3"]
    chosen[0].spec.data = b"changed"
    assert store.view().get("config", "c1").spec.data == b"big"

    def tx(t: WriteTx) -> list[str]:
        t.remove("config", "c1")
        t.create("config", config("c4", "n4", b"big"))
        return [c.id for c in t.select("config", lambda c: c.spec.data == b"big")]

    assert store.prepare(tx, "r2")[1] == ["c3", "c4"]
