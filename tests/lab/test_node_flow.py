"""The node walk-through of issue 2 (S1-S7) on a real two-host lab: default networks,
containers on docker0, none and host modes, errors, and a daemon SIGKILL + restart.

One lab per module (starting daemons costs seconds); tests that change shared state say so.
"""
from __future__ import annotations

import json
import os
import re
import signal

import pytest

from tests.lab.helpers import inspect_first, iptables_rules, running_lab, shoal, wait_until

pytestmark = pytest.mark.lab



@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=2) as lab:
        shoal(lab, "run", "-d", "--name", "container1", "busybox", "sleep", "3600")
        shoal(lab, "run", "-d", "--name", "container2", "busybox", "sleep", "3600")
        yield lab




def test_fresh_daemon_has_exactly_the_three_default_networks(lab):
    out = shoal(lab, "network", "ls", host="h2").stdout.splitlines()
    assert re.split(r"\s{2,}", out[0].strip()) == ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]
    rows = [line.split() for line in out[1:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("bridge", "bridge", "local"),
        ("host", "host", "local"),
        ("none", "null", "local"),
    ]
    assert all(re.fullmatch(r"[0-9a-f]{12}", r[0]) for r in rows)


def test_docker0_holds_the_default_gateway_address(lab):
    out = lab.exec("h1", ["ip", "-4", "-o", "addr", "show", "docker0"]).stdout
    assert re.findall(r"inet (\S+)", out) == ["172.17.0.1/16"]


def test_containers_get_addresses_in_order_with_macs_derived_from_them(lab):
    containers = inspect_first(lab, "network", "inspect", "bridge")["Containers"]
    by_name = {c["Name"]: c for c in containers.values()}
    assert by_name["container1"]["IPv4Address"] == "172.17.0.2/16"
    assert by_name["container1"]["MacAddress"] == "02:42:ac:11:00:02"
    assert by_name["container2"]["IPv4Address"] == "172.17.0.3/16"
    assert by_name["container2"]["MacAddress"] == "02:42:ac:11:00:03"


def test_bridge_inspect_has_the_fields_of_s3(lab):
    net = inspect_first(lab, "network", "inspect", "bridge")
    assert net["Name"] == "bridge"
    assert re.fullmatch(r"[0-9a-f]{64}", net["Id"])
    assert net["Scope"] == "local"
    assert net["Driver"] == "bridge"
    assert net["IPAM"]["Driver"] == "default"
    assert net["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    assert net["Options"] == {
        "com.docker.network.bridge.default_bridge": "true",
        "com.docker.network.bridge.enable_icc": "true",
        "com.docker.network.bridge.enable_ip_masquerade": "true",
        "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
        "com.docker.network.bridge.name": "docker0",
        "com.docker.network.driver.mtu": "1500",
    }
    assert net["Labels"] == {}
    container_id = inspect_first(lab, "inspect", "container1")["Id"]
    entry = net["Containers"][container_id]
    assert set(entry) == {"Name", "EndpointID", "MacAddress", "IPv4Address", "IPv6Address"}
    assert re.fullmatch(r"[0-9a-f]{64}", entry["EndpointID"])
    assert entry["IPv6Address"] == ""


def test_containers_on_the_default_bridge_reach_each_other_by_ip(lab):
    result = shoal(lab, "exec", "container1", "ping", "-c3", "-w3", "172.17.0.3")
    assert "3 packets transmitted, 3 packets received" in result.stdout


def test_etc_hosts_holds_localhost_lines_and_the_containers_own_address(lab):
    container_id = inspect_first(lab, "inspect", "container1")["Id"]
    hosts = shoal(lab, "exec", "container1", "cat", "/etc/hosts").stdout
    assert hosts == (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "ff00::0\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
        f"172.17.0.2\t{container_id[:12]}\n"
    )
    assert shoal(lab, "exec", "container1", "hostname").stdout.strip() == container_id[:12]


def test_no_name_resolution_between_containers_on_the_default_bridge(lab):
    result = shoal(lab, "exec", "container1", "ping", "-c1", "-w1", "container2", check=False)
    assert result.returncode != 0
    assert "bad address" in result.stderr


def test_a_container_on_none_has_only_loopback(lab):
    result = shoal(lab, "run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    names = [line.split(":")[1].strip() for line in result.stdout.splitlines()]
    assert names == ["lo"]


def test_a_server_in_a_host_mode_container_is_on_the_hosts_port(lab):
    shoal(lab, "run", "-d", "--name", "hostweb", "--network", "host", "busybox",
        "httpd", "-f", "-p", "80", "-h", "/etc")
    hostname = lab.exec("h1", ["hostname"]).stdout.strip()
    address = lab.address("h1")

    def fetch() -> str | None:
        got = lab.exec("h2", ["busybox", "wget", "-qO-", f"http://{address}:80/hostname"], check=False)
        return got.stdout if got.returncode == 0 else None

    assert wait_until(fetch, timeout=15).strip() == hostname
    shoal(lab, "rm", "-f", "hostweb")


def test_removing_a_predefined_network_is_refused_with_dockers_message(lab):
    for name in ("bridge", "host", "none"):
        result = shoal(lab, "network", "rm", name, check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"Error response from daemon: {name} is a pre-defined network and cannot be removed"
        )
    assert len(shoal(lab, "network", "ls", "-q").stdout.split()) == 3


def test_unknown_network_and_container_get_dockers_not_found(lab):
    net = shoal(lab, "network", "inspect", "nosuchnet", check=False)
    assert net.returncode == 1
    assert net.stdout.strip() == "[]"
    assert "Error response from daemon: network nosuchnet not found" in net.stderr
    ctr = shoal(lab, "exec", "nosuchctr", "true", check=False)
    assert ctr.returncode != 0
    assert "No such container: nosuchctr" in ctr.stderr


def test_a_duplicate_container_name_is_refused_and_nothing_is_created(lab):
    before = shoal(lab, "ps", "-aq").stdout.split()
    result = shoal(lab, "run", "-d", "--name", "container1", "busybox", "sleep", "1", check=False)
    assert result.returncode == 125
    assert 'The container name "/container1" is already in use' in result.stderr
    assert shoal(lab, "ps", "-aq").stdout.split() == before


def test_an_invalid_container_name_is_refused(lab):
    result = shoal(lab, "run", "-d", "--name", "bad name", "busybox", "true", check=False)
    assert result.returncode == 125
    assert "Invalid container name (bad name), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed" in result.stderr


def test_logs_returns_what_the_container_wrote(lab):
    shoal(lab, "run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo out; echo err >&2")
    wait_until(lambda: inspect_first(lab, "inspect", "talker")["State"]["Status"] == "exited", timeout=15)
    logs = shoal(lab, "logs", "talker")
    assert logs.stdout == "out\n"
    assert logs.stderr == "err\n"
    shoal(lab, "rm", "talker")


def test_exec_passes_the_exit_code_through(lab):
    assert shoal(lab, "exec", "container1", "sh", "-c", "exit 3", check=False).returncode == 3


def test_the_sigkilled_daemon_restarts_with_containers_running_and_reachable(lab):
    before_rules = lab.exec("h1", ["iptables-save"]).stdout
    pid = inspect_first(lab, "inspect", "container1")["State"]["Pid"]
    lab.restart_daemon("h1", kill9=True)
    state = inspect_first(lab, "inspect", "container1")["State"]
    assert (state["Status"], state["Pid"]) == ("running", pid)
    result = shoal(lab, "exec", "container2", "ping", "-c1", "-w3", "172.17.0.2")
    assert "1 packets received" in result.stdout
    assert len(shoal(lab, "network", "ls", "-q").stdout.split()) == 3
    assert iptables_rules(lab.exec("h1", ["iptables-save"]).stdout) == iptables_rules(before_rules)


def test_a_container_that_exits_while_the_daemon_is_down_is_reported_with_its_code(lab):
    shoal(lab, "run", "-d", "--name", "shortlived", "busybox",
        "sh", "-c", 'trap "exit 7" TERM; while true; do sleep 1; done')
    pid = inspect_first(lab, "inspect", "shortlived")["State"]["Pid"]
    lab.stop_daemon("h1", kill9=True)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=15)
    lab.start_daemon("h1")
    after = inspect_first(lab, "inspect", "shortlived")["State"]
    assert (after["Status"], after["ExitCode"], after["Running"]) == ("exited", 7, False)
    shoal(lab, "rm", "shortlived")



def test_an_image_loaded_from_a_docker_save_tarball_runs(lab, tmp_path):
    import io
    import tarfile

    from agent.images.busybox import build_busybox_tar

    source = build_busybox_tar(tmp_path / "busybox.tar")
    retagged = tmp_path / "mybox.tar"
    with tarfile.open(source) as src, tarfile.open(retagged, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest[0]["RepoTags"] = ["mybox:1"]
                data = json.dumps(manifest).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    assert shoal(lab, "image", "load", "-i", str(retagged)).stdout.strip() == "Loaded image: mybox:1"
    assert "mybox" in shoal(lab, "image", "ls").stdout
    assert shoal(lab, "run", "--rm", "mybox:1", "echo", "loaded").stdout == "loaded\n"
