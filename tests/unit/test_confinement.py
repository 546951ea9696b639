"""Specification of agent.executor.confinement and agent.executor.seccomp: capabilities,
--security-opt and Docker's default seccomp profile turned into the OCI spec."""
from __future__ import annotations

import json

import pytest

from agent.executor import seccomp
from agent.executor.confinement import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    Confinement,
    ConfinementError,
    capabilities,
    from_host_config,
)
from agent.executor.spec import ProcessSpec, build_oci_spec

AMD64 = "amd64"
KERNEL = (6, 1)


def _allowed(profile: dict) -> set[str]:
    """Syscalls allowed without argument conditions."""
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def _default(caps=DEFAULT_CAPABILITIES, arch=AMD64, kernel=KERNEL) -> dict:
    out = seccomp.linux_seccomp(seccomp.default_profile(), caps, arch, kernel)
    assert out is not None
    return out


# ---- capabilities (moby's TweakCapabilities) ----------------------------------------------

def test_no_changes_keep_dockers_defaults() -> None:
    assert capabilities([], [], ALL_CAPABILITIES) == DEFAULT_CAPABILITIES


def test_cap_add_accepts_any_case_without_prefix() -> None:
    assert capabilities(["sys_admin"], [], ALL_CAPABILITIES)[-1] == "CAP_SYS_ADMIN"


def test_cap_drop_removes_a_default() -> None:
    assert "CAP_NET_RAW" not in capabilities([], ["NET_RAW"], ALL_CAPABILITIES)


def test_cap_add_all_is_every_capability_but_the_dropped() -> None:
    assert capabilities(["ALL"], ["CAP_SYS_MODULE"], ALL_CAPABILITIES) == tuple(
        c for c in ALL_CAPABILITIES if c != "CAP_SYS_MODULE"
    )


def test_cap_add_all_is_only_what_the_daemon_holds() -> None:
    held = tuple(c for c in ALL_CAPABILITIES if c != "CAP_SYS_RESOURCE")
    assert capabilities(["ALL"], [], held) == held


def test_adding_a_capability_the_daemon_lacks_is_refused_with_dockers_wording() -> None:
    held = tuple(c for c in ALL_CAPABILITIES if c != "CAP_SYS_RESOURCE")
    with pytest.raises(ConfinementError) as info:
        capabilities(["SYS_RESOURCE"], [], held)
    assert info.value.message == (
        "invalid CapAdd: capability not supported by your kernel or not available in the current "
        'environment: "CAP_SYS_RESOURCE"'
    )


def test_cap_drop_all_keeps_only_the_added() -> None:
    assert capabilities(["CHOWN"], ["ALL"], ALL_CAPABILITIES) == ("CAP_CHOWN",)


def test_an_unknown_capability_is_refused_with_dockers_wording() -> None:
    with pytest.raises(ConfinementError) as info:
        capabilities(["FOO"], [], ALL_CAPABILITIES)
    assert info.value.message == 'invalid CapAdd: unknown capability: "CAP_FOO"'


# ---- --security-opt -----------------------------------------------------------------------

def test_default_confinement_is_dockers() -> None:
    assert from_host_config({}) == Confinement()


@pytest.mark.parametrize("opt", ["no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"])
def test_no_new_privileges_spellings(opt: str) -> None:
    assert from_host_config({"SecurityOpt": [opt]}).no_new_privileges is True


def test_no_new_privileges_false() -> None:
    assert from_host_config({"SecurityOpt": ["no-new-privileges=false"]}).no_new_privileges is False


def test_seccomp_unconfined() -> None:
    assert from_host_config({"SecurityOpt": ["seccomp=unconfined"]}).seccomp == "unconfined"


def test_seccomp_profile_json_as_the_cli_sends_it() -> None:
    text = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}]})
    assert from_host_config({"SecurityOpt": [f"seccomp={text}"]}).seccomp == text


def test_a_profile_that_is_not_json_is_refused() -> None:
    with pytest.raises(ConfinementError) as info:
        from_host_config({"SecurityOpt": ["seccomp={bad"]})
    assert info.value.message.startswith("Decoding seccomp profile failed: ")


def test_an_unknown_security_opt_key_is_refused_with_dockers_wording() -> None:
    with pytest.raises(ConfinementError) as info:
        from_host_config({"SecurityOpt": ["foo=bar"]})
    assert info.value.message == 'invalid --security-opt 2: "foo=bar"'


def test_a_security_opt_without_value_is_refused_with_dockers_wording() -> None:
    with pytest.raises(ConfinementError) as info:
        from_host_config({"SecurityOpt": ["unknown"]})
    assert info.value.message == 'invalid --security-opt 1: "unknown"'


def test_apparmor_is_refused_as_unsupported() -> None:
    with pytest.raises(ConfinementError) as info:
        from_host_config({"SecurityOpt": ["apparmor=docker-default"]})
    assert info.value.message == 'shoal does not support HostConfig.SecurityOpt "apparmor=docker-default" yet'


def test_read_only_root() -> None:
    assert from_host_config({"ReadonlyRootfs": True}).readonly_rootfs is True


# ---- the default seccomp profile ------------------------------------------------------------

def test_default_profile_denies_with_eperm_by_default() -> None:
    out = _default()
    assert (out["defaultAction"], out["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)


def test_default_profile_lists_the_native_arch_and_its_sub_arches() -> None:
    assert _default()["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_an_abi_the_kernel_lacks_leaves_the_list_and_the_rest_stays() -> None:
    section = _default()
    out = seccomp.without_abis(section, frozenset({"SCMP_ARCH_X32"}))
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert {k: v for k, v in out.items() if k != "architectures"} == {
        k: v for k, v in section.items() if k != "architectures"}
    assert section["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]  # shared: untouched


def test_the_native_arch_stays_even_when_named_missing() -> None:
    section = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X32"], "syscalls": []}
    assert seccomp.without_abis(section, frozenset({"SCMP_ARCH_X32"})) is section


def test_the_builtin_profile_lists_exactly_the_abis_this_kernel_runs() -> None:
    out = Confinement().linux_seccomp()
    assert out is not None
    missing = seccomp.abis_missing_here()
    assert out["architectures"] == [a for a in ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
                                    if a not in missing]


def test_the_x32_probe_agrees_with_an_x32_call_made_in_a_child() -> None:
    """The probe's answer against the kernel's own, asked by a separate process (the test's python)."""
    import subprocess
    import sys
    code = ("import ctypes, errno; libc = ctypes.CDLL(None, use_errno=True); "
            "r = libc.syscall(ctypes.c_long(0x40000000 | 39)); print(r == -1 and ctypes.get_errno() == errno.ENOSYS)")
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert ("SCMP_ARCH_X32" in seccomp.abis_missing_here()) == (said == "True")


def test_a_users_profile_keeps_every_abi_it_lists() -> None:
    text = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]})
    out = Confinement(seccomp=text).linux_seccomp()
    assert out is not None and out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]


def test_without_sys_admin_unshare_mount_and_setns_are_not_allowed() -> None:
    allowed = _allowed(_default())
    assert {"unshare", "mount", "setns", "clone3"}.isdisjoint(allowed)
    assert "read" in allowed


def test_without_sys_admin_clone_is_allowed_only_without_namespace_flags() -> None:
    clones = [r for r in _default()["syscalls"] if r["names"] == ["clone"]]
    assert clones == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                       "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}]  # fmt: skip


def test_without_sys_admin_clone3_fails_with_enosys_so_libc_falls_back_to_clone() -> None:
    assert [r for r in _default()["syscalls"] if r["names"] == ["clone3"]] == [
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    ]


def test_with_sys_admin_unshare_and_mount_are_allowed() -> None:
    allowed = _allowed(_default(DEFAULT_CAPABILITIES + ("CAP_SYS_ADMIN",)))
    assert {"unshare", "mount", "setns", "clone", "clone3"} <= allowed


def test_capability_rules_follow_the_bounding_set() -> None:
    assert "ptrace" in _allowed(_default(DEFAULT_CAPABILITIES + ("CAP_SYS_PTRACE",)))
    assert "chroot" not in _allowed(_default(tuple(c for c in DEFAULT_CAPABILITIES if c != "CAP_SYS_CHROOT")))


def test_min_kernel_rules_follow_the_kernel() -> None:
    assert "ptrace" in _allowed(_default(kernel=(4, 8)))
    assert "ptrace" not in _allowed(_default(kernel=(4, 7)))


def test_arch_rules_follow_the_arch() -> None:
    assert "arch_prctl" in _allowed(_default())
    arm = _default(arch="arm64")
    assert "arch_prctl" not in _allowed(arm)
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_generated_rules_carry_only_oci_fields() -> None:
    keys = {k for rule in _default()["syscalls"] for k in rule}
    assert keys <= {"names", "action", "args", "errnoRet"}
    assert "archMap" not in _default()


def test_a_profile_with_no_action_and_no_rules_confines_nothing() -> None:
    assert seccomp.linux_seccomp({}, DEFAULT_CAPABILITIES, AMD64, KERNEL) is None


def test_a_profile_with_name_and_names_is_refused() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(seccomp.SeccompProfileError) as info:
        seccomp.linux_seccomp(profile, DEFAULT_CAPABILITIES, AMD64, KERNEL)
    assert str(info.value) == (
        "both 'name' and 'names' are specified in the seccomp profile, use either 'name' or 'names'"
    )


# ---- into the OCI spec ------------------------------------------------------------------

def _spec(confinement: Confinement) -> dict:
    process = ProcessSpec(["true"], ["PATH=/bin"], confinement=confinement)
    return build_oci_spec(process, "h", "/r", None, [])


def test_spec_has_the_default_seccomp_profile() -> None:
    assert _spec(Confinement())["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


def test_spec_unconfined_has_no_seccomp() -> None:
    assert "seccomp" not in _spec(Confinement(seccomp="unconfined"))["linux"]


def test_spec_carries_capabilities_no_new_privileges_and_read_only_root() -> None:
    spec = _spec(Confinement(capabilities=("CAP_CHOWN",), no_new_privileges=True, readonly_rootfs=True))
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["root"]["readonly"] is True
