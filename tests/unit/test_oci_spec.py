"""Unit tests for agent.executor.spec (config.json building, --user parsing) and runtime's pure helpers."""
from __future__ import annotations

import pytest

from agent.executor.runtime import runc_errors, start_failure_exit_code, validate_container_id
from agent.executor.spec import (
    DEFAULT_CAPABILITIES,
    Mount,
    ProcessSpec,
    build_oci_spec,
    build_process,
    parse_user,
    process_user_in,
    resolve_user_in,
)


def _spec(netns: str | None = "/run/netns/c1", mounts: list[Mount] | None = None, **kw) -> dict:
    process = ProcessSpec(args=["sleep", "3600"], env=["PATH=/bin"], **kw)
    return build_oci_spec(process, "web1", "/var/lib/shoal/c1/rootfs", netns, mounts or [])


def _spec_args(args: list[str]) -> dict:
    return build_oci_spec(ProcessSpec(args, []), "h", "/r", None, [])


def test_network_namespace_joins_the_given_path() -> None:
    namespaces = _spec("/run/netns/c1")["linux"]["namespaces"]
    assert namespaces == [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
        {"type": "network", "path": "/run/netns/c1"},
    ]


def test_host_networking_has_no_network_namespace_entry() -> None:
    types = [ns["type"] for ns in _spec(None)["linux"]["namespaces"]]
    assert types == ["pid", "ipc", "uts", "mount"]


def test_relative_netns_path_is_refused() -> None:
    with pytest.raises(ValueError, match="'netns/c1'"):
        _spec("netns/c1")


def test_default_mounts_come_first_then_binds_in_given_order() -> None:
    binds = [Mount("/s/hosts", "/etc/hosts"), Mount("/s/resolv.conf", "/etc/resolv.conf", readonly=True)]
    destinations = [m["destination"] for m in _spec(mounts=binds)["mounts"]]
    assert destinations == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hosts", "/etc/resolv.conf"]


def test_bind_mount_is_rbind_rprivate_with_ro_when_readonly() -> None:
    mounts = _spec(mounts=[Mount("/s/hosts", "/etc/hosts"), Mount("/s/r", "/etc/resolv.conf", True)])["mounts"]
    assert mounts[-2] == {"destination": "/etc/hosts", "type": "bind", "source": "/s/hosts", "options": ["rbind", "rprivate", "rw"]}
    assert mounts[-1]["options"] == ["rbind", "rprivate", "ro"]


def test_sys_is_mounted_read_only() -> None:
    sys_mount = next(m for m in _spec()["mounts"] if m["destination"] == "/sys")
    assert sys_mount["type"] == "sysfs" and "ro" in sys_mount["options"]


def test_relative_bind_destination_is_refused() -> None:
    with pytest.raises(ValueError, match="'etc/hosts'"):
        _spec(mounts=[Mount("/s/hosts", "etc/hosts")])


def test_capabilities_are_dockers_defaults_including_net_raw() -> None:
    caps = _spec()["process"]["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}
    for name in ("bounding", "effective", "permitted"):
        assert caps[name] == list(DEFAULT_CAPABILITIES)
    assert "CAP_NET_RAW" in caps["bounding"]
    assert "CAP_SYS_ADMIN" not in caps["bounding"]


def test_spec_has_no_resources_and_no_cgroups_path() -> None:
    linux = _spec()["linux"]
    assert "resources" not in linux
    assert "cgroupsPath" not in linux


def test_process_section_matches_the_inputs() -> None:
    spec = build_oci_spec(
        ProcessSpec(["sh", "-c", "exit 3"], ["PATH=/bin", "A=b"], cwd="/tmp", uid=1000, gid=100), "h", "/r", None, []
    )
    assert spec["process"]["args"] == ["sh", "-c", "exit 3"]
    assert spec["process"]["env"] == ["PATH=/bin", "A=b"]
    assert spec["process"]["cwd"] == "/tmp"
    assert spec["process"]["user"] == {"uid": 1000, "gid": 100}
    assert spec["process"]["terminal"] is False  # no TTY asked
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]


def test_root_hostname_and_masked_paths() -> None:
    spec = _spec()
    assert spec["ociVersion"].startswith("1.0")
    assert spec["root"] == {"path": "/var/lib/shoal/c1/rootfs", "readonly": False}
    assert spec["hostname"] == "web1"
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]


def test_nofile_limit_can_be_lowered() -> None:
    process = build_process(ProcessSpec(["true"], []), nofile_limit=20000)
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]


def test_empty_args_are_refused() -> None:
    with pytest.raises(ValueError, match="args must not be empty"):
        _spec_args([])


def test_env_entry_without_equals_is_refused() -> None:
    with pytest.raises(ValueError, match="'NOEQUALS'"):
        build_process(ProcessSpec(["true"], ["NOEQUALS"]))


def test_relative_cwd_is_refused() -> None:
    with pytest.raises(ValueError, match="'tmp'"):
        build_process(ProcessSpec(["true"], [], cwd="tmp"))


@pytest.mark.parametrize(
    ("user", "expected"), [("", (0, 0)), ("0", (0, 0)), ("0:0", (0, 0)), ("1000:1000", (1000, 1000)), ("1000", (1000, 0)), ("5:7", (5, 7))]
)
def test_parse_user_numeric(user: str, expected: tuple[int, int]) -> None:
    assert parse_user(user) == expected


@pytest.mark.parametrize("user", ["root", "nobody:0", "0:wheel", "1000:", "-1", "1.5", " 0"])
def test_parse_user_refuses_non_numeric_with_the_value(user: str) -> None:
    with pytest.raises(ValueError, match=f"invalid user {user!r}"):
        parse_user(user)


def test_parse_user_refuses_out_of_range_id() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_user("4294967296")


PASSWD = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nbroken line\n"
GROUP = "root:x:0:\nstaff:x:50:\n"


@pytest.mark.parametrize(
    ("user", "expected"),
    [("www", (33, 33)), ("33", (33, 33)), ("www:staff", (33, 50)), ("www:7", (33, 7)), ("4242", (4242, 0)), ("", (0, 0))],
)
def test_resolve_user_in_follows_docker_rules(user: str, expected: tuple[int, int]) -> None:
    assert resolve_user_in(user, PASSWD, GROUP) == expected


def test_resolve_user_in_unknown_name_is_dockers_message() -> None:
    with pytest.raises(ValueError, match="unable to find user nobody: no matching entries in passwd file"):
        resolve_user_in("nobody", PASSWD, GROUP)


def test_resolve_user_in_unknown_group_is_dockers_message() -> None:
    with pytest.raises(ValueError, match="unable to find group wheel: no matching entries in group file"):
        resolve_user_in("www:wheel", PASSWD, GROUP)


def test_runc_errors_reads_error_entries_of_the_json_log() -> None:
    text = (
        '{"level":"warning","msg":"something","time":"t"}\n'
        "not json\n"
        '{"level":"error","msg":"runc run failed: unable to start container process: exec: \\"nosuch\\": '
        'executable file not found in $PATH","time":"t"}\n'
    )
    assert runc_errors(text) == [
        'runc run failed: unable to start container process: exec: "nosuch": executable file not found in $PATH'
    ]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('exec: "nosuch": executable file not found in $PATH', 127),
        ("exec: /bin/x: no such file or directory", 127),
        ("exec: /etc/passwd: permission denied", 126),
    ],
)
def test_start_failure_exit_codes_follow_docker(message: str, code: int) -> None:
    assert start_failure_exit_code(message) == code


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "-x", "a b"])
def test_invalid_container_id_is_refused_with_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match=f"invalid container id {bad!r}"):
        validate_container_id(bad)


def test_resolve_user_in_skips_a_passwd_entry_with_a_huge_id() -> None:
    huge = "9" * 5000
    passwd = f"evil:x:{huge}:{huge}::/:/bin/sh\n" + PASSWD
    with pytest.raises(ValueError) as info:
        resolve_user_in("evil", passwd, GROUP)
    assert str(info.value) == "unable to find user evil: no matching entries in passwd file"


def test_cgroups_path_and_resources_go_into_linux() -> None:
    spec = build_oci_spec(ProcessSpec(["true"], []), "h", "/r", None, [], cgroups_path="/shoal/d/c1",
                          resources={"pids": {"limit": 20}})
    assert spec["linux"]["cgroupsPath"] == "/shoal/d/c1"
    assert spec["linux"]["resources"] == {"pids": {"limit": 20}}


def test_no_resources_leave_linux_resources_out() -> None:
    assert "resources" not in build_oci_spec(ProcessSpec(["true"], []), "h", "/r", None, [], resources={})["linux"]


def test_a_relative_cgroups_path_is_refused() -> None:
    with pytest.raises(ValueError, match="cgroups path 'shoal/c1' must be an absolute path"):
        build_oci_spec(ProcessSpec(["true"], []), "h", "/r", None, [], cgroups_path="shoal/c1")


def test_the_cgroup_tree_is_mounted_read_only_as_docker_does() -> None:
    cgroup = next(m for m in _spec()["mounts"] if m["destination"] == "/sys/fs/cgroup")
    assert cgroup["type"] == "cgroup" and "ro" in cgroup["options"]


def test_a_private_cgroup_namespace_only_when_asked() -> None:
    def types(**kw: bool) -> list[str]:
        return [n["type"] for n in build_oci_spec(ProcessSpec(["true"], []), "h", "/r", None, [], **kw)["linux"]["namespaces"]]

    assert "cgroup" not in types()
    assert types(cgroupns=True)[-1] == "cgroup"


# ---- --group-add and --oom-score-adj (moby's getUser and WithOOMScore) ----------------------------------------

MEMBERS = "root:x:0:\nwheel:x:10:root,www\nstaff:x:50:www\naudio:x:29:\nbig:x:3000000000:\n"


def test_process_has_its_additional_gids_and_oom_score_adj() -> None:
    process = build_process(ProcessSpec(["true"], [], uid=33, gid=33, additional_gids=(33, 10), oom_score_adj=500))
    assert (process["user"], process["oomScoreAdj"]) == ({"uid": 33, "gid": 33, "additionalGids": [33, 10]}, 500)


def test_process_without_them_leaves_both_out() -> None:
    process = build_process(ProcessSpec(["true"], []))
    assert (process["user"], "oomScoreAdj" in process) == ({"uid": 0, "gid": 0}, False)


def test_an_oom_score_adj_out_of_range_is_refused_with_mobys_words() -> None:
    with pytest.raises(ValueError) as info:
        build_process(ProcessSpec(["true"], [], oom_score_adj=1001))
    assert str(info.value) == "Invalid value 1001, range for oom score adj is [-1000, 1000]"


@pytest.mark.parametrize(("user", "group_add", "expected"), [
    ("www", [], (33, 33, (33, 10, 50))),  # a named user gets the groups that list it
    ("33", [], (33, 33, (33, 10, 50))),  # so does its uid
    ("", [], (0, 0, (0, 10))),  # no user: root's
    ("www:staff", [], (33, 50, (50,))),  # an explicit group: no others (moby's implicit form only)
    ("4242", [], (4242, 0, (0,))),  # no passwd entry: no name to look for
    ("www", ["audio", "7", "+8", "audio"], (33, 33, (33, 10, 50, 29, 7, 8))),  # names, numbers, each once
    ("", ["10"], (0, 0, (0, 10))),
])
def test_process_user_in_follows_mobys_get_user(user: str, group_add: list[str],
                                                 expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert process_user_in(user, group_add, PASSWD, MEMBERS) == expected


def test_an_unknown_added_group_is_mobys_message() -> None:
    with pytest.raises(ValueError) as info:
        process_user_in("", ["video"], PASSWD, MEMBERS)
    assert str(info.value) == "unable to find group video: no matching entries in group file"


@pytest.mark.parametrize("group", ["-1", "2147483648", "9" * 5000, "big"])
def test_an_added_group_beyond_the_id_range_is_mobys_message(group: str) -> None:
    with pytest.raises(ValueError) as info:
        process_user_in("", [group], PASSWD, MEMBERS)
    assert str(info.value) == "uids and gids must be in range 0-2147483647"
