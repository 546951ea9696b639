"""agent.executor.stats: the `docker stats` JSON from cgroup samples and /proc texts."""
from __future__ import annotations

from agent.executor import stats as st
from agent.executor.cgroups import Sample
from shoal.engine.resources import parse_ps

PROC_STAT = """cpu  100 0 50 1000 10 0 5 0 0 0
cpu0 50 0 25 500 5 0 2 0 0 0
cpu1 50 0 25 500 5 0 3 0 0 0
intr 1 2 3
"""

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    1500      12    1    2    0     0          0         0      700       7    3    4    0     0       0          0
"""


def test_system_cpu_usage_sums_user_to_steal_in_ns() -> None:
    assert st.system_cpu_usage(PROC_STAT, clock_ticks=100) == (100 + 50 + 1000 + 10 + 5) * 10_000_000


def test_online_cpus_counts_the_cpuN_lines() -> None:
    assert st.online_cpus(PROC_STAT) == 2


def test_net_dev_gives_dockers_counters_without_lo() -> None:
    assert st.net_dev(NET_DEV) == {"eth0": {
        "rx_bytes": 1500, "rx_packets": 12, "rx_errors": 1, "rx_dropped": 2,
        "tx_bytes": 700, "tx_packets": 7, "tx_errors": 3, "tx_dropped": 4,
    }}


def _reading(total: int, system: int, read: str) -> st.Reading:
    sample = Sample(cpu_total=total, cpu_percpu=[total], memory_usage=4096, memory_limit=2**63 - 4096,
                    memory_stats={"total_inactive_file": 1024}, pids_current=3, pids_limit=20)
    return st.Reading(read=read, sample=sample, system_cpu=system, online_cpus=2,
                      networks={"eth0": {"rx_bytes": 1}})


def test_stats_json_has_the_fields_the_docker_cli_reads() -> None:
    before = _reading(1000, 10_000, "2026-12-01T00:00:00Z")
    now = _reading(3000, 20_000, "2026-12-01T00:00:01Z")
    out = st.stats_json("web", "ab" * 32, now, before, machine_memory=1 << 30)
    assert out["name"] == "/web" and out["id"] == "ab" * 32
    assert (out["read"], out["preread"]) == ("2026-12-01T00:00:01Z", "2026-12-01T00:00:00Z")
    assert out["cpu_stats"]["cpu_usage"]["total_usage"] == 3000
    assert out["precpu_stats"]["cpu_usage"]["total_usage"] == 1000
    assert (out["cpu_stats"]["system_cpu_usage"], out["cpu_stats"]["online_cpus"]) == (20_000, 2)
    # an unlimited cgroup's huge limit shows as the machine's memory, as Docker does
    assert out["memory_stats"]["limit"] == 1 << 30
    assert out["memory_stats"]["usage"] == 4096
    assert out["memory_stats"]["stats"] == {"total_inactive_file": 1024}
    assert out["pids_stats"] == {"current": 3, "limit": 20}
    assert out["networks"] == {"eth0": {"rx_bytes": 1}}


def test_a_first_reading_has_zero_precpu_and_the_zero_preread() -> None:
    out = st.stats_json("web", "ab" * 32, _reading(1, 2, "2026-12-01T00:00:01Z"), None, machine_memory=1 << 30)
    assert out["preread"] == "0001-01-01T00:00:00Z"
    assert out["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert "system_cpu_usage" not in out["precpu_stats"]


def test_a_container_that_does_not_run_has_dockers_empty_stats() -> None:
    out = st.stats_json("web", "ab" * 32, None, None, machine_memory=1 << 30)
    assert (out["name"], out["id"], out["read"]) == ("/web", "ab" * 32, "0001-01-01T00:00:00Z")
    assert out["memory_stats"] == {} and out["pids_stats"] == {}


PS = """UID        PID  PPID  C STIME TTY          TIME CMD
root         1     0  0 16:08 ?        00:00:12 /sbin/init
root       200     1  0 16:09 ?        00:00:00 sleep 3600
root       201   200  0 16:09 ?        00:00:00 sh -c while true; do :; done
"""


def test_top_keeps_the_containers_rows_and_joins_the_command() -> None:
    out = parse_ps(PS, {200, 201})
    assert out["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert out["Processes"] == [
        ["root", "200", "1", "0", "16:09", "?", "00:00:00", "sleep 3600"],
        ["root", "201", "200", "0", "16:09", "?", "00:00:00", "sh -c while true; do :; done"],
    ]
