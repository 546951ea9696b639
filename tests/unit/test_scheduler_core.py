"""The scheduler's pure core: filters (ready/active, constraints, reservations, host ports) and spread."""

from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter
from manager.scheduler.constraints import matches, parse
from manager.scheduler.core import schedulable, schedule
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import S, node, service, task


def pending(svc: pb.Service, tid: str, slot: int = 1) -> pb.Task:
    return task(svc, tid, slot, "", state=S.TASK_STATE_PENDING)


def test_tasks_spread_evenly_over_nodes() -> None:
    svc = service(replicas=4)
    d = schedule([node("n1"), node("n2")], [], [pending(svc, f"t{i}", i) for i in range(1, 5)])
    assert sorted(d.assigned.values()) == ["n1", "n1", "n2", "n2"] and d.unplaced == {}


def test_spread_prefers_nodes_with_fewer_tasks_of_the_service_then_fewer_tasks() -> None:
    web, db = service("web", sid="s1"), service("db", sid="s2")
    busy = [task(db, "d1", 1, "n2"), task(db, "d2", 2, "n2")]
    d = schedule([node("n1"), node("n2"), node("n3")], [task(web, "w1", 1, "n1"), *busy], [pending(web, "w2", 2)])
    assert d.assigned == {"w2": "n3"}


def test_only_ready_active_nodes_receive_tasks() -> None:
    svc = service()
    nodes = [node("n1", state=pb.NodeStatus.DOWN), node("n2", availability=pb.NodeSpec.DRAIN),
             node("n3", availability=pb.NodeSpec.PAUSE), node("n4")]
    d = schedule(nodes, [], [pending(svc, "t1"), pending(svc, "t2", 2)])
    assert d.assigned == {"t1": "n4", "t2": "n4"}


def test_no_suitable_node_names_the_reasons_like_swarm() -> None:
    svc = service()
    svc.spec.task.placement.constraints.append("node.role==manager")
    nodes = [node("n1"), node("n2"), node("n3", state=pb.NodeStatus.DOWN)]
    d = schedule(nodes, [], [pending(svc, "t1")])
    assert d.unplaced == {"t1": "no suitable node (1 node not available for new tasks; "
                                "scheduling constraints not satisfied on 2 nodes)"}


def test_constraints_on_hostname_role_id_and_labels() -> None:
    svc = service()
    svc.spec.task.placement.constraints.extend(["node.hostname!=h1", "node.labels.zone==east", "node.role==worker"])
    nodes = [node("n1", "h1", labels={"zone": "east"}), node("n2", "h2", labels={"zone": "west"}),
             node("n3", "h3", labels={"zone": "east"}, role=pb.NodeSpec.MANAGER), node("n4", "h4", labels={"zone": "east"})]
    assert schedule(nodes, [], [pending(svc, "t1")]).assigned == {"t1": "n4"}


def test_memory_reservations_are_counted_against_the_node() -> None:
    svc = service()
    svc.spec.task.resources.reservations.memory_bytes = 600 << 20
    tasks = [pending(svc, "t1", 1), pending(svc, "t2", 2), pending(svc, "t3", 3)]
    d = schedule([node("n1", memory=1 << 30), node("n2", memory=1 << 30)], [], tasks)
    assert sorted(d.assigned.values()) == ["n1", "n2"]
    assert list(d.unplaced.values()) == ["no suitable node (insufficient resources on 2 nodes)"]


def test_cpu_reservations_are_counted_against_the_node() -> None:
    svc = service()
    svc.spec.task.resources.reservations.nano_cpus = 2 * 10**9
    running = task(svc, "r", 1, "n1")
    d = schedule([node("n1", cpus=2), node("n2", cpus=2)], [running], [pending(svc, "t2", 2)])
    assert d.assigned == {"t2": "n2"}


def test_host_mode_published_port_is_used_once_per_node() -> None:
    svc = service(replicas=3)
    svc.spec.endpoint.ports.add(target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    tasks = [pending(svc, f"t{i}", i) for i in (1, 2, 3)]
    d = schedule([node("n1"), node("n2")], [], tasks)
    assert sorted(d.assigned.values()) == ["n1", "n2"]
    assert list(d.unplaced.values()) == ["no suitable node (host-mode port already in use on 2 nodes)"]


def test_preassigned_global_task_is_checked_against_its_node_only() -> None:
    svc = service(replicas=None)
    t = task(svc, "g1", 0, "n2", state=S.TASK_STATE_PENDING)
    assert schedule([node("n1"), node("n2")], [], [t]).assigned == {"g1": "n2"}
    t2 = task(svc, "g2", 0, "n3", state=S.TASK_STATE_PENDING)
    d = schedule([node("n1"), node("n3", availability=pb.NodeSpec.DRAIN)], [], [t2])
    assert d.unplaced == {"g2": "no suitable node (1 node not available for new tasks)"}


def test_a_global_task_with_a_host_port_is_placed_on_its_node_when_the_store_holds_it_too() -> None:
    # the runner passes every task of the store, the batch's own included
    svc = service(replicas=None)
    svc.spec.endpoint.ports.add(target_port=80, published_port=8097, publish_mode=pb.PortConfig.HOST)
    ts = [task(svc, f"g{i}", 0, f"n{i}", state=S.TASK_STATE_PENDING) for i in (1, 2)]
    d = schedule([node("n1"), node("n2")], ts, ts)
    assert (d.assigned, d.unplaced) == ({"g1": "n1", "g2": "n2"}, {})


def test_a_global_tasks_reservation_is_not_counted_twice_on_its_node() -> None:
    svc = service(replicas=None)
    svc.spec.task.resources.reservations.memory_bytes = 1 << 30  # the whole node (node() has 1 GiB)
    t = task(svc, "g1", 0, "n1", state=S.TASK_STATE_PENDING)
    assert schedule([node("n1")], [t], [t]).assigned == {"g1": "n1"}


def test_two_pending_global_tasks_wanting_one_host_port_on_a_node_get_it_once() -> None:
    a, b = service("a", replicas=None, sid="s1"), service("b", replicas=None, sid="s2")
    for svc in (a, b):
        svc.spec.endpoint.ports.add(target_port=80, published_port=8097, publish_mode=pb.PortConfig.HOST)
    ts = [task(a, "ga", 0, "n1", state=S.TASK_STATE_PENDING), task(b, "gb", 0, "n1", state=S.TASK_STATE_PENDING)]
    d = schedule([node("n1")], ts, ts)
    assert (d.assigned, d.unplaced) == ({"ga": "n1"}, {"gb": "no suitable node (host-mode port already in use on 1 node)"})


def test_a_new_task_waits_for_the_allocator_with_or_without_networks() -> None:
    svc = service()
    plain = task(svc, "a", 1, "", state=S.TASK_STATE_NEW)
    networked = task(svc, "b", 2, "", state=S.TASK_STATE_NEW)
    networked.spec.networks.add(target="net1")
    assert (schedulable(plain), schedulable(networked)) == (False, False)
    plain.status.state = networked.status.state = S.TASK_STATE_PENDING
    assert (schedulable(plain), schedulable(networked)) == (True, True)


def test_constraint_parse_refuses_with_swarms_messages() -> None:
    for expr, message in [("node.role", "constraint expected one operator from ==, !="),
                          ("node role==x", "key 'node role' is invalid"),
                          ("node.role==<x>", "value '<x>' is invalid")]:
        with pytest.raises(InvalidParameter) as e:
            parse(expr)
        assert e.value.message == message


def test_missing_label_fails_equality_and_passes_inequality() -> None:
    n = node("n1")
    assert (matches(n, [parse("node.labels.zone==a")]), matches(n, [parse("node.labels.zone!=a")])) == (False, True)
