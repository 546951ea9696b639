"""`docker cp`: stat, tar out and tar in of paths inside a container's root, never leaving it.
Blocking; shoal.api.routes_archive runs it in a thread with the root the engine gives.

The root is the container's own view (/proc/PID/root of a running container: its volumes,
binds and tmpfs included) or its root file system when it does not run. The request's path
is resolved with agent.executor.rootfs (openat2 RESOLVE_IN_ROOT: symlinks resolved inside the
root). Files are then read and written only through directory fds, one component at a time
with O_NOFOLLOW, so a symlink the container swaps in cannot send a read or a write to the
host. An archive member that is absolute, climbs with `..` or goes through a symlink is
refused before anything is written.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from agent.executor.rootfs import open_in_root
from common.errdefs import InvalidParameter, NotFound

# Go's os.FileMode bits: the docker CLI decodes the stat header's mode as one.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
STAT_HEADER = "X-Docker-Container-Path-Stat"
_BLOCK = 1 << 20


class ArchiveError(InvalidParameter):
    """A refused archive member or extraction point (400)."""


def go_mode(mode: int) -> int:
    """A unix st_mode as Go's os.FileMode (what the docker CLI reads)."""
    out = mode & 0o777
    kind = stat.S_IFMT(mode)
    out |= {stat.S_IFDIR: _GO_DIR, stat.S_IFLNK: _GO_SYMLINK, stat.S_IFIFO: _GO_PIPE, stat.S_IFSOCK: _GO_SOCKET,
            stat.S_IFBLK: _GO_DEVICE, stat.S_IFCHR: _GO_DEVICE | _GO_CHARDEV}.get(kind, 0)
    if mode & stat.S_ISUID:
        out |= _GO_SETUID
    if mode & stat.S_ISGID:
        out |= _GO_SETGID
    if mode & stat.S_ISVTX:
        out |= _GO_STICKY
    return out


@dataclass(slots=True)
class PathStat:
    name: str
    size: int
    mode: int  # Go FileMode
    mtime: str
    link_target: str

    def header(self) -> str:
        data = {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}
        return base64.b64encode(json.dumps(data).encode()).decode()


def clean_path(path: str) -> str:
    """A container path made absolute and clean as Go's path.Clean does ("//a/./b/" is "/a/b";
    Python's normpath would keep the two leading slashes POSIX allows)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _split(path: str) -> tuple[str, str]:
    """(parent, last component) of a container path; ("/", "") for the root itself."""
    cleaned = clean_path(path)
    if cleaned == "/":
        return "/", ""
    return posixpath.dirname(cleaned), posixpath.basename(cleaned)


def _not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {container}")


def _open_parent(root: Path, path: str, container: str) -> tuple[int, str]:
    parent, name = _split(path)
    try:
        fd = open_in_root(root, parent)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, container) from None
    except OSError as exc:
        raise InvalidParameter(f"cannot resolve {path} in container {container}: {os.strerror(exc.errno or 0)}") from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_found(path, container)
    return fd, name


def stat_path(root: Path, path: str, container: str) -> PathStat:
    """HEAD /archive: the last component not followed (a symlink is reported as one)."""
    parent_fd, name = _open_parent(root, path, container)
    try:
        try:
            info = os.stat(name or ".", dir_fd=parent_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(path, container) from None
        link_target = ""
        if stat.S_ISLNK(info.st_mode):  # as seen inside the container (lexically resolved)
            link_target = clean_path(posixpath.join(posixpath.dirname(clean_path(path)),
                                                    os.readlink(name, dir_fd=parent_fd)))
        mtime = _rfc3339_nano(info.st_mtime_ns)
        display = name or "/"
        return PathStat(display, info.st_size, go_mode(info.st_mode), mtime, link_target)
    finally:
        os.close(parent_fd)


def _rfc3339_nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: nanoseconds with trailing zeros trimmed."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def _tarinfo(name: str, info: os.stat_result) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.mode = stat.S_IMODE(info.st_mode)
    member.uid, member.gid = info.st_uid, info.st_gid
    member.mtime = int(info.st_mtime)
    return member


def _add_tree(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str, hardlinks: dict,
              skip_devs: frozenset[int] = frozenset()) -> None:
    """Adds dir_fd/name (not followed) under arcname; directories recursively through fds. On
    a file system of skip_devs (a running container's /proc, /sys) only directories are kept,
    empty, as they are in the container's image."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    kind = stat.S_IFMT(info.st_mode)
    if info.st_dev in skip_devs and kind != stat.S_IFDIR:
        return
    if kind == stat.S_IFLNK:
        member = _tarinfo(arcname, info)
        member.type, member.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
        tar.addfile(member)
    elif kind == stat.S_IFDIR:
        member = _tarinfo(arcname, info)
        member.type = tarfile.DIRTYPE
        tar.addfile(member)
        if info.st_dev in skip_devs:
            return
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            for child in sorted(os.listdir(fd)):
                _add_tree(tar, fd, child, _join(arcname, child), hardlinks, skip_devs)
        finally:
            os.close(fd)
    elif kind == stat.S_IFREG:
        key = (info.st_dev, info.st_ino)
        member = _tarinfo(arcname, info)
        if info.st_nlink > 1 and key in hardlinks:
            member.type, member.linkname = tarfile.LNKTYPE, hardlinks[key]
            tar.addfile(member)
            return
        hardlinks[key] = arcname
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            again = os.fstat(fd)
            if (again.st_dev, again.st_ino) != key:  # swapped between stat and open
                raise InvalidParameter(f"{arcname} changed while it was archived")
            member.size = again.st_size
            with os.fdopen(os.dup(fd), "rb") as handle:
                tar.addfile(member, _Bounded(handle, again.st_size))
        finally:
            os.close(fd)
    elif kind == stat.S_IFIFO:
        member = _tarinfo(arcname, info)
        member.type = tarfile.FIFOTYPE
        tar.addfile(member)
    # devices and sockets are left out: nothing a copy out needs


def _join(arcname: str, child: str) -> str:
    if arcname == ".":
        return child
    return f"/{child}" if arcname == "/" else f"{arcname}/{child}"


class _Bounded:
    """A file read for exactly `size` bytes (zero-padded if it shrank), so a file the container
    grows while it is archived cannot corrupt the tar stream."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle, self._left = handle, size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        data = self._handle.read(n)
        if len(data) < n:
            data += b"\0" * (n - len(data))
        self._left -= len(data)
        return data


def archive_path(root: Path, path: str, container: str, out: IO[bytes]) -> PathStat:
    """GET /archive: writes the tar of `path` to out (names rebased on the path's base name, a
    trailing `/.` meaning the directory's content), returns its stat."""
    info, skip = stat_for_archive(root, path, container)
    parent_fd, name = _open_parent(root, path, container)
    try:
        # Docker's rebasing: "/." gives "./x" names, "/" itself "/x" (the CLI rebases on "/").
        base = "." if path.endswith("/.") else (name or "/")
        # 1 MiB blocks: each write of the stream crosses to the event loop (routes_archive).
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_BLOCK) as tar:
            tar.copybufsize = _BLOCK
            _add_tree(tar, parent_fd, name or ".", base, {}, skip)
    finally:
        os.close(parent_fd)
    return info


def stat_for_archive(root: Path, path: str, container: str) -> tuple[PathStat, frozenset[int]]:
    """stat_path, and the kernel file systems to leave out; refuses a path on one of them (so
    the refusal comes before the response's headers)."""
    info = stat_path(root, path, container)
    skip = virtual_devs(root)
    parent_fd, name = _open_parent(root, path, container)
    try:
        if skip and os.stat(name or ".", dir_fd=parent_fd, follow_symlinks=False).st_dev in skip:
            raise InvalidParameter(f"{path} in container {container} is on a kernel file system (proc, sysfs): "
                                   "shoal does not copy from it")
    finally:
        os.close(parent_fd)
    return info, skip


_VIRTUAL = ("/proc", "/sys", "/dev/pts", "/dev/mqueue")


def virtual_devs(root: Path) -> frozenset[int]:
    """Devices of the kernel file systems mounted in the root (a running container's /proc,
    /sys...); empty for a root file system on disk, where those are plain directories."""
    root_dev = os.stat(root).st_dev
    devs = set()
    for path in _VIRTUAL:
        try:
            fd = open_in_root(root, path)
        except OSError:
            continue
        try:
            dev = os.fstat(fd).st_dev
        finally:
            os.close(fd)
        if dev != root_dev:
            devs.add(dev)
    return frozenset(devs)


# ---- extraction ------------------------------------------------------------------------

def _member_parts(name: str) -> list[str]:
    if name.startswith("/"):
        raise ArchiveError(f'invalid tar member "{name}": absolute paths are refused')
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f'invalid tar member "{name}": it climbs out of the extraction directory with ".."')
    return parts


def check_members(members: list[tarfile.TarInfo]) -> None:
    """Refuses the whole archive before anything is written: absolute or `..` names, hard links
    the same way, and members whose path goes through a symlink of the same archive."""
    links: set[tuple[str, ...]] = set()
    for member in members:
        parts = tuple(_member_parts(member.name))
        for i in range(1, len(parts)):
            if parts[:i] in links:
                raise ArchiveError(f'invalid tar member "{member.name}": its path goes through the symbolic link '
                                   f'"{"/".join(parts[:i])}"')
        if member.islnk():
            _member_parts(member.linkname)
        if member.issym():
            links.add(parts)
        elif member.isdev():
            raise ArchiveError(f'invalid tar member "{member.name}": device files are refused')


def _walk_dirs(base_fd: int, parts: list[str], member: str, create: bool) -> int:
    """An O_PATH fd of base/parts, each component a real directory (never a symlink); missing
    ones made (0755) when create."""
    fd = os.dup(base_fd)
    for part in parts:
        try:
            nxt = os.open(part, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                os.close(fd)
                raise
            os.mkdir(part, 0o755, dir_fd=fd)
            nxt = os.open(part, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=fd)
        except NotADirectoryError:
            try:
                link = stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
            finally:
                os.close(fd)
            kind = "a symbolic link" if link else "not a directory"
            raise ArchiveError(f'invalid tar member "{member}": "{part}" in its path is {kind} in the container') from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = nxt
    return fd


def _remove_existing(dir_fd: int, name: str) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: never follows a symlink out
    else:
        os.unlink(name, dir_fd=dir_fd)


def _extract_one(base_fd: int, member: tarfile.TarInfo, tar: tarfile.TarFile, no_overwrite_dir_non_dir: bool,
                 copy_uid_gid: bool) -> None:
    parts = _member_parts(member.name)
    if not parts:  # "." itself: the extraction directory
        return
    parent_fd = _walk_dirs(base_fd, parts[:-1], member.name, create=True)
    name = parts[-1]
    try:
        try:
            existing = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            is_dir = stat.S_ISDIR(existing.st_mode)
            if member.isdir() and is_dir:
                pass
            elif no_overwrite_dir_non_dir and is_dir and not member.isdir():
                raise ArchiveError(f'cannot overwrite directory "{member.name}" with non-directory')
            elif no_overwrite_dir_non_dir and not is_dir and member.isdir():
                raise ArchiveError(f'cannot overwrite non-directory "{member.name}" with directory')
            else:
                _remove_existing(parent_fd, name)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(name, 0o700, dir_fd=parent_fd)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent_fd)
        elif member.islnk():
            link_parts = _member_parts(member.linkname)
            source_fd = _walk_dirs(base_fd, link_parts[:-1], member.name, create=False)
            try:
                os.link(link_parts[-1], name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
            finally:
                os.close(source_fd)
        elif member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent_fd)
        elif member.isreg():
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent_fd)
            with os.fdopen(fd, "wb") as handle:
                source = tar.extractfile(member)
                if source is not None:
                    shutil.copyfileobj(source, handle, 1 << 20)
        else:
            raise ArchiveError(f'invalid tar member "{member.name}": unsupported type')
        uid, gid = (member.uid, member.gid) if copy_uid_gid else (0, 0)
        os.chown(name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        if not member.issym() and not member.islnk():
            os.chmod(name, member.mode & 0o7777, dir_fd=parent_fd)
            os.utime(name, (member.mtime, member.mtime), dir_fd=parent_fd, follow_symlinks=False)
    finally:
        os.close(parent_fd)


def extract_to_dir(root: Path, path: str, container: str, archive: IO[bytes],
                   no_overwrite_dir_non_dir: bool = False, copy_uid_gid: bool = False,
                   read_only: str = "") -> None:
    """PUT /archive: `path` (followed, symlinks inside the root) must be a directory; the tar is
    read twice (archive must be seekable): checked whole, then extracted under it."""
    try:
        target = open_in_root(root, clean_path(path))
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, container) from None
    except OSError as exc:
        raise InvalidParameter(f"cannot resolve {path} in container {container}: {os.strerror(exc.errno or 0)}") from None
    try:
        if not stat.S_ISDIR(os.fstat(target).st_mode):
            raise ArchiveError("extraction point is not a directory")
        if read_only:
            raise ArchiveError(read_only)
        try:
            with tarfile.open(fileobj=archive, mode="r:*") as tar:
                members = tar.getmembers()
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"invalid tar archive: {exc}") from None
        check_members(members)
        archive.seek(0)
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            for member in tar:
                try:
                    _extract_one(target, member, tar, no_overwrite_dir_non_dir, copy_uid_gid)
                except OSError as exc:
                    if exc.errno == errno.EROFS:
                        raise ArchiveError("container rootfs is marked read-only") from None
                    raise InvalidParameter(f'cannot extract "{member.name}": {exc.strerror or exc}') from None
    finally:
        os.close(target)
