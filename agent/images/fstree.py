"""Whole-tree file work on an image's rootfs that stays safe however deep the tree is: removal
and size, by loops (never recursion) and without following symlinks.

Used by agent.images.unpack (whiteouts, replaced entries) and agent.images.store (cleanup).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path | str) -> None:
    """`rm -rf path` without recursion and without following symlinks.

    An image can hold a tree 2,000 directories deep (names up to PATH_MAX, deeper still through
    in-root symlinks); Python 3.11's shutil.rmtree and os.walk recurse once per level and stop
    with RecursionError there, leaving the tree behind. This walks down by one directory fd and
    back up through "..", so depth costs neither stack nor file descriptors, and paths longer
    than PATH_MAX are fine. Raises OSError; a missing path is not an error.
    """
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
    except FileNotFoundError:
        return
    fd = os.open(path, _DIR_FLAGS)
    try:
        names: list[str] = []  # from `path` down to fd's directory
        pending = [_unlink_files(fd)]  # per level: subdirectories still to empty
        while True:
            if pending[-1]:
                name = pending[-1].pop()
                below = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = below
                names.append(name)
                pending.append(_unlink_files(fd))
                continue
            pending.pop()
            if not names:
                break
            above = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = above
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _unlink_files(dir_fd: int) -> list[str]:
    """Unlinks every non-directory in a directory; returns the names of its subdirectories."""
    with os.scandir(dir_fd) as entries:
        children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in children:
        if not is_dir:
            os.unlink(name, dir_fd=dir_fd)
    return [name for name, is_dir in children if is_dir]


def rootfs_size(root: Path) -> int:
    """Bytes of regular files under `root`, each inode counted once (hard links share one).
    A loop over a stack, not os.walk: 3.11's os.walk recurses once per directory level."""
    seen: set[tuple[int, int]] = set()
    total = 0
    todo = [str(root)]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    todo.append(entry.path)
                elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total
