"""agent.executor.cgroups: Docker's checks and wording for limits, the OCI resources runc gets,
update merging, and reading counters from a cgroup tree (v1 and v2 layouts faked in tmp_path)."""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.executor import cgroups as cg

HOST = cg.HostLimits(ncpu=2, cpus="0-1", mems="0")
MB = 1024 * 1024


def _refusal(res: cg.Resources, update: bool = False) -> str:
    with pytest.raises(cg.ResourceError) as info:
        cg.validate(res, HOST, update=update)
    return info.value.message


@pytest.mark.parametrize(
    ("res", "message"),
    [
        (cg.Resources(memory=4 * MB), "Minimum memory limit allowed is 6MB"),
        (cg.Resources(memory=16 * MB, memory_swap=8 * MB),
         "Minimum memoryswap limit should be larger than memory limit, see usage"),
        (cg.Resources(memory_swap=32 * MB),
         "You should always set the Memory limit when using Memoryswap limit, see usage"),
        (cg.Resources(memory_reservation=MB), "Minimum memory reservation allowed is 6MB"),
        (cg.Resources(memory=8 * MB, memory_reservation=16 * MB),
         "Minimum memory limit can not be less than memory reservation limit, see usage"),
        (cg.Resources(nano_cpus=3 * 10**9), "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
        (cg.Resources(nano_cpus=-1), "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
        (cg.Resources(nano_cpus=10**9, cpu_period=50000),
         "Conflicting options: Nano CPUs and CPU Period cannot both be set"),
        (cg.Resources(nano_cpus=10**9, cpu_quota=50000),
         "Conflicting options: Nano CPUs and CPU Quota cannot both be set"),
        (cg.Resources(cpu_period=999),
         "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"),
        (cg.Resources(cpu_quota=999), "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
        (cg.Resources(cpuset_cpus="0-a"), "Invalid value 0-a for cpuset cpus: invalid format: 0-a"),
        (cg.Resources(cpuset_cpus="3"), "Requested CPUs are not available - requested 3, available: 0-1"),
        (cg.Resources(cpuset_mems="1"), "Requested memory nodes are not available - requested 1, available: 0"),
    ],
)
def test_docker_refuses_bad_limits_with_its_wording(res: cg.Resources, message: str) -> None:
    assert _refusal(res) == message


def test_swap_without_memory_is_allowed_in_an_update() -> None:
    assert cg.validate(cg.Resources(memory_swap=32 * MB), HOST, update=True) == []


def test_good_limits_pass_without_warnings() -> None:
    res = cg.Resources(memory=16 * MB, memory_swap=-1, nano_cpus=5 * 10**8, cpu_shares=512, pids_limit=20,
                       cpuset_cpus="0-1", cpuset_mems="0", memory_reservation=8 * MB)
    assert cg.validate(res, HOST) == []


def test_memory_alone_allows_as_much_swap_again() -> None:
    assert cg.with_defaults(cg.Resources(memory=16 * MB)).memory_swap == 32 * MB
    assert cg.with_defaults(cg.Resources(memory=16 * MB, memory_swap=-1)).memory_swap == -1


def test_host_config_values_of_the_wrong_type_are_refused_as_go_would() -> None:
    with pytest.raises(cg.ResourceError) as info:
        cg.from_host_config({"Memory": "16m"})
    assert info.value.message == (
        "json: cannot unmarshal string into Go struct field Resources.HostConfig.Memory of type int64"
    )
    with pytest.raises(cg.ResourceError):
        cg.from_host_config({"CpusetCpus": 1})
    with pytest.raises(cg.ResourceError):
        cg.from_host_config({"PidsLimit": True})


def test_host_config_fields_are_read_case_insensitively_and_null_is_unset() -> None:
    res = cg.from_host_config({"memory": 16 * MB, "PidsLimit": None, "NanoCPUs": 10**9})
    assert res == cg.Resources(memory=16 * MB, nano_cpus=10**9)


def test_oci_resources_from_docker_fields() -> None:
    res = cg.Resources(memory=16 * MB, memory_swap=32 * MB, memory_reservation=8 * MB, nano_cpus=5 * 10**8,
                       cpu_shares=512, cpuset_cpus="0", pids_limit=20)
    assert cg.oci_resources(res) == {
        "memory": {"limit": 16 * MB, "swap": 32 * MB, "reservation": 8 * MB},
        "cpu": {"period": 100000, "quota": 50000, "shares": 512, "cpus": "0"},
        "pids": {"limit": 20},
    }


def test_no_limits_make_no_resources_and_a_non_positive_pids_limit_is_unlimited() -> None:
    assert cg.oci_resources(cg.Resources()) == {}
    assert cg.oci_resources(cg.Resources(pids_limit=0)) == {"pids": {"limit": -1}}
    assert cg.oci_resources(cg.Resources(pids_limit=-1)) == {"pids": {"limit": -1}}


def test_cgroup_path_is_under_the_daemons_own_parent() -> None:
    assert cg.cgroups_path("ab" * 32, "cd" * 32) == "/shoal/abababababab/" + "cd" * 32


def test_update_replaces_only_the_fields_given() -> None:
    current = cg.Resources(memory=16 * MB, memory_swap=64 * MB, pids_limit=20, cpu_shares=512)
    merged = cg.merge_update(current, cg.Resources(memory=32 * MB))
    assert merged == cg.Resources(memory=32 * MB, memory_swap=64 * MB, pids_limit=20, cpu_shares=512)


def test_update_above_the_swap_limit_must_raise_swap_too() -> None:
    current = cg.Resources(memory=16 * MB, memory_swap=32 * MB)
    with pytest.raises(cg.ResourceError) as info:
        cg.merge_update(current, cg.Resources(memory=64 * MB))
    assert info.value.message == (
        "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
    )
    merged = cg.merge_update(current, cg.Resources(memory=64 * MB, memory_swap=128 * MB))
    assert (merged.memory, merged.memory_swap) == (64 * MB, 128 * MB)


def test_update_of_cpus_conflicts_with_a_set_quota() -> None:
    with pytest.raises(cg.ResourceError) as info:
        cg.merge_update(cg.Resources(cpu_quota=50000), cg.Resources(nano_cpus=10**9))
    assert info.value.message == "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set"


@pytest.mark.parametrize(("text", "cpus"), [("", set()), ("0", {0}), ("0-2,5", {0, 1, 2, 5})])
def test_cpuset_lists_parse(text: str, cpus: set[int]) -> None:
    assert cg.parse_cpuset(text) == cpus


@pytest.mark.parametrize("text", ["a", "1-", "2-1", "0,,1", "-1"])
def test_bad_cpuset_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=f"invalid format: {text}"):
        cg.parse_cpuset(text)


# ---- reading a cgroup tree (fake files in tmp_path: the kernel's formats) ---------------------

CID = "ab" * 32
PATH = f"/shoal/daemon000000/{CID}"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_version_is_2_only_where_cgroup2_is_mounted_at_the_root(tmp_path: Path) -> None:
    assert cg.detect_version(tmp_path) == "1"
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cg.detect_version(tmp_path) == "2"


def test_v1_oom_kills_come_from_memory_oom_control(tmp_path: Path) -> None:
    _write(tmp_path / "memory" / PATH.lstrip("/") / "memory.oom_control",
           "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cg.Cgroups(tmp_path, "1").oom_kills(PATH) == 2
    assert cg.Cgroups(tmp_path, "1").oom_kills("/shoal/daemon000000/gone") == 0


def test_v2_oom_kills_come_from_memory_events(tmp_path: Path) -> None:
    _write(tmp_path / PATH.lstrip("/") / "memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    assert cg.Cgroups(tmp_path, "2").oom_kills(PATH) == 1


def test_v1_sample_reads_each_controller(tmp_path: Path) -> None:
    rel = PATH.lstrip("/")
    _write(tmp_path / "cpuacct" / rel / "cpuacct.usage", "5000\n")
    _write(tmp_path / "cpuacct" / rel / "cpuacct.usage_percpu", "3000 2000 \n")
    _write(tmp_path / "cpu" / rel / "cpu.stat", "nr_periods 10\nnr_throttled 3\nthrottled_time 777\n")
    _write(tmp_path / "memory" / rel / "memory.usage_in_bytes", "4096\n")
    _write(tmp_path / "memory" / rel / "memory.limit_in_bytes", "16777216\n")
    _write(tmp_path / "memory" / rel / "memory.max_usage_in_bytes", "8192\n")
    _write(tmp_path / "memory" / rel / "memory.stat", "cache 0\ntotal_inactive_file 1024\n")
    _write(tmp_path / "pids" / rel / "pids.current", "3\n")
    _write(tmp_path / "pids" / rel / "pids.max", "max\n")
    _write(tmp_path / "blkio" / rel / "blkio.throttle.io_service_bytes_recursive", "8:0 Read 512\n8:0 Write 0\nTotal 512\n")
    s = cg.Cgroups(tmp_path, "1").sample(PATH)
    assert (s.cpu_total, s.cpu_percpu) == (5000, [3000, 2000])
    assert s.throttling == {"periods": 10, "throttled_periods": 3, "throttled_time": 777}
    assert (s.memory_usage, s.memory_limit, s.memory_max_usage) == (4096, 16777216, 8192)
    assert s.memory_stats == {"cache": 0, "total_inactive_file": 1024}
    assert (s.pids_current, s.pids_limit) == (3, 0)
    assert s.blkio == [{"major": 8, "minor": 0, "op": "Read", "value": 512},
                       {"major": 8, "minor": 0, "op": "Write", "value": 0}]


def test_v2_sample_reads_the_one_tree(tmp_path: Path) -> None:
    d = tmp_path / PATH.lstrip("/")
    _write(d / "cpu.stat", "usage_usec 7\nuser_usec 4\nsystem_usec 3\nnr_periods 1\nnr_throttled 0\nthrottled_usec 0\n")
    _write(d / "memory.current", "4096\n")
    _write(d / "memory.max", "max\n")
    _write(d / "memory.stat", "anon 100\ninactive_file 10\n")
    _write(d / "pids.current", "2\n")
    _write(d / "pids.max", "20\n")
    _write(d / "io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    s = cg.Cgroups(tmp_path, "2").sample(PATH)
    assert (s.cpu_total, s.cpu_user, s.cpu_kernel) == (7000, 4000, 3000)
    assert (s.memory_usage, s.memory_limit) == (4096, 0)
    assert (s.pids_current, s.pids_limit) == (2, 20)
    assert s.blkio == [{"major": 8, "minor": 0, "op": "read", "value": 10},
                       {"major": 8, "minor": 0, "op": "write", "value": 20}]


def test_orphans_are_removed_only_under_this_daemons_parent(tmp_path: Path) -> None:
    keep, orphan = "11" * 32, "22" * 32
    for hierarchy in ("memory", "pids"):
        (tmp_path / hierarchy / "shoal" / "daemon000000" / keep).mkdir(parents=True)
        (tmp_path / hierarchy / "shoal" / "daemon000000" / orphan).mkdir(parents=True)
        (tmp_path / hierarchy / "shoal" / "otherdaemon0" / orphan).mkdir(parents=True)
        (tmp_path / hierarchy / "shoal" / "daemon000000" / "not-a-container").mkdir(parents=True)
    removed = cg.Cgroups(tmp_path, "1").remove_orphans("daemon000000" + "0" * 52, {keep})
    assert removed == [orphan]
    for hierarchy in ("memory", "pids"):
        base = tmp_path / hierarchy / "shoal"
        assert sorted(p.name for p in (base / "daemon000000").iterdir()) == [keep, "not-a-container"]
        assert [p.name for p in (base / "otherdaemon0").iterdir()] == [orphan]


def test_of_host_config_keys_differing_only_in_case_the_first_non_null_wins() -> None:
    res = cg.from_host_config({"Memory": None, "memory": 16 * MB, "MEMORY": 32 * MB})
    assert res.memory == 16 * MB
