"""Create options applied and checked from inside the container, through the stock docker CLI
and raw API bodies: --stop-signal, --stop-timeout, --add-host, --dns/--dns-search/--dns-option
(on the default bridge and as the embedded DNS's upstreams on a user network), --sysctl,
--ulimit, --init, --privileged, --device, --group-add, --oom-score-adj; Docker's messages for bad values.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.docker_client import docker_client
from tests.lab.helpers import running_lab, wait_until
from tests.lab.test_docker_clients import request

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"
UPSTREAM = "192.168.200.12"  # h2's underlay address: a dnsmasq this module runs
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@pytest.fixture(scope="module")
def lab():
    assert os.path.exists(DNSMASQ), f"{DNSMASQ} is missing: scripts/install.sh installs dnsmasq-base"
    with running_lab(hosts=2) as lab:
        upstream = subprocess.Popen(lab.exec_argv("h2", [
            DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={UPSTREAM}", "--port=53", "--local=/test/", "--host-record=upstream.test,10.9.9.9",
        ]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield lab
        finally:
            upstream.kill()
            upstream.wait()


def docker(lab, *args: str, check: bool = True):
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=120)


def run(lab, *args: str) -> str:
    return docker(lab, "run", "--rm", *args).stdout


def _inspect(lab, name: str) -> dict:
    return json.loads(docker(lab, "inspect", name).stdout)[0]


def _create(lab, body: dict):
    response, data = request(lab, "POST", "/v1.50/containers/create", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
    return response.status, json.loads(data)


# ---- stop signal and timeout --------------------------------------------------------

def test_stop_sends_the_stop_signal(lab):
    docker(lab, "run", "-d", "--name", "sigc", "--stop-signal", "SIGUSR1", "busybox", "sh", "-c",
           "trap 'exit 42' USR1; while true; do sleep 0.1; done")
    assert _inspect(lab, "sigc")["Config"]["StopSignal"] == "SIGUSR1"
    docker(lab, "stop", "sigc")
    assert _inspect(lab, "sigc")["State"]["ExitCode"] == 42
    docker(lab, "rm", "sigc")


def test_stop_timeout_bounds_the_wait_before_sigkill(lab):
    docker(lab, "run", "-d", "--name", "tmo", "--stop-timeout", "1", "busybox", "sleep", "3600")
    started = time.monotonic()
    docker(lab, "stop", "tmo")  # sleep as pid 1 ignores SIGTERM: killed after 1 s, not 10
    assert time.monotonic() - started < 6
    assert _inspect(lab, "tmo")["State"]["ExitCode"] == 137
    docker(lab, "rm", "tmo")


def test_an_unknown_stop_signal_is_refused(lab):
    status, body = _create(lab, {"Image": "busybox", "Cmd": ["true"], "StopSignal": "SIGNOPE"})
    assert (status, body["message"]) == (400, "Invalid signal: SIGNOPE")


# ---- /etc/hosts and resolv.conf -----------------------------------------------------

def test_add_host_lines_and_host_gateway(lab):
    out = run(lab, "--add-host", "db:10.1.2.3", "--add-host", "gw:host-gateway", "busybox", "cat", "/etc/hosts")
    lines = out.splitlines()
    assert "10.1.2.3\tdb" in lines and "172.17.0.1\tgw" in lines
    assert lines.index("10.1.2.3\tdb") < lines.index("172.17.0.1\tgw") < len(lines) - 1  # own entry last


def test_add_host_with_a_bad_address_is_refused(lab):
    status, body = _create(lab, {"Image": "busybox", "HostConfig": {"ExtraHosts": ["db:10.1.2"]}})
    assert (status, body["message"]) == (400, 'invalid IP address in add-host: "10.1.2"')
    status, body = _create(lab, {"Image": "busybox", "HostConfig": {"ExtraHosts": ["nocolon"]}})
    assert (status, body["message"]) == (400, 'bad format for add-host: "nocolon"')


def test_dns_options_on_the_default_bridge(lab):
    out = run(lab, "--dns", "192.0.2.53", "--dns-search", "example.test", "--dns-option", "ndots:2",
              "busybox", "cat", "/etc/resolv.conf")
    assert out == "search example.test\nnameserver 192.0.2.53\noptions ndots:2\n"  # as dockerd 20.10 writes it


def test_dns_on_a_user_network_is_the_embedded_resolvers_upstream(lab):
    docker(lab, "network", "create", "dnsnet")
    try:
        docker(lab, "run", "-d", "--name", "withdns", "--network", "dnsnet", "--dns", UPSTREAM,
               "--dns-search", "example.test", "busybox", "sleep", "3600")
        docker(lab, "run", "-d", "--name", "nodns", "--network", "dnsnet", "busybox", "sleep", "3600")
        assert docker(lab, "exec", "withdns", "cat", "/etc/resolv.conf").stdout == (
            "search example.test\nnameserver 127.0.0.11\noptions ndots:0\n")
        found = wait_until(lambda: (r := docker(lab, "exec", "withdns", "nslookup", "upstream.test",
                                                 check=False)).returncode == 0 and r, timeout=15)
        assert "Address: 10.9.9.9" in found.stdout and "Server:\t\t127.0.0.11" in found.stdout
        other = docker(lab, "exec", "nodns", "nslookup", "upstream.test", check=False)
        assert "10.9.9.9" not in other.stdout  # the host's resolvers know nothing of it
    finally:
        docker(lab, "rm", "-f", "withdns", "nodns", check=False)
        docker(lab, "network", "rm", "dnsnet")


def test_a_dns_server_that_is_no_address_is_refused(lab):
    status, body = _create(lab, {"Image": "busybox", "HostConfig": {"Dns": ["resolver.example"]}})
    assert (status, body["message"]) == (400, "IP address is not correctly formatted: resolver.example")


# ---- sysctl and ulimit --------------------------------------------------------------

def test_sysctl_in_the_containers_network_namespace(lab):
    assert run(lab, "--sysctl", "net.ipv4.ip_forward=1", "busybox", "cat", "/proc/sys/net/ipv4/ip_forward") == "1\n"


IPV6_SWITCHES = "for f in all default eth0 lo; do echo $f $(cat /proc/sys/net/ipv6/conf/$f/disable_ipv6); done"


def test_ipv6_is_off_in_a_containers_namespace_as_dockers_with_no_ipv6_network(lab):
    # Docker 20.10 here prints the same four lines and no inet6 address (checked with the reference dockerd)
    assert run(lab, "busybox", "sh", "-c", IPV6_SWITCHES) == "all 1\ndefault 1\neth0 1\nlo 1\n"
    assert "inet6" not in run(lab, "busybox", "ip", "a")


def test_a_containers_interface_retries_arp_every_100_ms_giving_up_after_the_usual_3_s(lab):
    out = run(lab, "busybox", "sh", "-c", "cd /proc/sys/net/ipv4/neigh/eth0 && cat retrans_time_ms mcast_solicit ucast_solicit")
    assert out == "100\n30\n30\n"  # Docker leaves the kernel's 1000 / 3 / 3


def test_a_containers_own_sysctl_turns_ipv6_back_on(lab):
    out = run(lab, "--sysctl", "net.ipv6.conf.all.disable_ipv6=0", "busybox", "cat",
              "/proc/sys/net/ipv6/conf/all/disable_ipv6")
    assert out == "0\n"


def test_a_host_wide_sysctl_is_refused_with_runcs_message(lab):
    status, body = _create(lab, {"Image": "busybox", "HostConfig": {"Sysctls": {"kernel.panic": "1"}}})
    assert (status, body["message"]) == (400, 'sysctl "kernel.panic" is not in a separate kernel namespace')
    status, body = _create(lab, {"Image": "busybox", "HostConfig": {"Sysctls": {"kernel.hostname": "x"}}})
    assert (status, body["message"]) == (
        400, 'sysctl "kernel.hostname" is not allowed as it conflicts with the OCI "hostname" field')


def test_a_net_sysctl_with_host_networking_is_refused(lab):
    result = docker(lab, "run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1",
                    "busybox", "true", check=False)
    assert result.stderr.splitlines()[0] == (
        'docker: Error response from daemon: sysctl "net.ipv4.ip_forward" not allowed in host network namespace')


def test_ulimit_is_applied_to_the_container_and_its_execs(lab):
    assert run(lab, "--ulimit", "nofile=100:200", "busybox", "sh", "-c", "ulimit -n; ulimit -Hn") == "100\n200\n"
    docker(lab, "run", "-d", "--name", "ulim", "--ulimit", "nproc=50:60", "busybox", "sleep", "3600")
    assert docker(lab, "exec", "ulim", "sh", "-c", "ulimit -u").stdout == "50\n"
    docker(lab, "rm", "-f", "ulim")


def test_a_ulimit_with_soft_above_hard_is_refused(lab):
    status, body = _create(lab, {"Image": "busybox", "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 20, "Hard": 10}]}})
    assert (status, body["message"]) == (400, "ulimit soft limit must be less than or equal to hard limit: 20 > 10")
    status, body = _create(lab, {"Image": "busybox", "HostConfig": {"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]}})
    assert (status, body["message"]) == (400, "invalid ulimit type: bogus")


# ---- init, privileged, devices ------------------------------------------------------

def test_init_runs_docker_init_as_pid_1(lab):
    out = run(lab, "--init", "busybox", "sh", "-c", "cat /proc/1/comm; echo $$")
    assert out.splitlines()[0] == "docker-init"
    assert out.splitlines()[1] != "1"  # the command is its child


def test_init_reaps_and_forwards_stop(lab):
    docker(lab, "run", "-d", "--name", "initc", "--init", "busybox", "sleep", "3600")
    assert _inspect(lab, "initc")["HostConfig"]["Init"] is True
    started = time.monotonic()
    docker(lab, "stop", "initc")  # tini passes SIGTERM to sleep, which dies of it
    assert time.monotonic() - started < 6
    assert _inspect(lab, "initc")["State"]["ExitCode"] == 143
    docker(lab, "rm", "initc")


def _status_field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


def test_privileged_has_every_capability_no_seccomp_and_writable_sys(lab):
    out = run(lab, "--privileged", "busybox", "sh", "-c", "cat /proc/self/status; grep ' /sys ' /proc/mounts")
    plain = run(lab, "busybox", "sh", "-c", "cat /proc/self/status")
    host_caps = _status_field(open("/proc/self/status").read(), "CapBnd")
    assert _status_field(out, "CapEff") == host_caps
    assert _status_field(out, "Seccomp") == "0" and _status_field(plain, "Seccomp") == "2"
    assert out.splitlines()[-1].split()[3].split(",")[0] == "rw"
    plain_sys = run(lab, "busybox", "grep", " /sys ", "/proc/mounts")
    assert plain_sys.split()[3].split(",")[0] == "ro"


def test_privileged_sees_the_hosts_devices(lab):
    out = run(lab, "--privileged", "busybox", "ls", "/dev")
    assert "kmsg" in out.split()
    assert "kmsg" not in run(lab, "busybox", "ls", "/dev").split()


def test_device_is_made_inside_the_container(lab):
    out = run(lab, "--device", "/dev/null:/dev/mynull", "busybox", "sh", "-c",
              "stat -c '%F %t,%T' /dev/mynull; echo hi > /dev/mynull && echo written")
    assert out == "character special file 1,3\nwritten\n"


_OPEN_FUSE = "(exec 3</dev/fuse) 2>/dev/null && echo read; (exec 4>/dev/fuse) 2>/dev/null && echo write; true"


def test_a_device_outside_runcs_defaults_is_usable_with_rwm(lab):
    # /dev/fuse (10:229) is not among the nodes runc allows by default: only the device rule lets it open
    assert run(lab, "--device", "/dev/fuse", "busybox", "sh", "-c", _OPEN_FUSE) == "read\nwrite\n"


def test_device_cgroup_permission_r_allows_reading_and_refuses_writing(lab):
    assert run(lab, "--device", "/dev/fuse:/dev/fuse:r", "busybox", "sh", "-c", _OPEN_FUSE) == "read\n"


def test_device_cgroup_permission_w_allows_writing_and_refuses_reading(lab):
    assert run(lab, "--device", "/dev/fuse:/dev/fuse:w", "busybox", "sh", "-c", _OPEN_FUSE) == "write\n"


def test_a_missing_device_is_refused_naming_it(lab):
    result = docker(lab, "run", "--rm", "--device", "/dev/nope", "busybox", "true", check=False)
    assert result.returncode == 127  # the CLI's code for a start error saying "no such file or directory"
    assert result.stderr.splitlines()[0] == (
        'docker: Error response from daemon: error gathering device information while adding custom '
        'device "/dev/nope": no such file or directory')


# ---- MAC address --------------------------------------------------------------------

def test_mac_address_is_the_interfaces_and_inspect_shows_it(lab):
    docker(lab, "run", "-d", "--name", "macc", "--mac-address", "02:42:ac:11:00:99", "busybox", "sleep", "3600")
    try:
        assert docker(lab, "exec", "macc", "cat", "/sys/class/net/eth0/address").stdout == "02:42:ac:11:00:99\n"
        info = _inspect(lab, "macc")
        assert info["NetworkSettings"]["Networks"]["bridge"]["MacAddress"] == "02:42:ac:11:00:99"
        assert info["NetworkSettings"]["MacAddress"] == "02:42:ac:11:00:99"
    finally:
        docker(lab, "rm", "-f", "macc")


def test_mac_address_on_a_user_network(lab):
    docker(lab, "network", "create", "macnet")
    try:
        out = run(lab, "--network", "macnet", "--mac-address", "0a:00:00:00:00:01", "busybox",
                  "cat", "/sys/class/net/eth0/address")
        assert out == "0a:00:00:00:00:01\n"
    finally:
        docker(lab, "network", "rm", "macnet")


def test_a_container_wide_mac_at_api_1_50_is_the_bridge_endpoints_with_mobys_deprecation_warning(lab):
    status, created = _create(lab, {"Image": "busybox", "Cmd": ["sleep", "3600"], "MacAddress": "02:42:ac:11:00:98"})
    assert (status, created["Warnings"]) == (201, ["The container-wide MacAddress field is now deprecated. "
                                                   "It should be specified in EndpointsConfig instead."])
    try:
        docker(lab, "start", created["Id"])
        assert docker(lab, "exec", created["Id"], "cat", "/sys/class/net/eth0/address").stdout == "02:42:ac:11:00:98\n"
    finally:
        docker(lab, "rm", "-f", created["Id"])


def test_a_container_wide_mac_unlike_the_endpoints_is_refused_and_nothing_is_created(lab):
    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:98", "HostConfig": {"NetworkMode": "bridge"},
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {"MacAddress": "02:42:ac:11:00:97"}}}}
    before = docker(lab, "ps", "-aq").stdout
    assert _create(lab, body) == (400, {"message": "the container-wide MAC address must match the endpoint-specific "
                                                   "MAC address for the main network, or be left empty"})
    assert docker(lab, "ps", "-aq").stdout == before


def test_a_bad_or_multicast_mac_address_is_refused(lab):
    body = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"MacAddress": "zz:00"}}}}
    assert _create(lab, body) == (400, {"message": "address zz:00: invalid MAC address"})
    body = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"MacAddress": "01:00:5e:00:00:01"}}}}
    assert _create(lab, body) == (400, {"message": "address 01:00:5e:00:00:01: a multicast MAC address "
                                                   "cannot be an interface's"})


# ---- --group-add, --oom-score-adj ---------------------------------------------------
# (the lab's busybox has two groups in /etc/group: root 0 and nobody 65534)

def test_group_add_gives_the_process_the_groups_by_name_and_number(lab):
    assert run(lab, "--group-add", "nobody", "--group-add", "4242", "busybox", "id") == (
        "uid=0(root) gid=0(root) groups=0(root),4242,65534(nobody)\n")


def test_an_exec_gets_the_added_groups_with_its_own_user_or_the_containers(lab):
    docker(lab, "run", "-d", "--name", "grpx", "--group-add", "4242", "busybox", "sleep", "3600")
    try:
        assert docker(lab, "exec", "grpx", "grep", "Groups:", "/proc/self/status").stdout == "Groups:\t0 4242 \n"
        assert docker(lab, "exec", "-u", "nobody", "grpx", "grep", "Groups:", "/proc/self/status").stdout == (
            "Groups:\t4242 65534 \n")
    finally:
        docker(lab, "rm", "-f", "grpx")


def _refused_run(lab, name: str, *flags: str) -> tuple[int, str, str]:
    """(exit code, first line of stderr, the containers named `name` afterwards) of `docker run ... busybox true`."""
    result = docker(lab, "run", "--name", name, *flags, "busybox", "true", check=False)
    left = docker(lab, "ps", "-aq", "--filter", f"name={name}").stdout
    return result.returncode, result.stderr.splitlines()[0], left


def test_an_unknown_group_is_refused_with_mobys_message_and_nothing_is_created(lab):
    assert _refused_run(lab, "nogrp", "--group-add", "nosuch") == (
        125, "docker: Error response from daemon: unable to find group nosuch: no matching entries in group file", "")


def test_oom_score_adj_is_the_containers_and_its_execs(lab):
    docker(lab, "run", "-d", "--name", "oomx", "--oom-score-adj", "500", "busybox", "sleep", "3600")
    try:
        assert docker(lab, "exec", "oomx", "cat", "/proc/1/oom_score_adj", "/proc/self/oom_score_adj").stdout == (
            "500\n500\n")
        host_config = _inspect(lab, "oomx")["HostConfig"]
        assert (host_config["OomScoreAdj"], host_config["GroupAdd"]) == (500, None)
    finally:
        docker(lab, "rm", "-f", "oomx")


def test_an_oom_score_adj_out_of_range_is_refused_with_mobys_message_and_nothing_is_created(lab):
    assert _refused_run(lab, "oombad", "--oom-score-adj", "1001") == (
        125, "docker: Error response from daemon: Invalid value 1001, range for oom score adj is [-1000, 1000]", "")


def test_group_add_and_oom_score_adj_survive_a_daemon_restart(lab):
    # a positive score: these machines' root lacks CAP_SYS_RESOURCE, which a negative one needs (the kernel's rule)
    docker(lab, "create", "--name", "grpkeep", "--group-add", "nobody", "--oom-score-adj", "300", "busybox",
           "sh", "-c", "grep Groups: /proc/self/status; cat /proc/self/oom_score_adj")
    try:
        lab.restart_daemon("h1")
        assert docker(lab, "start", "-a", "grpkeep").stdout == "Groups:\t0 65534 \n300\n"
        host_config = _inspect(lab, "grpkeep")["HostConfig"]
        assert (host_config["GroupAdd"], host_config["OomScoreAdj"]) == (["nobody"], 300)
    finally:
        docker(lab, "rm", "-f", "grpkeep")
