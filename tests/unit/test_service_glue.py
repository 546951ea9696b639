"""shoal/swarm/service_glue.py's pure parts: the endpoint records a running task announces, one claimant per VIP."""

from __future__ import annotations

import ipaddress

from agent.gossip.netdb_services import EndpointRecord
from agent.network.service_binding import Backend, ServiceBinding
from proto import objects_pb2 as pb
from shoal.swarm.service_glue import _one_per_vip, task_records

A = ipaddress.IPv4Address


def task(dnsrr: bool = False) -> pb.Task:
    t = pb.Task(id="t1", service_id="s1", annotations=pb.Annotations(name="my-web.1.t1"))
    t.networks.add(network=pb.Network(id="net"), addresses=["10.0.9.3/24"], aliases=["web", "my-web"])
    ing = t.networks.add(network=pb.Network(id="ing"), addresses=["10.0.0.5/24"])
    ing.network.spec.ingress = True
    t.networks.add(network=pb.Network(id="bridge-only"), addresses=["172.20.0.2/16"])
    t.endpoint.virtual_ips.add(network_id="net", addr="10.0.9.2/24")
    t.endpoint.virtual_ips.add(network_id="ing", addr="10.0.0.2/24")
    t.endpoint.ports.add(protocol=0, target_port=80, published_port=8080, publish_mode=0)
    t.endpoint.ports.add(protocol=0, target_port=81, published_port=9090, publish_mode=1)  # host mode: not the mesh's
    if dnsrr:
        t.endpoint.spec.mode = pb.EndpointSpec.ResolutionMode.DNSRR
    return t


def test_a_task_announces_its_vip_ip_name_and_aliases_on_each_overlay_it_is_on() -> None:
    assert task_records(task(), {"net", "ing"}) == {
        "net": EndpointRecord("s1", "my-web", A("10.0.9.2"), A("10.0.9.3"), "my-web.1.t1", "t1", ("web",), ()),
        "ing": EndpointRecord("s1", "my-web", A("10.0.0.2"), A("10.0.0.5"), "my-web.1.t1", "t1", (), ((8080, 80, "tcp"),)),
    }


def test_a_dnsrr_task_announces_no_vip() -> None:
    assert task_records(task(dnsrr=True), {"net"})["net"].vip is None


def test_a_vip_claimed_by_two_services_stays_with_the_first() -> None:
    a = ServiceBinding("s1", "a", "net", A("10.0.9.2"), (Backend("t1", A("10.0.9.3")),))
    b = ServiceBinding("s2", "b", "net", A("10.0.9.2"), (Backend("t2", A("10.0.9.4")),))
    c = ServiceBinding("s3", "c", "other", A("10.0.9.2"))
    assert _one_per_vip([a, b, c]) == [a, c]
