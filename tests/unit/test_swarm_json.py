"""Swarm objects as Docker JSON (shoal/api/swarm_json.py), node lookup (manager/nodes.lookup) and the CLI's
node ls table and durations (shoal/cli/node.py, swarm.py)."""

from __future__ import annotations

import click
import pytest

from common.errdefs import InvalidParameter, NotFound
from manager.nodes import lookup
from proto import objects_pb2 as pb
from shoal.api.swarm_json import node_json, node_spec_from_json, swarm_json
from shoal.cli.format import render_table
from shoal.cli.node import ls_rows
from shoal.cli.swarm import parse_duration


def node(nid: str, host: str, manager: bool = False, leader: bool = False) -> pb.Node:
    n = pb.Node(id=nid, role=pb.NodeSpec.MANAGER if manager else pb.NodeSpec.WORKER)
    n.spec.desired_role = n.role
    n.description.hostname = host
    n.description.engine_version = "0.1.0"
    n.status.state = pb.NodeStatus.READY
    n.status.addr = "192.168.200.11"
    n.meta.version.index = 7
    if manager:
        n.manager_status.raft_id = 5
        n.manager_status.addr = "192.168.200.11:2377"
        n.manager_status.leader = leader
        n.manager_status.reachability = pb.ManagerStatus.REACHABLE
    return n


def test_node_json_has_dockers_fields() -> None:
    j = node_json(node("abc", "h1", manager=True, leader=True))
    assert j["ID"] == "abc" and j["Version"] == {"Index": 7}
    assert j["Spec"] == {"Labels": {}, "Role": "manager", "Availability": "active"}
    assert j["Status"] == {"State": "ready", "Addr": "192.168.200.11"}
    assert j["ManagerStatus"] == {"Leader": True, "Reachability": "reachable", "Addr": "192.168.200.11:2377"}
    assert "ManagerStatus" not in node_json(node("w", "h4"))


def test_swarm_json_carries_the_join_tokens() -> None:
    c = pb.Cluster(id="cid")
    c.root_ca.join_tokens.worker, c.root_ca.join_tokens.manager = "W", "M"
    assert swarm_json(c)["JoinTokens"] == {"Worker": "W", "Manager": "M"}
    assert swarm_json(c)["Spec"]["Name"] == "default"


def test_node_spec_from_json_applies_role_availability_labels_and_refuses_unknown_values() -> None:
    spec = node_spec_from_json({"Labels": {"a": "b"}, "Role": "manager", "Availability": "drain"}, pb.NodeSpec())
    assert (spec.desired_role, spec.availability, dict(spec.annotations.labels)) == (pb.NodeSpec.MANAGER, pb.NodeSpec.DRAIN, {"a": "b"})
    with pytest.raises(InvalidParameter, match="invalid availability: 'sleep'"):
        node_spec_from_json({"Availability": "sleep"}, pb.NodeSpec())


def test_lookup_by_id_hostname_and_prefix() -> None:
    nodes = [node("abc1", "h1"), node("abd2", "h2"), node("xyz", "h2")]
    assert lookup(nodes, "abc1").id == "abc1"
    assert lookup(nodes, "h1").id == "abc1"
    assert lookup(nodes, "abd").id == "abd2"
    with pytest.raises(InvalidParameter, match="node h2 is ambiguous"):
        lookup(nodes, "h2")
    with pytest.raises(NotFound, match="node nope not found"):
        lookup(nodes, "nope")


def test_node_ls_table_marks_self_and_sorts_by_hostname() -> None:
    nodes = [node_json(node("b" * 25, "h10")), node_json(node("a" * 25, "h2", manager=True, leader=True)),
             node_json(node("c" * 25, "h9", manager=True))]
    text = render_table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"],
                        ls_rows(nodes, "a" * 25))
    assert text.splitlines() == [
        "ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION",
        "aaaaaaaaaaaaaaaaaaaaaaaaa *   h2         Ready     Active         Leader           0.1.0",
        "ccccccccccccccccccccccccc     h9         Ready     Active         Reachable        0.1.0",
        "bbbbbbbbbbbbbbbbbbbbbbbbb     h10        Ready     Active                          0.1.0",
    ]


def test_durations_parse_as_go_does() -> None:
    assert parse_duration("5s") == 5_000_000_000
    assert parse_duration("1h30m") == 5400 * 10**9
    assert parse_duration("250ms") == 250_000_000
    with pytest.raises(click.BadParameter, match='time: invalid duration "5 s"'):
        parse_duration("5 s")


def test_a_node_certificate_expiry_under_an_hour_is_refused_with_swarms_message() -> None:
    from common.errdefs import InvalidParameter
    from shoal.api.swarm_json import cluster_spec_from_json
    from proto import objects_pb2 as pb

    with pytest.raises(InvalidParameter) as e:
        cluster_spec_from_json({"CAConfig": {"NodeCertExpiry": 59 * 60 * 10**9}}, pb.ClusterSpec())
    assert e.value.message == "rpc error: code = InvalidArgument desc = minimum certificate expiry time is 1h0m0s"
    spec = cluster_spec_from_json({"CAConfig": {"NodeCertExpiry": 3600 * 10**9}}, pb.ClusterSpec())
    assert spec.ca_config.node_cert_expiry.ToSeconds() == 3600
