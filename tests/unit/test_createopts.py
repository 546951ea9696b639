"""shoal.engine.createopts and agent.network.etcfiles.custom_resolv_conf: the pure parts of the
create options (sysctl namespace rules, ulimits, extra hosts, DNS, MAC, devices)."""
from __future__ import annotations

import os

import pytest

from agent.executor.spec import ProcessSpec, SpecExtras, build_oci_spec
from agent.network.etcfiles import EtcCustom, custom_resolv_conf
from common.errdefs import InvalidParameter
from shoal.engine.createopts import (
    Device,
    device_nodes,
    hosts_lines,
    parse_extra_host,
    parse_run_options,
    parse_ulimits,
    rlimits,
    spec_extras,
    validate_dns_search,
    validate_mac,
    validate_sysctls,
)

HOST_RESOLV = "nameserver 10.0.0.2\nnameserver 127.0.0.53\nsearch corp.example\noptions edns0\n"


@pytest.mark.parametrize("key", ["net.ipv4.ip_forward", "kernel.shmmax", "kernel.msgmax", "fs.mqueue.msg_max",
                                 "kernel.domainname"])
def test_namespaced_sysctls_are_accepted(key):
    assert validate_sysctls({key: "1"}, host_network=False) == {key: "1"}


def test_a_host_wide_sysctl_is_refused_with_runcs_words():
    with pytest.raises(InvalidParameter, match=r'^sysctl "vm.swappiness" is not in a separate kernel namespace$'):
        validate_sysctls({"vm.swappiness": "10"}, host_network=False)


def test_kernel_hostname_conflicts_with_the_oci_hostname():
    with pytest.raises(InvalidParameter, match=r'conflicts with the OCI "hostname" field$'):
        validate_sysctls({"kernel.hostname": "x"}, host_network=False)


def test_net_sysctls_are_refused_on_the_host_network():
    with pytest.raises(InvalidParameter, match=r'^sysctl "net.core.somaxconn" not allowed in host network namespace$'):
        validate_sysctls({"net.core.somaxconn": "1024"}, host_network=True)


def test_ulimits_parse_and_become_oci_rlimits():
    parsed = parse_ulimits([{"Name": "nofile", "Soft": 100, "Hard": 200}, {"Name": "core", "Soft": -1, "Hard": -1}])
    assert rlimits(parsed) == [("RLIMIT_NOFILE", 100, 200), ("RLIMIT_CORE", 2**64 - 1, 2**64 - 1)]


def test_ulimit_soft_above_hard_is_refused():
    with pytest.raises(InvalidParameter, match=r"^ulimit soft limit must be less than or equal to hard limit: 9 > 3$"):
        parse_ulimits([{"Name": "nproc", "Soft": 9, "Hard": 3}])


def test_unknown_ulimit_is_refused():
    with pytest.raises(InvalidParameter, match=r"^invalid ulimit type: files$"):
        parse_ulimits([{"Name": "files", "Soft": 1, "Hard": 1}])


def test_user_rlimits_override_the_nofile_default_in_the_spec():
    process = ProcessSpec(args=["true"], env=[], rlimits=(("RLIMIT_NOFILE", 10, 20), ("RLIMIT_NPROC", 5, 5)))
    spec = build_oci_spec(process, "h", "/rootfs", None, [])
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20, "soft": 10},
                                          {"type": "RLIMIT_NPROC", "hard": 5, "soft": 5}]


def test_extra_hosts_accept_colon_equals_and_host_gateway():
    assert parse_extra_host("db:10.0.0.5") == ("db", "10.0.0.5")
    assert parse_extra_host("db=10.0.0.5") == ("db", "10.0.0.5")
    options = parse_run_options({}, {"ExtraHosts": ["gw:host-gateway", "v6:[::1]"]})
    assert hosts_lines(options, "172.17.0.1") == [("172.17.0.1", ["gw"]), ("::1", ["v6"])]


@pytest.mark.parametrize(("value", "message"), [
    ("nocolon", 'bad format for add-host: "nocolon"'),
    (":10.0.0.1", 'bad format for add-host: ":10.0.0.1"'),
    ("db:10.0.0", 'invalid IP address in add-host: "10.0.0"'),
])
def test_bad_extra_hosts_are_refused_with_mobys_words(value, message):
    with pytest.raises(InvalidParameter) as info:
        parse_extra_host(value)
    assert info.value.message == message


def test_dns_search_must_be_a_domain():
    assert validate_dns_search("example.test") == "example.test"
    assert validate_dns_search(".") == "."
    with pytest.raises(InvalidParameter, match=r"^-bad\.example is not a valid domain$"):
        validate_dns_search("-bad.example")


def test_custom_resolv_conf_on_the_default_bridge_replaces_what_is_given():
    custom = EtcCustom(dns=["192.0.2.1"])
    assert custom_resolv_conf(HOST_RESOLV, False, custom) == (
        "search corp.example\nnameserver 192.0.2.1\noptions edns0\n")


def test_custom_resolv_conf_keeps_the_hosts_servers_without_loopback():
    custom = EtcCustom(search=["."], options=["ndots:3"])
    assert custom_resolv_conf(HOST_RESOLV, False, custom) == "nameserver 10.0.0.2\noptions ndots:3\n"


def test_custom_resolv_conf_with_the_embedded_resolver_adds_ndots_0():
    custom = EtcCustom(dns=["192.0.2.1"], search=["a.test"])
    assert custom_resolv_conf(HOST_RESOLV, True, custom) == (
        "search a.test\nnameserver 127.0.0.11\noptions edns0 ndots:0\n")
    assert custom_resolv_conf(HOST_RESOLV, True, EtcCustom(options=["ndots:5"])) == (
        "search corp.example\nnameserver 127.0.0.11\noptions ndots:5\n")


def test_mac_addresses():
    assert validate_mac("02:42:AC:11:00:99") == "02:42:ac:11:00:99"
    assert validate_mac("02-42-ac-11-00-99") == "02:42:ac:11:00:99"
    for bad in ("02:42:ac:11:00", "02:42-ac:11:00:99", "zz:42:ac:11:00:99"):
        with pytest.raises(InvalidParameter, match=rf"^address {bad}: invalid MAC address$"):
            validate_mac(bad)
    with pytest.raises(InvalidParameter, match=r"multicast"):
        validate_mac("01:00:5e:00:00:01")


def test_stop_signal_is_checked():
    assert parse_run_options({"StopSignal": "SIGUSR1", "StopTimeout": 3}, {}).stop_signal == "SIGUSR1"
    with pytest.raises(InvalidParameter, match=r"^Invalid signal: SIGNOPE$"):
        parse_run_options({"StopSignal": "SIGNOPE"}, {})


def test_device_node_of_dev_null(tmp_path):
    st = os.stat("/dev/null")
    assert device_nodes(Device("/dev/null", "/dev/mynull")) == [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666, "uid": st.st_uid,
         "gid": st.st_gid}]
    with pytest.raises(InvalidParameter, match=r'^error gathering device information while adding custom device '
                                               r'"/nonexistent/dev": no such file or directory$'):
        device_nodes(Device("/nonexistent/dev", "/dev/x"))
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(InvalidParameter, match=r"not a device node$"):
        device_nodes(Device(str(regular), "/dev/x"))


def test_privileged_spec_has_no_masked_paths_and_a_writable_sys():
    spec = build_oci_spec(ProcessSpec(args=["true"], env=[]), "h", "/rootfs", None, [],
                          extras=SpecExtras(privileged=True, sysctls={"net.ipv4.ip_forward": "1"}))
    assert (spec["linux"]["maskedPaths"], spec["linux"]["readonlyPaths"]) == ([], [])
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "ro" not in sys_mount["options"] and "rw" in sys_mount["options"]
    plain = build_oci_spec(ProcessSpec(args=["true"], env=[]), "h", "/rootfs", None, [])
    assert "ro" in next(m for m in plain["mounts"] if m["destination"] == "/sys")["options"]


def test_each_device_is_allowed_in_the_device_cgroup_with_its_permissions():
    options = parse_run_options({}, {"Devices": [
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "r"}]})
    extras, _ = spec_extras(options)
    spec = build_oci_spec(ProcessSpec(args=["true"], env=[]), "h", "/rootfs", None, [], extras=extras)
    assert spec["linux"]["resources"]["devices"] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"}]
    assert [d["path"] for d in spec["linux"]["devices"]] == ["/dev/mynull"]


def test_run_options_are_read_case_insensitively_the_first_of_keys_differing_in_case_winning():
    options = parse_run_options({"stopsignal": "SIGUSR1", "StopSignal": "SIGTERM"},
                                {"dns": ["10.0.0.9"], "DNS": ["10.0.0.8"], "INIT": True, "dnsSearch": ["a.example"]})
    assert (options.stop_signal, options.dns, options.init, options.dns_search) == (
        "SIGUSR1", ["10.0.0.9"], True, ["a.example"])


def test_a_run_option_of_the_wrong_shape_is_refused_naming_it_in_dockers_spelling():
    with pytest.raises(InvalidParameter, match="invalid JSON: DnsOptions must be a list of strings"):
        parse_run_options({}, {"dnsoptions": "ndots:1"})


def test_group_add_and_oom_score_adj_are_run_options():
    options = parse_run_options({}, {"GroupAdd": ["audio", "4242"], "OomScoreAdj": -1000})
    assert (options.group_add, options.oom_score_adj) == (["audio", "4242"], -1000)


def test_without_them_there_are_no_added_groups_and_an_oom_score_adj_of_0():
    options = parse_run_options({}, {"GroupAdd": None, "OomScoreAdj": 0})
    assert (options.group_add, options.oom_score_adj) == ([], 0)


@pytest.mark.parametrize("value", [1001, -1001])
def test_an_oom_score_adj_out_of_range_is_refused_with_mobys_words(value):
    with pytest.raises(InvalidParameter) as info:
        parse_run_options({}, {"OomScoreAdj": value})
    assert info.value.message == f"Invalid value {value}, range for oom score adj is [-1000, 1000]"


@pytest.mark.parametrize("value", ["500", 1.5, True])
def test_an_oom_score_adj_that_is_not_an_integer_is_refused(value):
    with pytest.raises(InvalidParameter) as info:
        parse_run_options({}, {"OomScoreAdj": value})
    assert info.value.message == "invalid JSON: OomScoreAdj must be an integer"


def test_a_group_add_that_is_not_a_list_of_strings_is_refused():
    with pytest.raises(InvalidParameter) as info:
        parse_run_options({}, {"GroupAdd": [10]})
    assert info.value.message == "invalid JSON: GroupAdd must be a list of strings"


def test_an_oom_score_adj_of_0_is_written_too_as_moby_writes_it():
    spec = build_oci_spec(ProcessSpec(args=["true"], env=[], oom_score_adj=0), "h", "/rootfs", None, [])
    assert spec["process"]["oomScoreAdj"] == 0
