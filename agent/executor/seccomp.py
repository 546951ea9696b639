"""Turns a Docker seccomp profile into the OCI `linux.seccomp` section for one container.
Used by agent.executor.spec (build_oci_spec) and shoal.api.params (a custom profile is checked at create).

Docker's default profile is data: `seccomp_default.json` beside this module is moby's
`profiles/seccomp/default.json` unchanged (as vendored in moby/moby at commit
b985e2313a8676e18072b442911fc8f64f17d440, vendor/github.com/moby/profiles/seccomp/default.json;
Apache-2.0). A profile's rules carry `includes`/`excludes` conditions on capabilities,
architectures and the kernel version; they are resolved here for the container's bounding
capabilities, the host's architecture and kernel, the way moby's setupSeccomp does, so the
runtime gets a plain list of syscall rules.

One departure from moby, for the default profile only (agent.executor.confinement): a sub-architecture whose
system-call ABI the running kernel does not have is left out of `architectures` (x32: a kernel built without
CONFIG_X86_X32_ABI, or booted with it off, refuses x32 programs and answers every x32 call with ENOSYS). runc
compiles the filter with libseccomp in every container's init, once per listed ABI: on this 2-core machine
Docker's three x86 ABIs cost each start ~21 ms of CPU over no filter, the two the kernel runs ~13 ms (`runc run`
of busybox `true`, 30 containers of each kind interleaved, three runs). What changes for a container: an x32 call,
which could only fail with ENOSYS here, is now the filter's bad-ABI case (the thread is killed with SIGSYS); every
call of the ABIs the kernel runs is judged exactly as before.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_PROFILE_PATH = Path(__file__).with_name("seccomp_default.json")

# uname machine -> the libseccomp architecture name rules use in `arches`
_NATIVE_ARCH = {
    "x86_64": "amd64",
    "i386": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "loongarch64": "loongarch64",
}
# libseccomp name -> the OCI architecture constant archMap uses
_OCI_ARCH = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "loongarch64": "SCMP_ARCH_LOONGARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390x": "SCMP_ARCH_S390X",
}
# Sub-architectures whose ABI a kernel may lack, with a probe: the raw number of a harmless call (getpid) in that ABI.
_X32_SYSCALL_BIT = 0x40000000
_X86_64_GETPID = 39
_PROBES = {"SCMP_ARCH_X32": _X32_SYSCALL_BIT | _X86_64_GETPID}
# Keys of a profile rule that are conditions for this generator, not OCI fields.
_RULE_ONLY_KEYS = ("name", "comment", "includes", "excludes")
_KERNEL = re.compile(r"^([0-9]+)\.([0-9]+)")


class SeccompProfileError(ValueError):
    """A profile that cannot be used; the message is Docker's wording where it has one."""


def native_arch() -> str:
    machine = platform.machine()
    return _NATIVE_ARCH.get(machine, machine)


@functools.lru_cache(maxsize=1)
def host_kernel() -> tuple[int, int]:
    match = _KERNEL.match(os.uname().release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


@functools.lru_cache(maxsize=1)
def abis_missing_here() -> frozenset[str]:
    """The sub-architectures (OCI names) whose calls this kernel answers with ENOSYS. Only x32 can be probed from
    here (x86_64 only: elsewhere the number means another call), and only by a daemon under no seccomp filter of
    its own (a filter without x32 would kill the probing thread): otherwise, or on any answer but ENOSYS, every
    sub-architecture counts as present."""
    if native_arch() != "amd64" or not _unfiltered():
        return frozenset()
    libc = ctypes.CDLL(None, use_errno=True)
    missing = set()
    for abi, number in _PROBES.items():
        ctypes.set_errno(0)
        if libc.syscall(ctypes.c_long(number)) == -1 and ctypes.get_errno() == errno.ENOSYS:
            missing.add(abi)
    return frozenset(missing)


def _unfiltered() -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    return any(line.split()[1:] == ["0"] for line in status.splitlines() if line.startswith("Seccomp:"))


def without_abis(section: dict[str, Any], missing: frozenset[str]) -> dict[str, Any]:
    """`section` (an OCI linux.seccomp) without the sub-architectures in `missing`; the native one always stays.
    A new object: the given one is shared and left as it is."""
    arches = section.get("architectures")
    if not arches or not missing.intersection(arches[1:]):
        return section
    return {**section, "architectures": [arches[0], *(a for a in arches[1:] if a not in missing)]}


@functools.lru_cache(maxsize=1)
def _default_profile_text() -> str:
    return DEFAULT_PROFILE_PATH.read_text()


def default_profile() -> dict[str, Any]:
    """A fresh copy of Docker's default profile (callers may not mutate a shared one)."""
    return json.loads(_default_profile_text())


def load_profile(text: str) -> dict[str, Any]:
    """A profile's JSON as given in `--security-opt seccomp=<json>`."""
    try:
        profile = json.loads(text)
    except ValueError as exc:
        raise SeccompProfileError(f"Decoding seccomp profile failed: {exc}") from None
    if not isinstance(profile, dict):
        raise SeccompProfileError("Decoding seccomp profile failed: the profile must be a JSON object")
    return profile


def _kernel_at_least(version: Any, kernel: tuple[int, int]) -> bool:
    match = _KERNEL.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise SeccompProfileError(f'invalid kernel version: "{version}", expected "<kernel>.<major>"')
    return kernel >= (int(match.group(1)), int(match.group(2)))


def _condition(rule: dict[str, Any], key: str) -> dict[str, Any]:
    value = rule.get(key) or {}
    if not isinstance(value, dict):
        raise SeccompProfileError(f"invalid seccomp profile: {key} of a syscall rule must be an object")
    return value


def _applies(rule: dict[str, Any], caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    """moby's rule filter: any exclude that matches drops the rule; every include must match."""
    excludes = _condition(rule, "excludes")
    if arch in (excludes.get("arches") or []):
        return False
    if any(cap in caps for cap in excludes.get("caps") or []):
        return False
    if excludes.get("minKernel") and _kernel_at_least(excludes["minKernel"], kernel):
        return False
    includes = _condition(rule, "includes")
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if not all(cap in caps for cap in includes.get("caps") or []):
        return False
    if includes.get("minKernel") and not _kernel_at_least(includes["minKernel"], kernel):
        return False
    return True


def linux_seccomp(
    profile: dict[str, Any],
    capabilities: Sequence[str],
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """The OCI linux.seccomp object for a container whose bounding set is `capabilities`;
    None when the profile confines nothing (no default action and no rules), as in moby."""
    arch = arch or native_arch()
    kernel = kernel or host_kernel()
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None
    if profile.get("architectures") and profile.get("archMap"):
        raise SeccompProfileError(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, use either "
            "'architectures' or 'archMap'"
        )
    out = {k: v for k, v in profile.items() if k not in ("archMap", "syscalls")}
    oci_arch = _OCI_ARCH.get(arch)
    for entry in profile.get("archMap") or []:
        if isinstance(entry, dict) and entry.get("architecture") == oci_arch:
            out["architectures"] = [oci_arch, *(entry.get("subArchitectures") or [])]
            break
    caps = frozenset(capabilities)
    rules = []
    for rule in profile.get("syscalls") or []:
        if not isinstance(rule, dict):
            raise SeccompProfileError("invalid seccomp profile: a syscall rule must be an object")
        names = rule.get("names") or []
        if rule.get("name"):
            if names:
                raise SeccompProfileError(
                    "both 'name' and 'names' are specified in the seccomp profile, use either 'name' or 'names'"
                )
            names = [rule["name"]]
        if not _applies(rule, caps, arch, kernel):
            continue
        oci_rule = {k: v for k, v in rule.items() if k not in _RULE_ONLY_KEYS}
        oci_rule["names"] = list(names)
        rules.append(oci_rule)
    out["syscalls"] = rules
    return out
