"""`docker stats` JSON (types.StatsJSON) from a cgroup Sample, the host's CPU time and the container's net counters.
Samples come from agent.executor.cgroups; shoal.api.routes_resources takes the readings and serves them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.executor.cgroups import Sample

ZERO_TIME = "0001-01-01T00:00:00Z"


def system_cpu_usage(proc_stat: str, clock_ticks: int | None = None) -> int:
    """The host's CPU time in ns, as moby reads it: the first `cpu` line of /proc/stat, user
    to steal (guest time is already counted in user)."""
    ticks = clock_ticks or os.sysconf("SC_CLK_TCK") or 100
    for line in proc_stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            total = sum(int(v) for v in parts[1:8] if v.isdigit())
            return total * (10**9 // ticks)
    return 0


def online_cpus(proc_stat: str) -> int:
    return sum(1 for line in proc_stat.splitlines() if line.startswith("cpu") and line[3:4].isdigit())


_NET_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped")
_NET_TX = ("tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


def net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/<pid>/net/dev of the container's namespace: interface -> Docker's counters (no lo,
    as libnetwork reports only the sandbox's interfaces)."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or name == "lo":
            continue
        values = rest.split()
        if len(values) < 16 or not all(v.isdigit() for v in values[:16]):
            continue
        nums = [int(v) for v in values]
        entry = dict(zip(_NET_FIELDS, (nums[0], nums[1], nums[2], nums[3])))
        entry.update(zip(_NET_TX, (nums[8], nums[9], nums[10], nums[11])))
        out[name] = entry
    return out


@dataclass(slots=True)
class Reading:
    """One stats reading: the cgroup sample and the host's view at the same moment."""

    read: str  # RFC 3339 time
    sample: Sample
    system_cpu: int  # ns
    online_cpus: int
    networks: dict[str, dict[str, int]] = field(default_factory=dict)


def _cpu_stats(r: Reading | None) -> dict[str, Any]:
    if r is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    usage: dict[str, Any] = {
        "total_usage": r.sample.cpu_total,
        "usage_in_kernelmode": r.sample.cpu_kernel,
        "usage_in_usermode": r.sample.cpu_user,
    }
    if r.sample.cpu_percpu:
        usage["percpu_usage"] = list(r.sample.cpu_percpu)
    return {
        "cpu_usage": usage,
        "system_cpu_usage": r.system_cpu,
        "online_cpus": r.online_cpus,
        "throttling_data": dict(r.sample.throttling) or {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def stats_json(
    name: str, container_id: str, now: Reading | None, before: Reading | None, machine_memory: int,
    cgroup_version: str = "1",
) -> dict[str, Any]:
    """types.StatsJSON. now None: the container does not run (Docker's empty stats, name and id
    only set). before None: a first reading (precpu zero, preread the zero time)."""
    if now is None:
        return {
            "read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {}, "blkio_stats": {
                "io_service_bytes_recursive": None, "io_serviced_recursive": None, "io_queue_recursive": None,
                "io_service_time_recursive": None, "io_wait_time_recursive": None, "io_merged_recursive": None,
                "io_time_recursive": None, "sectors_recursive": None,
            },
            "num_procs": 0, "storage_stats": {}, "cpu_stats": _cpu_stats(None), "precpu_stats": _cpu_stats(None),
            "memory_stats": {}, "name": "/" + name, "id": container_id,
        }
    s = now.sample
    limit = s.memory_limit
    # An unlimited cgroup reads as a huge number (or "max"): Docker shows the machine's memory.
    if (limit == 0 or limit > machine_memory) and machine_memory > 0:
        limit = machine_memory
    memory: dict[str, Any] = {"usage": s.memory_usage, "stats": dict(s.memory_stats), "limit": limit}
    if cgroup_version == "1":
        memory["max_usage"] = s.memory_max_usage
        memory["failcnt"] = s.memory_failcnt
    pids: dict[str, int] = {"current": s.pids_current}
    if s.pids_limit:
        pids["limit"] = s.pids_limit
    out: dict[str, Any] = {
        "read": now.read,
        "preread": before.read if before else ZERO_TIME,
        "pids_stats": pids,
        "blkio_stats": {
            "io_service_bytes_recursive": list(s.blkio),
            "io_serviced_recursive": list(s.blkio_ios) if cgroup_version == "1" else None,
            "io_queue_recursive": [] if cgroup_version == "1" else None,
            "io_service_time_recursive": [] if cgroup_version == "1" else None,
            "io_wait_time_recursive": [] if cgroup_version == "1" else None,
            "io_merged_recursive": [] if cgroup_version == "1" else None,
            "io_time_recursive": [] if cgroup_version == "1" else None,
            "sectors_recursive": [] if cgroup_version == "1" else None,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu_stats(now),
        "precpu_stats": _cpu_stats(before),
        "memory_stats": memory,
        "name": "/" + name,
        "id": container_id,
    }
    if now.networks:
        out["networks"] = {k: dict(v) for k, v in now.networks.items()}
    return out


def read_host(proc: Path = Path("/proc")) -> tuple[int, int]:
    """(system CPU ns, online CPUs) now."""
    text = (proc / "stat").read_text()
    return system_cpu_usage(text), online_cpus(text)


def read_networks(pid: int, proc: Path = Path("/proc")) -> dict[str, dict[str, int]]:
    """The counters of the namespace pid lives in; {} when it is gone."""
    if pid <= 0:
        return {}
    try:
        return net_dev((proc / str(pid) / "net" / "dev").read_text())
    except OSError:
        return {}
