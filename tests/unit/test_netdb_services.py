"""endpoint_table records and their fold into ServiceBindings per network (agent/gossip/netdb_services.py)."""

from __future__ import annotations

import ipaddress

import pytest

from agent.gossip import netdb_services
from agent.gossip.netdb_services import TABLE, EndpointRecord, decode_record, encode_record, fold_service_bindings, fold_with_errors
from agent.network.service_binding import Backend, ServiceBinding
from tests.unit.netdb_fake import FakeCluster

N = "ovl1"
IP = ipaddress.IPv4Address


def rec(service: str, task: str, ip: str, vip: str | None = "10.0.9.2", aliases: tuple[str, ...] = ()) -> EndpointRecord:
    return EndpointRecord(service_id=f"id-{service}", service_name=service, vip=IP(vip) if vip else None,
                          task_ip=IP(ip), task_name=f"{service}.1.{task}", task_id=task, aliases=aliases,
                          ingress_ports=((8080, 80, "tcp"),) if service == "web" else ())


def cluster() -> FakeCluster:
    c = FakeCluster(5)
    for n in "abc":
        c.add(n, watch=()).join_network(N)
    c.run(1.0)
    return c


def test_records_from_several_nodes_fold_into_one_binding_per_service() -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5", aliases=("www",))))
    c.dbs["b"].create_entry(TABLE, N, "ep2", encode_record(rec("web", "t2", "10.0.9.4")))
    c.dbs["b"].create_entry(TABLE, N, "ep3", encode_record(rec("db", "t3", "10.0.9.7", vip=None)))
    c.run(1.0)
    assert fold_service_bindings(c.dbs["c"], N) == [
        ServiceBinding(service_id="id-db", service_name="db", network_id=N, vip=None,
                       backends=(Backend("t3", IP("10.0.9.7"), "db.1.t3"),)),
        ServiceBinding(service_id="id-web", service_name="web", network_id=N, vip=IP("10.0.9.2"),
                       backends=(Backend("t2", IP("10.0.9.4"), "web.1.t2"), Backend("t1", IP("10.0.9.5"), "web.1.t1")),
                       aliases=("www",), ingress_ports=((8080, 80, "tcp"),)),
    ]


def test_a_failed_nodes_backends_are_left_out_until_it_is_back() -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.dbs["b"].create_entry(TABLE, N, "ep2", encode_record(rec("web", "t2", "10.0.9.4")))
    c.run(1.0)
    c.partition(["b"], ["a", "c"])
    [web] = fold_service_bindings(c.dbs["c"], N)
    assert [b.task_id for b in web.backends] == ["t1"]
    [web_all] = fold_service_bindings(c.dbs["c"], N, include_suspended=True)
    assert [b.task_id for b in web_all.backends] == ["t2", "t1"]
    c.heal()
    c.run(1.0)
    [web] = fold_service_bindings(c.dbs["c"], N)
    assert [b.task_id for b in web.backends] == ["t2", "t1"]


def tasks(db: object, network_id: str = N, include_suspended: bool = False) -> list[str]:
    return [b.task_id for web in fold_service_bindings(db, network_id, include_suspended) for b in web.backends]  # type: ignore[arg-type]


def test_a_node_the_managers_hold_down_leaves_the_fold_before_gossip_notices_it() -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.dbs["b"].create_entry(TABLE, N, "ep2", encode_record(rec("web", "t2", "10.0.9.4")))
    c.run(1.0)
    assert c.dbs["c"].alive("b")  # the gossip core still holds b alive
    c.dbs["c"].hold(["b"])
    assert tasks(c.dbs["c"]) == ["t1"]
    assert tasks(c.dbs["c"], include_suspended=True) == ["t2", "t1"]  # suspended, as a failed node's: not deleted
    # what b writes while held counts no more than what it held
    c.dbs["b"].create_entry(TABLE, N, "ep3", encode_record(rec("web", "t3", "10.0.9.6")))
    c.run(1.0)
    assert tasks(c.dbs["c"]) == ["t1"]
    assert tasks(c.dbs["a"]) == ["t2", "t1", "t3"]  # a node not told keeps its own view


def test_a_released_node_counts_again_once_its_own_sync_confirms_its_entries() -> None:
    c = cluster()
    c.dbs["b"].create_entry(TABLE, N, "ep2", encode_record(rec("web", "t2", "10.0.9.4")))
    c.run(1.0)
    c.dbs["c"].hold(["b"])
    c.dbs["b"].create_entry(TABLE, N, "ep3", encode_record(rec("web", "t3", "10.0.9.6")))
    c.run(1.0)
    c.dbs["c"].hold([])
    c.run(1.0)
    assert tasks(c.dbs["c"]) == ["t2", "t3"]
    assert c.dbs["c"].held() == frozenset()


def test_a_task_lost_while_its_node_was_held_down_never_counts_again_after_the_node_is_back() -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.dbs["b"].create_entry(TABLE, N, "ep2", encode_record(rec("web", "t2", "10.0.9.4")))
    c.run(1.0)
    for n in "ac":
        c.dbs[n].hold(["b"])  # the managers: b is DOWN
    # b's daemon was killed; gossip has not declared it dead. The managers moved t2 away; b comes back READY (its
    # session) before its gossip is up: the others' questions to it are lost for now
    del c.dbs["b"]
    for n in "ac":
        c.dbs[n].hold([])
    seen: list[list[str]] = []
    for _ in range(10):
        c.step()
        seen.append(tasks(c.dbs["c"]))
    # its gossip starts (the others never saw it dead), with only its probe task now
    b = c.restart_unnoticed("b")
    b.join_network(N)
    b.create_entry(TABLE, N, "ep9", encode_record(rec("web", "t9", "10.0.9.9")))
    for _ in range(10):
        c.step()
        seen.append(tasks(c.dbs["c"]))
    assert all("t2" not in s for s in seen), seen
    assert tasks(c.dbs["c"], include_suspended=True) == ["t1", "t9"]


def test_holding_this_node_itself_or_an_empty_name_is_ignored() -> None:
    c = cluster()
    c.dbs["c"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.dbs["c"].hold(["c", ""])
    assert c.dbs["c"].held() == frozenset()
    assert tasks(c.dbs["c"]) == ["t1"]


def test_a_bad_record_is_skipped_and_named() -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.dbs["a"].create_entry(TABLE, N, "ep-bad", b'{"service_id":"x","service_name":"x","task_ip":"nope"}')
    c.run(1.0)
    bindings, errors = fold_with_errors(c.dbs["b"], N)
    assert [b.service_name for b in bindings] == ["web"]
    assert errors == ["ep-bad: endpoint record: Expected 4 octets in 'nope'"]


@pytest.mark.parametrize(("data", "why"), [
    (b"[]", "endpoint record is not an object"),
    (b'{"service_id":"","service_name":"x","task_ip":"10.0.0.2"}', "endpoint record: invalid service_id ''"),
    (b'{"service_id":"s","service_name":"x","task_ip":"10.0.0.2","aliases":[1]}', "endpoint record: invalid aliases [1]"),
    (b'{"service_id":"s","service_name":"x","task_ip":"10.0.0.2","ingress_ports":[[0,80,"tcp"]]}',
     "endpoint record: invalid ingress port [0, 80, 'tcp']"),
    (b"x" * 2049, "endpoint record of 2049 bytes exceeds 2048"),
])
def test_a_bad_endpoint_record_is_refused_naming_the_field(data: bytes, why: str) -> None:
    with pytest.raises(ValueError) as e:
        decode_record(data)
    assert str(e.value) == why


def test_an_endpoint_record_round_trips() -> None:
    r = rec("web", "t1", "10.0.9.5", aliases=("www", "w"))
    assert decode_record(encode_record(r)) == r


def test_an_entry_is_decoded_once_however_often_the_table_is_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.dbs["a"].create_entry(TABLE, N, "ep-bad", b'{"service_id":"x","service_name":"x","task_ip":"nope"}')
    c.run(1.0)
    decodes: list[bytes] = []
    real = netdb_services.decode_record
    monkeypatch.setattr(netdb_services, "decode_record", lambda data: decodes.append(data) or real(data))
    netdb_services._folded.clear()
    first = fold_with_errors(c.dbs["b"], N)
    assert fold_with_errors(c.dbs["b"], N) == first  # the same bindings and the bad record named again
    assert first[1] == ["ep-bad: endpoint record: Expected 4 octets in 'nope'"]
    assert decodes.count(encode_record(rec("web", "t1", "10.0.9.5"))) == 1 and len(decodes) == 3  # bad: each time


def test_a_changed_entry_is_folded_with_its_new_record() -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.run(1.0)
    assert [b.ip for b in fold_service_bindings(c.dbs["b"], N)[0].backends] == [IP("10.0.9.5")]
    c.dbs["a"].update_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.6")))
    c.run(1.0)
    assert [b.ip for b in fold_service_bindings(c.dbs["b"], N)[0].backends] == [IP("10.0.9.6")]


def test_inspect_services_shows_each_service_with_its_vip_ports_and_tasks_and_their_nodes() -> None:
    c = cluster()
    c.dbs["a"].create_entry(TABLE, N, "ep1", encode_record(rec("web", "t1", "10.0.9.5")))
    c.dbs["b"].create_entry(TABLE, N, "ep2", encode_record(rec("web", "t2", "10.0.9.4")))
    c.dbs["b"].create_entry(TABLE, N, "ep3", encode_record(rec("db", "t3", "10.0.9.7", vip=None)))
    c.run(1.0)
    hosts = {"a": "192.168.200.11", "b": "192.168.200.12"}
    assert netdb_services.inspect_services(c.dbs["c"], N, hosts.__getitem__) == {
        "web": {"VIP": "10.0.9.2", "Ports": ["Target: 80, Publish: 8080"], "Tasks": [
            {"Name": "web.1.t1", "EndpointID": "ep1", "EndpointIP": "10.0.9.5", "Info": {"Host IP": "192.168.200.11"}},
            {"Name": "web.1.t2", "EndpointID": "ep2", "EndpointIP": "10.0.9.4", "Info": {"Host IP": "192.168.200.12"}}]},
        "db": {"VIP": "", "Ports": [], "Tasks": [
            {"Name": "db.1.t3", "EndpointID": "ep3", "EndpointIP": "10.0.9.7", "Info": {"Host IP": "192.168.200.12"}}]},
    }
