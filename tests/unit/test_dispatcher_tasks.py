"""The dispatcher's task side over the manager's real store: status updates batched into few proposals, refused for
tasks of other nodes, never moving a task back; assignments as a full set then changes (manager/dispatcher_tasks.py)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from manager.dispatcher_tasks import NOT_THIS_NODE, AssignmentDiff, StatusBatcher, StatusRefused, assigned_set, stream_assignments
from manager.secretbox import open_sealed, seal
from manager.store import MemoryStore
from proto import objects_pb2 as pb
from proto import swarm_pb2

S = pb.TaskState


class Proposer:
    """Commits straight into the store, as raft would after replication; counts the proposals."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.index = itertools.count(1)
        self.proposals = 0

    async def __call__(self, fn: Any) -> Any:
        rid = f"r{self.proposals}"
        data, result = self.store.prepare(fn, rid)
        self.proposals += 1
        res = self.store.apply(next(self.index) + self.store.last_index, data)
        assert res.error is None, res.error
        return result


def task(tid: str, node: str, state: int = S.TASK_STATE_ASSIGNED, configs: tuple[str, ...] = ()) -> pb.Task:
    t = pb.Task(id=tid, node_id=node, desired_state=S.TASK_STATE_RUNNING)
    t.annotations.name = f"web.1.{tid}"
    t.status.state = state
    t.spec.container.image = "busybox"
    for c in configs:
        t.spec.container.configs.add(config_id=c, config_name=c, file=pb.FileTarget(name=f"/{c}", mode=0o444))
    return t


def seed(store: MemoryStore, *objs: Any) -> None:
    def tx(t: Any) -> None:
        for o in objs:
            t.create("config" if isinstance(o, pb.Config) else "task", o)

    data, _ = store.prepare(tx, f"seed-{store.last_index}")
    store.apply(store.last_index + 1, data)


def update(tid: str, state: int, msg: str = "") -> swarm_pb2.TaskStatusUpdate:
    return swarm_pb2.TaskStatusUpdate(task_id=tid, status=pb.TaskStatus(state=state, message=msg))


def state_of(store: MemoryStore, tid: str) -> int:
    return store.view().get("task", tid).status.state


# ------------------------------------------------------------------------------------------------ status batching
def test_updates_from_many_tasks_are_written_in_one_proposal() -> None:
    store = MemoryStore()
    seed(store, *[task(f"t{i}", "n1") for i in range(50)])
    prop = Proposer(store)
    b = StatusBatcher(store, prop, interval=3600, items=200)
    for i in range(50):
        assert b.submit("n1", [update(f"t{i}", S.TASK_STATE_ACCEPTED)]) == 1
    assert prop.proposals == 0  # nothing written before the window closes
    asyncio.run(b.flush())
    assert prop.proposals == 1
    assert {state_of(store, f"t{i}") for i in range(50)} == {S.TASK_STATE_ACCEPTED}


def test_a_batch_larger_than_the_item_cap_is_split_into_proposals_of_200() -> None:
    store = MemoryStore()
    for k in range(5):  # seeding in chunks: one proposal holds at most 200 changes
        seed(store, *[task(f"t{k}-{i}", "n1") for i in range(100)])
    prop = Proposer(store)
    b = StatusBatcher(store, prop, interval=3600, items=200)
    b.submit("n1", [update(f"t{k}-{i}", S.TASK_STATE_RUNNING) for k in range(5) for i in range(100)])
    asyncio.run(b.flush())
    assert prop.proposals == 3  # 200 + 200 + 100
    assert b.stats.written == 500


def test_reaching_the_item_cap_writes_without_waiting_for_the_interval() -> None:
    async def run() -> int:
        store = MemoryStore()
        seed(store, *[task(f"t{i}", "n1") for i in range(10)])
        prop = Proposer(store)
        b = StatusBatcher(store, prop, interval=3600, items=10)
        b.start()
        b.submit("n1", [update(f"t{i}", S.TASK_STATE_RUNNING) for i in range(10)])
        await asyncio.wait_for(b.flushed(), 5)
        await b.stop()
        return prop.proposals

    assert asyncio.run(run()) == 1


def test_only_the_latest_update_of_a_task_in_a_window_is_written() -> None:
    store = MemoryStore()
    seed(store, task("t1", "n1"))
    prop = Proposer(store)
    b = StatusBatcher(store, prop, interval=3600)
    b.submit("n1", [update("t1", S.TASK_STATE_PREPARING)])
    b.submit("n1", [update("t1", S.TASK_STATE_RUNNING, "started")])
    b.submit("n1", [update("t1", S.TASK_STATE_STARTING)])  # arrives late: older than what is pending
    asyncio.run(b.flush())
    t = store.view().get("task", "t1")
    assert (t.status.state, t.status.message, prop.proposals) == (S.TASK_STATE_RUNNING, "started", 1)


def test_an_update_for_a_task_of_another_node_is_refused_and_nothing_of_the_request_is_queued() -> None:
    store = MemoryStore()
    seed(store, task("mine", "n1"), task("theirs", "n2"))
    b = StatusBatcher(store, Proposer(store), interval=3600)
    with pytest.raises(StatusRefused) as err:
        b.submit("n1", [update("mine", S.TASK_STATE_RUNNING), update("theirs", S.TASK_STATE_FAILED)])
    assert str(err.value) == NOT_THIS_NODE == "cannot update a task not assigned this node"
    assert b.pending == {}
    asyncio.run(b.flush())
    assert (state_of(store, "mine"), state_of(store, "theirs")) == (S.TASK_STATE_ASSIGNED, S.TASK_STATE_ASSIGNED)


def test_an_update_never_moves_a_task_state_backwards() -> None:
    store = MemoryStore()
    seed(store, task("t1", "n1", state=S.TASK_STATE_RUNNING))
    prop = Proposer(store)
    b = StatusBatcher(store, prop, interval=3600)
    b.submit("n1", [update("t1", S.TASK_STATE_PREPARING)])
    asyncio.run(b.flush())
    assert state_of(store, "t1") == S.TASK_STATE_RUNNING
    assert b.stats.dropped_backwards == 1


def test_an_update_for_a_deleted_task_is_skipped() -> None:
    store = MemoryStore()
    seed(store, task("t1", "n1"))
    b = StatusBatcher(store, Proposer(store), interval=3600)
    assert b.submit("n1", [update("gone", S.TASK_STATE_RUNNING), update("t1", S.TASK_STATE_RUNNING)]) == 1
    assert list(b.pending) == ["t1"]


def test_a_status_equal_to_the_stored_one_writes_nothing() -> None:
    store = MemoryStore()
    seed(store, task("t1", "n1"))
    prop = Proposer(store)
    b = StatusBatcher(store, prop, interval=3600)
    b.submit("n1", [swarm_pb2.TaskStatusUpdate(task_id="t1", status=store.view().get("task", "t1").status)])
    before = store.view().get("task", "t1").meta.version.index
    asyncio.run(b.flush())
    assert store.view().get("task", "t1").meta.version.index == before
    assert b.stats.written == 0


# ------------------------------------------------------------------------------------------------ assignments
def test_the_assigned_set_holds_the_nodes_tasks_from_assigned_on_and_their_configs() -> None:
    store = MemoryStore()
    cfg = pb.Config(id="c1", spec=pb.ConfigSpec(annotations=pb.Annotations(name="app.conf"), data=b"x=1"))
    seed(store, cfg, task("a", "n1", configs=("c1",)), task("b", "n1", state=S.TASK_STATE_PENDING), task("c", "n2"))
    got = assigned_set(store.view(), "n1")
    assert sorted(got) == [("config", "c1"), ("task", "a")]


def test_assignments_send_the_full_set_then_only_changes_and_removals() -> None:
    async def run() -> list[swarm_pb2.AssignmentsMessage]:
        store = MemoryStore()
        seed(store, task("a", "n1"), task("b", "n2"))
        out: list[swarm_pb2.AssignmentsMessage] = []
        alive = True
        gen = stream_assignments(store, "n1", lambda: alive, coalesce_s=0.01)
        out.append(await gen.__anext__())
        prop = Proposer(store)

        def desire_shutdown(t: Any) -> None:
            a = t.get("task", "a")
            a.desired_state = S.TASK_STATE_SHUTDOWN
            t.update("task", a)

        await prop(desire_shutdown)
        out.append(await asyncio.wait_for(gen.__anext__(), 5))
        # a status report of the node itself is not sent back; the next real change is
        b = StatusBatcher(store, prop, interval=3600)
        b.submit("n1", [update("a", S.TASK_STATE_SHUTDOWN)])
        await b.flush()
        await prop(lambda t: t.remove("task", "a"))
        out.append(await asyncio.wait_for(gen.__anext__(), 5))
        alive = False
        await gen.aclose()
        return out

    full, changed, removed = asyncio.run(run())
    M, C = swarm_pb2.AssignmentsMessage, swarm_pb2.AssignmentChange
    assert full.type == M.COMPLETE and [c.assignment.task.id for c in full.changes] == ["a"]
    assert changed.type == M.INCREMENTAL and changed.applies_to == full.results_in
    assert [(c.action, c.assignment.task.id, c.assignment.task.desired_state) for c in changed.changes] == [
        (C.UPDATE, "a", S.TASK_STATE_SHUTDOWN)]
    assert removed.applies_to == changed.results_in
    assert [(c.action, c.assignment.task.id) for c in removed.changes] == [(C.REMOVE, "a")]


def test_a_config_leaves_the_assignments_with_the_last_task_using_it() -> None:
    store = MemoryStore()
    cfg = pb.Config(id="c1", spec=pb.ConfigSpec(annotations=pb.Annotations(name="app.conf"), data=b"x=1"))
    seed(store, cfg, task("a", "n1", configs=("c1",)))
    d = AssignmentDiff()
    d.complete(assigned_set(store.view(), "n1"))
    data, _ = store.prepare(lambda t: t.remove("task", "a"), "rm")
    store.apply(store.last_index + 1, data)
    msg = d.incremental(assigned_set(store.view(), "n1"))
    assert msg is not None
    assert sorted((c.action, c.assignment.WhichOneof("item"), c.assignment.config.id or c.assignment.task.id)
                  for c in msg.changes) == [(1, "config", "c1"), (1, "task", "a")]
    assert d.incremental(assigned_set(store.view(), "n1")) is None


def _secret_task(tid: str, node: str, sid: str) -> pb.Task:
    t = task(tid, node)
    t.spec.container.secrets.add(secret_id=sid, secret_name="db-pass", file=pb.FileTarget(name="db-pass", mode=0o400))
    return t


def _seed_secret(store: MemoryStore, sid: str, sealed: bytes) -> None:
    sec = pb.Secret(id=sid, spec=pb.SecretSpec(annotations=pb.Annotations(name="db-pass"), data=sealed))
    data, _ = store.prepare(lambda t: t.create("secret", sec), f"secret-{sid}")
    store.apply(store.last_index + 1, data)


KEY = bytes(range(32))


def test_a_secret_goes_to_the_node_of_a_task_using_it_in_plaintext_and_nowhere_else() -> None:
    store = MemoryStore()
    sealed = seal(KEY, "s1", b"hunter2")
    _seed_secret(store, "s1", sealed)
    seed(store, _secret_task("a", "n1", "s1"))
    unseal = lambda sec: open_sealed(KEY, sec.id, sec.spec.data)  # noqa: E731 - what SecretOps.plaintext does
    mine = AssignmentDiff(unseal=unseal).complete(assigned_set(store.view(), "n1"))
    secrets_sent = [c.assignment.secret for c in mine.changes if c.assignment.WhichOneof("item") == "secret"]
    assert [(s.id, s.spec.data) for s in secrets_sent] == [("s1", b"hunter2")]
    other = AssignmentDiff(unseal=unseal).complete(assigned_set(store.view(), "n2"))
    assert list(other.changes) == []
    assert store.view().get("secret", "s1").spec.data == sealed  # the store keeps it sealed


def test_a_secret_the_manager_cannot_open_is_left_out_not_sent_empty() -> None:
    store = MemoryStore()
    _seed_secret(store, "s1", seal(KEY, "s1", b"hunter2"))
    seed(store, _secret_task("a", "n1", "s1"))

    def broken(_sec: Any) -> bytes:
        raise ValueError("no secrets key")

    msg = AssignmentDiff(unseal=broken).complete(assigned_set(store.view(), "n1"))
    assert [c.assignment.WhichOneof("item") for c in msg.changes] == ["task"]


# ------------------------------------------------------------------------------------------------ what wakes a stream
def _task_update(old: pb.Task, change: Any) -> Any:
    from manager.store.watch import Event

    new = pb.Task()
    new.CopyFrom(old)
    change(new)
    return Event(7, "update", "task", new, old)


def test_a_status_report_of_an_assigned_task_does_not_touch_its_nodes_set() -> None:
    from manager.dispatcher_tasks import touches

    old = task("t1", "n1", S.TASK_STATE_ASSIGNED)
    old.networks.add(addresses=["10.0.9.3/24"])

    def report(t: pb.Task) -> None:
        t.status.state, t.status.message = S.TASK_STATE_RUNNING, "started"
        t.meta.version.index = 9

    assert touches(_task_update(old, report), "n1", {}) is False


def test_assignment_a_new_desired_state_or_new_networks_touch_the_nodes_set() -> None:
    from manager.dispatcher_tasks import touches

    pending = task("t1", "", S.TASK_STATE_PENDING)

    def assign(t: pb.Task) -> None:
        t.node_id, t.status.state = "n1", S.TASK_STATE_ASSIGNED

    def shut_down(t: pb.Task) -> None:
        t.desired_state = S.TASK_STATE_SHUTDOWN

    def readdress(t: pb.Task) -> None:
        t.networks.add(addresses=["10.0.9.4/24"])

    running = task("t1", "n1", S.TASK_STATE_RUNNING)
    assert [touches(_task_update(pending, assign), "n1", {}), touches(_task_update(running, shut_down), "n1", {}),
            touches(_task_update(running, readdress), "n1", {}), touches(_task_update(running, shut_down), "n2", {})] \
        == [True, True, True, False]
