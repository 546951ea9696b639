"""A container's confinement: capabilities, no-new-privileges, seccomp profile, read-only root.
From a create's HostConfig (checked by shoal.api.params, derived again by the engine at start) to agent.executor.spec."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.executor import seccomp

# Docker's default capability set (moby oci/caps/defaults.go); CAP_NET_RAW is what lets busybox ping work.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Linux capabilities by number (0 .. 40, CAP_CHECKPOINT_RESTORE, the last one runc 1.1 knows).
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

SECCOMP_BUILTIN = "builtin"  # moby's name for its default profile
SECCOMP_UNCONFINED = "unconfined"
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool spellings
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class ConfinementError(ValueError):
    """A refused option; message is Docker's wording where Docker has one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True, frozen=True)
class Confinement:
    """What confines one container's processes (its init and every exec).

    seccomp is SECCOMP_BUILTIN (Docker's default profile), SECCOMP_UNCONFINED, or the JSON text
    of a profile (what the docker CLI sends for `--security-opt seccomp=PATH`)."""

    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    no_new_privileges: bool = False
    seccomp: str = SECCOMP_BUILTIN
    readonly_rootfs: bool = False

    def linux_seccomp(self) -> dict[str, Any] | None:
        """The OCI linux.seccomp section; None when unconfined. Shared between containers with
        the same profile and capabilities: callers serialize it, never change it."""
        if self.seccomp == SECCOMP_UNCONFINED:
            return None
        return _generated(self.seccomp, self.capabilities)


@functools.lru_cache(maxsize=64)
def _generated(profile_text: str, caps: tuple[str, ...]) -> dict[str, Any] | None:
    """Generation costs ~1 ms (parse and filter ~400 rules); containers mostly share a few."""
    if profile_text == SECCOMP_BUILTIN:
        section = seccomp.linux_seccomp(seccomp.default_profile(), caps)
        # Docker's profile lists every x86 ABI; one this kernel lacks costs each start's runc a filter
        # compilation and guards nothing (see agent.executor.seccomp). A user's own profile is passed as written.
        return None if section is None else seccomp.without_abis(section, seccomp.abis_missing_here())
    return seccomp.linux_seccomp(seccomp.load_profile(profile_text), caps)


@functools.lru_cache(maxsize=1)
def available_capabilities() -> tuple[str, ...]:
    """The capabilities this daemon can hand out (its bounding set): a container can be given no
    other, so `ALL` means these, as in moby's initCaps (a sandboxed host may lack e.g.
    CAP_SYS_RESOURCE). moby reads CapEff; for a root daemon it equals the bounding set, which
    unlike CapEff is also meaningful in a non-root process (the unit tests)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return ALL_CAPABILITIES
    for line in text.splitlines():
        if line.startswith("CapBnd:"):
            bits = int(line.split()[1], 16)
            return tuple(cap for i, cap in enumerate(ALL_CAPABILITIES) if bits >> i & 1)
    return ALL_CAPABILITIES


def _normalize_caps(names: list[str], field: str, available: tuple[str, ...]) -> list[str]:
    """moby's NormalizeLegacyCapabilities: any case, with or without CAP_, or ALL."""
    out = []
    for name in names:
        cap = name.upper()
        if cap != "ALL" and not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        if cap != "ALL" and cap not in ALL_CAPABILITIES:
            raise ConfinementError(f'invalid {field}: unknown capability: "{cap}"')
        if cap != "ALL" and cap not in available:
            raise ConfinementError(
                f"invalid {field}: capability not supported by your kernel or not available in the "
                f'current environment: "{cap}"'
            )
        out.append(cap)
    return out


def capabilities(
    cap_add: list[str], cap_drop: list[str], available: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """moby's TweakCapabilities for a non-privileged container; available defaults to the daemon's own."""
    available = available_capabilities() if available is None else available
    drops = _normalize_caps(cap_drop, "CapDrop", available)
    adds = _normalize_caps(cap_add, "CapAdd", available)
    if "ALL" in adds:
        result = [c for c in available if c not in drops]
    elif "ALL" in drops:
        result = [c for c in adds if c != "ALL"]
    else:
        result = [c for c in DEFAULT_CAPABILITIES if c not in drops] + adds
    return tuple(dict.fromkeys(result))  # without repeats, first order kept


def _security_opts(opts: list[str]) -> tuple[bool, str]:
    """(no_new_privileges, seccomp) from SecurityOpt; moby's parseSecurityOpt wording."""
    nnp = False
    profile = SECCOMP_BUILTIN
    for opt in opts:
        if opt == "no-new-privileges":
            nnp = True
            continue
        sep = "=" if "=" in opt else ":" if ":" in opt else ""
        if not sep:
            if opt in ("disable", "writable-cgroups"):
                raise ConfinementError(f'shoal does not support HostConfig.SecurityOpt "{opt}" yet')
            raise ConfinementError(f"invalid --security-opt 1: {_go_quote(opt)}")
        key, _, value = opt.partition(sep)
        if key == "no-new-privileges":
            if value not in _GO_TRUE + _GO_FALSE:
                raise ConfinementError(f"invalid --security-opt 2: {_go_quote(opt)}")
            nnp = value in _GO_TRUE
        elif key == "seccomp":
            if value in ("", SECCOMP_BUILTIN, SECCOMP_UNCONFINED):
                profile = value or SECCOMP_BUILTIN
            else:
                # A profile's JSON; checked now so a bad one is refused at create, not at start.
                try:
                    seccomp.linux_seccomp(seccomp.load_profile(value), DEFAULT_CAPABILITIES)
                except seccomp.SeccompProfileError as exc:
                    raise ConfinementError(str(exc)) from None
                profile = value
        elif key in ("label", "apparmor", "writable-cgroups"):
            raise ConfinementError(f'shoal does not support HostConfig.SecurityOpt "{key}={value}" yet')
        else:
            raise ConfinementError(f"invalid --security-opt 2: {_go_quote(opt)}")
    return nnp, profile


def _go_quote(text: str) -> str:
    """Go's %q for the plain text options usually are."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _get(host_config: Mapping[str, Any], key: str) -> Any:
    """host_config[key] matched case-insensitively, as Go's encoding/json decodes the body."""
    if key in host_config:
        return host_config[key]
    lowered = key.lower()
    return next((v for k, v in host_config.items() if k.lower() == lowered), None)


def _str_list(host_config: Mapping[str, Any], key: str) -> list[str]:
    value = _get(host_config, key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfinementError(f"invalid JSON: {key} must be a list of strings")
    return list(value)


def from_host_config(host_config: Mapping[str, Any]) -> Confinement:
    """The confinement a create request's HostConfig asks for (keys as Docker spells them)."""
    nnp, profile = _security_opts(_str_list(host_config, "SecurityOpt"))
    readonly = _get(host_config, "ReadonlyRootfs") or False
    if not isinstance(readonly, bool):
        raise ConfinementError("invalid JSON: ReadonlyRootfs must be a boolean")
    return Confinement(
        capabilities=capabilities(_str_list(host_config, "CapAdd"), _str_list(host_config, "CapDrop")),
        no_new_privileges=nnp,
        seccomp=profile,
        readonly_rootfs=readonly,
    )
