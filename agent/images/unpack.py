"""Apply image layer tarballs onto a root filesystem directory, safely and with whiteouts.

Used by agent.images.store when loading an image; knows nothing about manifests or tags.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from common.errdefs import InvalidParameter

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_MAX_SYMLINK_HOPS = 40
_CHUNK = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_MAGIC = b"BZh"


class ImageError(InvalidParameter):
    """Base of every image error; `message` is what the user sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageLoadError(ImageError):
    """A tarball or layer that cannot be loaded; the message names what is wrong."""


class HashingReader:
    """A read-only stream that hashes (sha256) and counts every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        """Read to the end so the digest covers trailing padding the tar reader skipped."""
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _PeekReader:
    """Replays the first bytes read for magic sniffing, so non-seekable streams work."""

    def __init__(self, raw: BinaryIO, head: bytes) -> None:
        self._raw = raw
        self._head = head

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            if len(data) < size:
                data += self._raw.read(size - len(data))
            return data
        return self._raw.read(size)


def _read_exact(raw: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = raw.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def compression_of(head: bytes) -> str:
    """Name the compression from a layer's first bytes: gzip, zstd, xz, bzip2 or none."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    if head.startswith(_BZIP2_MAGIC):
        return "bzip2"
    return "none"


def decompressed(stream: BinaryIO, label: str) -> BinaryIO:
    """Wrap a possibly compressed layer stream so reads yield the plain tar bytes."""
    head = _read_exact(stream, 6)
    raw = _PeekReader(stream, head)
    kind = compression_of(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[arg-type]
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[arg-type]
    if kind == "zstd":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise ImageLoadError(
                f"{label}: zstd-compressed layers are not supported (python zstandard is not installed)"
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(raw)  # type: ignore[no-any-return]
    return raw  # type: ignore[return-value]


def normalize_member(name: str, label: str) -> list[str]:
    """Split a tar member name into components inside the root; refuse absolute or escaping names."""
    if name.startswith("/"):
        raise ImageLoadError(f"{label}: entry {name!r} is an absolute path")
    if "\x00" in name:
        raise ImageLoadError(f"{label}: entry {name!r} contains a NUL byte")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise ImageLoadError(f"{label}: entry {name!r} escapes the root filesystem")
            parts.pop()
            continue
        parts.append(comp)
    return parts


def resolve_dir(root: Path, parts: list[str], name: str, label: str, create: bool) -> list[str] | None:
    """Resolve directory components inside `root`, following in-root relative symlinks only.

    A symlink that is absolute or climbs above the root would lead the write outside the rootfs
    (the host's view of it), so it is refused. Missing directories are made when `create`, else
    None is returned.
    """
    resolved: list[str] = []
    pending = list(parts)
    hops = 0
    while pending:
        comp = pending.pop(0)
        if comp in ("", "."):
            continue
        if comp == "..":
            if not resolved:
                raise ImageLoadError(f"{label}: entry {name!r} escapes the root filesystem through a symlink")
            resolved.pop()
            continue
        path = root.joinpath(*resolved, comp)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(path, 0o755)
            resolved.append(comp)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            target = os.readlink(path)
            if hops > _MAX_SYMLINK_HOPS:
                raise ImageLoadError(f"{label}: entry {name!r}: too many levels of symbolic links")
            if target.startswith("/"):
                raise ImageLoadError(
                    f"{label}: entry {name!r} escapes the root filesystem through symlink "
                    f"{'/'.join(resolved + [comp])} -> {target}"
                )
            pending = target.split("/") + pending
            continue
        if not stat.S_ISDIR(st.st_mode):
            if not create:
                return None
            raise ImageLoadError(f"{label}: entry {name!r}: {'/'.join(resolved + [comp])} is not a directory")
        resolved.append(comp)
    return resolved


def _remove(path: Path) -> None:
    """Remove a file, symlink or whole directory tree without following symlinks."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


@dataclass(slots=True)
class _LayerState:
    root: Path
    label: str
    is_root: bool
    written: set[str] = field(default_factory=set)
    ancestors: set[str] = field(default_factory=set)  # parents of written paths, for opaque dirs
    dirs: list[tuple[Path, int, float]] = field(default_factory=list)

    def wrote(self, rel: str) -> None:
        self.written.add(rel)
        head = rel
        while "/" in head:
            head = head.rsplit("/", 1)[0]
            if head in self.ancestors:
                break
            self.ancestors.add(head)

    def keeps(self, rel: str) -> bool:
        """True if this layer wrote `rel` or something beneath it (opaque dirs keep those)."""
        return rel in self.written or rel in self.ancestors


def apply_layer(root: Path, stream: BinaryIO, label: str = "layer") -> str:
    """Apply one layer tar (plain, gzip, xz, bzip2; zstd if available) onto `root`.

    Returns the layer's diff_id ("sha256:" of the uncompressed tar). Raises ImageLoadError
    naming the entry for anything unsafe or malformed; the caller discards `root` then.
    """
    root = Path(os.path.realpath(root))
    plain = HashingReader(decompressed(stream, label))
    state = _LayerState(root=root, label=label, is_root=os.geteuid() == 0)
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                try:
                    _apply_member(state, tar, member)
                except OSError as e:
                    raise ImageLoadError(f"{label}: entry {member.name!r}: {e.strerror or e}") from e
        plain.drain()
    except ImageLoadError:
        raise
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, ValueError) as e:
        raise ImageLoadError(f"{label}: invalid layer tar: {e}") from e
    # Directory modes and mtimes last: adding entries would bump mtimes, and a read-only
    # mode would stop later entries from being written by a non-root unpacker.
    for path, mode, mtime in reversed(state.dirs):
        # A later entry of this layer may have replaced the directory or one of its parents
        # with a symlink; chmod follows links, so touch only what is still a real directory.
        if os.path.realpath(path) == str(path) and path.is_dir():
            os.chmod(path, mode)
            os.utime(path, (mtime, mtime), follow_symlinks=False)
    return plain.digest()


def _apply_member(state: _LayerState, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    label, root = state.label, state.root
    parts = normalize_member(member.name, label)
    if not parts:
        if member.isdir():  # "./": the root directory itself
            state.dirs.append((root, stat.S_IMODE(member.mode) or 0o755, float(member.mtime)))
            return
        raise ImageLoadError(f"{label}: entry {member.name!r} is not a directory but names the root")
    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX):
        _apply_whiteout(state, parts, member.name)
        return
    parent = resolve_dir(root, parts[:-1], member.name, label, create=True)
    assert parent is not None
    rel = "/".join(parent + [base])
    path = root.joinpath(*parent, base)
    if member.isdir():
        _make_dir(state, path, member)
    elif member.isreg():
        _remove(path)
        _write_file(state, path, tar, member)
    elif member.issym():
        _remove(path)
        os.symlink(member.linkname, path)
        _own(state, path, member)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    elif member.islnk():
        target = _hardlink_target(state, member)
        if target != path:
            _remove(path)
            os.link(target, path, follow_symlinks=False)
    elif member.isfifo():
        _remove(path)
        os.mkfifo(path, 0o600)
        _own(state, path, member)
        os.chmod(path, stat.S_IMODE(member.mode))
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    else:
        # Device nodes: the runtime gives containers their own /dev, so they are not needed.
        return
    state.wrote(rel)


def _make_dir(state: _LayerState, path: Path, member: tarfile.TarInfo) -> None:
    # An existing directory keeps its lower-layer contents; anything else is replaced.
    if not (path.is_dir() and not path.is_symlink()):
        _remove(path)
        os.mkdir(path, 0o755)
    _own(state, path, member)
    state.dirs.append((path, stat.S_IMODE(member.mode), float(member.mtime)))


def _write_file(state: _LayerState, path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    # O_EXCL|O_NOFOLLOW: the old entry was removed, so this never writes through a link.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        src = tar.extractfile(member)
        if src is not None:
            while chunk := src.read(_CHUNK):
                _write_all(fd, chunk)
        if state.is_root:
            os.fchown(fd, member.uid, member.gid)  # before chmod: chown clears setuid bits
        os.fchmod(fd, stat.S_IMODE(member.mode))
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _own(state: _LayerState, path: Path, member: tarfile.TarInfo) -> None:
    if state.is_root:
        os.chown(path, member.uid, member.gid, follow_symlinks=False)


def _hardlink_target(state: _LayerState, member: tarfile.TarInfo) -> Path:
    label, root = state.label, state.root
    try:
        parts = normalize_member(member.linkname, label)
    except ImageLoadError:
        raise ImageLoadError(
            f"{label}: hard link {member.name!r} -> {member.linkname!r} escapes the root filesystem"
        ) from None
    if not parts:
        raise ImageLoadError(f"{label}: hard link {member.name!r} points at the root directory")
    parent = resolve_dir(root, parts[:-1], member.name, label, create=False)
    target = root.joinpath(*(parent or []), parts[-1])
    try:
        st = os.lstat(target) if parent is not None else None
    except FileNotFoundError:
        st = None
    if st is None:
        raise ImageLoadError(f"{label}: hard link {member.name!r} -> {member.linkname!r}: target not found")
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(f"{label}: hard link {member.name!r} -> {member.linkname!r}: target is a directory")
    return target


def _apply_whiteout(state: _LayerState, parts: list[str], name: str) -> None:
    base = parts[-1]
    parent = resolve_dir(state.root, parts[:-1], name, state.label, create=False)
    if parent is None:
        return  # nothing below to hide
    if base == OPAQUE_MARKER:
        _make_opaque(state, parent)
        return
    hidden = base[len(WHITEOUT_PREFIX):]
    if hidden.startswith(WHITEOUT_PREFIX) or hidden in ("", ".", ".."):
        return  # other AUFS metadata (.wh..wh.plnk, ...) carries nothing for us
    rel = "/".join(parent + [hidden])
    if rel in state.written:
        return  # a whiteout hides lower layers only, never its own layer's entries
    _remove(state.root.joinpath(*parent, hidden))


def _make_opaque(state: _LayerState, parent: list[str]) -> None:
    """Remove what lower layers put under a directory, keeping this layer's own entries."""
    directory = state.root.joinpath(*parent)
    for entry in os.scandir(directory):
        rel = "/".join(parent + [entry.name])
        if not state.keeps(rel):
            _remove(Path(entry.path))
        elif entry.is_dir(follow_symlinks=False):
            # Kept by this layer, but what lower layers put inside it is hidden as well.
            _make_opaque(state, parent + [entry.name])


def rootfs_size(root: Path) -> int:
    """Bytes of regular files under `root`, each inode counted once (hard links share one)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
