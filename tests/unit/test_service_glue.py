"""shoal/swarm/service_glue.py: the endpoint records a running task announces, one claimant per VIP, and the announce
that follows a task's status at once (a real Worker and a real gossip NetworkDB, no shell)."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from agent.gossip import netdb_services
from agent.gossip.netdb_services import EndpointRecord
from agent.network.service_binding import Backend, ServiceBinding
from proto import objects_pb2 as pb
from agent.worker import Worker
from shoal.swarm.gossip_agent import GossipAgent
from shoal.swarm import service_glue
from shoal.swarm.service_glue import ServiceGlue, _one_per_vip, only_additions, task_records

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


def test_a_status_that_announces_nothing_new_does_not_wake_the_pass() -> None:
    async def run() -> None:
        glue, worker, _gossip = _glue_over_worker()
        worker._record("t1", _running(pb.TaskState.TASK_STATE_STARTING))
        assert not glue._wake.is_set()
        worker._record("t1", _running(pb.TaskState.TASK_STATE_RUNNING))
        glue._wake.clear()
        worker._record("t1", _running(pb.TaskState.TASK_STATE_RUNNING))  # the same again
        assert not glue._wake.is_set()
    asyncio.run(run())


def test_a_task_replaced_by_a_new_assignment_is_announced_with_its_new_record() -> None:
    async def run() -> None:
        glue, worker, gossip = _glue_over_worker()
        worker._record("t1", _running(pb.TaskState.TASK_STATE_RUNNING))
        first = glue.wanted()
        assert glue.wanted()[("net", "t1")] is first[("net", "t1")]  # the same task object: the same record
        moved = pb.Task()
        moved.CopyFrom(worker.tasks["t1"])
        moved.networks[0].addresses[0] = "10.0.9.30/24"
        worker.tasks["t1"] = moved  # what an assignment that changes the task does
        glue.poke()
        [entry] = gossip.db.walk(netdb_services.TABLE, "net")
        assert netdb_services.decode_record(entry.value).task_ip == A("10.0.9.30")
    asyncio.run(run())


def test_a_poke_before_the_pass_met_gossip_wakes_the_pass() -> None:
    async def run() -> None:
        worker = Worker(executor=None)  # type: ignore[arg-type]
        glue = ServiceGlue(_Node(worker, GossipAgent("node-a", "192.0.2.1", lambda: [])))
        glue.poke()  # not attached yet: the pass attaches and announces
        assert glue._wake.is_set()
    asyncio.run(run())


def test_a_task_that_stops_running_leaves_the_endpoint_table_when_its_status_is_recorded() -> None:
    async def run() -> None:
        _glue, worker, gossip = _glue_over_worker()
        worker._record("t1", _running(pb.TaskState.TASK_STATE_RUNNING))
        assert [e.key for e in gossip.db.walk(netdb_services.TABLE, "net")] == ["t1"]
        worker._record("t1", _running(pb.TaskState.TASK_STATE_FAILED))
        assert gossip.db.walk(netdb_services.TABLE, "net") == []
    asyncio.run(run())


# ---- additions of backends in a burst share passes; anything else applies at once ---------------------
def _svc(*tasks: str, vip: str = "10.0.9.2", service: str = "s1") -> ServiceBinding:
    return ServiceBinding(service, "web", "net", A(vip), tuple(Backend(t, A(f"10.0.9.{10 + int(t[1:])}")) for t in tasks))


@pytest.mark.parametrize(("after", "may_wait"), [
    ([_svc("t1", "t2", "t3")], True),  # backends added
    ([_svc("t1")], False),  # a backend gone
    ([_svc("t2", "t3")], False),  # one gone, one added
    ([_svc("t1", "t2", vip="10.0.9.9")], False),  # the VIP changed
    ([_svc("t1", "t2"), _svc("t4", vip="10.0.9.3", service="s2")], False),  # a new service
    ([], False),  # a service gone
])
def test_only_backends_added_to_applied_services_may_wait(after: list[ServiceBinding], may_wait: bool) -> None:
    before = [_svc("t1", "t2")]
    assert only_additions(before, after) is may_wait


def test_nothing_applied_yet_never_waits() -> None:
    assert only_additions(None, [_svc("t1")]) is False


class _Balancer:
    """The engine's load balancer as the glue drives it: each full resync recorded."""

    def __init__(self) -> None:
        self.passes: list[list[ServiceBinding]] = []

    def set_bindings(self, bindings: list[ServiceBinding]) -> None:
        self.passes.append(list(bindings))


async def _direct(fn, *args):  # type: ignore[no-untyped-def]
    return fn(*args)


def _glue_over_gossip() -> tuple[ServiceGlue, GossipAgent, _Balancer]:
    gossip = GossipAgent("node-a", "192.0.2.1", lambda: [])
    gossip.db.join_network("net")
    balancer = _Balancer()
    engine = SimpleNamespace(net=SimpleNamespace(networks={"net": _Net("overlay")}, drivers=SimpleNamespace(find=lambda _: None)),
                             mesh=SimpleNamespace(set_bindings=lambda _: None), sandboxes=SimpleNamespace(lb=balancer),
                             _kernel=_direct)
    glue = ServiceGlue(SimpleNamespace(engine=engine, worker=None, gossip=gossip))
    glue._announced = gossip  # no ingress endpoint to announce
    return glue, gossip, balancer


def _up(gossip: GossipAgent, task_id: str) -> None:
    record = EndpointRecord("s1", "web", A("10.0.9.2"), A(f"10.0.9.{10 + int(task_id[1:])}"), f"web.{task_id}", task_id)
    gossip.db.create_entry(netdb_services.TABLE, "net", task_id, netdb_services.encode_record(record))


async def _until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _tasks(bindings: list[ServiceBinding]) -> list[str]:
    return [b.task_id for s in bindings for b in s.backends]


def test_a_burst_of_added_backends_is_applied_in_a_few_passes_and_the_last_state_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_glue, "HOLD_S", 0.3)

    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        runner = asyncio.ensure_future(glue.run())
        await _until(lambda: len(balancer.passes) == 1)  # the first pass: nothing yet
        for k in range(1, 11):
            _up(gossip, f"t{k}")
            await asyncio.sleep(0.01)
        await _until(lambda: _tasks(balancer.passes[-1]) == [f"t{k}" for k in range(1, 11)])
        runner.cancel()
        # the first endpoint at once, the other nine held together: 10 endpoints, 2 or 3 passes
        assert 3 <= len(balancer.passes) <= 4, [_tasks(p) for p in balancer.passes]
        assert _tasks(balancer.passes[1]) == ["t1"]
    asyncio.run(run())


def test_a_removed_backend_is_applied_at_once_with_the_held_additions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_glue, "HOLD_S", 30.0)

    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        runner = asyncio.ensure_future(glue.run())
        _up(gossip, "t1")
        _up(gossip, "t2")
        await _until(lambda: balancer.passes and _tasks(balancer.passes[-1]) == ["t1", "t2"])
        _up(gossip, "t3")  # held: an addition right after an apply
        await asyncio.sleep(0.05)
        assert _tasks(balancer.passes[-1]) == ["t1", "t2"]
        gossip.db.delete_entry(netdb_services.TABLE, "net", "t1")
        await _until(lambda: _tasks(balancer.passes[-1]) == ["t2", "t3"], timeout=5.0)  # long before the hold ends
        runner.cancel()
    asyncio.run(run())


def test_an_added_backend_after_a_quiet_spell_is_applied_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_glue, "HOLD_S", 30.0)

    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        runner = asyncio.ensure_future(glue.run())
        _up(gossip, "t1")
        await _until(lambda: balancer.passes and _tasks(balancer.passes[-1]) == ["t1"])
        glue.applied_at -= 31.0  # as after a quiet spell longer than the hold
        _up(gossip, "t2")
        await _until(lambda: _tasks(balancer.passes[-1]) == ["t1", "t2"], timeout=5.0)
        runner.cancel()
    asyncio.run(run())


def test_reconcile_without_hold_applies_at_once() -> None:
    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        _up(gossip, "t1")
        await glue.reconcile()
        _up(gossip, "t2")
        await glue.reconcile()
        assert [_tasks(p) for p in balancer.passes] == [["t1"], ["t1", "t2"]]
    asyncio.run(run())


class _Mesh:
    def __init__(self, ingress_network_id: str = "ing") -> None:
        self.ingress_network_id = ingress_network_id
        self.given: list[list[ServiceBinding]] = []

    def set_bindings(self, bindings: list[ServiceBinding]) -> None:
        self.given.append(list(bindings))


def _glue_with_mesh(mesh: _Mesh) -> tuple[ServiceGlue, _Balancer, list[str]]:
    trips: list[str] = []

    async def kernel(fn, *args):  # type: ignore[no-untyped-def]
        trips.append(fn.__name__)
        return fn(*args)
    balancer = _Balancer()
    engine = SimpleNamespace(net=SimpleNamespace(networks={"net": _Net("overlay"), "ing": _Net("overlay", True)}),
                             mesh=mesh, sandboxes=SimpleNamespace(lb=balancer), _kernel=kernel)
    return ServiceGlue(SimpleNamespace(engine=engine)), balancer, trips


def _published(*tasks: str) -> ServiceBinding:
    return ServiceBinding("s1", "web", "ing", A("10.0.0.2"), tuple(Backend(t, A(f"10.0.0.{10 + int(t[1:])}")) for t in tasks),
                          ingress_ports=((8080, 80, "tcp"),))


def test_an_apply_programs_the_tasks_and_the_mesh_in_one_trip_to_the_kernel_thread() -> None:
    mesh = _Mesh()
    glue, balancer, trips = _glue_with_mesh(mesh)
    asyncio.run(glue.apply([_svc("t1"), _published("t1")]))
    assert len(trips) == 1
    assert balancer.passes == [[_svc("t1")]] and mesh.given == [[_svc("t1"), _published("t1")]]


def test_the_mesh_is_given_the_bindings_again_only_when_its_own_changed() -> None:
    mesh = _Mesh()
    glue, balancer, _trips = _glue_with_mesh(mesh)
    asyncio.run(glue.apply([_svc("t1"), _published("t1")]))
    asyncio.run(glue.apply([_svc("t1", "t2"), _published("t1")]))  # only the tasks' network changed
    assert len(balancer.passes) == 2 and len(mesh.given) == 1
    asyncio.run(glue.apply([_svc("t1", "t2"), _published("t1", "t2")]))
    assert len(mesh.given) == 2


def test_a_new_mesh_is_given_every_binding() -> None:
    glue, _balancer, _trips = _glue_with_mesh(_Mesh())
    asyncio.run(glue.apply([_svc("t1"), _published("t1")]))
    again = _Mesh()
    glue.node.engine.mesh = again
    asyncio.run(glue.apply([_svc("t1"), _published("t1")]))
    assert again.given == [[_svc("t1"), _published("t1")]]


def test_a_mesh_that_refused_its_bindings_is_given_them_again() -> None:
    mesh = _Mesh()
    glue, _balancer, _trips = _glue_with_mesh(mesh)
    refuse = [True]

    def set_bindings(bindings: list[ServiceBinding]) -> None:
        if refuse.pop() if refuse else False:
            raise OSError("ingress sandbox gone")
        mesh.given.append(list(bindings))
    mesh.set_bindings = set_bindings  # type: ignore[method-assign]
    with pytest.raises(OSError):
        asyncio.run(glue.apply([_svc("t1"), _published("t1")]))
    asyncio.run(glue.apply([_svc("t1"), _published("t1")]))
    assert mesh.given == [[_svc("t1"), _published("t1")]]


class _BrokenWorker:
    """A worker whose tasks cannot be read: every pass fails in announce; counts the attempts."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def tasks(self) -> dict[str, pb.Task]:
        self.reads += 1
        raise RuntimeError("worker gone")


def test_a_failing_pass_with_additions_held_waits_for_a_wake_rather_than_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_glue, "HOLD_S", 0.05)
    monkeypatch.setattr(service_glue, "RESYNC_S", 5.0)

    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        runner = asyncio.ensure_future(glue.run())
        _up(gossip, "t1")
        await _until(lambda: balancer.passes and _tasks(balancer.passes[-1]) == ["t1"])
        _up(gossip, "t2")  # held: right after an apply
        await _until(lambda: glue.held_until is not None)
        broken = _BrokenWorker()
        glue.node.worker = broken
        await asyncio.sleep(0.3)  # the held pass is due and fails
        runner.cancel()
        assert broken.reads == 1 and glue.held_until is None
    asyncio.run(run())


def _starting_worker() -> Worker:
    """A worker with one task of its own being prepared (no service: it announces nothing itself)."""
    worker = Worker(executor=None)  # type: ignore[arg-type] - no runner is started: statuses are set directly
    worker.tasks["x1"] = pb.Task(id="x1", desired_state=pb.TaskState.TASK_STATE_RUNNING)
    worker.statuses["x1"] = pb.TaskStatus(state=pb.TaskState.TASK_STATE_PREPARING)
    return worker


def test_added_backends_wait_while_this_node_starts_a_task_and_apply_once_the_start_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_glue, "HOLD_S", 0.05)
    monkeypatch.setattr(service_glue, "STARTS_HOLD_S", 30.0)

    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        worker = glue.node.worker = _starting_worker()
        runner = asyncio.ensure_future(glue.run())
        _up(gossip, "t1")  # a new service: applied at once, start or not
        await _until(lambda: balancer.passes and _tasks(balancer.passes[-1]) == ["t1"])
        _up(gossip, "t2")
        await asyncio.sleep(0.3)  # six holds: still held for the start
        assert _tasks(balancer.passes[-1]) == ["t1"]
        worker.statuses["x1"] = pb.TaskStatus(state=pb.TaskState.TASK_STATE_FAILED)  # the start ended
        await _until(lambda: _tasks(balancer.passes[-1]) == ["t1", "t2"])
        runner.cancel()
    asyncio.run(run())


def test_added_backends_wait_for_this_nodes_starts_at_most_starts_hold_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_glue, "HOLD_S", 0.05)
    monkeypatch.setattr(service_glue, "STARTS_HOLD_S", 0.2)

    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        glue.node.worker = _starting_worker()  # a start that does not end
        runner = asyncio.ensure_future(glue.run())
        _up(gossip, "t1")
        await _until(lambda: balancer.passes and _tasks(balancer.passes[-1]) == ["t1"])
        _up(gossip, "t2")
        await _until(lambda: _tasks(balancer.passes[-1]) == ["t1", "t2"], timeout=5.0)
        assert glue._starting() is True
        runner.cancel()
    asyncio.run(run())


def test_a_removed_backend_is_applied_at_once_while_this_node_starts_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_glue, "HOLD_S", 0.05)
    monkeypatch.setattr(service_glue, "STARTS_HOLD_S", 30.0)

    async def run() -> None:
        glue, gossip, balancer = _glue_over_gossip()
        glue.node.worker = _starting_worker()
        runner = asyncio.ensure_future(glue.run())
        _up(gossip, "t1")
        _up(gossip, "t2")
        await _until(lambda: balancer.passes and _tasks(balancer.passes[-1]) == ["t1", "t2"])
        gossip.db.delete_entry(netdb_services.TABLE, "net", "t1")
        await _until(lambda: _tasks(balancer.passes[-1]) == ["t2"], timeout=5.0)
        runner.cancel()
    asyncio.run(run())
