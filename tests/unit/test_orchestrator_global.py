"""The global orchestrator's core: one task per eligible node, following node add, drain, down and constraints."""

from __future__ import annotations

from manager.orchestrator.global_ import reconcile_global
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import NOW, S, ids, node, nodes_by_id, service, task


def test_one_task_per_ready_active_node_preassigned() -> None:
    svc = service(replicas=None)
    nodes = nodes_by_id(node("n1"), node("n2"), node("n3", availability=pb.NodeSpec.DRAIN),
                        node("n4", state=pb.NodeStatus.DOWN))
    plan = reconcile_global(svc, [], nodes, NOW, ids())
    assert sorted((t.node_id, t.slot) for t in plan.create) == [("n1", 0), ("n2", 0)]
    assert sorted(t.annotations.name for t in plan.create) == ["web.n1.t1", "web.n2.t2"]


def test_a_new_node_gets_a_task_and_existing_ones_are_kept() -> None:
    svc = service(replicas=None)
    nodes = nodes_by_id(node("n1"), node("n2"))
    plan = reconcile_global(svc, [task(svc, "a", 0, "n1")], nodes, NOW, ids())
    assert [t.node_id for t in plan.create] == ["n2"] and plan.update == []


def test_task_leaves_a_drained_node_and_comes_back_when_it_is_active_again() -> None:
    svc = service(replicas=None)
    drained = nodes_by_id(node("n1", availability=pb.NodeSpec.DRAIN))
    plan = reconcile_global(svc, [task(svc, "a", 0, "n1")], drained, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)] and plan.create == []
    stopped = task(svc, "a", 0, "n1", state=S.TASK_STATE_SHUTDOWN, desired=S.TASK_STATE_SHUTDOWN)
    back = reconcile_global(svc, [stopped], nodes_by_id(node("n1")), NOW, ids())
    assert [t.node_id for t in back.create] == ["n1"]


def test_task_leaves_a_node_that_no_longer_matches_the_constraints() -> None:
    svc = service(replicas=None)
    svc.spec.task.placement.constraints.append("node.labels.zone==a")
    nodes = nodes_by_id(node("n1", labels={"zone": "b"}), node("n2", labels={"zone": "a"}))
    plan = reconcile_global(svc, [task(svc, "a", 0, "n1")], nodes, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert [t.node_id for t in plan.create] == ["n2"]


def test_failed_global_task_is_restarted_on_the_same_node() -> None:
    svc = service(replicas=None)
    plan = reconcile_global(svc, [task(svc, "a", 0, "n1", state=S.TASK_STATE_FAILED)], nodes_by_id(node("n1")), NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert [t.node_id for t in plan.create] == ["n1"]


def test_completed_global_task_with_condition_none_is_held() -> None:
    svc = service(replicas=None, condition=pb.RestartPolicy.NONE)
    held = task(svc, "a", 0, "n1", state=S.TASK_STATE_COMPLETE, desired=S.TASK_STATE_SHUTDOWN)
    plan = reconcile_global(svc, [held], nodes_by_id(node("n1")), NOW, ids())
    assert (plan.create, plan.update) == ([], [])
