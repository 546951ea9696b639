"""Specification of agent.executor.rootfs: files of a container's root read without escaping it.

Every test runs twice: with openat2 (RESOLVE_IN_ROOT) and with the component walk used on
kernels without it."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from common.errdefs import http_status
from agent.executor import rootfs
from agent.executor.rootfs import RootfsReadError, read_in_root
from shoal.engine.errors import InvalidParameter
from shoal.engine.helpers import process_user

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def use_openat2(request) -> bool:
    return request.param


@pytest.fixture()
def host(tmp_path: Path) -> Path:
    """A stand-in for the host: a secret file outside the container's root."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "shadow").write_text("root:$6$secret:19000:0:99999:7:::\n")
    return outside


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    return r


def test_reads_a_regular_file(root: Path, use_openat2: bool) -> None:
    (root / "etc" / "passwd").write_text(PASSWD)
    assert read_in_root(root, "/etc/passwd", use_openat2=use_openat2) == PASSWD.encode()


def test_a_missing_file_is_none(root: Path, use_openat2: bool) -> None:
    assert read_in_root(root, "/etc/passwd", use_openat2=use_openat2) is None


def test_a_missing_directory_is_none(tmp_path: Path, use_openat2: bool) -> None:
    (tmp_path / "bare").mkdir()
    assert read_in_root(tmp_path / "bare", "/etc/passwd", use_openat2=use_openat2) is None


def test_an_absolute_symlink_is_resolved_inside_the_root(root: Path, host: Path, use_openat2: bool) -> None:
    # The link names the host's file; inside the root that path does not exist.
    (root / "etc" / "passwd").symlink_to(host / "shadow")
    assert read_in_root(root, "/etc/passwd", use_openat2=use_openat2) is None


def test_an_absolute_symlink_reads_the_roots_own_file(root: Path, host: Path, use_openat2: bool) -> None:
    (root / "etc" / "real").write_text(PASSWD)
    (root / "etc" / "passwd").symlink_to("/etc/real")
    assert read_in_root(root, "/etc/passwd", use_openat2=use_openat2) == PASSWD.encode()


def test_a_dotdot_symlink_cannot_climb_above_the_root(root: Path, host: Path, use_openat2: bool) -> None:
    # ../../host/shadow from rootfs/etc would be tmp/host/shadow on the host; in the root,
    # .. of / is / so it names /host/shadow, which does not exist.
    (root / "etc" / "passwd").symlink_to("../../host/shadow")
    assert read_in_root(root, "/etc/passwd", use_openat2=use_openat2) is None


def test_a_dotdot_path_cannot_climb_above_the_root(root: Path, host: Path, use_openat2: bool) -> None:
    assert read_in_root(root, "/../host/shadow", use_openat2=use_openat2) is None


def test_a_symlinked_directory_is_resolved_inside_the_root(root: Path, host: Path, use_openat2: bool) -> None:
    os.rename(root / "etc", root / "etc.real")
    (root / "etc").symlink_to(host)  # /etc -> the host's directory, as an absolute link
    assert read_in_root(root, "/etc/shadow", use_openat2=use_openat2) is None


def test_a_symlink_loop_is_refused(root: Path, use_openat2: bool) -> None:
    (root / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(RootfsReadError) as info:
        read_in_root(root, "/etc/passwd", use_openat2=use_openat2)
    assert info.value.message == "cannot open /etc/passwd in the container: Too many levels of symbolic links"


def test_a_fifo_is_refused_without_blocking(root: Path, use_openat2: bool) -> None:
    os.mkfifo(root / "etc" / "passwd")
    with pytest.raises(RootfsReadError) as info:
        read_in_root(root, "/etc/passwd", use_openat2=use_openat2)
    assert info.value.message == "/etc/passwd in the container is not a regular file"


def test_a_directory_is_refused(root: Path, use_openat2: bool) -> None:
    (root / "etc" / "passwd").mkdir()
    with pytest.raises(RootfsReadError) as info:
        read_in_root(root, "/etc/passwd", use_openat2=use_openat2)
    assert info.value.message == "/etc/passwd in the container is not a regular file"


def test_a_file_over_the_cap_is_refused(root: Path, use_openat2: bool) -> None:
    with open(root / "etc" / "passwd", "wb") as f:
        f.truncate(rootfs.MAX_FILE_BYTES + 1)  # sparse: no real gigabytes needed
    with pytest.raises(RootfsReadError) as info:
        read_in_root(root, "/etc/passwd", use_openat2=use_openat2)
    assert info.value.message == f"/etc/passwd in the container is larger than {rootfs.MAX_FILE_BYTES} bytes"


def test_a_file_at_the_cap_is_read(root: Path, use_openat2: bool) -> None:
    (root / "etc" / "passwd").write_bytes(b"x" * rootfs.MAX_FILE_BYTES)
    assert len(read_in_root(root, "/etc/passwd", use_openat2=use_openat2) or b"") == rootfs.MAX_FILE_BYTES


# ---- process_user: the engine's use (--user, --group-add) ------------------------------------

def test_process_user_resolves_a_name(root: Path) -> None:
    (root / "etc" / "passwd").write_text(PASSWD)
    assert asyncio.run(process_user("nobody", [], root)) == (65534, 65534, (65534,))


def test_process_user_does_not_read_a_host_file_through_a_symlink(root: Path, host: Path) -> None:
    (root / "etc" / "passwd").symlink_to(host / "shadow")
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("root", [], root))
    # Docker's wording, and nothing of the host file in it.
    assert info.value.message == "unable to find user root: no matching entries in passwd file"
    assert http_status(info.value) == 400


def test_process_user_refuses_a_fifo_passwd_with_a_message(root: Path) -> None:
    os.mkfifo(root / "etc" / "passwd")
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("nobody", [], root))
    assert info.value.message == "unable to find user nobody: /etc/passwd in the container is not a regular file"


def test_process_user_refuses_an_id_beyond_runcs_range(root: Path) -> None:
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("99999999999", [], root))
    assert info.value.message == "uids and gids must be in range 0-2147483647"


def test_process_user_refuses_a_group_id_beyond_runcs_range(root: Path) -> None:
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("0:2147483648", [], root))
    assert info.value.message == "uids and gids must be in range 0-2147483647"


def test_process_user_accepts_the_largest_id(root: Path) -> None:
    assert asyncio.run(process_user("2147483647:2147483647", [], root)) == (2147483647, 2147483647, (2147483647,))


GROUP = "root:x:0:root\nwheel:x:10:root,nobody\nstaff:x:50:\n"


def test_process_user_gives_the_users_groups_and_the_added_ones(root: Path) -> None:
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    assert asyncio.run(process_user("nobody", ["staff", "4242"], root)) == (65534, 65534, (65534, 10, 50, 4242))


def test_process_user_without_a_user_gives_roots_groups(root: Path) -> None:
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    assert asyncio.run(process_user("", [], root)) == (0, 0, (0, 10))


def test_process_user_refuses_an_unknown_group_name_with_mobys_words(root: Path) -> None:
    (root / "etc" / "group").write_text(GROUP)
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("", ["audio"], root))
    assert info.value.message == "unable to find group audio: no matching entries in group file"
    assert http_status(info.value) == 400


def test_process_user_takes_a_numeric_group_without_a_group_file(root: Path) -> None:
    assert asyncio.run(process_user("", ["4242"], root)) == (0, 0, (0, 4242))


def test_process_user_does_not_read_a_host_group_file_through_a_symlink(root: Path, host: Path) -> None:
    (host / "group").write_text("hostonly:x:777:\n")
    (root / "etc" / "group").symlink_to(host / "group")
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("", ["hostonly"], root))
    assert info.value.message == "unable to find group hostonly: no matching entries in group file"


def test_process_user_refuses_a_group_name_when_the_group_file_is_a_fifo(root: Path) -> None:
    os.mkfifo(root / "etc" / "group")
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("", ["staff"], root))
    assert info.value.message == "unable to find group staff: /etc/group in the container is not a regular file"


def test_process_user_refuses_a_group_name_when_the_group_file_is_huge(root: Path) -> None:
    with open(root / "etc" / "group", "wb") as f:
        f.truncate(rootfs.MAX_FILE_BYTES + 1)
    with pytest.raises(InvalidParameter) as info:
        asyncio.run(process_user("", ["staff"], root))
    assert info.value.message == (
        f"unable to find group staff: /etc/group in the container is larger than {rootfs.MAX_FILE_BYTES} bytes")


def test_process_user_without_a_user_starts_despite_an_unreadable_group_file(root: Path) -> None:
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").mkdir()
    assert asyncio.run(process_user("", ["4242"], root)) == (0, 0, (0, 4242))
