"""shoal/swarm/service_glue.py: the endpoint records a running task announces, one claimant per VIP, and the announce
that follows a task's status at once (a real Worker and a real gossip NetworkDB, no shell)."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from types import SimpleNamespace

from agent.gossip import netdb_services
from agent.gossip.netdb_services import EndpointRecord
from agent.network.service_binding import Backend, ServiceBinding
from proto import objects_pb2 as pb
from agent.worker import Worker
from shoal.swarm.gossip_agent import GossipAgent
from shoal.swarm.service_glue import ServiceGlue, _one_per_vip, task_records

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


# ---- a task that starts running is announced at once (not at the glue's next pass) ------------------
@dataclass(slots=True)
class _Net:
    driver: str
    ingress: bool = False


class _Node:
    """What ServiceGlue reads of a SwarmNode: its engine's networks, its worker, its gossip agent."""

    def __init__(self, worker: Worker, gossip: GossipAgent) -> None:
        self.engine = SimpleNamespace(net=SimpleNamespace(networks={"net": _Net("overlay")}))
        self.worker = worker
        self.gossip = gossip


def _running(state: int) -> pb.TaskStatus:
    return pb.TaskStatus(state=state)


def _glue_over_worker() -> tuple[ServiceGlue, Worker, GossipAgent]:
    worker = Worker(executor=None)  # type: ignore[arg-type] - no runner is started: statuses are recorded directly
    gossip = GossipAgent("node-a", "192.0.2.1", lambda: [])
    glue = ServiceGlue(_Node(worker, gossip))
    worker.on_change = glue.poke
    glue._attach(gossip)  # what the glue's first pass does with the node's gossip agent
    t = task()
    t.desired_state = pb.TaskState.TASK_STATE_RUNNING
    worker.tasks[t.id] = t
    return glue, worker, gossip


def test_a_task_that_starts_running_is_in_the_endpoint_table_when_its_status_is_recorded() -> None:
    async def run() -> None:
        glue, worker, gossip = _glue_over_worker()
        worker._record("t1", _running(pb.TaskState.TASK_STATE_STARTING))
        assert gossip.db.walk(netdb_services.TABLE, "net") == []
        worker._record("t1", _running(pb.TaskState.TASK_STATE_RUNNING))
        [entry] = gossip.db.walk(netdb_services.TABLE, "net")
        assert (entry.key, netdb_services.decode_record(entry.value).task_ip) == ("t1", A("10.0.9.3"))
        assert glue._wake.is_set()  # the pass for the local load balancer is woken too
    asyncio.run(run())


def test_a_task_that_stops_running_leaves_the_endpoint_table_when_its_status_is_recorded() -> None:
    async def run() -> None:
        _glue, worker, gossip = _glue_over_worker()
        worker._record("t1", _running(pb.TaskState.TASK_STATE_RUNNING))
        assert [e.key for e in gossip.db.walk(netdb_services.TABLE, "net")] == ["t1"]
        worker._record("t1", _running(pb.TaskState.TASK_STATE_FAILED))
        assert gossip.db.walk(netdb_services.TABLE, "net") == []
    asyncio.run(run())
