"""The pure parts of issue 11's connect/leave gaps: dockerd's wording for a refused attachment
(shoal/swarm/container_attach.py), its state file (an older file's plain lists still read), and which local copies of
swarm networks nothing on the node uses (shoal/swarm/local_copies.py). No kernel, no daemon."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from agent.network.records import NetworkRecord
from common.errdefs import Forbidden, NotFound, SystemError_, Unavailable, http_status
from proto import objects_pb2 as pb
from shoal.swarm.executor import L_TASK_ID
from shoal.swarm import container_attach, local_copies


def test_a_refused_attachment_reads_as_dockerd_relays_it_with_status_500() -> None:
    err = container_attach._as_dockerd("svc-only", Forbidden("network svc-only not manually attachable"))
    assert (type(err), http_status(err), err.message) == (
        SystemError_, 500,
        "Could not attach to network svc-only: rpc error: code = PermissionDenied desc = network svc-only not manually attachable")


def test_an_attachment_to_an_unknown_network_is_the_managers_not_found() -> None:
    err = container_attach._as_dockerd("nosuch", NotFound("network nosuch not found"))
    assert err.message == "Could not attach to network nosuch: rpc error: code = NotFound desc = network nosuch not found"


def test_an_error_already_in_grpc_words_is_not_wrapped_twice() -> None:
    err = container_attach._as_dockerd("n", Unavailable("rpc error: code = Unavailable desc = no raft leader elected"))
    assert err.message == "Could not attach to network n: rpc error: code = Unavailable desc = no raft leader elected"


def _engine(tmp_path: Path, **kw: object) -> SimpleNamespace:
    base = dict(options=SimpleNamespace(data_dir=tmp_path), containers={}, net=SimpleNamespace(networks={}), swarm=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_the_state_files_keep_each_container_s_attachments_and_their_networks(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    container_attach.created(engine, "c1", {"net1": "a1"})
    container_attach.created(engine, "c1", {"net2": "a2"})
    assert json.loads((tmp_path / container_attach.STATE_FILE).read_text()) == {"c1": ["a1", "a2"]}
    assert json.loads((tmp_path / container_attach.NETWORKS_FILE).read_text()) == {"a1": "net1", "a2": "net2"}
    assert container_attach._load(engine) == {"c1": {"net1": "a1", "net2": "a2"}}


def test_an_attachment_of_unknown_network_is_still_released_with_its_container(tmp_path: Path) -> None:
    (tmp_path / container_attach.STATE_FILE).write_text(json.dumps({"c1": ["a1", "a2"]}))  # made before the map
    (tmp_path / container_attach.NETWORKS_FILE).write_text(json.dumps({"a2": "net2"}))
    assert container_attach._load(_engine(tmp_path)) == {"c1": {"?a1": "a1", "net2": "a2"}}


def _net(nid: str, name: str, scope: str = "swarm", ingress: bool = False) -> NetworkRecord:
    return NetworkRecord(id=nid, name=name, driver="overlay" if scope == "swarm" else "bridge", created="", scope=scope,
                         ingress=ingress)


def _networks(*nets: NetworkRecord) -> SimpleNamespace:
    return SimpleNamespace(networks={n.id: n for n in nets})


def test_a_swarm_copy_no_container_uses_is_unused_and_local_networks_never_are(tmp_path: Path) -> None:
    engine = _engine(tmp_path, net=_networks(_net("s1", "ov"), _net("b1", "br", scope="local")))
    assert [n.name for n in local_copies.unused(engine)] == ["ov"]


def test_a_stopped_container_s_endpoint_keeps_the_copy(tmp_path: Path) -> None:
    stopped = SimpleNamespace(state="exited", endpoints={"s1": object()}, labels={})
    engine = _engine(tmp_path, containers={"c": stopped}, net=_networks(_net("s1", "ov")))
    assert local_copies.unused(engine) == []


def test_a_tasks_stopped_container_does_not_keep_the_copy(tmp_path: Path) -> None:
    # kept for its logs while its task is in the history; it never starts again (a task meant to run holds its
    # networks through the assignments)
    stopped = SimpleNamespace(state="exited", endpoints={"s1": object()}, labels={L_TASK_ID: "t1"})
    engine = _engine(tmp_path, containers={"c": stopped}, net=_networks(_net("s1", "ov")))
    assert [n.id for n in local_copies.unused(engine)] == ["s1"]


def test_a_tasks_exited_container_keeps_the_copy_until_its_sandbox_is_torn_down(tmp_path: Path) -> None:
    # exited is set first, the teardown (the endpoints' leave, their gossip withdrawals) runs after: removing the copy
    # in between left the endpoints' gossip entries live for good (bench/entries_after_rm.py, 2026-12-04)
    exiting = SimpleNamespace(state="exited", endpoints={"s1": object()}, labels={L_TASK_ID: "t1"}, netns="ns-c")
    engine = _engine(tmp_path, containers={"c": exiting}, net=_networks(_net("s1", "ov")))
    assert local_copies.unused(engine) == []
    exiting.netns = ""  # Sandboxes.teardown done
    assert [n.id for n in local_copies.unused(engine)] == ["s1"]


def test_a_connect_under_way_keeps_the_copy_until_unpinned(tmp_path: Path) -> None:
    engine = _engine(tmp_path, net=_networks(_net("s1", "ov")))
    local_copies.pin(engine, "s1")
    local_copies.pin(engine, "s1")
    local_copies.unpin(engine, "s1")
    assert local_copies.unused(engine) == []
    local_copies.unpin(engine, "s1")
    assert [n.id for n in local_copies.unused(engine)] == ["s1"]


def test_an_assigned_task_keeps_its_networks_copy_before_its_container_exists(tmp_path: Path) -> None:
    task = pb.Task(id="t1")
    task.networks.add().network.id = "s1"
    node = SimpleNamespace(worker=SimpleNamespace(tasks={"t1": task}, runners={}), node_object=None)
    engine = _engine(tmp_path, swarm=node, net=_networks(_net("s1", "ov"), _net("s2", "other")))
    assert [n.id for n in local_copies.unused(engine)] == ["s2"]


def test_ingress_stays_while_in_the_swarm_and_goes_after_leave(tmp_path: Path) -> None:
    node_object = pb.Node(id="n1")
    node_object.attachment.network.id = "i1"
    engine = _engine(tmp_path, swarm=SimpleNamespace(worker=None, node_object=node_object),
                     net=_networks(_net("i1", "ingress")))
    assert local_copies.unused(engine) == []
    assert [n.id for n in local_copies.unused(engine, everything=True)] == ["i1"]


def test_a_task_told_to_stop_or_being_removed_no_longer_keeps_a_copy(tmp_path: Path) -> None:
    stopping = pb.Task(id="t1", desired_state=pb.TASK_STATE_SHUTDOWN)
    stopping.networks.add().network.id = "s1"
    leaving = pb.Task(id="t2")
    leaving.networks.add().network.id = "s2"
    worker = SimpleNamespace(tasks={"t1": stopping}, runners={"t2": SimpleNamespace(task=leaving, removed=True)})
    engine = _engine(tmp_path, swarm=SimpleNamespace(worker=worker, node_object=None),
                     net=_networks(_net("s1", "ov1"), _net("s2", "ov2")))
    assert [n.id for n in local_copies.unused(engine)] == ["s1", "s2"]


def test_leaving_clears_every_held_attachment(tmp_path: Path) -> None:
    import asyncio

    engine = _engine(tmp_path)  # in no swarm: nothing to call, the state is cleared all the same
    container_attach.created(engine, "c1", {"net1": "a1", "net2": "a2"})
    container_attach.created(engine, "c2", {"net1": "a3"})
    assert asyncio.run(container_attach.release_all(engine, 1.0)) == 3
    assert container_attach._load(engine) == {}


def test_a_jobs_task_keeps_its_networks_copy_while_it_runs_and_not_once_it_ended(tmp_path: Path) -> None:
    task = pb.Task(id="t1", desired_state=pb.TASK_STATE_COMPLETE)  # a job's task stays desired COMPLETE
    task.networks.add().network.id = "s1"
    statuses = {"t1": pb.TaskStatus(state=pb.TASK_STATE_RUNNING)}
    node = SimpleNamespace(worker=SimpleNamespace(tasks={"t1": task}, runners={}, statuses=statuses), node_object=None)
    engine = _engine(tmp_path, swarm=node, net=_networks(_net("s1", "ov")))
    assert local_copies.unused(engine) == []
    statuses["t1"] = pb.TaskStatus(state=pb.TASK_STATE_COMPLETE)
    assert [n.id for n in local_copies.unused(engine)] == ["s1"]
