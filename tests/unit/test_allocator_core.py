"""The allocator's core over a real MemoryStore (manager/allocator/core.py): networks get subnets and VNIs, services
VIPs and ingress ports, tasks addresses (NEW -> PENDING), failures written on the task and retried, and a new
allocator (a new leader) rebuilding exactly the same state from the store."""

from __future__ import annotations

from manager.allocator.core import ALLOCATED_MESSAGE, Allocator
from proto import objects_pb2 as pb
from tests.unit.allocator_support import World


def ipam(w: World, nid: str) -> tuple[str, str, int]:
    n = w.get("network", nid)
    return n.ipam.configs[0].subnet, n.ipam.configs[0].gateway, n.vni


def test_ingress_gets_the_first_subnet_and_vni_then_networks_follow_in_order() -> None:
    w = World()
    a = w.network("a")
    ing = w.network("ingress", ingress=True)
    w.run()
    assert ipam(w, ing) == ("10.0.0.0/24", "10.0.0.1", 4096)
    assert ipam(w, a) == ("10.0.1.0/24", "10.0.1.1", 4097)


def test_default_pool_and_size_come_from_the_cluster() -> None:
    w = World(pools=("172.28.0.0/16",), size=26)
    a = w.network("a")
    w.run()
    assert ipam(w, a) == ("172.28.0.0/26", "172.28.0.1", 4096)


def test_subnet_routed_on_the_manager_is_skipped() -> None:
    w = World()
    a = w.network("a")
    w.run(routes=["10.0.0.0/23", "0.0.0.0/0"])
    assert ipam(w, a) == ("10.0.2.0/24", "10.0.2.1", 4096)


def test_explicit_subnet_and_gateway_are_kept() -> None:
    w = World()
    a = w.network("a", subnet="10.0.9.0/24", gateway="10.0.9.254")
    w.run()
    assert ipam(w, a) == ("10.0.9.0/24", "10.0.9.254", 4096)


def test_explicit_subnet_overlapping_another_network_stays_unallocated_with_the_reason() -> None:
    w = World()
    w.network("a", subnet="10.0.9.0/24")
    w.run()
    b = w.network("b", subnet="10.0.9.128/25")
    plan = w.run()
    assert w.get("network", b).vni == 0
    assert plan.failures[b] == ("invalid pool request: Pool overlaps with other one on this address space: "
                                "subnet 10.0.9.128/25 overlaps network a (10.0.9.0/24)")


def test_given_vni_is_used_and_a_vni_in_use_is_refused() -> None:
    w = World()
    a = w.network("a", vni="5000")
    w.run()
    b = w.network("b", vni="5000")
    plan = w.run()
    assert w.get("network", a).vni == 5000
    assert w.get("network", b).vni == 0
    assert plan.failures[b] == "vxlan id 5000 is already in use by network a"


def test_task_gets_an_address_after_the_gateway_and_becomes_pending() -> None:
    w = World()
    a = w.network("a", subnet="10.0.9.0/24")
    s = w.service("web", networks=[a], oid="svc1")
    t = w.task(s)
    w.run()
    task = w.get("task", t)
    assert (task.status.state, task.status.message, task.status.err) == (pb.TASK_STATE_PENDING, ALLOCATED_MESSAGE, "")
    assert [(n.network.id, list(n.addresses)) for n in task.networks] == [(a, ["10.0.9.3/24"])]
    assert list(w.get("service", s).endpoint.virtual_ips) == [pb.VirtualIP(network_id=a, addr="10.0.9.2/24")]


def test_service_network_by_name_resolves_to_its_id() -> None:
    w = World()
    a = w.network("backend", subnet="10.0.9.0/24")
    s = w.service("web", networks=["backend"])
    w.run()
    assert [v.network_id for v in w.get("service", s).endpoint.virtual_ips] == [a]


def test_dnsrr_service_has_no_vip_and_its_tasks_still_get_addresses() -> None:
    w = World()
    a = w.network("a", subnet="10.0.9.0/24")
    s = w.service("web", networks=[a], dnsrr=True)
    t = w.task(s)
    w.run()
    assert list(w.get("service", s).endpoint.virtual_ips) == []
    assert w.addr(t) == "10.0.9.2/24"


def test_published_port_gets_an_ingress_vip_and_tasks_an_ingress_address() -> None:
    w = World()
    ing = w.network("ingress", ingress=True)
    s = w.service("web", ports=[(80, 8080)])
    t = w.task(s)
    w.run()
    svc = w.get("service", s)
    assert [(v.network_id, v.addr) for v in svc.endpoint.virtual_ips] == [(ing, "10.0.0.2/24")]
    assert [(p.target_port, p.published_port) for p in svc.endpoint.ports] == [(80, 8080)]
    assert [(n.network.id, list(n.addresses)) for n in w.get("task", t).networks] == [(ing, ["10.0.0.3/24"])]


def test_unpublished_ingress_port_gets_a_dynamic_one_from_30000() -> None:
    w = World()
    w.network("ingress", ingress=True)
    s1 = w.service("one", ports=[(80, 0)])
    s2 = w.service("two", ports=[(80, 0)])
    w.run()
    assert [p.published_port for p in w.get("service", s1).endpoint.ports] == [30000]
    assert [p.published_port for p in w.get("service", s2).endpoint.ports] == [30001]


def test_ingress_port_held_by_another_service_is_written_on_the_tasks() -> None:
    w = World()
    w.network("ingress", ingress=True)
    first = w.service("first", ports=[(80, 8080)], oid="svcfirst")
    w.run()
    second = w.service("second", ports=[(81, 8080)])
    t = w.task(second)
    w.run()
    task = w.get("task", t)
    assert task.status.state == pb.TASK_STATE_NEW
    assert task.status.err == f"port '8080' is already in use by service 'first' ({first}) as an ingress port"
    assert list(w.get("service", second).endpoint.ports) == []


def test_exhausted_subnet_is_written_on_the_task_and_retried_when_an_address_frees() -> None:
    w = World()
    a = w.network("tiny", subnet="10.0.9.0/29")  # 5 usable: one VIP, four tasks
    s = w.service("web", networks=[a])
    tasks = [w.task(s) for _ in range(5)]
    w.run()
    last = w.get("task", tasks[4])
    assert (last.status.state, last.status.err) == (
        pb.TASK_STATE_NEW, "could not allocate an address on network subnet 10.0.9.0/29: no available IP addresses left")
    assert [w.addr(t) for t in tasks[:4]] == ["10.0.9.3/29", "10.0.9.4/29", "10.0.9.5/29", "10.0.9.6/29"]
    again = w.run()
    assert all(k != "task" for k, _o in again.updates)  # the same failure is not written again
    w.finish(tasks[1])
    w.run()
    retried = w.get("task", tasks[4])
    assert (retried.status.state, retried.status.err, w.addr(tasks[4])) == (pb.TASK_STATE_PENDING, "", "10.0.9.4/29")


def test_unknown_network_is_written_on_an_attachment_task() -> None:
    w = World()
    t = w.task(networks=["nosuch"])
    w.run()
    assert w.get("task", t).status.err == "network nosuch not found"


def test_attachment_task_with_a_requested_address_gets_it() -> None:
    w = World()
    a = w.network("a", subnet="10.0.9.0/24")
    t = w.task(networks=[a], addresses=["10.0.9.77"])
    w.run()
    assert w.addr(t) == "10.0.9.77/24"


def test_attachments_of_a_removed_node_are_removed_and_their_addresses_freed() -> None:
    w = World()
    a = w.network("a", subnet="10.0.9.0/24")
    w.node("n1")
    w.node("n2")
    gone = w.task(networks=[a], node="n1")
    kept = w.task(networks=[a], node="n2")
    w.run()
    w.remove("node", "n1")
    plan = w.run()
    assert plan.removals == [("task", gone)]
    assert (w.get("task", gone), w.addr(kept)) == (None, "10.0.9.3/24")
    w.run()
    assert sorted(map(str, w.alloc.pools[a].quarantine)) == ["10.0.9.2"]


def test_every_node_gets_an_ingress_address() -> None:
    w = World()
    w.network("ingress", ingress=True)
    w.node("n1")
    w.node("n2")
    w.run()
    assert [list(w.get("node", n).attachment.addresses) for n in ("n1", "n2")] == [["10.0.0.2/24"], ["10.0.0.3/24"]]


def test_a_node_not_ready_yet_gets_no_ingress_address() -> None:
    w = World()
    w.network("ingress", ingress=True)
    n = pb.Node(id="joining")
    w.commit(lambda tx: tx.create("node", n))
    plan = w.run()
    assert list(w.get("node", "joining").attachment.addresses) == []
    assert all(kind != "node" for kind, _o in plan.updates)


def test_task_waits_without_error_until_its_network_is_allocated() -> None:
    w = World()
    w.network("a", subnet="10.0.9.0/24")
    b = w.network("b", subnet="10.0.9.0/25")  # never allocated: overlaps a
    t = w.task(networks=[b])
    w.run()
    task = w.get("task", t)
    assert (task.status.state, task.status.err) == (pb.TASK_STATE_NEW, "")


def test_removed_service_vip_and_dead_task_addresses_are_freed_into_quarantine() -> None:
    w = World(quarantine_s=60.0)
    a = w.network("a", subnet="10.0.9.0/24")
    s = w.service("web", networks=[a])
    t = w.task(s)
    w.run()
    w.finish(t)
    w.remove("service", s)
    w.now += 1
    w.run()
    pool = w.alloc.pools[a]
    assert sorted(map(str, pool.quarantine)) == ["10.0.9.2", "10.0.9.3"]
    assert pool.used == set()


def test_a_new_allocator_rebuilds_the_same_pools_and_hands_out_no_duplicate() -> None:
    w = World()
    a = w.network("a", subnet="10.0.9.0/24")
    s = w.service("web", networks=[a])
    tasks = [w.task(s) for _ in range(4)]
    w.run()
    w.finish(tasks[3])  # .6 dead but still in the store
    w.run()
    before = (set(w.alloc.pools[a].used), set(w.alloc.pools[a].quarantine))
    w.alloc = Allocator(60.0)  # leader change
    w.run()
    after = (set(w.alloc.pools[a].used), set(w.alloc.pools[a].quarantine))
    assert after == before
    t = w.task(s)
    w.run()
    assert w.addr(t) == "10.0.9.7/24"  # not .6 (quarantined) nor any held address


def test_plan_reports_an_address_held_twice_in_the_store() -> None:
    w = World()
    a = w.network("a", subnet="10.0.9.0/24")
    w.run()
    net = w.get("network", a)
    for oid in ("t1", "t2"):
        t = pb.Task(id=oid, desired_state=pb.TASK_STATE_RUNNING)
        t.status.state = pb.TASK_STATE_RUNNING
        t.networks.add(network=net, addresses=["10.0.9.9/24"])
        w.commit(lambda tx, t=t: tx.create("task", t))
    plan = w.run()
    assert plan.duplicates == [f"10.0.9.9 on network {a} held by task t1 and task t2"]


def test_a_task_without_networks_becomes_pending_too() -> None:
    w = World()
    s = w.service("plain")
    t = w.task(s)
    w.run()
    task = w.get("task", t)
    assert (task.status.state, task.status.message, list(task.networks)) == (pb.TASK_STATE_PENDING, ALLOCATED_MESSAGE, [])


def test_a_task_carries_its_services_vips_and_ports() -> None:
    w = World()
    ing = w.network("ingress", ingress=True)
    a = w.network("a", subnet="10.0.9.0/24")
    s = w.service("web", networks=[a], ports=[(80, 8080)])
    t = w.task(s)
    w.run()
    task = w.get("task", t)
    assert sorted((v.network_id, v.addr) for v in task.endpoint.virtual_ips) == sorted(
        [(a, "10.0.9.2/24"), (ing, "10.0.0.2/24")])
    assert [(p.target_port, p.published_port) for p in task.endpoint.ports] == [(80, 8080)]
