"""The node's overlay glue (wire11): containers' names across hosts through networkdb (shoal/swarm/overlay_gossip.py),
which networks of a create go to the managers (shoal/swarm/container_attach.py), and attachment tasks that the
scheduler leaves on their node. Pure: a real NetworkDB and NameTable, no kernel."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from agent.gossip.netdb import NetworkDB
from agent.network.dns import NameTable
from manager.allocator.core import ATTACHMENT_LABEL
from manager.scheduler.core import schedulable
from proto import objects_pb2 as pb
from shoal.engine.requests import ContainerCreate, EndpointRequest
from shoal.swarm import container_attach, overlay_gossip

NET = "n" * 25


def names_for(table: NameTable, db: NetworkDB, engine: SimpleNamespace) -> overlay_gossip._Names:
    agent = SimpleNamespace(db=db, endpoint_up=lambda *a: None, endpoint_down=lambda *a: None)
    names = overlay_gossip._Names(engine, agent)
    db.watch(overlay_gossip.TABLE, names.on_event, replay=True)
    return names


def engine_with(table: NameTable, containers: dict[str, object] | None = None) -> SimpleNamespace:
    return SimpleNamespace(containers=containers or {}, sandboxes=SimpleNamespace(dns_table=table))


def local_container(table: NameTable) -> None:
    table.set_endpoint("c1", NET, "my-multi-host-network", "10.0.9.2", ["a1"])


def test_a_remote_containers_names_answer_on_the_same_network() -> None:
    table, db = NameTable(), NetworkDB("h2", random.Random(1))
    local_container(table)
    db.join_network(NET)
    names = names_for(table, db, engine_with(table))
    # a remote entry as networkdb's watch reports it when a peer's gossip delivers it
    names.on_event("create", NET, "ep5", overlay_gossip.encode("10.0.9.3", ["a5", "web", "0123456789ab"]))
    assert [table.lookup_a("c1", n) for n in ("a5", "web", "0123456789ab", "a5.my-multi-host-network")] == \
        [["10.0.9.3"]] * 4
    assert table.lookup_ptr("c1", "10.0.9.3") == "a5.my-multi-host-network"


def test_a_deleted_remote_entry_no_longer_resolves() -> None:
    table, db = NameTable(), NetworkDB("h2", random.Random(1))
    local_container(table)
    names = names_for(table, db, engine_with(table))
    names.on_event("create", NET, "ep5", overlay_gossip.encode("10.0.9.3", ["a5"]))
    names.on_event("delete", NET, "ep5", b"")
    assert table.lookup_a("c1", "a5") == []


def test_a_remote_name_is_not_visible_from_another_network() -> None:
    table, db = NameTable(), NetworkDB("h2", random.Random(1))
    table.set_endpoint("c9", "other", "other", "172.20.0.2", ["x"])
    names = names_for(table, db, engine_with(table))
    names.on_event("create", NET, "ep5", overlay_gossip.encode("10.0.9.3", ["a5"]))
    assert table.lookup_a("c9", "a5") == []


@pytest.mark.parametrize(("data", "why"), [
    (b"{", "container record is not JSON"),
    (b'{"ip":"10.0.9.300","names":["a"]}', "10.0.9.300"),
    (b'{"ip":"10.0.9.3","names":[]}', "invalid names []"),
    (b'{"ip":"10.0.9.3"}', "container record needs ip and names"),
])
def test_a_malformed_record_is_refused_naming_the_fault(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        overlay_gossip.decode(data)


def test_a_malformed_remote_record_changes_nothing() -> None:
    table, db = NameTable(), NetworkDB("h2", random.Random(1))
    local_container(table)
    names = names_for(table, db, engine_with(table))
    version = table.version
    names.on_event("create", NET, "ep5", b'{"ip":"x","names":["a5"]}')
    assert (table.lookup_a("c1", "a5"), table.version) == ([], version)


def test_this_nodes_endpoint_is_published_with_its_name_aliases_and_short_id() -> None:
    table, db = NameTable(), NetworkDB("h2", random.Random(1))
    endpoint = SimpleNamespace(id="ep1", ipv4="10.0.9.2", aliases=["web"])
    container = SimpleNamespace(id="abcdef012345" + "0" * 52, name="a1", endpoints={NET: endpoint})
    names = names_for(table, db, engine_with(table, {container.id: container}))
    names.up(NET, "ep1", None)
    assert overlay_gossip.decode(db.get_entry(overlay_gossip.TABLE, NET, "ep1")) == \
        ("10.0.9.2", ["a1", "web", "abcdef012345"])
    assert table.service_names(overlay_gossip._OWNER + "ep1", NET) == {}  # its own names are the engine's
    names.down(NET, "ep1")
    assert db.walk(overlay_gossip.TABLE, NET) == []


def test_only_non_local_networks_of_a_create_are_asked_of_the_managers() -> None:
    req = ContainerCreate(image="busybox", network_mode="ov",
                          endpoints={"ov": EndpointRequest(), "bridge": EndpointRequest(), "other": EndpointRequest()})
    assert container_attach._refs(req) == ["ov", "other"]
    assert container_attach._refs(ContainerCreate(image="busybox", network_mode="default")) == []
    assert container_attach._refs(ContainerCreate(image="busybox", network_mode="container:x")) == []


def test_a_container_attachment_task_is_never_scheduled() -> None:
    t = pb.Task(id="t1", node_id="n1", desired_state=pb.TASK_STATE_RUNNING)
    t.annotations.labels[ATTACHMENT_LABEL] = "a1"
    t.status.state = pb.TASK_STATE_PENDING
    assert schedulable(t) is False
    del t.annotations.labels[ATTACHMENT_LABEL]
    t.service_id = "s1"
    assert schedulable(t) is True
