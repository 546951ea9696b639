"""The scheduler's pure core: filters (ready/active, constraints, reservations, host ports) and spread."""

from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter
from manager.scheduler.constraints import matches, parse
from manager.scheduler.core import Decisions, schedulable, schedule
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


# ---------------------------------------------------------------------------------------------- placement preferences
def spread_over(svc: pb.Service, *descriptors: str) -> pb.Service:
    for d in descriptors:
        svc.spec.task.placement.preferences.add().spread.spread_descriptor = d
    return svc


def placed_per(d: Decisions, hosts: dict[str, str]) -> dict[str, int]:
    """How many tasks each value (hosts: node id -> value) received."""
    out: dict[str, int] = {}
    for nid in d.assigned.values():
        out[hosts[nid]] = out.get(hosts[nid], 0) + 1
    return out


def zoned(zones: dict[str, str], **extra: dict[str, str]) -> list[pb.Node]:
    """Nodes by id with their zone label ("" : no label), plus other labels per node id."""
    return [node(nid, labels={**({"zone": z} if z else {}), **extra.get(nid, {})}) for nid, z in zones.items()]


def test_spread_splits_tasks_evenly_over_two_values_whatever_their_node_counts() -> None:
    svc = spread_over(service(replicas=4), "node.labels.zone")
    zones = {"n1": "a", "n2": "b", "n3": "b", "n4": "b", "n5": "b"}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 5)])
    assert placed_per(d, zones) == {"a": 2, "b": 2}
    assert sorted(d.assigned.values()) == ["n1", "n1", "n2", "n3"]  # within zone b: the usual spread


def test_spread_over_three_values_with_unequal_node_counts() -> None:
    svc = spread_over(service(replicas=6), "node.labels.zone")
    zones = {"n1": "a", "n2": "b", "n3": "b", "n4": "c", "n5": "c", "n6": "c"}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 7)])
    assert placed_per(d, zones) == {"a": 2, "b": 2, "c": 2}


def test_the_remainder_goes_one_each_to_the_values_in_order() -> None:
    svc = spread_over(service(replicas=5), "node.labels.zone")
    zones = {"n1": "a", "n2": "b", "n3": "c"}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 6)])
    assert placed_per(d, zones) == {"a": 2, "b": 2, "c": 1}


def test_nodes_without_the_label_form_a_branch_of_their_own() -> None:
    svc = spread_over(service(replicas=6), "node.labels.zone")
    zones = {"n1": "a", "n2": "b", "n3": "", "n4": ""}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 7)])
    assert placed_per(d, zones) == {"a": 2, "b": 2, "": 2}


def test_a_second_preference_splits_each_branch_of_the_first() -> None:
    svc = spread_over(service(replicas=8), "node.labels.zone", "node.labels.rack")
    zones = {"n1": "a", "n2": "a", "n3": "a", "n4": "b"}
    racks = {"n1": {"rack": "r1"}, "n2": {"rack": "r2"}, "n3": {"rack": "r2"}, "n4": {"rack": "r1"}}
    d = schedule(zoned(zones, **racks), [], [pending(svc, f"t{i}", i) for i in range(1, 9)])
    assert placed_per(d, {nid: f"{z}/{racks[nid]['rack']}" for nid, z in zones.items()}) == {"a/r1": 2, "a/r2": 2, "b/r1": 4}
    assert sorted(d.assigned.values()) == ["n1", "n1", "n2", "n3", "n4", "n4", "n4", "n4"]


def test_tasks_the_service_runs_already_count_in_their_branch() -> None:
    svc = spread_over(service(replicas=4), "node.labels.zone")
    zones = {"n1": "a", "n2": "b", "n3": "b"}
    running = [task(svc, "r1", 1, "n1"), task(svc, "r2", 2, "n1")]
    d = schedule(zoned(zones), running, [pending(svc, "t3", 3), pending(svc, "t4", 4)])
    assert sorted(d.assigned.values()) == ["n2", "n3"]


def test_a_value_whose_nodes_the_constraints_exclude_leaves_its_share_to_the_others() -> None:
    svc = spread_over(service(replicas=4), "node.labels.zone")
    svc.spec.task.placement.constraints.append("node.labels.zone!=c")
    zones = {"n1": "a", "n2": "b", "n3": "c"}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 5)])
    assert (placed_per(d, zones), d.unplaced) == ({"a": 2, "b": 2}, {})


def test_a_value_whose_node_reaches_max_replicas_leaves_the_rest_to_the_others() -> None:
    svc = spread_over(service(replicas=5), "node.labels.zone")
    svc.spec.task.placement.max_replicas = 1
    zones = {"n1": "a", "n2": "b", "n3": "b", "n4": "b", "n5": "b"}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 6)])
    assert (sorted(d.assigned.values()), d.unplaced) == (["n1", "n2", "n3", "n4", "n5"], {})


def test_tasks_no_branch_can_take_say_why_no_node_fits() -> None:
    svc = spread_over(service(replicas=3), "node.labels.zone")
    svc.spec.task.placement.max_replicas = 1
    zones = {"n1": "a", "n2": "b"}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 4)])
    assert (sorted(d.assigned.values()), d.unplaced) == (
        ["n1", "n2"], {"t3": "no suitable node (max replicas per node limit exceed on 2 nodes)"})


def test_engine_labels_spread_too_and_the_descriptor_prefix_is_case_insensitive() -> None:
    svc = spread_over(service(replicas=4), "Engine.Labels.dc")
    nodes = [node(f"n{i}") for i in range(1, 5)]
    for n, dc in zip(nodes, ["x", "y", "y", "y"]):
        n.description.engine_labels["dc"] = dc
    d = schedule(nodes, [], [pending(svc, f"t{i}", i) for i in range(1, 5)])
    assert placed_per(d, {"n1": "x", "n2": "y", "n3": "y", "n4": "y"}) == {"x": 2, "y": 2}


@pytest.mark.parametrize("descriptor", ["node.hostname", "node.labels.", "zone", ""])
def test_a_descriptor_swarmkit_does_not_spread_over_places_as_without_preferences(descriptor: str) -> None:
    svc = spread_over(service(replicas=4), descriptor)
    zones = {"n1": "a", "n2": "b", "n3": "b", "n4": "b"}
    d = schedule(zoned(zones), [], [pending(svc, f"t{i}", i) for i in range(1, 5)])
    assert sorted(d.assigned.values()) == ["n1", "n2", "n3", "n4"]
