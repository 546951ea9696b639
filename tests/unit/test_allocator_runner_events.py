"""Which committed changes wake the allocator runner (manager/allocator/runner.py needs_pass): a pass reads the whole
store, so task status updates between live states and node updates that keep READY must not cost one."""

from __future__ import annotations

from manager.allocator.runner import needs_pass
from manager.store.watch import Event
from proto import objects_pb2 as pb


def task(state: int, desired: int = pb.TASK_STATE_RUNNING, addresses: tuple[str, ...] = ()) -> pb.Task:
    t = pb.Task(id="t1", desired_state=desired)
    t.status.state = state
    if addresses:
        t.networks.add(addresses=list(addresses))
    return t


def node(state: int) -> pb.Node:
    n = pb.Node(id="n1")
    n.status.state = state
    return n


def test_live_task_progress_does_not_wake_the_allocator() -> None:
    ev = Event(5, "update", "task", task(pb.TASK_STATE_RUNNING, addresses=("10.0.9.2/24",)),
               task(pb.TASK_STATE_ASSIGNED, addresses=("10.0.9.2/24",)))
    assert needs_pass(ev) is False


def test_a_task_that_dies_wakes_the_allocator() -> None:
    ev = Event(5, "update", "task", task(pb.TASK_STATE_SHUTDOWN, pb.TASK_STATE_SHUTDOWN), task(pb.TASK_STATE_RUNNING))
    assert needs_pass(ev) is True


def test_created_and_removed_tasks_and_any_network_change_wake_it() -> None:
    assert needs_pass(Event(5, "create", "task", task(pb.TASK_STATE_NEW))) is True
    assert needs_pass(Event(5, "remove", "task", task(pb.TASK_STATE_RUNNING))) is True
    assert needs_pass(Event(5, "update", "network", pb.Network(id="n"), pb.Network(id="n"))) is True


def test_a_node_update_wakes_it_only_when_readiness_changes() -> None:
    assert needs_pass(Event(5, "update", "node", node(pb.NodeStatus.READY), node(pb.NodeStatus.READY))) is False
    assert needs_pass(Event(5, "update", "node", node(pb.NodeStatus.READY), node(pb.NodeStatus.UNKNOWN))) is True
