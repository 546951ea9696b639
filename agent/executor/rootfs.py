"""Reads small files inside a container's root filesystem without ever leaving that root.
Used by shoal.engine.helpers (passwd/group for --user); blocking, so callers run it in a thread.

The rootfs belongs to the container (or to whoever built the image): any path in it may be a
symlink to the host's /etc/shadow, a `..` climb, a FIFO that blocks a reader forever, a device
or a file of many gigabytes. Paths are resolved as if the root were `/` (openat2 with
RESOLVE_IN_ROOT, or the same walk done here component by component on kernels before 5.6),
opened with O_PATH first so nothing but a regular file is ever really opened, and read with a
size cap.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

MAX_FILE_BYTES = 1 << 20  # passwd and group of real images are a few KiB
MAX_SYMLINKS = 40  # the kernel's own limit (ELOOP)

_OPENAT2_RETRIES = 16
_SYS_OPENAT2 = 437  # the same number on every architecture (unified syscall table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class RootfsReadError(Exception):
    """A file inside the root exists but cannot be read safely; message names the path only
    as seen inside the container (never a host path)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_missing = False


def _openat2_in_root(root_fd: int, path: str) -> int:
    """An O_PATH fd of path resolved inside root_fd; raises OSError (ENOSYS when the kernel lacks openat2)."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    err = errno.EAGAIN
    # EAGAIN: a rename inside the root raced the lookup of a `..`; retried a bounded number of
    # times, so a container renaming in a loop cannot keep a daemon thread spinning.
    for _ in range(_OPENAT2_RETRIES):
        fd = _libc.syscall(
            ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root_fd), ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)),
        )  # fmt: skip
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), path)


def _walk_in_root(root_fd: int, path: str) -> int:
    """The same resolution as RESOLVE_IN_ROOT done by hand: every component opened with
    O_NOFOLLOW, symlinks read and resolved against the root, `..` never above the root."""
    resolved: list[str] = []  # components below the root, none of them a symlink
    pending = [p for p in path.split("/") if p]
    links = 0
    current = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        while pending:
            name = pending.pop(0)
            if name == ".":
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                    os.close(current)
                    current = _open_components(root_fd, resolved)
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                target = os.readlink(name, dir_fd=current)
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    resolved = []
                    os.close(current)
                    current = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
                pending = [p for p in target.split("/") if p] + pending
                continue
            if pending and not stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            resolved.append(name)
            os.close(current)
            current = fd
        result, current = current, -1
        return result
    finally:
        if current >= 0:
            os.close(current)


def _open_components(root_fd: int, components: list[str]) -> int:
    fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    for name in components:
        try:
            nxt = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def open_in_root(root: Path, path: str, use_openat2: bool = True) -> int:
    """An O_PATH fd of `path` (as seen inside the container) resolved inside `root`."""
    global _openat2_missing
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if use_openat2 and not _openat2_missing:
            try:
                return _openat2_in_root(root_fd, path)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                _openat2_missing = True  # kernel before 5.6: walk by hand from now on
        return _walk_in_root(root_fd, path)
    finally:
        os.close(root_fd)


def read_in_root(root: Path, path: str, limit: int = MAX_FILE_BYTES, use_openat2: bool = True) -> bytes | None:
    """The content of the regular file `path` inside `root`; None when it does not exist.

    Raises RootfsReadError when the file is not a regular file, is larger than limit, or the
    path cannot be resolved (a symlink loop)."""
    try:
        path_fd = open_in_root(root, path, use_openat2)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # a component is a file: the path does not exist, as for open(2)
    except OSError as exc:
        raise RootfsReadError(f"cannot open {path} in the container: {os.strerror(exc.errno or 0)}") from None
    try:
        info = os.fstat(path_fd)
        if not stat.S_ISREG(info.st_mode):
            raise RootfsReadError(f"{path} in the container is not a regular file")
        if info.st_size > limit:
            raise RootfsReadError(f"{path} in the container is larger than {limit} bytes")
        # Reopen the checked inode itself (not the path again, which the container may swap).
        fd = os.open(f"/proc/self/fd/{path_fd}", _READ_FLAGS)
    finally:
        os.close(path_fd)
    try:
        again = os.fstat(fd)
        if (again.st_dev, again.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(again.st_mode):
            raise RootfsReadError(f"{path} in the container changed while it was read")
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:  # it grew after fstat
                raise RootfsReadError(f"{path} in the container is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
