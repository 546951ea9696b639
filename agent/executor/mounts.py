"""A container's user mounts in its OCI spec: bind, volume and tmpfs entries, in a safe order,
with each destination resolved inside the container's root first.

agent.executor.spec calls oci_mount()/ordered() while building config.json; the engine calls
resolve_in_root() (through shoal.engine.container_mounts) before it builds the Mount list.

Why resolve: a destination such as /data/x where the image made /data a symlink to /etc (or to
../../../etc) means the container's /etc/x, never the host's. The resolution is done with
the same walk as agent.executor.rootfs (fd by fd, O_NOFOLLOW, links resolved against the root),
so the path handed to runc holds no symlink at all; runc's own in-root resolution (securejoin)
is the second line.
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from agent.executor.spec import Mount

# Docker's options for a --tmpfs / --mount type=tmpfs before the user's (moby oci_linux.go).
TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev")
_OPPOSITES = {
    "exec": "noexec", "suid": "nosuid", "dev": "nodev", "rw": "ro", "atime": "noatime",
    "diratime": "nodiratime", "async": "sync", "nomand": "mand", "norelatime": "relatime",
    "nostrictatime": "strictatime",
}  # fmt: skip
_OPPOSITES.update({v: k for k, v in list(_OPPOSITES.items())})


class MountTargetError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def resolve_in_root(root: Path, destination: str) -> str:
    """`destination` as the kernel would see it inside `root`, symlinks resolved inside the
    root (a `..` or an absolute link never climbs out, a dangling link is followed too).
    Components that do not exist yet are kept (runc creates them inside the root). The walk
    goes through directory fds with O_NOFOLLOW, as agent.executor.rootfs does."""
    pending = [c for c in posixpath.normpath("/" + destination).split("/") if c]
    resolved: list[str] = []
    links = 0
    current = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while pending:
            name = pending.pop(0)
            if name == ".":
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                os.close(current)
                current = _open_dirs(root, resolved)
                continue
            try:
                info = os.stat(name, dir_fd=current, follow_symlinks=False)
            except FileNotFoundError:
                # Not there yet: the rest is created by runc, as plain directories.
                resolved.append(name)
                rest = posixpath.normpath("/" + "/".join(resolved + pending))
                return rest
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > 40:
                    raise MountTargetError(f"cannot resolve mount destination {destination} in the container: "
                                           f"{os.strerror(errno.ELOOP)}")
                target = os.readlink(name, dir_fd=current)
                if target.startswith("/"):
                    resolved = []
                    os.close(current)
                    current = _open_dirs(root, resolved)
                pending = [p for p in target.split("/") if p] + pending
                continue
            resolved.append(name)
            if pending:
                if not stat.S_ISDIR(info.st_mode):
                    raise MountTargetError(f"cannot mount on {destination}: /{'/'.join(resolved)} is not a directory "
                                           "in the container")
                nxt = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=current)
                os.close(current)
                current = nxt
        return "/" + "/".join(resolved)
    finally:
        os.close(current)


def _open_dirs(root: Path, components: list[str]) -> int:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    for name in components:
        try:
            nxt = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """moby's MergeTmpfsOptions: a later flag replaces an earlier one or its opposite, a later
    key=value its key; order of first appearance kept."""
    merged: list[str] = []
    for option in options:
        key = option.split("=", 1)[0] if "=" in option else None
        if key is not None:
            merged = [o for o in merged if not o.startswith(key + "=")]
        else:
            merged = [o for o in merged if o != option and o != _OPPOSITES.get(option)]
        merged.append(option)
    return merged


def oci_mount(mount: Mount) -> dict:
    """The config.json entry of one user mount (spec.Mount with kind bind or tmpfs)."""
    if not mount.destination.startswith("/"):
        raise ValueError(f"mount destination {mount.destination!r} must be an absolute path")
    if mount.kind == "tmpfs":
        options = merge_tmpfs_options(list(TMPFS_DEFAULTS) + ["rprivate"] + list(mount.options))
        if mount.readonly:
            options = merge_tmpfs_options(options + ["ro"])
        return {"destination": mount.destination, "type": "tmpfs", "source": "tmpfs", "options": options}
    if mount.kind != "bind":
        raise ValueError(f"mount type {mount.kind!r} is not one runc is given by shoal")
    if not mount.source.startswith("/"):
        raise ValueError(f"mount source {mount.source!r} must be an absolute path")
    propagation = next((o for o in mount.options if o in ("private", "rprivate", "slave", "rslave", "shared",
                                                          "rshared")), "rprivate")
    options = ["rbind", propagation, "ro" if mount.readonly else "rw"]
    return {"destination": mount.destination, "type": "bind", "source": mount.source, "options": options}


def _depth(entry: dict) -> int:
    return len([c for c in entry["destination"].split("/") if c])


def ordered(defaults: list[dict], entries: list[dict]) -> list[dict]:
    """The mounts list: runtime defaults first (/proc, /dev...), then the others by depth so a
    parent is mounted before what goes inside it (/etc before /etc/hosts). Of two entries with
    one destination the later wins (a user's /etc/hosts over shoal's, a user's /dev/shm over
    the default)."""
    last: dict[str, int] = {}
    for i, entry in enumerate(entries):
        last[posixpath.normpath(entry["destination"])] = i
    kept = [e for i, e in enumerate(entries) if last[posixpath.normpath(e["destination"])] == i]
    kept.sort(key=_depth)  # stable: equal depths keep their order
    taken = set(last)
    return [d for d in defaults if d["destination"] not in taken] + kept
