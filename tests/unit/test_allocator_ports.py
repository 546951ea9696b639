"""Ingress ports (manager/allocator/ports.py): swarm's endpoint checks and conflict messages, dynamic ports from 30000,
a service keeping its dynamic port across passes, and a dnsrr service with an ingress port refused on its tasks."""

from __future__ import annotations

from manager.allocator.ports import PortAllocator, endpoint_spec_error, port_conflict
from proto import objects_pb2 as pb
from tests.unit.allocator_support import World

INGRESS, HOST = pb.PortConfig.INGRESS, pb.PortConfig.HOST


def service(sid: str, name: str, *ports: tuple[int, int, int]) -> pb.Service:
    s = pb.Service(id=sid)
    s.spec.annotations.name = name
    for target, published, mode in ports:
        s.spec.endpoint.ports.add(target_port=target, published_port=published, publish_mode=mode)
    return s


def test_dnsrr_with_an_ingress_port_is_refused_with_swarms_message() -> None:
    spec = pb.EndpointSpec(mode=pb.EndpointSpec.DNSRR, ports=[pb.PortConfig(target_port=80, published_port=8080)])
    assert endpoint_spec_error(spec) == "EndpointSpec: port published with ingress mode can't be used with dnsrr mode"


def test_dnsrr_with_a_host_port_is_accepted() -> None:
    spec = pb.EndpointSpec(mode=pb.EndpointSpec.DNSRR,
                           ports=[pb.PortConfig(target_port=80, published_port=8080, publish_mode=HOST)])
    assert endpoint_spec_error(spec) is None


def test_the_same_published_port_twice_is_refused() -> None:
    spec = pb.EndpointSpec(ports=[pb.PortConfig(target_port=80, published_port=8080),
                                  pb.PortConfig(target_port=81, published_port=8080)])
    assert endpoint_spec_error(spec) == "EndpointSpec: duplicate published ports provided"


def test_port_conflicts_name_the_service_holding_the_port() -> None:
    x = service("idx", "x", (80, 8080, INGRESS))
    h = service("idh", "h", (80, 9090, HOST))
    assert port_conflict(service("", "new", (80, 8080, INGRESS)).spec, "", [x]) == \
        "port '8080' is already in use by service 'x' (idx) as an ingress port"
    assert port_conflict(service("", "new", (80, 8080, HOST)).spec, "", [x]) == \
        "port '8080' is already in use by service 'x' (idx) as an ingress port"
    assert port_conflict(service("", "new", (80, 9090, INGRESS)).spec, "", [h]) == \
        "port '9090' is already in use by service 'h' (idh) as a host-published port"
    assert port_conflict(service("", "new", (80, 9090, HOST)).spec, "", [h]) is None  # the scheduler spreads them
    assert port_conflict(x.spec, "idx", [x]) is None  # an update of the holder itself


def test_a_dynamic_port_is_kept_by_its_service_on_later_passes() -> None:
    ports = PortAllocator()
    s = service("s1", "web", (80, 0, INGRESS))
    first = ports.allocate(s, {})
    s.endpoint.ports.extend(first)
    ports.sync([s])
    again = ports.allocate(s, {})
    assert [p.published_port for p in first] == [30000]
    assert [p.published_port for p in again] == [30000]


def test_host_mode_port_without_a_published_port_stays_zero() -> None:
    ports = PortAllocator()
    got = ports.allocate(service("s1", "web", (80, 0, HOST)), {})
    assert [(p.published_port, p.publish_mode) for p in got] == [(0, HOST)]


def test_dnsrr_service_with_an_ingress_port_keeps_its_tasks_new_with_the_reason() -> None:
    w = World()
    w.network("ingress", ingress=True)
    s = pb.Service(id="dns1")
    s.spec.annotations.name = "dns"
    s.spec.endpoint.mode = pb.EndpointSpec.DNSRR
    s.spec.endpoint.ports.add(target_port=80, published_port=8080)
    w.commit(lambda tx: tx.create("service", s))
    t = w.task("dns1")
    w.run()
    task = w.get("task", t)
    assert (task.status.state, task.status.err) == (
        pb.TASK_STATE_NEW, "EndpointSpec: port published with ingress mode can't be used with dnsrr mode")
