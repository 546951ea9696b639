"""Helpers for the allocator unit tests: a MemoryStore with objects committed as raft would, and pass runners."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Network
from typing import Any

from manager.allocator.core import Allocator, Plan
from manager.store import MemoryStore
from proto import objects_pb2 as pb

_ids = itertools.count(1)


class World:
    """A store plus an allocator whose plans are committed at once (as the runner does on the leader)."""

    def __init__(self, quarantine_s: float = 60.0, pools: tuple[str, ...] = ("10.0.0.0/8",), size: int = 24) -> None:
        self.store = MemoryStore(clock=lambda: self.now)
        self.now = 1000.0
        self.index = 0
        self.alloc = Allocator(quarantine_s)
        c = pb.Cluster(id="cluster1", subnet_size=size)
        c.spec.annotations.name = "default"
        c.default_address_pool.extend(pools)
        self.commit(lambda tx: tx.create("cluster", c))

    def commit(self, fn: Any) -> Any:
        data, result = self.store.prepare(fn, f"req-{next(_ids)}")
        self.index += 1
        res = self.store.apply(self.index, data)
        assert res.error is None, res.error
        return result

    def run(self, routes: list[str] | None = None) -> Plan:
        plan = self.alloc.plan(self.store.view(), self.now, [IPv4Network(r) for r in routes or []])
        if plan.updates or plan.removals:
            self.commit(lambda tx: [*(tx.update(kind, obj) for kind, obj in plan.updates),
                                    *(tx.remove(kind, oid) for kind, oid in plan.removals)])
        return plan

    def get(self, kind: str, oid: str) -> Any:
        return self.store.view().get(kind, oid)

    # ---- objects
    def network(self, name: str, subnet: str = "", gateway: str = "", ingress: bool = False,
                vni: str = "", oid: str = "") -> str:
        n = pb.Network(id=oid or f"net{next(_ids)}")
        n.spec.annotations.name = name
        n.spec.driver = "overlay"
        n.spec.ingress = ingress
        if subnet:
            n.spec.ipam.configs.add(subnet=subnet, gateway=gateway)
        if vni:
            n.spec.driver_options["com.docker.network.driver.overlay.vxlanid_list"] = vni
        self.commit(lambda tx: tx.create("network", n))
        return n.id

    def service(self, name: str, networks: list[str] = (), ports: list[tuple[int, int]] = (),
                dnsrr: bool = False, oid: str = "") -> str:
        s = pb.Service(id=oid or f"svc{next(_ids)}")
        s.spec.annotations.name = name
        for n in networks:
            s.spec.task.networks.add(target=n)
        if dnsrr:
            s.spec.endpoint.mode = pb.EndpointSpec.DNSRR
        for target, published in ports:
            s.spec.endpoint.ports.add(target_port=target, published_port=published)
        self.commit(lambda tx: tx.create("service", s))
        return s.id

    def task(self, service_id: str = "", networks: list[str] = (), oid: str = "", addresses: list[str] = (),
             node: str = "") -> str:
        t = pb.Task(id=oid or f"task{next(_ids)}", service_id=service_id, desired_state=pb.TASK_STATE_RUNNING,
                    node_id=node)
        if service_id:
            svc = self.get("service", service_id)
            t.spec.CopyFrom(svc.spec.task)
            t.annotations.name = f"{svc.spec.annotations.name}.1.{t.id}"
        else:
            t.annotations.labels["com.docker.swarm.network.attachment.container"] = "c" + t.id
            for n in networks:
                t.spec.networks.add(target=n, addresses=list(addresses))
        self.commit(lambda tx: tx.create("task", t))
        return t.id

    def node(self, oid: str) -> str:
        n = pb.Node(id=oid)
        n.status.state = pb.NodeStatus.READY
        self.commit(lambda tx: tx.create("node", n))
        return oid

    def finish(self, task_id: str) -> None:
        """The task ends: desired and observed state past running (swarmkit's taskDead)."""
        t = self.get("task", task_id)
        t.desired_state = pb.TASK_STATE_SHUTDOWN
        t.status.state = pb.TASK_STATE_SHUTDOWN
        self.commit(lambda tx: tx.update("task", t))

    def remove(self, kind: str, oid: str) -> None:
        self.commit(lambda tx: tx.remove(kind, oid))

    def addr(self, task_id: str, i: int = 0) -> str:
        return self.get("task", task_id).networks[i].addresses[0]
