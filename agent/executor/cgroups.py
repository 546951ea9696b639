"""Container cgroups (/shoal/<daemon>/<id>): Docker's limits checked, made OCI resources; counters read (v1, v2).
agent.executor.spec writes them into config.json, agent.executor.stats shapes samples, shoal.engine.resources drives."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
MIN_MEMORY = 6 * 1024 * 1024  # moby's linuxMinMemory
CFS_PERIOD_US = 100_000  # Docker's period for --cpus
PARENT = "shoal"  # every container cgroup is /shoal/<daemon id[:12]>/<container id>

_HEX = re.compile(r"[0-9a-f]{12,64}")


class ResourceError(ValueError):
    """A resource value Docker refuses; message is Docker's text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class Resources:
    """The HostConfig resource fields shoal applies (Docker's names in FIELD_NAMES)."""

    memory: int = 0  # bytes; 0 unlimited
    memory_swap: int = 0  # memory + swap in bytes; -1 unlimited; 0 the default (2 × memory)
    memory_reservation: int = 0  # soft limit in bytes
    nano_cpus: int = 0  # 1e9 = one CPU (--cpus)
    cpu_shares: int = 0
    cpu_period: int = 0  # µs
    cpu_quota: int = 0  # µs
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None  # None unset; <= 0 unlimited

    def is_empty(self) -> bool:
        return self == Resources()


FIELD_NAMES: dict[str, str] = {
    "memory": "Memory",
    "memory_swap": "MemorySwap",
    "memory_reservation": "MemoryReservation",
    "nano_cpus": "NanoCpus",
    "cpu_shares": "CpuShares",
    "cpu_period": "CpuPeriod",
    "cpu_quota": "CpuQuota",
    "cpuset_cpus": "CpusetCpus",
    "cpuset_mems": "CpusetMems",
    "pids_limit": "PidsLimit",
}
DOCKER_FIELDS = frozenset(FIELD_NAMES.values())


def _non_null_by_lower_key(data: Mapping[str, Any]) -> dict[str, Any]:
    """data's non-null values by lower-cased key, the first of keys differing only in case winning:
    a HostConfig's dozens of keys are lowered once, not once for each resource field looked up."""
    index: dict[str, Any] = {}
    for k, v in data.items():
        if v is not None:
            index.setdefault(k.lower(), v)
    return index


_LOWER_FIELD_NAMES = {attr: name.lower() for attr, name in FIELD_NAMES.items()}


def from_host_config(host_config: Mapping[str, Any]) -> Resources:
    """The resource fields of a HostConfig (or an update body); shape errors in Go's words."""
    res = Resources()
    given = _non_null_by_lower_key(host_config)
    for attr, name in FIELD_NAMES.items():
        value = given.get(_LOWER_FIELD_NAMES[attr])
        if value is None:
            continue
        if attr.startswith("cpuset"):
            if not isinstance(value, str):
                raise ResourceError(f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                                    f"Resources.HostConfig.{name} of type string")
        elif isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise ResourceError(f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                                f"Resources.HostConfig.{name} of type int64")
        setattr(res, attr, value)
    return res


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def to_host_config(res: Resources) -> dict[str, Any]:
    """Docker's spelling of res, for the record's HostConfig (inspect echoes it)."""
    return {FIELD_NAMES[f.name]: getattr(res, f.name) for f in fields(Resources)}


def with_defaults(res: Resources) -> Resources:
    """Docker's adaptation at create: --memory without --memory-swap allows as much swap again."""
    out = Resources(**{f.name: getattr(res, f.name) for f in fields(Resources)})
    if out.memory > 0 and out.memory_swap == 0:
        out.memory_swap = out.memory * 2
    return out


def parse_cpuset(text: str, maximum: int = 8192) -> set[int]:
    """"0-2,5" → {0, 1, 2, 5}; ValueError("invalid format: …") as moby's ParseUintList."""
    result: set[int] = set()
    if text == "":
        return result
    for part in text.split(","):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"invalid format: {text}")
        start, end = int(low), int(high) if sep else int(low)
        if end < start or end > maximum:
            raise ValueError(f"invalid format: {text}")
        result.update(range(start, end + 1))
    return result


@dataclass(slots=True)
class HostLimits:
    """What the host offers, for Docker's checks: CPU count and the root cpuset."""

    ncpu: int
    cpus: str  # e.g. "0-1"
    mems: str  # e.g. "0"


def validate(res: Resources, host: HostLimits, update: bool = False) -> list[str]:
    """moby's verifyPlatformContainerResources for the fields shoal applies: raises
    ResourceError with Docker's message; returns Docker's warnings (none on this host)."""
    if res.memory != 0 and res.memory < MIN_MEMORY:
        raise ResourceError("Minimum memory limit allowed is 6MB")
    if res.memory > 0 and res.memory_swap > 0 and res.memory_swap < res.memory:
        raise ResourceError("Minimum memoryswap limit should be larger than memory limit, see usage")
    if res.memory == 0 and res.memory_swap > 0 and not update:
        raise ResourceError("You should always set the Memory limit when using Memoryswap limit, see usage")
    if res.memory_reservation > 0 and res.memory_reservation < MIN_MEMORY:
        raise ResourceError("Minimum memory reservation allowed is 6MB")
    if res.memory > 0 and res.memory_reservation > 0 and res.memory < res.memory_reservation:
        raise ResourceError("Minimum memory limit can not be less than memory reservation limit, see usage")
    if res.nano_cpus > 0 and res.cpu_period > 0:
        raise ResourceError("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if res.nano_cpus > 0 and res.cpu_quota > 0:
        raise ResourceError("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if res.nano_cpus < 0 or res.nano_cpus > host.ncpu * 10**9:
        raise ResourceError(
            f"Range of CPUs is from 0.01 to {host.ncpu}.00, as there are only {host.ncpu} CPUs available"
        )
    if res.cpu_period != 0 and (res.cpu_period < 1000 or res.cpu_period > 1_000_000):
        raise ResourceError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if res.cpu_quota > 0 and res.cpu_quota < 1000:
        raise ResourceError("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    for label, requested, available, what in (
        ("cpus", res.cpuset_cpus, host.cpus, "CPUs"),
        ("mems", res.cpuset_mems, host.mems, "memory nodes"),
    ):
        try:
            wanted = parse_cpuset(requested)
        except ValueError as exc:
            raise ResourceError(f"Invalid value {requested} for cpuset {label}: {exc}") from None
        if not wanted <= parse_cpuset(available):
            raise ResourceError(f"Requested {what} are not available - requested {requested}, available: {available}")
    return []


def merge_update(current: Resources, change: Resources) -> Resources:
    """moby's UpdateContainer: the non-zero fields of change replace current's, with its
    conflict checks (ResourceError, Docker's wording)."""
    out = Resources(**{f.name: getattr(current, f.name) for f in fields(Resources)})
    if change.nano_cpus > 0 and current.cpu_period > 0:
        raise ResourceError("Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set")
    if change.nano_cpus > 0 and current.cpu_quota > 0:
        raise ResourceError("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set")
    if change.cpu_period > 0 and current.nano_cpus > 0:
        raise ResourceError("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if change.cpu_quota > 0 and current.nano_cpus > 0:
        raise ResourceError("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    if change.memory != 0:
        if change.memory > current.memory_swap > 0 and change.memory_swap == 0:
            raise ResourceError(
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
            )
        out.memory = change.memory
    for attr in ("memory_swap", "memory_reservation", "nano_cpus", "cpu_shares", "cpu_period", "cpu_quota"):
        value = getattr(change, attr)
        if value != 0:
            setattr(out, attr, value)
    for attr in ("cpuset_cpus", "cpuset_mems"):
        if getattr(change, attr):
            setattr(out, attr, getattr(change, attr))
    if change.pids_limit is not None:
        out.pids_limit = change.pids_limit
    return out


def oci_resources(res: Resources) -> dict[str, Any]:
    """The OCI `linux.resources` object for runc (create and `runc update -r`); {} when unset."""
    out: dict[str, Any] = {}
    memory: dict[str, int] = {}
    if res.memory > 0:
        memory["limit"] = res.memory
    if res.memory_swap != 0 and (res.memory > 0 or res.memory_swap == -1):
        memory["swap"] = res.memory_swap
    if res.memory_reservation > 0:
        memory["reservation"] = res.memory_reservation
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if res.nano_cpus > 0:
        cpu["period"] = CFS_PERIOD_US
        cpu["quota"] = res.nano_cpus * CFS_PERIOD_US // 10**9
    if res.cpu_period > 0:
        cpu["period"] = res.cpu_period
    if res.cpu_quota != 0:
        cpu["quota"] = res.cpu_quota
    if res.cpu_shares > 0:
        cpu["shares"] = res.cpu_shares
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if res.pids_limit is not None:
        out["pids"] = {"limit": res.pids_limit if res.pids_limit > 0 else -1}
    return out


def cgroup_parent(daemon_id: str) -> str:
    """This daemon's parent: lab daemons on one machine each have their own."""
    return f"/{PARENT}/{daemon_id[:12]}"


def cgroups_path(daemon_id: str, container_id: str) -> str:
    return f"{cgroup_parent(daemon_id)}/{container_id}"


# ---- reading what the kernel counts -------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, OSError):
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _keyed(text: str | None) -> dict[str, int]:
    """"key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass(slots=True)
class Sample:
    """One reading of a container's cgroup (absent files read as zero)."""

    cpu_total: int = 0  # ns
    cpu_percpu: list[int] = field(default_factory=list)  # ns (v1 only)
    cpu_kernel: int = 0  # ns
    cpu_user: int = 0  # ns
    throttling: dict[str, int] = field(default_factory=dict)  # periods, throttled_periods, throttled_time
    memory_usage: int = 0
    memory_max_usage: int = 0
    memory_failcnt: int = 0
    memory_limit: int = 0
    memory_stats: dict[str, int] = field(default_factory=dict)
    pids_current: int = 0
    pids_limit: int = 0  # 0: no limit
    blkio: list[dict[str, Any]] = field(default_factory=list)  # io_service_bytes_recursive entries
    blkio_ios: list[dict[str, Any]] = field(default_factory=list)  # io_serviced_recursive entries


def detect_version(root: Path = CGROUP_ROOT) -> str:
    """"2" on a pure v2 host (cgroup2 mounted at root), else "1" (v1 or hybrid)."""
    return "2" if (root / "cgroup.controllers").exists() else "1"


def _blkio_v1(text: str | None) -> list[dict[str, Any]]:
    entries = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0] and parts[2].isdigit():
            major, _, minor = parts[0].partition(":")
            if major.isdigit() and minor.isdigit():
                entries.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return entries


def _io_v2(text: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 …") as Docker's v1-shaped lists."""
    data: list[dict[str, Any]] = []
    ios: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        values = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for key, op, target in (("rbytes", "read", data), ("wbytes", "write", data),
                                ("rios", "read", ios), ("wios", "write", ios)):
            if values.get(key, "").isdigit():
                target.append({"major": int(major), "minor": int(minor), "op": op, "value": int(values[key])})
    return data, ios


class Cgroups:
    """The one interface over v1 and v2: paths of a container's cgroup, its counters, orphans.

    Writes (limits, freezing) go through runc (create, `runc update`, `runc pause`), which
    knows both layouts; this class reads, and removes only the empty directories of
    cgroups under this daemon's own parent."""

    def __init__(self, root: Path = CGROUP_ROOT, version: str | None = None) -> None:
        self.root = Path(root)
        self.version = version or detect_version(self.root)

    def dir(self, controller: str, path: str) -> Path:
        """The directory of cgroup `path` ("/shoal/d/id") for a controller (v1) or the one tree (v2)."""
        relative = path.lstrip("/")
        return self.root / relative if self.version == "2" else self.root / controller / relative

    def exists(self, path: str) -> bool:
        return self.dir("memory", path).is_dir()

    def oom_kills(self, path: str) -> int:
        """Processes the OOM killer killed in the cgroup (memory.oom_control / memory.events)."""
        if self.version == "2":
            return _keyed(_read(self.dir("", path) / "memory.events")).get("oom_kill", 0)
        return _keyed(_read(self.dir("memory", path) / "memory.oom_control")).get("oom_kill", 0)

    def procs(self, path: str) -> list[int]:
        """Pids of the processes in the cgroup (its own, not its children's)."""
        controller = "" if self.version == "2" else "pids"
        text = _read(self.dir(controller, path) / "cgroup.procs") or ""
        return [int(p) for p in text.split() if p.isdigit()]

    def sample(self, path: str) -> Sample:
        return self._sample_v2(path) if self.version == "2" else self._sample_v1(path)

    def _sample_v1(self, path: str) -> Sample:
        s = Sample()
        cpuacct = self.dir("cpuacct", path)
        s.cpu_total = _int(cpuacct / "cpuacct.usage") or 0
        s.cpu_percpu = [int(v) for v in (_read(cpuacct / "cpuacct.usage_percpu") or "").split() if v.isdigit()]
        ticks = _keyed(_read(cpuacct / "cpuacct.stat"))
        ns_per_tick = 10**9 // (os.sysconf("SC_CLK_TCK") or 100)
        s.cpu_user = ticks.get("user", 0) * ns_per_tick
        s.cpu_kernel = ticks.get("system", 0) * ns_per_tick
        cpu_stat = _keyed(_read(self.dir("cpu", path) / "cpu.stat"))
        s.throttling = {
            "periods": cpu_stat.get("nr_periods", 0),
            "throttled_periods": cpu_stat.get("nr_throttled", 0),
            "throttled_time": cpu_stat.get("throttled_time", 0),
        }
        memory = self.dir("memory", path)
        s.memory_usage = _int(memory / "memory.usage_in_bytes") or 0
        s.memory_max_usage = _int(memory / "memory.max_usage_in_bytes") or 0
        s.memory_failcnt = _int(memory / "memory.failcnt") or 0
        s.memory_limit = _int(memory / "memory.limit_in_bytes") or 0
        s.memory_stats = _keyed(_read(memory / "memory.stat"))
        pids = self.dir("pids", path)
        s.pids_current = _int(pids / "pids.current") or 0
        s.pids_limit = _int(pids / "pids.max") or 0  # "max" reads as None: no limit
        blkio = self.dir("blkio", path)
        s.blkio = _blkio_v1(_read(blkio / "blkio.throttle.io_service_bytes_recursive"))
        s.blkio_ios = _blkio_v1(_read(blkio / "blkio.throttle.io_serviced_recursive"))
        return s

    def _sample_v2(self, path: str) -> Sample:
        s = Sample()
        d = self.dir("", path)
        cpu_stat = _keyed(_read(d / "cpu.stat"))
        s.cpu_total = cpu_stat.get("usage_usec", 0) * 1000
        s.cpu_user = cpu_stat.get("user_usec", 0) * 1000
        s.cpu_kernel = cpu_stat.get("system_usec", 0) * 1000
        s.throttling = {
            "periods": cpu_stat.get("nr_periods", 0),
            "throttled_periods": cpu_stat.get("nr_throttled", 0),
            "throttled_time": cpu_stat.get("throttled_usec", 0) * 1000,
        }
        s.memory_usage = _int(d / "memory.current") or 0
        s.memory_limit = _int(d / "memory.max") or 0  # "max": no limit
        s.memory_stats = _keyed(_read(d / "memory.stat"))
        s.pids_current = _int(d / "pids.current") or 0
        s.pids_limit = _int(d / "pids.max") or 0
        s.blkio, s.blkio_ios = _io_v2(_read(d / "io.stat"))
        return s

    # ---- cleanup ------------------------------------------------------------------------

    def _hierarchies(self) -> list[Path]:
        if self.version == "2":
            return [self.root]
        try:
            return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return []

    def remove_orphans(self, daemon_id: str, keep: set[str]) -> list[str]:
        """Removes this daemon's container cgroups whose id is not in keep and that hold no
        process (rmdir only succeeds on an empty cgroup: a live one is left and reported by
        the caller's runc reconcile). Never touches anything outside /shoal/<daemon>."""
        removed: set[str] = set()
        parent = cgroup_parent(daemon_id).lstrip("/")
        for hierarchy in self._hierarchies():
            base = hierarchy / parent
            try:
                children = [p for p in base.iterdir() if p.is_dir()]
            except OSError:
                continue
            for child in children:
                if child.name in keep or not _HEX.fullmatch(child.name):
                    continue
                if _rmdir_tree(child):
                    removed.add(child.name)
        return sorted(removed)


def _rmdir_tree(path: Path) -> bool:
    """rmdir of a cgroup and its sub-cgroups, deepest first (cgroup files cannot be unlinked:
    rmdir of the directory is how a cgroup goes). False when any is still busy."""
    try:
        subdirs = [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return False
    ok = all(_rmdir_tree(sub) for sub in subdirs)
    try:
        path.rmdir()
    except FileNotFoundError:
        return ok
    except OSError:
        return False
    return ok


def host_limits(root: Path = CGROUP_ROOT) -> HostLimits:
    """The CPU count and the root cpuset, as moby's sysinfo reads them."""
    ncpu = os.cpu_count() or 1
    version = detect_version(root)
    if version == "2":
        cpus = _read(root / "cpuset.cpus.effective")
        mems = _read(root / "cpuset.mems.effective")
    else:
        cpus = _read(root / "cpuset" / "cpuset.cpus")
        mems = _read(root / "cpuset" / "cpuset.mems")
    return HostLimits(ncpu, (cpus or f"0-{ncpu - 1}").strip(), (mems or "0").strip())


def remove_daemon_parent(daemon_id: str, root: Path = CGROUP_ROOT) -> bool:
    """Removes a daemon's whole /shoal/<daemon> parent in every hierarchy (for `lab down`,
    after its containers are gone); False when some cgroup under it still holds a process.
    /shoal itself stays: other daemons may be creating cgroups under it at this moment."""
    if not _HEX.fullmatch(daemon_id):
        return False
    handle = Cgroups(root)
    ok = True
    for hierarchy in handle._hierarchies():
        parent = hierarchy / cgroup_parent(daemon_id).lstrip("/")
        if parent.is_dir():
            ok = _rmdir_tree(parent) and ok
    return ok
