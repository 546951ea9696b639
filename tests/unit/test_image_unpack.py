"""Layer application: ordering, whiteouts, links, compression, and refusal of escaping entries."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from agent.images.unpack import ImageLoadError, apply_layer, rootfs_size

MTIME = 1600000000


Entry = tuple[tarfile.TarInfo, bytes | None]


def F(name: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, MTIME
    return info, data


def D(name: str, mode: int = 0o755) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, MTIME
    return info, None


def S(name: str, target: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, MTIME
    return info, None


def H(name: str, target: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = tarfile.LNKTYPE, target, MTIME
    return info, None


def layer(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def apply(root: Path, data: bytes, label: str = "layer") -> str:
    return apply_layer(root, io.BytesIO(data), label)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    r.mkdir()
    return r


def test_later_layer_overwrites_file_of_earlier_layer(root: Path) -> None:
    apply(root, layer(D("etc"), F("etc/motd", b"one"), F("etc/keep", b"k")))
    apply(root, layer(F("etc/motd", b"two")))
    assert (root / "etc/motd").read_bytes() == b"two"
    assert (root / "etc/keep").read_bytes() == b"k"


def test_returns_sha256_of_uncompressed_tar(root: Path) -> None:
    data = layer(F("a", b"x"))
    assert apply(root, data) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_gzip_layer_is_detected_and_digest_covers_plain_bytes(root: Path) -> None:
    data = layer(D("bin"), F("bin/tool", b"#!/bin/sh\n", 0o755))
    assert apply(root, gzip.compress(data)) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\n"


def test_file_mode_and_mtime_are_preserved(root: Path) -> None:
    apply(root, layer(F("run.sh", b"x", 0o4750), D("ro", 0o555)))
    st = os.stat(root / "run.sh")
    assert stat.S_IMODE(st.st_mode) == 0o4750
    assert st.st_mtime == MTIME
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert os.stat(root / "ro").st_mtime == MTIME


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_is_preserved_when_root(root: Path) -> None:
    f = F("owned", b"x")
    f[0].uid, f[0].gid = 1234, 5678
    s = S("link", "owned")
    s[0].uid, s[0].gid = 42, 43
    apply(root, layer(f, s))
    assert (os.stat(root / "owned").st_uid, os.stat(root / "owned").st_gid) == (1234, 5678)
    assert (os.lstat(root / "link").st_uid, os.lstat(root / "link").st_gid) == (42, 43)


def test_whiteout_file_removes_entry_of_lower_layer(root: Path) -> None:
    apply(root, layer(D("etc"), F("etc/a", b"a"), F("etc/b", b"b")))
    apply(root, layer(F("etc/.wh.a")))
    assert sorted(os.listdir(root / "etc")) == ["b"]


def test_whiteout_of_directory_removes_its_whole_tree(root: Path) -> None:
    apply(root, layer(D("var"), D("var/cache"), F("var/cache/x", b"x")))
    apply(root, layer(F("var/.wh.cache")))
    assert os.listdir(root / "var") == []


def test_whiteout_does_not_hide_entry_of_its_own_layer(root: Path) -> None:
    apply(root, layer(F("a", b"old")))
    apply(root, layer(F("a", b"new"), F(".wh.a")))
    assert (root / "a").read_bytes() == b"new"


def test_opaque_directory_hides_lower_contents_and_keeps_its_own(root: Path) -> None:
    apply(root, layer(D("d"), F("d/lower1"), D("d/sub"), F("d/sub/lower2"), F("other")))
    apply(root, layer(D("d"), F("d/.wh..wh..opq"), D("d/sub"), F("d/sub/new", b"n")))
    assert sorted(os.listdir(root / "d")) == ["sub"]
    assert os.listdir(root / "d/sub") == ["new"]
    assert (root / "other").exists()


def test_symlink_is_created_with_its_literal_target(root: Path) -> None:
    apply(root, layer(D("bin"), F("bin/busybox", b"elf", 0o755), S("bin/sh", "busybox"), S("abs", "/etc/passwd")))
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.readlink(root / "abs") == "/etc/passwd"


def test_hard_link_shares_the_inode_of_its_target(root: Path) -> None:
    apply(root, layer(D("bin"), F("bin/a", b"data", 0o755), H("bin/b", "bin/a")))
    assert os.stat(root / "bin/a").st_ino == os.stat(root / "bin/b").st_ino
    assert rootfs_size(root) == 4


def test_hard_link_to_file_of_lower_layer(root: Path) -> None:
    apply(root, layer(F("a", b"data")))
    apply(root, layer(H("b", "a")))
    assert (root / "b").read_bytes() == b"data"


def test_hard_link_target_outside_rootfs_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s")
    with pytest.raises(ImageLoadError, match=r"hard link 'x' -> '../secret' escapes the root filesystem"):
        apply(root, layer(H("x", "../secret")))
    assert not (root / "x").exists()


def test_hard_link_through_absolute_symlink_parent_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret").write_bytes(b"s")
    apply(root, layer(S("a", str(tmp_path / "outside"))))
    with pytest.raises(ImageLoadError, match="escapes the root filesystem through symlink a ->"):
        apply(root, layer(H("x", "a/secret")))
    assert not (root / "x").exists()


def test_dotdot_escape_is_refused_naming_the_entry(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match=r"layer 2 \(x\): entry '../evil' escapes the root filesystem"):
        apply(root, layer(F("ok", b"1"), F("../evil", b"e")), "layer 2 (x)")
    assert not (tmp_path / "evil").exists()


def test_nested_dotdot_escape_is_refused(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="escapes the root filesystem"):
        apply(root, layer(D("a"), F("a/../../evil", b"e")))
    assert not (tmp_path / "evil").exists()


def test_dotdot_that_stays_inside_is_cleaned(root: Path) -> None:
    apply(root, layer(D("a"), F("a/../b", b"x")))
    assert (root / "b").read_bytes() == b"x"


def test_absolute_path_is_refused(root: Path) -> None:
    with pytest.raises(ImageLoadError, match=r"entry '/etc/passwd' is an absolute path"):
        apply(root, layer(F("/etc/passwd", b"pwned")))


def test_write_through_absolute_symlink_parent_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "hostetc"
    outside.mkdir()
    apply(root, layer(S("a", str(outside))))
    with pytest.raises(ImageLoadError, match=r"entry 'a/passwd' escapes the root filesystem through symlink a ->"):
        apply(root, layer(F("a/passwd", b"pwned")))
    assert os.listdir(outside) == []


def test_write_through_symlink_made_in_same_layer_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "hostetc"
    outside.mkdir()
    with pytest.raises(ImageLoadError, match="escapes the root filesystem through symlink"):
        apply(root, layer(S("a", "/etc"), F("a/passwd", b"pwned")))
    with pytest.raises(ImageLoadError, match="escapes the root filesystem through a symlink"):
        apply(root, layer(S("b", "../../hostetc"), F("b/passwd", b"pwned")))
    assert os.listdir(outside) == []


def test_relative_symlink_parent_inside_rootfs_is_followed(root: Path) -> None:
    apply(root, layer(D("usr"), D("usr/lib"), S("lib", "usr/lib")))
    apply(root, layer(F("lib/libc.so", b"c")))
    assert (root / "usr/lib/libc.so").read_bytes() == b"c"
    assert os.readlink(root / "lib") == "usr/lib"


def test_file_replaces_symlink_instead_of_writing_through_it(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "hostfile"
    target.write_bytes(b"host")
    apply(root, layer(S("f", str(target))))
    apply(root, layer(F("f", b"image")))
    assert target.read_bytes() == b"host"
    assert not (root / "f").is_symlink()
    assert (root / "f").read_bytes() == b"image"


def test_directory_replaces_lower_file(root: Path) -> None:
    apply(root, layer(F("d", b"file")))
    apply(root, layer(D("d"), F("d/x", b"x")))
    assert (root / "d/x").read_bytes() == b"x"


def test_garbage_layer_is_refused(root: Path) -> None:
    with pytest.raises(ImageLoadError, match=r"layer: invalid layer tar"):
        apply(root, b"this is not a tar archive at all" * 40)


def test_truncated_gzip_layer_is_refused(root: Path) -> None:
    data = gzip.compress(layer(F("a", b"x" * 5000)))
    with pytest.raises(ImageLoadError, match="invalid layer tar"):
        apply(root, data[: len(data) // 2])


def test_directory_replaces_lower_symlink_to_directory(root: Path, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir(mode=0o700)
    apply(root, layer(S("d", str(host))))
    apply(root, layer(D("d", 0o755), F("d/x", b"x")))
    assert not (root / "d").is_symlink()
    assert (root / "d/x").read_bytes() == b"x"
    assert os.stat(host).st_mode & 0o777 == 0o700
