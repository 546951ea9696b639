"""Apply image layer tarballs onto a root filesystem directory, safely and with whiteouts.

Used by agent.images.store when loading an image; knows nothing about manifests or tags.
"""
from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agent.images.fstree import remove_tree, rootfs_size
from common.errdefs import InvalidParameter, SystemError_

__all__ = ["ImageError", "ImageLoadError", "ImageTooLarge", "LoadLimits", "Budget", "apply_layer", "remove_tree",
           "rootfs_size"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_MAX_SYMLINK_HOPS = 40
_CHUNK = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_MAGIC = b"BZh"

DEFAULT_MAX_IMAGE_SIZE = 20 << 30  # 20 GiB: larger than any everyday image, smaller than a disk
DEFAULT_MAX_IMAGE_ENTRIES = 1_000_000  # entries over all layers of one load
MAX_PATH = 4096  # PATH_MAX: a longer name cannot be created anyway
MAX_SPECIAL_HEADER = 1 << 20  # pax / GNU long-name headers (Go's archive/tar has the same cap)
_SPECIAL_TYPES = frozenset({
    tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
})
_SHOWN_NAME = 200  # characters of an entry name quoted in a message


class ImageError(InvalidParameter):
    """Base of every image error; `message` is what the user sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageLoadError(ImageError):
    """A tarball or layer that cannot be loaded; the message names what is wrong."""


class ImageTooLarge(ImageLoadError):
    """A load that would put more on disk than the daemon's limits allow."""


def shown(name: str) -> str:
    """An entry name as quoted in messages: repr, cut so a 1 MB name does not make a 1 MB message."""
    if len(name) <= _SHOWN_NAME:
        return repr(name)
    return repr(name[:_SHOWN_NAME]) + f"... ({len(name)} characters)"


@dataclass(slots=True, frozen=True)
class LoadLimits:
    """What one load may put on disk: the daemon's --max-image-size and --max-image-entries."""

    max_bytes: int = DEFAULT_MAX_IMAGE_SIZE  # uncompressed layer bytes, all layers of the load
    max_entries: int = DEFAULT_MAX_IMAGE_ENTRIES  # tar entries, all layers and the outer tar
    max_json: int = 16 << 20  # manifest.json, configs, OCI index and manifests (read into memory)
    # Entry names, all layers: the unpacker remembers every name of a layer (whiteouts, opaque
    # directories), so a million 4 KB names would be gigabytes of memory, not of disk.
    max_name_bytes: int = 128 << 20


class Budget:
    """What is left of one load's LoadLimits. All layers of a load draw on the same budget,
    counted on the bytes really decompressed and written, whatever the headers claim."""

    def __init__(self, limits: LoadLimits | None = None) -> None:
        self.limits = limits or LoadLimits()
        self.decompressed = 0
        self.written = 0
        self.entries = 0
        self.name_bytes = 0

    def _too_large(self, label: str) -> ImageTooLarge:
        return ImageTooLarge(
            f"{label}: the image expands beyond the daemon's --max-image-size of {self.limits.max_bytes} bytes"
        )

    def read(self, n: int, label: str) -> None:
        self.decompressed += n
        if self.decompressed > self.limits.max_bytes:
            raise self._too_large(label)

    def claim(self, size: int, label: str) -> None:
        """Refuse early an entry whose header already claims more than is left."""
        if self.written + size > self.limits.max_bytes:
            raise self._too_large(label)

    def write(self, n: int, label: str) -> None:
        self.written += n
        if self.written > self.limits.max_bytes:
            raise self._too_large(label)

    def entry(self, label: str, name: str = "") -> None:
        self.entries += 1
        self.name_bytes += len(name)
        if self.name_bytes > self.limits.max_name_bytes:
            raise ImageTooLarge(
                f"{label}: the names of the image's tar entries add up to more than "
                f"{self.limits.max_name_bytes} bytes"
            )
        if self.entries > self.limits.max_entries:
            raise ImageTooLarge(
                f"{label}: the image has more than the daemon's --max-image-entries of "
                f"{self.limits.max_entries} tar entries"
            )


class HeaderTooLarge(ImageTooLarge):
    """A pax or long-name header over MAX_SPECIAL_HEADER; the message does not name the layer,
    whoever reads the tar puts its own label in front."""


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses pax and GNU long-name headers over MAX_SPECIAL_HEADER before
    tarfile reads them whole into memory (a 4 GB pax header is a memory bomb)."""

    __slots__ = ()

    def _proc_member(self, archive: Any) -> Any:  # noqa: ANN401 - tarfile's own hook
        if self.type in _SPECIAL_TYPES and self.size > MAX_SPECIAL_HEADER:
            kind = "long-name" if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else "pax"
            raise HeaderTooLarge(f"a {kind} header of {self.size} bytes is over the limit of {MAX_SPECIAL_HEADER} bytes")
        return super()._proc_member(archive)


class _Metered:
    """Counts the plain bytes of a layer against the load's budget as they are decompressed."""

    def __init__(self, raw: BinaryIO, budget: Budget, label: str) -> None:
        self._raw = raw
        self._budget = budget
        self._label = label

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(_CHUNK if size is None or size < 0 else size)
        self._budget.read(len(data), self._label)
        return data


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
    top = str(root)
    while pending:
        comp = pending.pop(0)
        if comp in ("", "."):
            continue
        if comp == "..":
            if not resolved:
                raise ImageLoadError(f"{label}: entry {name!r} escapes the root filesystem through a symlink")
            resolved.pop()
            continue
        path = "/".join([top, *resolved, comp])  # a str join: pathlib costs O(depth) Python work per call
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
    remove_tree(path)


@dataclass(slots=True)
class _LayerState:
    root: Path
    label: str
    is_root: bool
    budget: Budget
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


def apply_layer(root: Path, stream: BinaryIO, label: str = "layer", budget: Budget | None = None) -> str:
    """Apply one layer tar (plain, gzip, xz, bzip2; zstd if available) onto `root`.

    Returns the layer's diff_id ("sha256:" of the uncompressed tar). Raises ImageLoadError
    naming the entry for anything unsafe or malformed, ImageTooLarge when the layer goes over
    `budget` (the load's limits, shared by its layers), errdefs.SystemError_ when the disk is
    full; the caller discards `root` then.
    """
    root = Path(os.path.realpath(root))
    budget = budget if budget is not None else Budget()
    plain = HashingReader(_Metered(decompressed(stream, label), budget, label))
    state = _LayerState(root=root, label=label, is_root=os.geteuid() == 0, budget=budget)
    try:
        with tarfile.open(fileobj=plain, mode="r|", tarinfo=BoundedTarInfo) as tar:  # type: ignore[call-overload]
            for member in tar:
                budget.entry(label, member.name)
                try:
                    _apply_member(state, tar, member)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise SystemError_(f"{label}: entry {shown(member.name)}: {e.strerror}") from e
                    raise ImageLoadError(f"{label}: entry {shown(member.name)}: {e.strerror or e}") from e
        plain.drain()
    except HeaderTooLarge as e:
        raise ImageTooLarge(f"{label}: invalid layer tar: {e.message}") from e
    except ImageLoadError:
        raise
    except EOFError as e:  # gzip/xz/bz2 stream cut short
        raise ImageLoadError(f"{label}: invalid layer tar: unexpected EOF ({e})") from e
    except tarfile.ReadError as e:
        if "unexpected end of data" in str(e):
            raise ImageLoadError(f"{label}: invalid layer tar: unexpected EOF") from e
        raise ImageLoadError(f"{label}: invalid layer tar: {e}") from e
    except (tarfile.TarError, OSError, lzma.LZMAError, ValueError) as e:
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
    for what, name in (("entry", member.name), ("link target of", member.linkname)):
        if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH:
            raise ImageLoadError(
                f"{label}: {what} {shown(name)}: the name is longer than {MAX_PATH} bytes (PATH_MAX)"
            )
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
        state.budget.claim(member.size, label)  # the header already says it cannot fit
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
        # Device nodes are skipped, not made (moby makes them when it runs as root): the
        # runtime gives containers their own /dev, and a block or char node carried in by an
        # image would hand its containers a host device (/dev/sda, /dev/mem) to open.
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
                # Counted as written too: a sparse entry's holes come out of tarfile as zeros
                # that were never in the decompressed stream.
                state.budget.write(len(chunk), state.label)
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
    """Remove what lower layers put under a directory, keeping this layer's own entries.
    A loop, not recursion: the kept tree may be thousands of levels deep."""
    todo = [parent]
    while todo:
        current = todo.pop()
        with os.scandir(state.root.joinpath(*current)) as scan:
            entries = [(e.name, e.path, e.is_dir(follow_symlinks=False)) for e in scan]
        for name, path, is_dir in entries:
            rel = "/".join(current + [name])
            if not state.keeps(rel):
                _remove(Path(path))
            elif is_dir:
                # Kept by this layer, but what lower layers put inside it is hidden as well.
                todo.append(current + [name])
