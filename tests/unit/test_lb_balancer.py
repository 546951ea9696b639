"""Specification of agent.network.lb.ServiceLoadBalancer's bookkeeping (no kernel: without a VIP on
its networks a sandbox gets no table, so these tests never program one)."""
from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address as IP

import pytest

from agent.network import lb
from agent.network.dns import NameTable
from agent.network.lb import ServiceLoadBalancer
from agent.network.lbnft import NftError
from agent.network.service_binding import Backend, ServiceBinding


def _web(*ips: str, vip: str | None = "10.0.9.2", service: str = "svc1", name: str = "web") -> ServiceBinding:
    return ServiceBinding(service, name, "net1", IP(vip) if vip else None,
                          tuple(Backend(f"t{i}", IP(ip)) for i, ip in enumerate(ips)))


def _table() -> NameTable:
    table = NameTable()
    table.set_endpoint("client", "net1", "mynet", "10.0.9.10", ["client"])
    return table


def test_update_publishes_names_and_remove_withdraws_them() -> None:
    table = _table()
    slb = ServiceLoadBalancer(dns=table)
    slb.update(_web("10.0.9.5"))
    assert table.lookup_a("client", "tasks.web") == ["10.0.9.5"]
    slb.remove("svc1", "net1")
    assert table.lookup_a("client", "web") == [] and slb.bindings == {}


def test_a_vip_of_another_service_is_refused_and_nothing_changes() -> None:
    table = _table()
    slb = ServiceLoadBalancer(dns=table)
    slb.update(_web("10.0.9.5"))
    with pytest.raises(ValueError) as err:
        slb.update(_web("10.0.9.6", service="svc2", name="api"))
    assert str(err.value) == "VIP 10.0.9.2 on network net1 is already service svc1's, not svc2's"
    assert table.lookup_a("client", "api") == [] and list(slb.bindings) == [("svc1", "net1")]


def test_a_vip_freed_by_a_removed_service_can_be_taken() -> None:
    slb = ServiceLoadBalancer(dns=_table())
    slb.update(_web("10.0.9.5"))
    slb.remove("svc1", "net1")
    slb.update(_web("10.0.9.6", service="svc2", name="api"))
    assert list(slb.bindings) == [("svc2", "net1")]


def test_dns_changes_go_through_the_dispatcher() -> None:
    table = _table()
    queued: list[Callable[[], None]] = []
    slb = ServiceLoadBalancer(dns=table, dns_dispatch=queued.append)
    slb.update(_web("10.0.9.5"))
    assert table.lookup_a("client", "web") == [] and len(queued) == 1
    queued.pop()()
    assert table.lookup_a("client", "web") == ["10.0.9.2"]


def test_set_bindings_withdraws_services_no_longer_listed() -> None:
    table = _table()
    slb = ServiceLoadBalancer(dns=table)
    slb.update(_web("10.0.9.5"))
    slb.set_bindings([_web("10.0.9.7", vip="10.0.9.3", service="svc2", name="api")])
    assert table.lookup_a("client", "web") == [] and table.lookup_a("client", "api") == ["10.0.9.3"]


def test_set_bindings_with_one_vip_for_two_services_changes_nothing() -> None:
    table = _table()
    slb = ServiceLoadBalancer(dns=table)
    slb.update(_web("10.0.9.5"))
    with pytest.raises(ValueError) as err:
        slb.set_bindings([_web("10.0.9.6", service="svc2", name="api"), _web("10.0.9.7", service="svc3", name="db")])
    assert str(err.value) == "VIP 10.0.9.2 is claimed by services svc2 and svc3"
    assert table.lookup_a("client", "web") == ["10.0.9.2"] and list(slb.bindings) == [("svc1", "net1")]


def test_a_sandbox_without_vips_on_its_networks_gets_no_table() -> None:
    slb = ServiceLoadBalancer(dns=_table())
    slb.update(_web("10.0.9.5", vip=None))  # dnsrr
    slb.attach("c1", "/run/netns/does-not-matter", ["net1"])
    assert slb.sandboxes["c1"].lb is None and slb.sandboxes["c1"].error == ""


# ---- full resyncs with a recorder for the kernel ------------------------------------------------------
class _Recorder:
    """Stands in for lbnft.NftContext: keeps the batches, or refuses the next ones when told."""

    runs: dict[str, list[str]] = {}

    def __init__(self, netns_path: str | None = None) -> None:
        self.netns_path = str(netns_path)
        self.refuse = 0  # how many batches to refuse next
        _Recorder.runs[self.netns_path] = []

    def run(self, script: str) -> str:
        if self.refuse:
            self.refuse -= 1
            raise NftError(f"nft in {self.netns_path}: refused")
        _Recorder.runs[self.netns_path].append(script)
        return ""

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    _Recorder.runs = {}
    monkeypatch.setattr(lb, "NftContext", _Recorder)
    monkeypatch.setattr(lb, "_delete_udp_flows", lambda *_: None)
    return _Recorder.runs


def _api(*ips: str) -> ServiceBinding:
    return ServiceBinding("svc2", "api", "net2", IP("10.1.0.2"), tuple(Backend(f"a{i}", IP(ip)) for i, ip in enumerate(ips)))


def test_a_full_resync_leaves_alone_the_sandboxes_whose_networks_did_not_change(recorded: dict[str, list[str]]) -> None:
    slb = ServiceLoadBalancer(dns=_table())
    slb.attach("c1", "ns1", ["net1"])
    slb.attach("c2", "ns2", ["net2"])
    slb.set_bindings([_web("10.0.9.5"), _api("10.1.0.5")])
    before = {ns: len(runs) for ns, runs in recorded.items()}
    slb.set_bindings([_web("10.0.9.5", "10.0.9.6"), _api("10.1.0.5")])
    assert len(recorded["ns1"]) == before["ns1"] + 1 and len(recorded["ns2"]) == before["ns2"]
    assert slb.sandboxes["c1"].lb.table.slots == {IP("10.0.9.2"): (IP("10.0.9.5"), IP("10.0.9.6"))}


def test_a_full_resync_sends_sandboxes_on_the_same_networks_the_same_batch(recorded: dict[str, list[str]]) -> None:
    slb = ServiceLoadBalancer(dns=_table())
    for n in range(3):
        slb.attach(f"c{n}", f"ns{n}", ["net1"])
    slb.set_bindings([_web("10.0.9.5")])
    slb.set_bindings([_web("10.0.9.5", "10.0.9.7", "10.0.9.6")])
    assert recorded["ns0"] == recorded["ns1"] == recorded["ns2"] and len(recorded["ns0"]) == 2
    tables = [slb.sandboxes[f"c{n}"].lb.table for n in range(3)]
    assert tables[0] == tables[1] == tables[2] and tables[0] is not tables[1]


def test_a_full_resync_retries_a_sandbox_that_failed_though_nothing_changed(recorded: dict[str, list[str]]) -> None:
    slb = ServiceLoadBalancer(dns=_table())
    slb.attach("c1", "ns1", ["net1"])
    slb.set_bindings([_web("10.0.9.5")])
    slb.sandboxes["c1"].lb.nft.refuse = 2  # the change, then the whole table written again
    slb.update(_web("10.0.9.5", "10.0.9.6"))
    assert slb.sandboxes["c1"].error == "nft in ns1: refused"
    slb.set_bindings([_web("10.0.9.5", "10.0.9.6")])
    assert slb.sandboxes["c1"].error == ""
    assert slb.sandboxes["c1"].lb.table.slots == {IP("10.0.9.2"): (IP("10.0.9.5"), IP("10.0.9.6"))}
