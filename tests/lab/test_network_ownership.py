"""Issue 7 items 1, 4 (network side) and 8 on a real lab host: shoal never touches kernel
objects it did not create, a SIGKILL during network create/remove leaves nothing the next start
does not reconcile, IPAM comes back from the live endpoints, and bad --ip is refused at create.

One lab for the module; each test names what it changes and removes what it made.
"""
from __future__ import annotations

import json
import os
import re

import pytest

from shoal.client import DaemonError
from shoal.lab import data_dir
from tests.lab.helpers import inspect_first, iptables_rules, running_lab, shoal, wait_until

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


def ip(lab, *args: str) -> str:
    return lab.exec("h1", ["ip", *args]).stdout


def addresses(lab, link: str) -> list[str]:
    return sorted(re.findall(r"inet (\S+)", ip(lab, "-4", "-o", "addr", "show", "dev", link)))


def link_line(lab, link: str) -> str:
    """`ip -d link show` without the counters that change by themselves."""
    return re.sub(r"\s+", " ", ip(lab, "-d", "link", "show", "dev", link)).strip()


def bridges(lab) -> list[str]:
    return sorted(re.findall(r"^\d+: ([^:@]+)", ip(lab, "-o", "link", "show", "type", "bridge"), re.M))


def create_refused(lab, body: dict) -> tuple[int, str]:
    with lab.client("h1") as client:
        with pytest.raises(DaemonError) as err:
            client.post("/networks/create", body)
    return err.value.status, err.value.message


def network_names(lab) -> list[str]:
    with lab.client("h1") as client:
        return sorted(n["Name"] for n in client.get("/networks"))


def restart_with_failpoint(lab, failpoint: str) -> None:
    os.environ["SHOAL_FAILPOINT"] = failpoint
    try:
        lab.restart_daemon("h1")
    finally:
        del os.environ["SHOAL_FAILPOINT"]


# ---- item 1: never touch what shoal did not create --------------------------------------
def test_the_name_of_a_non_bridge_link_is_refused_and_the_link_left_as_it_was(lab):
    before = (link_line(lab, "eth0"), addresses(lab, "eth0"))
    status, message = create_refused(lab, {"Name": "x", "Options": {"com.docker.network.bridge.name": "eth0"}})
    assert (status, message) == (400, "existing interface eth0 is not a bridge")  # dockerd 20.10: the same text with 500
    assert (link_line(lab, "eth0"), addresses(lab, "eth0")) == before
    assert "x" not in network_names(lab)


def test_an_existing_bridge_is_used_as_it_is_and_left_in_place_by_network_rm(lab):
    lab.exec("h1", ["ip", "link", "add", "userbr", "type", "bridge"])
    try:
        lab.exec("h1", ["ip", "addr", "add", "192.168.251.5/24", "dev", "userbr"])
        shoal(lab, "network", "create", "-o", "com.docker.network.bridge.name=userbr",
              "--subnet", "10.61.0.0/24", "--gateway", "10.61.0.1", "adopted")
        assert addresses(lab, "userbr") == ["10.61.0.1/24", "192.168.251.5/24"]
        assert "alias" not in ip(lab, "-d", "link", "show", "dev", "userbr")  # no shoal mark on it
        shoal(lab, "network", "rm", "adopted")
        assert (addresses(lab, "userbr"), "userbr" in bridges(lab)) == (["192.168.251.5/24"], True)
    finally:
        lab.exec("h1", ["ip", "link", "del", "userbr"], check=False)


def test_a_gateway_the_bridge_already_had_stays_after_network_rm(lab):
    lab.exec("h1", ["ip", "link", "add", "userbr2", "type", "bridge"])
    try:
        lab.exec("h1", ["ip", "addr", "add", "10.62.0.1/24", "dev", "userbr2"])
        shoal(lab, "network", "create", "-o", "com.docker.network.bridge.name=userbr2",
              "--subnet", "10.62.0.0/24", "--gateway", "10.62.0.1", "adopted2")
        shoal(lab, "network", "rm", "adopted2")
        assert addresses(lab, "userbr2") == ["10.62.0.1/24"]
    finally:
        lab.exec("h1", ["ip", "link", "del", "userbr2"], check=False)


def test_a_bridge_shoal_made_carries_its_mark_and_goes_with_network_rm(lab):
    net_id = shoal(lab, "network", "create", "marked").stdout.strip()
    name = f"br-{net_id[:12]}"
    assert re.search(rf"alias shoal:[0-9a-f]{{12}}:{net_id}\b", ip(lab, "-d", "link", "show", "dev", name))
    shoal(lab, "network", "rm", "marked")
    assert name not in bridges(lab)


@pytest.mark.parametrize("subnet", ["127.0.0.0/24", "224.0.0.0/24", "169.254.0.0/24", "0.0.0.0/8"])
def test_a_subnet_that_cannot_work_is_refused_and_nothing_is_made(lab, subnet):
    before = bridges(lab)
    status, message = create_refused(lab, {"Name": "badsub", "IPAM": {"Config": [{"Subnet": subnet}]}})
    assert (status, message.startswith(f"invalid pool request: subnet {subnet} overlaps the ")) == (400, True)
    assert (bridges(lab), "badsub" in network_names(lab)) == (before, False)


# ---- item 8: names and static addresses -------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("a\nb", "invalid network name 'a\\nb': control character '\\n' is not allowed"),
    ("n" * 256, f"invalid network name {'n' * 32!r}...: 256 characters, at most 255"),
])
def test_a_network_name_that_breaks_listings_is_refused(lab, name, message):
    assert create_refused(lab, {"Name": name}) == (400, message)


def test_a_static_ip_outside_the_subnet_or_on_the_gateway_is_refused_at_create_and_connect(lab):
    shoal(lab, "network", "create", "--subnet", "10.63.0.0/24", "static")
    shoal(lab, "run", "-d", "--name", "static-c", "busybox", "sleep", "600")
    try:
        for address, message in (
            ("10.64.0.5", "no configured subnet or ip-range contain the IP address 10.64.0.5"),
            ("10.63.0.1", "invalid IP address 10.63.0.1: it is the gateway of subnet 10.63.0.0/24"),
        ):
            body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "static"},
                    "NetworkingConfig": {"EndpointsConfig": {"static": {"IPAMConfig": {"IPv4Address": address}}}}}
            with lab.client("h1") as client:
                with pytest.raises(DaemonError) as created:
                    client.post("/containers/create", body)
                with pytest.raises(DaemonError) as connected:
                    client.post("/networks/static/connect",
                                {"Container": "static-c", "EndpointConfig": {"IPAMConfig": {"IPv4Address": address}}})
            assert (created.value.status, created.value.message) == (400, message)
            assert (connected.value.status, connected.value.message) == (400, message)
        with lab.client("h1") as client:
            assert [c["Names"] for c in client.get("/containers/json", {"all": "1"})] == [["/static-c"]]
        assert list(inspect_first(lab, "inspect", "static-c")["NetworkSettings"]["Networks"]) == ["bridge"]
    finally:
        shoal(lab, "rm", "-f", "static-c")
        shoal(lab, "network", "rm", "static")


# ---- item 4: SIGKILL during network create / remove, then restart ----------------------------
def test_a_kill_between_bridge_creation_and_record_save_leaves_no_orphan(lab):
    before = bridges(lab)
    restart_with_failpoint(lab, "network-create-after-kernel")
    failed = shoal(lab, "network", "create", "--subnet", "10.65.0.0/24", "halfmade", check=False)
    assert failed.returncode != 0  # the daemon died mid-request: no answer
    lab.stop_daemon("h1", kill9=True)  # reaps the dead daemon (kills it if the failpoint was missed)
    assert len(bridges(lab)) == len(before) + 1  # the marked bridge the dead daemon left
    lab.start_daemon("h1")
    assert (bridges(lab), "halfmade" in network_names(lab)) == (before, False)
    # The subnet is not lost to later networks.
    shoal(lab, "network", "create", "--subnet", "10.65.0.0/24", "again")
    shoal(lab, "network", "rm", "again")


def test_a_kill_between_record_removal_and_bridge_removal_finishes_the_removal_at_start(lab):
    net_id = shoal(lab, "network", "create", "--subnet", "10.66.0.0/24", "halfgone").stdout.strip()
    name = f"br-{net_id[:12]}"
    restart_with_failpoint(lab, "network-remove-after-records")
    failed = shoal(lab, "network", "rm", "halfgone", check=False)
    assert failed.returncode != 0
    lab.stop_daemon("h1", kill9=True)
    assert name in bridges(lab)
    assert any(name in rule for rule in iptables_rules(lab.exec("h1", ["iptables-save", "-t", "nat"]).stdout))
    lab.start_daemon("h1")
    nat = iptables_rules(lab.exec("h1", ["iptables-save", "-t", "nat"]).stdout)
    assert (name in bridges(lab), [r for r in nat if name in r], "halfgone" in network_names(lab)) == (False, [], False)


def test_a_network_whose_bridge_vanished_gets_it_back_at_start(lab):
    net_id = shoal(lab, "network", "create", "--subnet", "10.67.0.0/24", "vanished").stdout.strip()
    name = f"br-{net_id[:12]}"
    try:
        lab.stop_daemon("h1", kill9=True)
        lab.exec("h1", ["ip", "link", "del", name])
        lab.start_daemon("h1")
        assert addresses(lab, name) == ["10.67.0.1/24"]
    finally:
        shoal(lab, "network", "rm", "vanished")


def test_ipam_after_a_restart_holds_exactly_the_live_endpoints(lab):
    shoal(lab, "network", "create", "--subnet", "10.68.0.0/24", "leaky")
    net_id = inspect_first(lab, "network", "inspect", "leaky")["Id"]
    shoal(lab, "run", "-d", "--network", "leaky", "--name", "live", "busybox", "sleep", "600")
    try:
        pool_file = data_dir(lab.name, "h1") / "engine" / "ipam" / f"{net_id}.json"
        lab.stop_daemon("h1", kill9=True)
        pool = json.loads(pool_file.read_text())
        pool["used"] += [f"10.68.0.{n}" for n in range(10, 30)]  # what a SIGKILL mid-start leaves
        pool_file.write_text(json.dumps(pool))
        lab.start_daemon("h1")
        live = inspect_first(lab, "inspect", "live")["NetworkSettings"]["Networks"]["leaky"]["IPAddress"]
        assert json.loads(pool_file.read_text())["used"] == [live]
    finally:
        shoal(lab, "rm", "-f", "live")
        shoal(lab, "network", "rm", "leaky")


def test_a_pool_left_without_its_network_is_dropped_at_start(lab):
    stray = data_dir(lab.name, "h1") / "engine" / "ipam" / f"{'ab' * 32}.json"
    lab.stop_daemon("h1", kill9=True)
    stray.write_text(json.dumps({"subnet": "10.69.0.0/24", "gateway": "10.69.0.1", "used": ["10.69.0.2"]}))
    lab.start_daemon("h1")
    assert not stray.exists()


def test_a_namespace_that_only_shares_the_prefix_is_left_at_start(lab):
    from shoal.lab import host_netns

    foreign = f"{host_netns(lab.name, 'h1')}-zzzzzzzzzzzz"  # prefix + 12 characters, not a container id
    lab.exec("h1", ["ip", "netns", "add", foreign])
    try:
        lab.restart_daemon("h1", kill9=True)
        assert foreign in lab.exec("h1", ["ip", "netns", "list"]).stdout.split()
    finally:
        lab.exec("h1", ["ip", "netns", "del", foreign], check=False)


# ---- item 4: SIGKILL between making a link and marking it, or before the record names it ------
def link_alias(lab, link: str) -> str:
    match = re.search(r"\balias (\S+)", ip(lab, "-d", "link", "show", "dev", link))
    return match.group(1) if match else ""


def host_veths(lab) -> list[str]:
    return sorted(set(re.findall(r"^\d+: ([^:@]+)", ip(lab, "-o", "link", "show", "type", "veth"), re.M)) - {"eth0"})


def sandbox_links(lab, container_id: str) -> list[str]:
    from shoal.lab import host_netns

    out = lab.exec("h1", ["ip", "-n", f"{host_netns(lab.name, 'h1')}-{container_id[:12]}", "-o", "link", "show"]).stdout
    return sorted(re.findall(r"^\d+: ([^:@]+)", out, re.M))


def test_a_kill_between_bridge_creation_and_its_mark_leaves_no_orphan(lab):
    before = bridges(lab)
    restart_with_failpoint(lab, "bridge-created-before-mark")
    failed = shoal(lab, "network", "create", "--subnet", "10.70.0.0/24", "unmarked", check=False)
    assert failed.returncode != 0
    lab.stop_daemon("h1", kill9=True)
    [made] = sorted(set(bridges(lab)) - set(before))
    assert link_alias(lab, made) == ""  # the kernel ignores IFLA_IFALIAS at creation: no mark yet
    lab.start_daemon("h1")
    assert (bridges(lab), "unmarked" in network_names(lab)) == (before, False)


@pytest.mark.parametrize("failpoint", ["connect-after-plumb", "veth-created-before-mark"])
def test_a_kill_in_connect_before_the_record_names_the_endpoint_leaves_no_veth(lab, failpoint):
    shoal(lab, "network", "create", "--subnet", "10.71.0.0/24", "late")
    cid = shoal(lab, "run", "-d", "--name", "conn", "busybox", "sleep", "600").stdout.strip()
    try:
        before = host_veths(lab)
        restart_with_failpoint(lab, failpoint)
        failed = shoal(lab, "network", "connect", "late", "conn", check=False)
        assert failed.returncode != 0
        lab.stop_daemon("h1", kill9=True)
        assert (len(host_veths(lab)), sandbox_links(lab, cid)) == (len(before) + 1, ["eth0", "eth1", "lo"])
        lab.start_daemon("h1")
        assert (host_veths(lab), sandbox_links(lab, cid)) == (before, ["eth0", "lo"])
        container = inspect_first(lab, "inspect", "conn")
        assert (container["State"]["Status"], list(container["NetworkSettings"]["Networks"])) == ("running", ["bridge"])
    finally:
        shoal(lab, "rm", "-f", "conn")
        shoal(lab, "network", "rm", "late")


def test_veths_without_this_daemons_mark_are_left_at_start(lab):
    lab.exec("h1", ["ip", "link", "add", "vethab12cd3", "type", "veth", "peer", "name", "vethforeign"])
    try:
        lab.exec("h1", ["ip", "link", "set", "vethforeign", "alias", f"shoal:000000000000:{'e' * 64}"])
        lab.restart_daemon("h1", kill9=True)
        assert {"vethab12cd3", "vethforeign"} <= set(host_veths(lab))
    finally:
        lab.exec("h1", ["ip", "link", "del", "vethab12cd3"], check=False)


def test_a_kill_in_disconnect_before_the_record_is_saved_plumbs_the_endpoint_again(lab):
    shoal(lab, "network", "create", "--subnet", "10.72.0.0/24", "early")
    cid = shoal(lab, "run", "-d", "--name", "disc", "busybox", "sleep", "600").stdout.strip()
    try:
        shoal(lab, "network", "connect", "early", "disc")
        before = host_veths(lab)
        restart_with_failpoint(lab, "disconnect-after-unplumb")
        failed = shoal(lab, "network", "disconnect", "early", "disc", check=False)
        assert failed.returncode != 0
        lab.stop_daemon("h1", kill9=True)
        assert (len(host_veths(lab)), sandbox_links(lab, cid)) == (len(before) - 1, ["eth0", "lo"])
        lab.start_daemon("h1")  # the record still names the endpoint: the record is the truth
        assert (host_veths(lab), sandbox_links(lab, cid)) == (before, ["eth0", "eth1", "lo"])
        address = inspect_first(lab, "inspect", "disc")["NetworkSettings"]["Networks"]["early"]["IPAddress"]
        from shoal.lab import host_netns
        out = lab.exec("h1", ["ip", "-n", f"{host_netns(lab.name, 'h1')}-{cid[:12]}", "-4", "-o", "addr", "show", "dev", "eth1"]).stdout
        assert re.findall(r"inet (\S+)", out) == [f"{address}/24"]
    finally:
        shoal(lab, "rm", "-f", "disc")
        shoal(lab, "network", "rm", "early")
