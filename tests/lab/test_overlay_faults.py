"""Issue 11's "stop a host entirely": on a 5-host swarm (managers h1-h3, workers h4-h5) with an attachable overlay and
containers on h2, h4 and h5, h5's daemon is SIGKILLed and its switch port taken down (its containers keep running,
as in a frozen or unplugged host; two of them, b5 and r5 (--restart always, on a second overlay), die meanwhile). Neighbours: agent/gossip/netdb.py (a failed
node's entries are kept suspended, moby #53141), agent/network/overlay_peers.py (the FDB/neighbour entries),
shoal/swarm/overlay_gossip.py (names). One cluster for the module; tests run in file order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from agent.gossip.sim import dead_bound
from shoal.lab import Lab, host_address, switch_netns
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import inspect, node_id, running_swarm, sh

pytestmark = pytest.mark.lab

NET = "faults-net"
RESTART_NET = "restart-net"
HOSTS = ["h1", "h2", "h3", "h4", "h5"]
ON_NET = ["h2", "h4"]  # the other nodes with an endpoint on NET: the only ones that hold h5's entries


def gossip(lab: Lab, host: str) -> dict:
    return lab.client(host).get("/shoal/gossip")


def state_of(lab: Lab, host: str, member: str) -> str:
    return next((m["State"] for m in gossip(lab, host)["Members"] if m["Name"] == member), "")


def network_counts(lab: Lab, host: str, net_id: str) -> tuple[int, int]:
    """(alive peers, entries) of the host's netdb on the network; suspended entries count as entries."""
    return next(((n["Peers"], n["Entries"]) for n in gossip(lab, host)["Networks"] if n["ID"] == net_id), (0, 0))


def overlay_ns(lab: Lab, host: str, net_id: str) -> str:
    """The host's namespace of the network (shoal-LAB-hK-ov-<VNI>-<id[:8]>)."""
    names = lab.exec(host, ["ip", "netns", "list"]).stdout.split()
    (ns,) = [n for n in names if n.startswith(f"{lab.netns(host)}-ov-") and n.endswith(f"-{net_id[:8]}")]
    return ns


def fdb(c: Cluster, host: str) -> dict[str, str]:
    """MAC -> remote VTEP of the FDB entries with a destination in the host's namespace of NET."""
    ns = overlay_ns(c.lab, host, c.net_id)
    out = json.loads(c.lab.exec(host, ["ip", "netns", "exec", ns, "bridge", "-j", "fdb", "show"]).stdout)
    return {e["mac"]: e["dst"] for e in out if e.get("dst") and e["mac"] != "00:00:00:00:00:00"}


def neighbours(c: Cluster, host: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """IP -> (MAC, states) of the neighbour entries on NET's VXLAN device on the host."""
    ns = overlay_ns(c.lab, host, c.net_id)
    out = json.loads(c.lab.exec(host, ["ip", "netns", "exec", ns, "ip", "-j", "-4", "neigh", "show"]).stdout)
    return {e["dst"]: (e.get("lladdr", ""), tuple(e.get("state", []))) for e in out if e.get("dev", "").startswith("vx-")}


def endpoint(lab: Lab, host: str, name: str) -> tuple[str, str]:
    ep = inspect(lab, host, "inspect", name)["NetworkSettings"]["Networks"][NET]
    return ep["IPAddress"], ep["MacAddress"]


def ping(lab: Lab, host: str, name: str, target: str) -> subprocess.CompletedProcess[str]:
    return sh(lab, host, "exec", name, "ping", "-c1", "-W1", target, check=False)


class Cluster:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.net_id = ""
        self.h5 = ""
        self.eps: dict[str, tuple[str, str]] = {}  # container -> (ip, mac)
        self.dead_after = 0.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_swarm(5, managers=["h2", "h3"], workers=["h4", "h5"]) as lab:
        sh(lab, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.19.0/24", "--attachable", NET)
        c = Cluster(lab)
        for host, name in (("h2", "a2"), ("h4", "a4"), ("h5", "a5"), ("h5", "b5")):
            sh(lab, host, "run", "-d", "--network", NET, "--name", name, "busybox", "sleep", "3600")
            c.eps[name] = endpoint(lab, host, name)
        # a container with --restart always that dies with its host, on a network of its own (its counts apart)
        sh(lab, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.20.0/24", "--attachable", RESTART_NET)
        sh(lab, "h2", "run", "-d", "--network", RESTART_NET, "--name", "w2", "busybox", "sleep", "3600")
        sh(lab, "h5", "run", "-d", "--restart", "always", "--network", RESTART_NET, "--name", "r5", "busybox",
           "sleep", "3600")
        c.net_id = inspect(lab, "h1", "network", "inspect", NET)["Id"]
        c.h5 = node_id(lab, "h5")
        try:
            yield c
        finally:  # the switch port back up, whatever a test left, so that `lab down` finds the lab as it made it
            subprocess.run(["ip", "-n", switch_netns(lab.name), "link", "set", "h5", "up"], capture_output=True)


def remote_fdb(c: Cluster, host: str, names: list[str]) -> dict[str, str]:
    return {c.eps[n][1]: host_address("h5" if n.endswith("5") else f"h{n[1]}") for n in names}


def remote_neigh(c: Cluster, names: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {c.eps[n][0]: (c.eps[n][1], ("PERMANENT",)) for n in names}


def others_of(host: str) -> list[str]:
    return [n for n in ("a2", "a4", "a5", "b5") if not n.endswith(host[1])]


def test_h5_s_containers_are_fdb_and_neighbour_entries_on_every_other_node_of_the_network(cluster: Cluster) -> None:
    for host in ON_NET:
        want = others_of(host)
        assert wait_until(lambda host=host, want=want: fdb(cluster, host) == remote_fdb(cluster, host, want), 30)
        assert neighbours(cluster, host) == remote_neigh(cluster, want)
    assert wait_until(lambda: (r := ping(cluster.lab, "h2", "a2", "a5")).returncode == 0 and r, 30)


def test_a_stopped_host_is_dead_for_every_other_node_within_the_gossip_bound(cluster: Cluster) -> None:
    lab = cluster.lab
    for host in HOSTS[:4]:
        assert wait_until(lambda host=host: state_of(lab, host, cluster.h5) == "alive", 30)
    pids = [inspect(lab, "h5", "inspect", name)["State"]["Pid"] for name in ("b5", "r5")]
    bound = dead_bound(len(HOSTS))
    lab.kill("h5")  # SIGKILL: no gossip leave, no goodbye of any kind
    subprocess.run(["ip", "-n", switch_netns(lab.name), "link", "set", "h5", "down"], check=True)
    t0 = time.monotonic()
    for pid in pids:  # containers that die while their host is away
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(state_of(lab, h, cluster.h5) == "dead" for h in HOSTS[:4]), bound + 30, interval=0.2)
    cluster.dead_after = time.monotonic() - t0
    print(f"h5 dead at h1-h4 {cluster.dead_after:.1f} s after the stop (bound {bound:.1f} s)")
    assert cluster.dead_after <= bound, f"dead everywhere after {cluster.dead_after:.1f} s, bound {bound:.1f} s"


def test_the_stopped_host_s_entries_are_kept_suspended_with_their_fdb_and_neighbour_entries(cluster: Cluster) -> None:
    lab = cluster.lab
    # h5 is no peer on the network any more, but its 2 containers' entries (peer and names tables) stay
    assert {h: network_counts(lab, h, cluster.net_id) for h in ON_NET} == {h: (1, 8) for h in ON_NET}
    for host in ON_NET:
        want = others_of(host)
        assert fdb(cluster, host) == remote_fdb(cluster, host, want)
        assert neighbours(cluster, host) == remote_neigh(cluster, want)
    # the names are kept too: a5 still resolves on h2 (no answer comes: its host is away)
    r = ping(lab, "h2", "a2", "a5")
    assert (r.returncode, r.stdout.splitlines()[0]) == (1, f"PING a5 ({cluster.eps['a5'][0]}): 56 data bytes")


def test_when_the_host_returns_its_running_container_is_reached_again_by_name(cluster: Cluster) -> None:
    lab = cluster.lab
    subprocess.run(["ip", "-n", switch_netns(lab.name), "link", "set", "h5", "up"], check=True)
    lab.start("h5")
    for host in HOSTS[:4]:
        assert wait_until(lambda host=host: state_of(lab, host, cluster.h5) == "alive", 60)
    result = wait_until(lambda: (r := ping(lab, "h2", "a2", "a5")).returncode == 0 and r, 60)
    assert f"PING a5 ({cluster.eps['a5'][0]})" in result.stdout


def test_after_the_return_no_node_keeps_an_entry_of_the_container_that_died_meanwhile(cluster: Cluster) -> None:
    lab = cluster.lab
    for host in ON_NET:
        want = [n for n in others_of(host) if n != "b5"]
        assert wait_until(lambda host=host, want=want: fdb(cluster, host) == remote_fdb(cluster, host, want), 60)
        assert neighbours(cluster, host) == remote_neigh(cluster, want)
    # h5 a peer again; 3 containers' entries in the two tables on every node of the network
    seen: dict[str, tuple[int, int]] = {}

    def counts_are_2_and_6() -> bool:
        seen.update({h: network_counts(lab, h, cluster.net_id) for h in (*ON_NET, "h5")})
        return all(seen[h] == (2, 6) for h in (*ON_NET, "h5"))

    try:
        wait_until(counts_are_2_and_6, 30)
    except TimeoutError:
        raise AssertionError(f"(alive peers, entries) on the network after 30 s: {seen}") from None
    r = ping(lab, "h2", "a2", "b5")
    assert (r.returncode, r.stderr) == (1, "ping: bad address 'b5'\n")


def test_a_restart_always_container_that_died_with_its_host_comes_back_on_its_overlay(cluster: Cluster) -> None:
    lab = cluster.lab
    assert inspect(lab, "h5", "inspect", "r5")["State"]["Running"] is True
    result = wait_until(lambda: (r := ping(lab, "h2", "w2", "r5")).returncode == 0 and r, 20)
    assert "0% packet loss" in result.stdout
