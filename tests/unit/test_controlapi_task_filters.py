"""ListTasks' up-to-date filter (the Engine API's `_up-to-date` task filter, which the docker CLI's service progress
uses): a task is up to date when the service's spec would not replace it, as the orchestrator decides
(manager/orchestrator/tasks.py is_dirty): a change of placement alone leaves a task whose node meets it up to date."""

from __future__ import annotations

from manager.controlapi_services import task_matches
from proto import control_pb2
from tests.unit.services_fixtures import node, nodes_by_id, service, task

NODES = nodes_by_id(node("n1", labels={"zone": "a"}))


def up_to_date(constraint: str) -> bool:
    old = service()
    t = task(old, "t1", 1, "n1")
    svc = service()
    svc.spec.task.placement.constraints.append(constraint)
    return task_matches(t, control_pb2.ListTasksRequest.Filters(up_to_date=True), {svc.id: svc}, NODES)


def test_a_task_whose_node_meets_the_new_constraint_is_up_to_date() -> None:
    assert up_to_date("node.labels.zone==a") is True


def test_a_task_whose_node_does_not_meet_the_new_constraint_is_not_up_to_date() -> None:
    assert up_to_date("node.labels.zone==b") is False
