"""macvlan networks (issue 9 item 7) on a two-host lab: containers on each host's macvlan over
the lab uplink (eth0) reach each other and the other host directly; a host cannot reach its own
macvlan containers (as with Docker); ipvlan is refused with the kernel's reason."""
from __future__ import annotations


import pytest

from tests.lab.helpers import running_lab, shoal

pytestmark = pytest.mark.lab

SUBNET = "192.168.200.0/24"  # the lab's underlay LAN (h1 = .11, h2 = .12)


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=2) as lab:
        for host, address in (("h1", "192.168.200.130"), ("h2", "192.168.200.150")):
            shoal(lab, "network", "create", "-d", "macvlan", "--subnet", SUBNET, "--gateway", "192.168.200.1",
                  "-o", "parent=eth0", "mv", host=host)
            shoal(lab, "run", "-d", "--name", f"c-{host}", "--network", "mv", "--ip", address, "busybox",
                  "sleep", "3600", host=host)
        yield lab


def test_macvlan_containers_on_two_hosts_reach_each_other(lab):
    result = shoal(lab, "exec", "c-h1", "ping", "-c1", "-W2", "192.168.200.150", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_macvlan_container_reaches_the_other_lab_host(lab):
    result = shoal(lab, "exec", "c-h1", "ping", "-c1", "-W2", "192.168.200.12", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_host_cannot_reach_its_own_macvlan_container(lab):
    assert lab.exec("h1", ["ping", "-c1", "-W1", "192.168.200.130"], check=False).returncode != 0


def test_the_container_interface_is_a_macvlan_with_the_address_and_mac_asked(lab):
    out = shoal(lab, "exec", "c-h1", "ip", "-o", "addr", "show", "eth0").stdout
    assert "inet 192.168.200.130/24" in out
    inspect = shoal(lab, "inspect", "c-h1").stdout
    assert '"MacAddress": "02:42:c0:a8:c8:82"' in inspect


def test_macvlan_without_a_parent_is_refused_naming_the_option(lab):
    result = shoal(lab, "network", "create", "-d", "macvlan", "--subnet", "10.55.0.0/24", "noparent", check=False)
    assert result.returncode != 0
    assert "the macvlan driver needs a parent interface: -o parent=IFACE" in result.stderr


def test_macvlan_with_a_missing_parent_is_refused_naming_it(lab):
    result = shoal(lab, "network", "create", "-d", "macvlan", "--subnet", "10.56.0.0/24", "-o", "parent=nosuch0",
                   "badparent", check=False)
    assert "-o parent interface was not found on the host: nosuch0" in result.stderr
    assert "badparent" not in shoal(lab, "network", "ls").stdout


def test_ipvlan_is_refused_with_the_kernels_reason(lab):
    result = shoal(lab, "network", "create", "-d", "ipvlan", "-o", "parent=eth0", "ipv", check=False)
    assert result.returncode != 0
    assert "ipvlan support, which this host's kernel does not have" in result.stderr


def test_removing_a_macvlan_container_leaves_the_parent_untouched(lab):
    shoal(lab, "run", "-d", "--name", "gone", "--network", "mv", "--ip", "192.168.200.131", "busybox",
          "sleep", "60")
    before = lab.exec("h1", ["ip", "-o", "-d", "link", "show"]).stdout
    shoal(lab, "rm", "-f", "gone")
    links = lab.exec("h1", ["ip", "-o", "-d", "link", "show"]).stdout
    assert "macvlan" not in links and ": eth0@" in links and links.count("\n") == before.count("\n")


def test_an_8021q_parent_on_a_kernel_without_vlan_support_is_refused_and_leaves_nothing(lab):
    # This machine's kernel has no 8021q module (`ip link add ... type vlan` answers "Unknown
    # device type"); where it has one, shoal makes eth0.10 and removes it with the network.
    assert lab.exec("h1", ["ip", "link", "add", "link", "eth0", "name", "probe.9", "type", "vlan", "id", "9"],
                    check=False).returncode != 0
    result = shoal(lab, "network", "create", "-d", "macvlan", "--subnet", "10.60.0.0/24", "-o", "parent=eth0.10",
                   "mv10", check=False)
    assert result.returncode != 0
    assert "the parent eth0.10 needs the kernel's 802.1q VLAN support, which this host's kernel does not have" \
        in result.stderr
    assert "mv10" not in shoal(lab, "network", "ls").stdout
    assert lab.exec("h1", ["ip", "link", "show", "eth0.10"], check=False).returncode != 0


def test_a_macvlan_container_keeps_its_interface_across_a_daemon_kill_9(lab):
    lab.restart_daemon("h2", kill9=True)
    out = shoal(lab, "exec", "c-h2", "ip", "-o", "addr", "show", "eth0", host="h2").stdout
    assert "inet 192.168.200.150/24" in out
    result = shoal(lab, "exec", "c-h1", "ping", "-c1", "-W2", "192.168.200.150", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
