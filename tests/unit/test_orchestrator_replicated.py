"""The replicated orchestrator's core: scale by slot, replace tasks of failed/drained nodes, restart policy."""

from __future__ import annotations

from manager.orchestrator.replicated import reconcile_replicated
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import NOW, SEC, S, ids, node, nodes_by_id, service, task

N = nodes_by_id(node("n1"), node("n2"))


def test_new_service_gets_one_task_per_slot_numbered_from_one() -> None:
    svc = service(replicas=3)
    plan = reconcile_replicated(svc, [], N, NOW, ids())
    assert [(t.slot, t.status.state, t.desired_state, t.node_id) for t in plan.create] == [
        (1, S.TASK_STATE_NEW, S.TASK_STATE_RUNNING, ""), (2, S.TASK_STATE_NEW, S.TASK_STATE_RUNNING, ""),
        (3, S.TASK_STATE_NEW, S.TASK_STATE_RUNNING, "")]
    assert [t.annotations.name for t in plan.create] == ["web.1.t1", "web.2.t2", "web.3.t3"]
    assert plan.update == []


def test_converged_service_plans_nothing() -> None:
    svc = service(replicas=2)
    tasks = [task(svc, "a", 1, "n1"), task(svc, "b", 2, "n2")]
    plan = reconcile_replicated(svc, tasks, N, NOW, ids())
    assert (plan.create, plan.update, plan.wake_at_ns) == ([], [], None)


def test_scale_up_fills_the_lowest_free_slots() -> None:
    svc = service(replicas=4)
    tasks = [task(svc, "a", 1, "n1"), task(svc, "c", 3, "n2")]
    plan = reconcile_replicated(svc, tasks, N, NOW, ids())
    assert sorted(t.slot for t in plan.create) == [2, 4]


def test_scale_down_keeps_the_lowest_slots_and_removes_the_highest() -> None:
    svc = service(replicas=1)
    tasks = [task(svc, "a", 1, "n1"), task(svc, "b", 2, "n2"), task(svc, "c", 3, "n1")]
    plan = reconcile_replicated(svc, tasks, N, NOW, ids())
    assert plan.create == []
    assert sorted((t.id, t.desired_state) for t in plan.update) == [("b", S.TASK_STATE_REMOVE), ("c", S.TASK_STATE_REMOVE)]


def test_slot_whose_tasks_were_removed_is_reused_on_scale_up() -> None:
    svc = service(replicas=2)
    tasks = [task(svc, "a", 1, "n1"), task(svc, "b", 2, "n2", state=S.TASK_STATE_SHUTDOWN, desired=S.TASK_STATE_REMOVE)]
    plan = reconcile_replicated(svc, tasks, N, NOW, ids())
    assert [t.slot for t in plan.create] == [2]


def test_task_on_a_down_node_is_shut_down_and_replaced_in_its_slot() -> None:
    svc = service(replicas=2)
    nodes = nodes_by_id(node("n1"), node("n2", state=pb.NodeStatus.DOWN))
    tasks = [task(svc, "a", 1, "n1"), task(svc, "b", 2, "n2")]
    plan = reconcile_replicated(svc, tasks, nodes, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("b", S.TASK_STATE_SHUTDOWN)]
    assert [(t.slot, t.node_id) for t in plan.create] == [(2, "")]


def test_task_on_a_drained_node_is_shut_down_and_replaced() -> None:
    svc = service(replicas=1)
    nodes = nodes_by_id(node("n1", availability=pb.NodeSpec.DRAIN), node("n2"))
    plan = reconcile_replicated(svc, [task(svc, "a", 1, "n1")], nodes, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert [t.slot for t in plan.create] == [1]


def test_task_on_a_node_that_is_only_disconnected_stays() -> None:
    svc = service(replicas=1)
    nodes = nodes_by_id(node("n1", state=pb.NodeStatus.DISCONNECTED))
    plan = reconcile_replicated(svc, [task(svc, "a", 1, "n1")], nodes, NOW, ids())
    assert (plan.create, plan.update) == ([], [])


def test_failed_task_is_restarted_in_its_slot_with_condition_any() -> None:
    svc = service(replicas=1)
    plan = reconcile_replicated(svc, [task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED)], N, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert [t.slot for t in plan.create] == [1]


def test_completed_task_is_not_restarted_with_condition_on_failure_and_its_slot_is_held() -> None:
    svc = service(replicas=1, condition=pb.RestartPolicy.ON_FAILURE)
    plan = reconcile_replicated(svc, [task(svc, "a", 1, "n1", state=S.TASK_STATE_COMPLETE)], N, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert plan.create == []
    held = [task(svc, "a", 1, "n1", state=S.TASK_STATE_COMPLETE, desired=S.TASK_STATE_SHUTDOWN)]
    again = reconcile_replicated(svc, held, N, NOW, ids())
    assert (again.create, again.update) == ([], [])


def test_failed_task_is_not_restarted_with_condition_none() -> None:
    svc = service(replicas=1, condition=pb.RestartPolicy.NONE)
    plan = reconcile_replicated(svc, [task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED)], N, NOW, ids())
    assert plan.create == []


def test_restart_waits_for_the_delay_and_asks_to_be_woken_then() -> None:
    svc = service(replicas=1, delay_s=10)
    ended = NOW - 4 * SEC
    plan = reconcile_replicated(svc, [task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED, at=ended)], N, NOW, ids())
    assert (plan.create, plan.update, plan.wake_at_ns) == ([], [], ended + 10 * SEC)


def test_restart_stops_after_max_attempts_failures() -> None:
    svc = service(replicas=1, max_attempts=2)
    history = [task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN),
               task(svc, "b", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN)]
    second = reconcile_replicated(svc, history + [task(svc, "c", 1, "n1", state=S.TASK_STATE_RUNNING)], N, NOW, ids())
    assert second.create == []
    third = reconcile_replicated(svc, history + [task(svc, "c", 1, "n1", state=S.TASK_STATE_FAILED)], N, NOW, ids())
    assert third.create == [] and [(t.id, t.desired_state) for t in third.update] == [("c", S.TASK_STATE_SHUTDOWN)]
    one_failure = reconcile_replicated(svc, [task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED)], N, NOW, ids())
    assert [t.slot for t in one_failure.create] == [1]


def test_scale_down_to_zero_removes_unassigned_tasks_too() -> None:
    svc = service(replicas=0)
    tasks = [task(svc, "a", 1, "", state=S.TASK_STATE_PENDING), task(svc, "b", 2, "n1")]
    plan = reconcile_replicated(svc, tasks, N, NOW, ids())
    assert sorted((t.id, t.desired_state) for t in plan.update) == [("a", S.TASK_STATE_REMOVE), ("b", S.TASK_STATE_REMOVE)]


def test_a_big_scale_up_is_planned_one_transaction_at_a_time_lowest_slots_first() -> None:
    svc = service(replicas=1000)
    plan = reconcile_replicated(svc, [task(svc, "a", 1, "n1")], N, NOW, ids(), max_create=190)
    assert [t.slot for t in plan.create] == list(range(2, 192))
