"""Durable files: the one atomic-write helper every part of shoal uses.

temp file in the same directory, write all, fsync, rename over the target, fsync the directory:
after a SIGKILL or a power cut the path holds either the old or the new content, never a mix.
A caller that needs less after a power cut says so (sync="file" or "none": fewer fsyncs).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

TEMP_PREFIX = ".tmp-"


Sync = Literal["all", "file", "none"]


def write_atomic(path: Path | str, data: bytes | str, mode: int = 0o600, *, sync: Sync = "all") -> None:
    """Replaces `path` with `data` atomically and durably. On any failure (ENOSPC included)
    the temp file is removed and the old content stays; the error is raised.

    A SIGKILL at any moment leaves the old or the new content whatever `sync` says. After a power cut:
    "all" (file and directory fsync'd): the new content. "file" (no directory fsync): the old or the new
    content, each whole, for a file replacing one already on disk whose old content is still valid.
    "none" (no fsync): the file may be missing or empty, for files rebuilt before they are read again."""
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{name}.{os.getpid()}")
    fd = _open_temp(tmp, directory, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync != "none":
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync == "all":
        fsync_dir(directory or ".")


def _open_temp(tmp: str, directory: str, mode: int) -> int:
    """The temp file, opened for writing. The directory is made only when the open finds it missing:
    it nearly always exists, and asking first (mkdir, then a stat for EEXIST) cost two system calls a write."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        return os.open(tmp, flags, mode)
    except (FileNotFoundError, NotADirectoryError):
        if not directory:
            raise
    # Path.mkdir raises what it always did here (FileExistsError for a file in the way...).
    Path(directory).mkdir(parents=True, exist_ok=True)
    return os.open(tmp, flags, mode)


def fsync_dir(directory: Path | str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(directory: Path | str) -> int:
    """Deletes temp files a crash left in `directory` (ours only: TEMP_PREFIX); returns how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
