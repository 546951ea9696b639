"""Builds the OCI runtime spec (runc's config.json) for one container: pure data, seccomp rules included.
Used by agent.executor.runtime, which writes it into the bundle; the container manager supplies the inputs."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.executor import mounts as user_mounts
from agent.executor.confinement import DEFAULT_CAPABILITIES, Confinement

OCI_VERSION = "1.0.2"

# Docker's defaults (moby oci/defaults.go): hide kernel details a container has no business reading.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

NOFILE_LIMIT = 1048576
OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX = -1000, 1000  # the kernel's range for /proc/<pid>/oom_score_adj


def oom_score_adj_message(value: int) -> str:
    """moby's words (daemon_unix.go verifyPlatformContainerSettings) for an --oom-score-adj out of range."""
    return f"Invalid value {value}, range for oom score adj is [{OOM_SCORE_ADJ_MIN}, {OOM_SCORE_ADJ_MAX}]"

_NUMERIC_ID = re.compile(r"[0-9]+")
# An id in a container's passwd/group: at most 10 digits (2^32 has 10), so int() never meets
# the thousands of digits a hostile file may hold.
_FILE_ID = re.compile(r"[0-9]{1,10}")


@dataclass(slots=True)
class ProcessSpec:
    """What to run: argv, environment ("K=V" strings), working directory and numeric identity.

    tty asks runc for a terminal (the shim receives its master over the console socket).
    confinement travels
    with the process because an exec must get the container's capabilities and
    no-new-privileges again (runc exec takes them from the process JSON, not the container)."""

    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    tty: bool = False
    confinement: Confinement = field(default_factory=Confinement)
    rlimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit: (RLIMIT_X, soft, hard), over the defaults
    additional_gids: tuple[int, ...] = ()  # the process's groups: its own gid, its user's groups, --group-add
    # --oom-score-adj; None leaves it out (an exec's: runc gives a joining process the container's value)
    oom_score_adj: int | None = None


@dataclass(slots=True)
class SpecExtras:
    """Container-wide settings of create options (shoal.engine.createopts): --sysctl,
    --device, --privileged (no masked or read-only paths, /sys writable, the host's devices)."""

    sysctls: dict[str, str] = field(default_factory=dict)
    devices: list[dict] = field(default_factory=list)  # OCI linux.devices entries
    # OCI linux.resources.devices allow rules for --device's cgroup permissions ("r", "rw", ...): runc
    # makes the nodes of linux.devices but allows in the device cgroup only its defaults and these rules
    device_rules: list[dict] = field(default_factory=list)
    privileged: bool = False


@dataclass(slots=True)
class Mount:
    """A mount into the container: a bind from the host (shoal-written /etc/hosts, -v, a
    volume's directory) or a tmpfs (kind "tmpfs", options such as "size=64m").
    agent.executor.mounts turns user mounts into config.json entries."""

    source: str
    destination: str
    readonly: bool = False
    kind: str = "bind"
    options: tuple[str, ...] = ()


def _capabilities(caps: tuple[str, ...] = DEFAULT_CAPABILITIES) -> dict[str, list[str]]:
    # Like Docker since 23.0: no inheritable or ambient set, so a non-root process gets no
    # effective capabilities (CVE-2022-24769).
    return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}


def validate_process(process: ProcessSpec) -> None:
    """Refuses a process runc would reject later with a less helpful message."""
    if not process.args:
        raise ValueError("process args must not be empty: no command given")
    if not process.cwd.startswith("/"):
        raise ValueError(f"process cwd {process.cwd!r} must be an absolute path")
    for entry in process.env:
        if "=" not in entry:
            raise ValueError(f"environment entry {entry!r} must have the form KEY=VALUE")
    for label, value in (("uid", process.uid), ("gid", process.gid)):
        if value < 0 or value > 0xFFFFFFFE:
            raise ValueError(f"process {label} {value} is out of range")
    for value in process.additional_gids:
        if value < 0 or value > MAX_ID:
            raise ValueError(f"uids and gids must be in range 0-{MAX_ID}")
    if process.oom_score_adj is not None and not OOM_SCORE_ADJ_MIN <= process.oom_score_adj <= OOM_SCORE_ADJ_MAX:
        raise ValueError(oom_score_adj_message(process.oom_score_adj))


def build_process(process: ProcessSpec, nofile_limit: int = NOFILE_LIMIT) -> dict:
    """The OCI `process` object; also the JSON `runc exec --process` takes."""
    validate_process(process)
    user: dict = {"uid": process.uid, "gid": process.gid}
    if process.additional_gids:
        user["additionalGids"] = list(process.additional_gids)
    doc = {
        "terminal": process.tty,  # the shim (or runc exec) gives it a pty
        "user": user,
        "args": list(process.args),
        "env": list(process.env),
        "cwd": process.cwd,
        "capabilities": _capabilities(process.confinement.capabilities),
        "rlimits": _rlimits(process, nofile_limit),
        "noNewPrivileges": process.confinement.no_new_privileges,
    }
    if process.oom_score_adj is not None:
        doc["oomScoreAdj"] = process.oom_score_adj
    return doc


def _rlimits(process: ProcessSpec, nofile_limit: int) -> list[dict]:
    limits = {"RLIMIT_NOFILE": (nofile_limit, nofile_limit)}
    for name, soft, hard in process.rlimits:
        limits[name] = (soft, hard)
    return [{"type": name, "hard": hard, "soft": soft} for name, (soft, hard) in limits.items()]


def _default_mounts() -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        # Docker's too: read-only, and runc shows the container its own cgroup as the root of
        # each hierarchy (so `cat /sys/fs/cgroup/memory/memory.limit_in_bytes` is its limit).
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev", "relatime"]},
    ]


def _bind_mount(mount: Mount) -> dict:
    if mount.kind != "bind" or mount.options:
        return user_mounts.oci_mount(mount)
    if not mount.destination.startswith("/"):
        raise ValueError(f"mount destination {mount.destination!r} must be an absolute path")
    if not mount.source.startswith("/"):
        raise ValueError(f"mount source {mount.source!r} must be an absolute path")
    # rprivate: a bind must not propagate mounts back to the host or between containers.
    options = ["rbind", "rprivate"] + (["ro"] if mount.readonly else ["rw"])
    return {"destination": mount.destination, "type": "bind", "source": mount.source, "options": options}


def build_namespaces(netns_path: str | None) -> list[dict]:
    """pid, ipc, uts, mount always; network joins netns_path, or is absent for host networking."""
    namespaces: list[dict] = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if netns_path is not None:
        if not netns_path.startswith("/"):
            raise ValueError(f"network namespace path {netns_path!r} must be an absolute path")
        namespaces.append({"type": "network", "path": netns_path})
    return namespaces


def build_oci_spec(
    process: ProcessSpec,
    hostname: str,
    rootfs: str,
    netns_path: str | None,
    mounts: list[Mount],
    cgroups_path: str | None = None,
    nofile_limit: int = NOFILE_LIMIT,
    resources: dict | None = None,
    cgroupns: bool = False,
    extras: SpecExtras | None = None,
) -> dict:
    """config.json for runc; process.confinement gives its capabilities, seccomp profile
    (Docker's default unless unconfined), no-new-privileges and read-only root.

    resources is the OCI linux.resources object (agent.executor.cgroups.oci_resources: limits
    runc writes into the container's cgroup, v1 or v2); none when empty. cgroupsPath stays unset
    unless given (runc then uses /<container id>). cgroupns gives the container its own cgroup
    namespace (Docker's default on a cgroup v2 host; v1 hosts share the host's). nofile_limit lets a caller without
    CAP_SYS_RESOURCE lower Docker's 1048576 to the hard limit it can grant."""
    if not rootfs.startswith("/"):
        raise ValueError(f"rootfs {rootfs!r} must be an absolute path")
    extras = extras or SpecExtras()
    linux: dict = {
        "namespaces": build_namespaces(netns_path),
        "maskedPaths": [] if extras.privileged else list(DEFAULT_MASKED_PATHS),
        "readonlyPaths": [] if extras.privileged else list(DEFAULT_READONLY_PATHS),
    }
    if cgroupns:
        linux["namespaces"].append({"type": "cgroup"})
    if extras.sysctls:
        linux["sysctl"] = dict(extras.sysctls)
    if extras.devices:
        linux["devices"] = [dict(d) for d in extras.devices]
    if cgroups_path is not None:
        if not cgroups_path.startswith("/"):
            raise ValueError(f"cgroups path {cgroups_path!r} must be an absolute path")
        linux["cgroupsPath"] = cgroups_path
    if resources:
        linux["resources"] = dict(resources)
    if extras.device_rules:
        rules = linux.setdefault("resources", {}).setdefault("devices", [])
        linux["resources"]["devices"] = list(rules) + [dict(r) for r in extras.device_rules]
    if extras.privileged:  # every device node may be used (moby's privileged device rule)
        linux.setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]
    confinement = process.confinement
    profile = confinement.linux_seccomp()
    if profile is not None:
        linux["seccomp"] = profile
    default_mounts = _default_mounts()
    if extras.privileged:  # moby: a privileged container's /sys is writable
        for mount in default_mounts:
            if mount["destination"] == "/sys":
                mount["options"] = [o for o in mount["options"] if o != "ro"] + ["rw"]
    return {
        "ociVersion": OCI_VERSION,
        "process": build_process(process, nofile_limit),
        "root": {"path": rootfs, "readonly": confinement.readonly_rootfs},
        "hostname": hostname,
        "mounts": user_mounts.ordered(default_mounts, [_bind_mount(m) for m in mounts]),
        "linux": linux,
    }


def parse_user(user: str) -> tuple[int, int]:
    """Numeric "uid[:gid]" to (uid, gid); "" is root. A missing gid is 0 (resolve_user reads passwd).

    Names are refused: they need the image's /etc/passwd, which resolve_user handles."""
    if user == "":
        return 0, 0
    uid_text, sep, gid_text = user.partition(":")
    if sep and gid_text == "":
        raise ValueError(f"invalid user {user!r}: empty group after ':'")
    for part in (uid_text, gid_text) if sep else (uid_text,):
        if not _NUMERIC_ID.fullmatch(part):
            raise ValueError(
                f"invalid user {user!r}: {part!r} is not a numeric id (names must be resolved against the image first)"
            )
    uid = int(uid_text)
    gid = int(gid_text) if sep else 0
    for value in (uid, gid):
        if value > 0xFFFFFFFE:
            raise ValueError(f"invalid user {user!r}: id {value} is out of range")
    return uid, gid


@dataclass(slots=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int


def parse_passwd(text: str) -> list[_PasswdEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and _FILE_ID.fullmatch(fields[2]) and _FILE_ID.fullmatch(fields[3]):
            entries.append(_PasswdEntry(fields[0], int(fields[2]), int(fields[3])))
    return entries


def parse_group(text: str) -> dict[str, int]:
    groups = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and _FILE_ID.fullmatch(fields[2]):
            groups.setdefault(fields[0], int(fields[2]))
    return groups


MAX_ID = 2147483647  # runc's (and so Docker's) bound on numeric uids and gids


def _in_range(text: str) -> int:
    """A numeric uid/gid, refused with runc's wording beyond MAX_ID (a kernel uid is 32 bits;
    runc refuses what an int32 cannot hold)."""
    if len(text.lstrip("0")) > len(str(MAX_ID)) or int(text) > MAX_ID:
        raise ValueError(f"uids and gids must be in range 0-{MAX_ID}")
    return int(text)


def resolve_user_in(user: str, passwd_text: str, group_text: str) -> tuple[int, int]:
    """Docker's rules for `--user`: names or ids for user and group; a lone user takes its
    primary group from passwd (or 0 for an unknown numeric uid). Pure: the texts are the image's files."""
    if user == "":
        return 0, 0
    users = parse_passwd(passwd_text)
    groups = parse_group(group_text)
    user_part, sep, group_part = user.partition(":")
    if sep and group_part == "":
        raise ValueError(f"invalid user {user!r}: empty group after ':'")
    if _NUMERIC_ID.fullmatch(user_part):
        uid = _in_range(user_part)
        entry = next((e for e in users if e.uid == uid), None)
    else:
        entry = next((e for e in users if e.name == user_part), None)
        if entry is None:
            raise ValueError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid = entry.uid
    if not sep:
        return uid, entry.gid if entry is not None else 0
    if _NUMERIC_ID.fullmatch(group_part):
        return uid, _in_range(group_part)
    if group_part not in groups:
        raise ValueError(f"unable to find group {group_part}: no matching entries in group file")
    return uid, groups[group_part]


# moby/sys/user's parseNumeric: strconv.Atoi's syntax (a sign, then digits); other text is a name.
_SIGNED_ID = re.compile(r"[+-]?[0-9]+")


def _group_members(text: str) -> list[tuple[str, int, list[str]]]:
    """(name, gid, members) of each /etc/group line with a usable gid (as parse_group, members too)."""
    out = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and _FILE_ID.fullmatch(fields[2]):
            out.append((fields[0], int(fields[2]), fields[3].split(",") if len(fields) > 3 else []))
    return out


def supplementary_gids_in(user: str, passwd_text: str, group_text: str) -> tuple[int, ...]:
    """The groups whose member list names the user (moby/sys/user GetExecUser's Sgids): only for a user without an
    explicit group (`-u www`, `-u 33`, or none: root), and only when passwd has an entry for it."""
    user_part, sep, _group = user.partition(":")
    if sep:
        return ()
    users = parse_passwd(passwd_text)
    if user_part == "" or _NUMERIC_ID.fullmatch(user_part):
        uid = int(user_part or "0") if len(user_part) <= len(str(MAX_ID)) else -1
        entry = next((e for e in users if e.uid == uid), None)
    else:
        entry = next((e for e in users if e.name == user_part), None)
    if entry is None or entry.name == "":
        return ()
    return tuple(gid for _name, gid, members in _group_members(group_text) if entry.name in members and gid <= MAX_ID)


def additional_gids_in(groups: list[str], group_text: str, unreadable: str = "") -> tuple[int, ...]:
    """`--group-add` values as gids (moby/sys/user GetAdditionalGroups), each once: a name must be in /etc/group, a
    number is taken as it is (within the id range). unreadable: why the container's /etc/group could not be read
    (then only numbers resolve, as in moby, whose reader is then absent). Raises ValueError with moby's words."""
    entries = _group_members(group_text)
    out: list[int] = []
    for group in groups:
        numeric = _SIGNED_ID.fullmatch(group) is not None
        if numeric:
            value = int(group) if len(group.lstrip("+-0")) <= len(str(MAX_ID)) else MAX_ID + 1
            if not 0 <= value <= MAX_ID:
                raise ValueError(f"uids and gids must be in range 0-{MAX_ID}")
            match = value  # moby matches a number by gid only: the group it finds has this gid
        else:
            match = next((gid for name, gid, _members in entries if name == group), None)
            if match is None:
                why = unreadable or "no matching entries in group file"
                raise ValueError(f"unable to find group {group}: {why}")
        if match > MAX_ID:
            raise ValueError(f"uids and gids must be in range 0-{MAX_ID}")
        if match not in out:
            out.append(match)
    return tuple(out)


def process_user_in(user: str, group_add: list[str], passwd_text: str, group_text: str,
                    group_unreadable: str = "") -> tuple[int, int, tuple[int, ...]]:
    """(uid, gid, additional gids) of a container's process, as moby's getUser (daemon/oci_linux.go) makes
    process.user: the gid itself, the user's groups, then --group-add's (each once: moby may list one twice, which
    grants nothing more)."""
    uid, gid = resolve_user_in(user, passwd_text, group_text)
    gids = (gid, *supplementary_gids_in(user, passwd_text, group_text),
            *additional_gids_in(group_add, group_text, group_unreadable))
    return uid, gid, tuple(dict.fromkeys(gids))
