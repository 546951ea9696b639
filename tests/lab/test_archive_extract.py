"""`docker cp` extraction (agent.volumes.archive) into a directory standing for a container's
root: symlinks the "container" made never lead a write out, hostile members leave nothing
behind, noOverwriteDirNonDir and copyUIDGID as Docker applies them. Root needed (chown), no lab.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from agent.volumes import archive
from common.errdefs import InvalidParameter, NotFound

pytestmark = pytest.mark.lab


def tar_of(*members: tuple[str, str, bytes | str], uid: int = 0, gid: int = 0) -> io.BytesIO:
    """members: (name, kind "f"|"d"|"l"|"h", data or link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mode = uid, gid, 0o640 if kind == "f" else 0o755
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tar.addfile(info)
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
                tar.addfile(info)
            else:
                payload = data if isinstance(data, bytes) else data.encode()
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    buf.seek(0)
    return buf


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "tmp").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return rootfs


def test_extraction_through_a_container_symlink_to_an_absolute_path_stays_inside(root: Path, tmp_path: Path):
    # The container made /escape -> <the host path of "outside">: in its root that path does not exist.
    outside = tmp_path / "outside"
    os.symlink(str(outside), root / "escape")
    with pytest.raises(NotFound) as info:
        archive.extract_to_dir(root, "/escape", "c1", tar_of(("f", "f", "x")))
    assert info.value.message == "Could not find the file /escape in container c1"
    assert list(outside.iterdir()) == []


def test_extraction_through_a_climbing_symlink_lands_in_the_root(root: Path, tmp_path: Path):
    os.symlink("../../../../../../tmp", root / "up")
    archive.extract_to_dir(root, "/up", "c1", tar_of(("f", "f", "inside")))
    assert (root / "tmp" / "f").read_text() == "inside"
    assert list((tmp_path / "outside").iterdir()) == []


def test_member_whose_path_crosses_a_container_symlink_is_refused(root: Path, tmp_path: Path):
    os.symlink(str(tmp_path / "outside"), root / "tmp" / "link")
    with pytest.raises(InvalidParameter) as info:
        archive.extract_to_dir(root, "/tmp", "c1", tar_of(("link/pwned", "f", "x")))
    assert info.value.message == ('invalid tar member "link/pwned": "link" in its path is a symbolic link '
                                  "in the container")
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_member_replacing_a_container_symlink_replaces_the_link_not_its_target(root: Path, tmp_path: Path):
    target = tmp_path / "outside" / "victim"
    target.write_text("host file\n")
    os.symlink(str(target), root / "tmp" / "victim")
    archive.extract_to_dir(root, "/tmp", "c1", tar_of(("victim", "f", "new")))
    assert target.read_text() == "host file\n"
    assert (root / "tmp" / "victim").read_text() == "new" and not (root / "tmp" / "victim").is_symlink()


def test_hostile_archive_is_refused_before_anything_is_written(root: Path):
    with pytest.raises(InvalidParameter) as info:
        archive.extract_to_dir(root, "/tmp", "c1", tar_of(("first", "f", "x"), ("../../etc/evil", "f", "x")))
    assert info.value.message.startswith('invalid tar member "../../etc/evil"')
    assert list((root / "tmp").iterdir()) == []


def test_hard_link_member_links_inside_the_archive_only(root: Path):
    archive.extract_to_dir(root, "/tmp", "c1", tar_of(("a", "f", "data"), ("b", "h", "a")))
    assert os.stat(root / "tmp" / "a").st_ino == os.stat(root / "tmp" / "b").st_ino
    with pytest.raises(InvalidParameter):
        archive.extract_to_dir(root, "/tmp", "c1", tar_of(("c", "h", "../../etc/shadow")))


def test_extraction_point_that_is_a_file_is_refused_with_dockers_message(root: Path):
    (root / "tmp" / "file").write_text("x")
    with pytest.raises(InvalidParameter) as info:
        archive.extract_to_dir(root, "/tmp/file", "c1", tar_of(("f", "f", "x")))
    assert info.value.message == "extraction point is not a directory"


def test_no_overwrite_dir_non_dir_refuses_a_file_over_a_directory(root: Path):
    (root / "tmp" / "d").mkdir()
    with pytest.raises(InvalidParameter) as info:
        archive.extract_to_dir(root, "/tmp", "c1", tar_of(("d", "f", "x")), no_overwrite_dir_non_dir=True)
    assert info.value.message == 'cannot overwrite directory "d" with non-directory'
    archive.extract_to_dir(root, "/tmp", "c1", tar_of(("d", "f", "x")))  # allowed without the flag
    assert (root / "tmp" / "d").read_text() == "x"


def test_ownership_is_root_unless_copy_uid_gid(root: Path):
    archive.extract_to_dir(root, "/tmp", "c1", tar_of(("mine", "f", "x"), uid=1234, gid=5678))
    assert (os.stat(root / "tmp" / "mine").st_uid, os.stat(root / "tmp" / "mine").st_gid) == (0, 0)
    archive.extract_to_dir(root, "/tmp", "c1", tar_of(("kept", "f", "x"), uid=1234, gid=5678), copy_uid_gid=True)
    info = os.stat(root / "tmp" / "kept")
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (1234, 5678, 0o640)


def test_read_only_reason_refuses_the_copy_with_dockers_message(root: Path):
    with pytest.raises(InvalidParameter) as info:
        archive.extract_to_dir(root, "/tmp", "c1", tar_of(("f", "f", "x")), read_only="container rootfs is marked read-only")
    assert info.value.message == "container rootfs is marked read-only"
    assert list((root / "tmp").iterdir()) == []


def test_archive_out_of_a_symlink_path_is_the_link_itself(root: Path, tmp_path: Path):
    (tmp_path / "outside" / "secret").write_text("host secret")
    os.symlink(str(tmp_path / "outside"), root / "tmp" / "out")
    out = io.BytesIO()
    info = archive.archive_path(root, "/tmp/out", "c1", out)
    members = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getmembers()
    assert [(m.name, m.issym()) for m in members] == [("out", True)]
    assert info.link_target == str(tmp_path / "outside")
    with pytest.raises(NotFound):  # followed inside the root, the host directory does not exist there
        archive.archive_path(root, "/tmp/out/secret", "c1", io.BytesIO())
