"""Which UDP flows a load-balancer change makes shoal forget (agent/network/lb.py): only flows of a VIP that still has
a backend to move them to, found with one `conntrack -L` per VIP; and a sandbox that goes drops its queued runs."""
from __future__ import annotations

import threading
from ipaddress import IPv4Address as IP

from agent.network import lb
from agent.network.lbplan import LbTable

VIP, VIP2 = IP("10.0.9.2"), IP("10.0.9.3")
B1, B2, B3 = IP("10.0.9.10"), IP("10.0.9.11"), IP("10.0.9.12")

LISTING = """\
udp      17 29 src=10.0.9.50 dst=10.0.9.2 sport=40001 dport=53 src=10.0.9.10 dst=10.0.9.50 sport=53 dport=40001 mark=0 use=1
udp      17 27 src=10.0.9.51 dst=10.0.9.2 sport=40002 dport=53 [UNREPLIED] src=10.0.9.12 dst=10.0.9.51 sport=53 dport=40002 mark=0 use=1
udp      17 25 src=10.0.9.52 dst=10.0.9.2 sport=40003 dport=53 src=10.0.9.10 dst=10.0.9.52 sport=53 dport=40003 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.
"""


def test_the_flows_to_forget_are_those_answered_by_a_removed_backend_each_named_once() -> None:
    assert lb.flows_to_forget(LISTING, frozenset({B1, B2})) == [B1]
    assert lb.flows_to_forget(LISTING, frozenset({B3, B1})) == [B1, B3]
    assert lb.flows_to_forget("", frozenset({B1})) == []


def test_a_vip_that_keeps_a_backend_forgets_the_flows_of_the_removed_ones() -> None:
    old, new = LbTable({VIP: (B1, B2, B3)}), LbTable({VIP: (B2,)})
    assert lb._removed_backends(old, new, [VIP]) == {VIP: frozenset({B1, B3})}


def test_a_vip_removed_or_left_without_backends_forgets_nothing() -> None:
    old = LbTable({VIP: (B1, B2), VIP2: (B3,)})
    new = LbTable({VIP2: ()})
    assert lb._removed_backends(old, new, [VIP, VIP2]) == {}


def test_a_removed_sandbox_drops_its_queued_conntrack_runs_without_waiting_for_them(monkeypatch) -> None:  # noqa: ANN001
    class Nft:
        netns_path = "/run/netns/x"

        def run(self, script: str) -> str:
            return ""

        def close(self) -> None:
            pass

    monkeypatch.setattr(lb, "NftContext", lambda _path: Nft())
    busy = threading.Event()
    release = threading.Event()

    def block() -> None:
        busy.set()
        release.wait(10)
    blocker = lb._CONNTRACK_WORKER.submit(block)
    try:
        busy.wait(5)
        sandbox = lb.SandboxLb("/run/netns/x")
        queued = lb._CONNTRACK_WORKER.submit(lambda: None)
        sandbox._pending = [queued]
        sandbox.remove()  # would wait for `block` if it settled
        assert (queued.cancelled(), sandbox._pending) == (True, [])
    finally:
        release.set()
        blocker.result(5)
