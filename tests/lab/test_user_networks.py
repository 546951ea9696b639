"""Issue 3 on a real two-host lab: user-defined bridges (S8-S10), embedded DNS (S11), several
networks per container (S12), links (S13), published ports (S14), the firewall (S21), proxies (S20).

One lab per module; each test names what it changes. h2 plays the outside world.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from shoal.client import DaemonError
from tests.lab.helpers import SHOAL, inspect_first, iptables_rules, running_lab, shoal, wait_until

pytestmark = pytest.mark.lab

FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end='')"


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=2) as lab:
        shoal(lab, "network", "create", "--driver", "bridge", "isolated_nw")
        shoal(lab, "run", "-d", "--network", "isolated_nw", "--name", "container3", "busybox", "sleep", "3600")
        shoal(lab, "run", "-d", "--network", "isolated_nw", "--network-alias", "www", "--name", "web",
            "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
        shoal(lab, "run", "-d", "--name", "container1", "busybox", "sleep", "3600")
        yield lab




def ip_of(lab, container: str, network: str) -> str:
    return inspect_first(lab, "inspect", container)["NetworkSettings"]["Networks"][network]["IPAddress"]


def fetch_from(lab, host: str, url: str) -> str | None:
    result = lab.exec(host, [sys.executable, "-c", FETCH, url], check=False, timeout=30)
    return result.stdout if result.returncode == 0 else None


def test_a_new_bridge_network_gets_the_next_local_pool(lab):
    net = inspect_first(lab, "network", "inspect", "isolated_nw")
    assert (net["Driver"], net["Scope"]) == ("bridge", "local")
    assert net["IPAM"]["Config"] == [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]
    assert re.findall(r"inet (\S+)", lab.exec("h1", ["ip", "-4", "-o", "addr", "show",
                                                     f"br-{net['Id'][:12]}"]).stdout) == ["172.18.0.1/16"]


def test_subnet_gateway_and_internal_are_honoured(lab):
    shoal(lab, "network", "create", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "--internal", "backend")
    net = inspect_first(lab, "network", "inspect", "backend")
    assert net["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.254"}]
    assert net["Internal"] is True
    shoal(lab, "network", "rm", "backend")


def test_bad_network_input_gets_dockers_messages_and_creates_nothing(lab):
    cases = [
        ({"Subnet": "10.10.10.0/8"}, 400, "invalid subnet 10.10.10.0/8: it should be 10.0.0.0/8"),
        ({"Subnet": "10.0.0.0/8", "Gateway": "192.168.0.1"}, 400,
         "invalid gateway 192.168.0.1: parent subnet 10.0.0.0/8 doesn't contain this address"),
        ({"Subnet": "10.0.0.0/16", "IPRange": "10.1.0.0/24"}, 400,
         "invalid ip-range 10.1.0.0/24: parent subnet 10.0.0.0/16 doesn't contain ip-range"),
        ({"Subnet": "172.18.5.0/24"}, 403, "invalid pool request: Pool overlaps with other one on this address space"),
    ]
    bridges_before = _bridges(lab)
    with lab.client("h1") as client:
        for config, status, message in cases:
            body = {"Name": "badnet", "Driver": "bridge", "IPAM": {"Driver": "default", "Config": [config]}}
            with pytest.raises(DaemonError) as err:
                client.post("/networks/create", body)
            assert (err.value.status, err.value.message) == (status, message)
    duplicate = shoal(lab, "network", "create", "isolated_nw", check=False)
    assert duplicate.stderr.strip() == "Error response from daemon: network with name isolated_nw already exists"
    assert "badnet" not in shoal(lab, "network", "ls").stdout
    assert _bridges(lab) == bridges_before


def _bridges(lab) -> list[str]:
    out = lab.exec("h1", ["ip", "-o", "link", "show", "type", "bridge"]).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


def test_removing_a_network_with_containers_is_refused(lab):
    result = shoal(lab, "network", "rm", "isolated_nw", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error response from daemon: network isolated_nw has active endpoints (")


def test_containers_resolve_each_other_by_name_and_alias_through_127_0_0_11(lab):
    address = ip_of(lab, "web", "isolated_nw")
    for name in ("web", "www", "web.isolated_nw"):
        out = shoal(lab, "exec", "container3", "nslookup", name).stdout
        assert "Server:\t\t127.0.0.11" in out
        assert f"Address: {address}" in out
    assert shoal(lab, "exec", "container3", "wget", "-qO-", "http://web/hostname").stdout.strip() == \
        inspect_first(lab, "inspect", "web")["Id"][:12]


def test_resolv_conf_of_a_user_network_container_lists_only_the_embedded_server(lab):
    resolv = shoal(lab, "exec", "container3", "cat", "/etc/resolv.conf").stdout
    assert [line for line in resolv.splitlines() if line.startswith("nameserver")] == ["nameserver 127.0.0.11"]


def test_bridge_networks_are_isolated_until_connected_and_connect_is_live(lab):
    target = ip_of(lab, "container3", "isolated_nw")
    assert shoal(lab, "exec", "container1", "ping", "-c1", "-w1", target, check=False).returncode != 0
    shoal(lab, "network", "connect", "isolated_nw", "container1")
    try:
        assert "1 packets received" in shoal(lab, "exec", "container1", "ping", "-c1", "-w2", target).stdout
        assert "Address: " + target in shoal(lab, "exec", "container1", "nslookup", "container3").stdout
    finally:
        shoal(lab, "network", "disconnect", "isolated_nw", "container1")
    assert shoal(lab, "exec", "container1", "ping", "-c1", "-w1", target, check=False).returncode != 0


def test_the_default_route_follows_the_first_non_internal_network_by_name(lab):
    shoal(lab, "network", "create", "--subnet", "10.88.0.0/24", "aaa_first")
    shoal(lab, "run", "-d", "--name", "multi", "busybox", "sleep", "3600")
    try:
        assert "default via 172.17.0.1" in shoal(lab, "exec", "multi", "ip", "route").stdout
        shoal(lab, "network", "connect", "aaa_first", "multi")
        assert "default via 10.88.0.1" in shoal(lab, "exec", "multi", "ip", "route").stdout
        shoal(lab, "network", "disconnect", "aaa_first", "multi")
        assert "default via 172.17.0.1" in shoal(lab, "exec", "multi", "ip", "route").stdout
    finally:
        shoal(lab, "rm", "-f", "multi")
        shoal(lab, "network", "rm", "aaa_first")


def test_links_on_the_default_bridge_set_hosts_and_environment(lab):
    shoal(lab, "run", "-d", "--name", "db", "--expose", "5432", "-e", "POSTGRES_USER=me", "busybox", "sleep", "3600")
    try:
        db_ip = ip_of(lab, "db", "bridge")
        db_id = inspect_first(lab, "inspect", "db")["Id"]
        out = shoal(lab, "run", "--rm", "--name", "app", "--link", "db:database", "busybox",
                  "sh", "-c", "env | grep ^DATABASE_ | sort; grep database /etc/hosts").stdout.splitlines()
        assert out == [
            "DATABASE_ENV_POSTGRES_USER=me",
            "DATABASE_NAME=/app/database",
            f"DATABASE_PORT=tcp://{db_ip}:5432",
            f"DATABASE_PORT_5432_TCP=tcp://{db_ip}:5432",
            f"DATABASE_PORT_5432_TCP_ADDR={db_ip}",
            "DATABASE_PORT_5432_TCP_PORT=5432",
            "DATABASE_PORT_5432_TCP_PROTO=tcp",
            f"{db_ip}\tdatabase {db_id[:12]} db",
        ]
    finally:
        shoal(lab, "rm", "-f", "db")


def test_a_link_on_a_user_network_is_a_dns_alias(lab):
    out = shoal(lab, "run", "--rm", "--network", "isolated_nw", "--link", "web:site", "busybox",
              "nslookup", "site").stdout
    assert "Address: " + ip_of(lab, "web", "isolated_nw") in out


def test_a_published_port_is_reachable_from_another_lab_host(lab):
    shoal(lab, "run", "-d", "-p", "8080:80", "--name", "pub", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    try:
        pub_id = inspect_first(lab, "inspect", "pub")["Id"]
        url = f"http://{lab.address('h1')}:8080/hostname"
        assert wait_until(lambda: fetch_from(lab, "h2", url), timeout=15).strip() == pub_id[:12]
        ps = shoal(lab, "ps", "--filter", "name=pub").stdout
        assert "0.0.0.0:8080->80/tcp" in ps
    finally:
        shoal(lab, "rm", "-f", "pub")
    assert fetch_from(lab, "h2", f"http://{lab.address('h1')}:8080/hostname") is None


def test_a_port_conflict_fails_with_dockers_message_and_leaves_nothing_published(lab):
    shoal(lab, "run", "-d", "-p", "8081:80", "--name", "first", "busybox", "sleep", "3600")
    try:
        result = shoal(lab, "run", "-d", "-p", "8081:80", "--name", "second", "busybox", "sleep", "3600", check=False)
        assert result.returncode == 125
        assert "Bind for 0.0.0.0:8081 failed: port is already allocated" in result.stderr
        assert inspect_first(lab, "inspect", "second")["State"]["Status"] == "created"
        assert lab.exec("h1", ["iptables-save", "-t", "nat"]).stdout.count("--dport 8081") == 1
    finally:
        shoal(lab, "rm", "-f", "first", "second")


def test_publishing_without_a_host_port_picks_a_free_high_port(lab):
    shoal(lab, "run", "-d", "-p", "80", "--name", "dyn", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    try:
        ports = inspect_first(lab, "inspect", "dyn")["NetworkSettings"]["Ports"]["80/tcp"]
        low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        assert low <= int(ports[0]["HostPort"]) <= high
        assert f"0.0.0.0:{ports[0]['HostPort']}->80/tcp" in shoal(lab, "ps", "--filter", "name=dyn").stdout
    finally:
        shoal(lab, "rm", "-f", "dyn")


def test_a_docker_user_rule_wins_over_shoals_rules(lab):
    shoal(lab, "run", "-d", "-p", "8082:80", "--name", "guarded", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    url = f"http://{lab.address('h1')}:8082/hostname"
    rule = ["DOCKER-USER", "-s", lab.address("h2"), "-j", "DROP"]
    try:
        wait_until(lambda: fetch_from(lab, "h2", url), timeout=15)
        lab.exec("h1", ["iptables", "-I", *rule])
        assert fetch_from(lab, "h2", url) is None
        lab.exec("h1", ["iptables", "-D", *rule])
        assert fetch_from(lab, "h2", url) is not None
    finally:
        lab.exec("h1", ["iptables", "-D", *rule], check=False)
        shoal(lab, "rm", "-f", "guarded")


def test_rules_come_back_after_a_flush_without_duplicates(lab):
    shoal(lab, "run", "-d", "-p", "8083:80", "--name", "healed", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    url = f"http://{lab.address('h1')}:8083/hostname"
    try:
        wait_until(lambda: fetch_from(lab, "h2", url), timeout=15)
        before = lab.exec("h1", ["iptables-save"]).stdout
        lab.exec("h1", ["iptables", "-F"])
        lab.exec("h1", ["iptables", "-t", "nat", "-F"])
        assert wait_until(lambda: fetch_from(lab, "h2", url), timeout=30)
        after = lab.exec("h1", ["iptables-save"]).stdout
        assert iptables_rules(after) == iptables_rules(before)
    finally:
        shoal(lab, "rm", "-f", "healed")


def test_proxies_from_the_config_file_reach_new_containers_and_env_overrides(lab, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"proxies": {"default": {
        "httpProxy": "http://proxy.lab:3128", "noProxy": "localhost"}}}))
    argv = ["env", f"SHOAL_CONFIG={tmp_path}", *SHOAL, "run", "--rm", "-e", "NO_PROXY=override",
            "busybox", "sh", "-c", "env | grep -i _proxy= | sort"]
    out = lab.exec("h1", argv).stdout.splitlines()
    assert out == [
        "HTTP_PROXY=http://proxy.lab:3128",
        "NO_PROXY=override",
        "http_proxy=http://proxy.lab:3128",
        "no_proxy=localhost",
    ]



PEER_SERVER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen(1)
server.settimeout(30)
conn, peer = server.accept()
conn.sendall(peer[0].encode())
conn.close()
"""


def test_outbound_traffic_of_a_container_is_masqueraded_to_the_hosts_address(lab):
    # A listener on h1 itself (not in a container) reports the source address it sees; a
    # container on h2 connects to it across the lab switch.
    server = subprocess.Popen(lab.exec_argv("h1", [sys.executable, "-c", PEER_SERVER, "9099"]),
                              stdout=subprocess.PIPE, text=True)
    try:
        def connect() -> str | None:
            got = shoal(lab, "run", "--rm", "busybox", "nc", lab.address("h1"), "9099", host="h2", check=False)
            return got.stdout.strip() or None

        assert wait_until(connect, timeout=20) == lab.address("h2")
    finally:
        server.kill()
        server.wait()


def test_a_host_port_held_by_another_process_is_refused(lab):
    holder = subprocess.Popen(lab.exec_argv("h1", [sys.executable, "-c", PEER_SERVER, "8084"]),
                              stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ":8084 " in lab.exec("h1", ["ss", "-ltn"]).stdout, timeout=10)
        result = shoal(lab, "run", "-d", "-p", "8084:80", "--name", "blocked", "busybox", "sleep", "3600", check=False)
        assert result.returncode == 125
        assert "Bind for 0.0.0.0:8084 failed: port is already allocated" in result.stderr
        assert "8084" not in lab.exec("h1", ["iptables-save", "-t", "nat"]).stdout
    finally:
        holder.kill()
        holder.wait()
        shoal(lab, "rm", "-f", "blocked", check=False)
