"""The network control API's pure parts (manager/controlapi_networks.py): swarmkit's spec validation wording, the
refusals checked against the store at create, network lookup, and the in-use checks of removal."""

from __future__ import annotations

import pytest

from common.errdefs import Conflict, InvalidParameter, NotFound
from manager.allocator.pools import AllocationError
from manager.controlapi_networks import check_against_store, in_use_error, lookup_network, validate_network_spec
from proto import objects_pb2 as pb


def spec(name: str = "net", **kw: object) -> pb.NetworkSpec:
    s = pb.NetworkSpec(**{"driver": "overlay", **kw})  # type: ignore[arg-type]
    s.annotations.name = name
    return s


def net(nid: str, name: str, subnet: str = "", vni: int = 0, ingress: bool = False) -> pb.Network:
    n = pb.Network(id=nid, vni=vni, spec=spec(name, ingress=ingress))
    if subnet:
        n.ipam.configs.add(subnet=subnet)
    return n


@pytest.mark.parametrize(("s", "message"), [
    (spec("", attachable=True, ingress=True), "ingress network cannot be attachable"),
    (spec(""), "meta: name must be provided"),
    (spec("bad name"), "name must be valid as a DNS name component"),
    (spec("a" * 64), "name must be 63 characters or fewer"),
    (spec(driver="macvlan"), "network driver 'macvlan' is not supported for swarm networks: only 'overlay'"),
    (spec(ipam=pb.IPAMOptions(configs=[pb.IPAMConfig(subnet="10.0.300.0/24")])),
     "ipam configuration: invalid subnet 10.0.300.0/24"),
    (spec(ipam=pb.IPAMOptions(configs=[pb.IPAMConfig(subnet="10.0.40.0/24", gateway="10.0.41.1")])),
     "ipam configuration: subnet 10.0.40.0/24 does not contain gateway 10.0.41.1"),
    (spec(ipam=pb.IPAMOptions(configs=[pb.IPAMConfig(subnet="10.0.40.0/24", range="10.0.41.0/25")])),
     "ipam configuration: subnet 10.0.40.0/24 does not contain range 10.0.41.0/25"),
    (spec(ipam=pb.IPAMOptions(configs=[pb.IPAMConfig(gateway="10.0.41.1")])), "ipam configuration: cannot be empty"),
    (spec(driver_options={"com.docker.network.driver.overlay.vxlanid_list": "abc"}), "invalid vxlan id value 'abc' passed"),
    (spec(driver_options={"com.docker.network.driver.mtu": "40"}), "invalid mtu '40': it must be a number from 68 to 65535"),
])
def test_invalid_specs_are_refused_with_swarms_wording(s: pb.NetworkSpec, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        validate_network_spec(s)
    assert e.value.message == message


def test_a_valid_spec_passes() -> None:
    validate_network_spec(spec("my-net_1", attachable=True, ipam=pb.IPAMOptions(
        configs=[pb.IPAMConfig(subnet="10.0.9.0/24", gateway="10.0.9.254", range="10.0.9.128/25")])))


def test_second_ingress_is_refused_naming_the_present_one() -> None:
    with pytest.raises(Conflict) as e:
        check_against_store(spec("ing2", ingress=True), [net("ing1", "ingress", "10.0.0.0/24", 4096, ingress=True)])
    assert e.value.message == "ingress network (ing1) is already present"


def test_explicit_subnet_overlapping_an_unallocated_network_spec_is_refused() -> None:
    pending = pb.Network(id="p", spec=spec("pending", ipam=pb.IPAMOptions(configs=[pb.IPAMConfig(subnet="10.1.0.0/16")])))
    with pytest.raises(InvalidParameter) as e:
        check_against_store(spec("x", ipam=pb.IPAMOptions(configs=[pb.IPAMConfig(subnet="10.1.2.0/24")])), [pending])
    assert e.value.message == ("invalid pool request: Pool overlaps with other one on this address space: "
                               "subnet 10.1.2.0/24 overlaps network pending (10.1.0.0/16)")


def test_lookup_prefers_id_then_name_then_unique_prefix() -> None:
    nets = [net("abc123", "web"), net("abd456", "abc123x"), net("xyz", "abc")]
    assert lookup_network(nets, "abc123").id == "abc123"
    assert lookup_network(nets, "abc").id == "xyz"
    assert lookup_network(nets, "abd").id == "abd456"
    with pytest.raises(NotFound) as e:
        lookup_network(nets, "nope")
    assert e.value.message == "network nope not found"


def test_in_use_by_a_service_then_by_a_live_task_and_not_by_a_dead_one() -> None:
    n = net("n1", "backend", "10.0.9.0/24", 4097)
    svc = pb.Service(id="s1")
    svc.spec.task.networks.add(target="backend")
    live = pb.Task(id="t1", desired_state=pb.TASK_STATE_RUNNING)
    live.networks.add(network=n, addresses=["10.0.9.2/24"])
    dead = pb.Task(id="t2", desired_state=pb.TASK_STATE_SHUTDOWN)
    dead.status.state = pb.TASK_STATE_SHUTDOWN
    dead.networks.add(network=n, addresses=["10.0.9.3/24"])
    assert in_use_error(n, [svc], [live]) == "network n1 is in use by service s1"
    assert in_use_error(n, [], [dead, live]) == "network n1 is in use by task t1"
    assert in_use_error(n, [], [dead]) is None


def test_ingress_is_in_use_only_by_services_with_ingress_ports() -> None:
    ing = net("i1", "ingress", "10.0.0.0/24", 4096, ingress=True)
    web = pb.Service(id="s1")
    web.spec.endpoint.ports.add(target_port=80, published_port=8080)
    host = pb.Service(id="s2")
    host.spec.endpoint.ports.add(target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    assert in_use_error(ing, [host, web], []) == "ingress network cannot be removed because service s1 depends on it"
    assert in_use_error(ing, [host], []) is None


def test_no_subnet_left_in_the_default_pools_is_refused_at_create() -> None:
    cluster = pb.Cluster(id="c", default_address_pool=["10.9.0.0/23"], subnet_size=24)
    nets = [net("n1", "one", "10.9.0.0/24", 4096), net("n2", "two", "10.9.1.0/24", 4097)]
    with pytest.raises(AllocationError) as e:  # NetworkOps.create answers it as InvalidParameter
        check_against_store(spec("three"), nets, cluster)
    assert e.value.message == ("could not find an available, non-overlapping IPv4 address pool among the defaults "
                               "to assign to the network")
    check_against_store(spec("three"), nets[:1], cluster)
