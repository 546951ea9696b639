"""The node's image store: loads `docker save` / OCI tarballs, keeps unpacked rootfs and tags.

Unpacking is agent.images.unpack; the executor mounts an image's `rootfs` read-only under an overlay.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import threading
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from agent.images.archive import HEX64, Archive, ImagePlan, host_architecture, open_archive, plans
from agent.images.reference import normalize_ref
from agent.images.removal import ImageUser, Removal, is_id_prefix
from agent.images.unpack import (
    Budget,
    HashingReader,
    ImageError,
    ImageLoadError,
    ImageTooLarge,
    LoadLimits,
    apply_layer,
    remove_tree,
    rootfs_size,
)
from common.fsutil import remove_stale_temps, write_atomic
from common.errdefs import NotFound

__all__ = [
    "Image",
    "ImageError",
    "ImageLoadError",
    "ImageNotFound",
    "ImageTooLarge",
    "AmbiguousImageRef",
    "ImageStore",
    "ImageUser",
    "LoadLimits",
    "host_architecture",
    "normalize_ref",
]

INDEX_VERSION = 1
_HEX = re.compile(r"^[0-9a-f]+$")
_TRASH_PREFIX = "deleted-"  # tmp/deleted-<hex>: a removed image's files on their way out


class ImageNotFound(NotFound, ImageError):
    """No image matches a reference; message is Docker's `No such image: REF`."""


class AmbiguousImageRef(ImageNotFound):
    """An id prefix that matches more than one image."""


@dataclass(slots=True)
class Image:
    id: str
    repo_tags: list[str]
    created: str
    size: int
    architecture: str
    os: str
    config: dict
    layers: list[str]
    rootfs: Path


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Meta:
    """What the store remembers about one image besides its tags."""

    config: dict
    created: str
    size: int
    loaded: str


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable()) and stream.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _config_fields(config: Any, name: str) -> tuple[list[str], str]:
    """Validate an image config; return its diff_ids and created time."""
    if not isinstance(config, dict):
        raise ImageLoadError(f"invalid image config {name}: not a JSON object")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ImageLoadError(f"invalid image config {name}: missing rootfs.diff_ids")
    created = config.get("created")
    return diff_ids, created if isinstance(created, str) and created else _now_rfc3339()


class ImageStore:
    """Images under `root` (normally `<data-dir>/images`): index.json, sha256/<hex>/{config.json,rootfs}."""

    def __init__(self, root: Path, limits: LoadLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or LoadLimits()  # the daemon's --max-image-size / --max-image-entries
        self._images_dir = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._index_path = self.root / "index.json"
        self._lock = threading.Lock()  # loads may run in a worker thread of the daemon
        for d in (self.root, self._images_dir, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._images: dict[str, _Meta] = {}
        self._tags: dict[str, str] = {}
        self._read_index()
        self._collect_garbage()

    # -- queries -------------------------------------------------------------------------------

    def list(self) -> list[Image]:
        with self._lock:
            images = [self._image(i) for i in self._images]
        return sorted(images, key=lambda im: (im.created, im.id), reverse=True)

    def get(self, ref: str) -> Image:
        with self._lock:
            return self._image(self._resolve(ref))

    def rootfs_of(self, image_id: str) -> Path:
        return self._images_dir / image_id.removeprefix("sha256:") / "rootfs"

    # -- changes -------------------------------------------------------------------------------

    def tag(self, image_id: str, tag: str) -> None:
        name = normalize_ref(tag)
        if "@" in name:
            raise ImageError(f"refusing to create a tag with a digest reference: {tag}")
        with self._lock:
            target = self._resolve(image_id)
            tags = dict(self._tags)
            tags[name] = target
            self._write_index(self._images, tags)
            self._tags = tags

    def remove(
        self, ref: str, force: bool = False, noprune: bool = False, users: list[ImageUser] | None = None
    ) -> list[dict[str, str]]:
        """`docker rmi` with moby's rules; returns its response ({"Untagged": ref} / {"Deleted": id}).

        `users` are the containers of the node: an image a running container uses is never
        deleted, one a stopped container uses only with `force`. Removed files go to tmp/ in
        one rename after the index is written (a kill -9 leaves the image or nothing; tmp/ is
        emptied at the next start); `empty_trash` deletes them, off the event loop. `noprune`
        is accepted: loaded images have no parent images to prune.
        """
        del noprune
        users = [u for u in (users or []) if u.image_id]
        with self._lock:
            image_id = self._resolve(ref)
            plan = Removal(self._images, self._tags, lambda i: self._image(i).layers, image_id, users, force)
            if is_id_prefix(image_id, ref):
                plan.by_id()
            else:
                plan.by_name(ref, normalize_ref(ref))
            if not plan.changed:
                return plan.records
            self._write_index(plan.images, plan.tags)
            self._images, self._tags = plan.images, plan.tags
            if plan.deleted:
                hexid = image_id.removeprefix("sha256:")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self._images_dir / hexid, self._tmp / f"{_TRASH_PREFIX}{hexid}")
        return plan.records

    def empty_trash(self) -> None:
        """Deletes the files of removed images (slow for a large rootfs: call it in a thread)."""
        for entry in self._tmp.iterdir():
            if entry.name.startswith(_TRASH_PREFIX):
                with contextlib.suppress(OSError):
                    remove_tree(entry)

    def load(self, stream: BinaryIO) -> list[str]:
        """Load every image of a `docker save` or OCI-layout tarball; all or nothing.

        Bounded by `self.limits` (counted on the bytes really decompressed and written);
        whatever fails, nothing of the load stays: not a file, not an index entry.
        """
        budget = Budget(self.limits)
        work = Path(tempfile.mkdtemp(prefix="load-", dir=self._tmp))
        try:
            with contextlib.ExitStack() as stack:
                if not _seekable(stream):  # members are read in manifest order, not archive order
                    spool = work / "input.tar"
                    with open(spool, "wb") as out:
                        shutil.copyfileobj(stream, out, 1 << 20)
                    stream = stack.enter_context(open(spool, "rb"))
                try:
                    archive = open_archive(stack, stream, budget)
                    image_plans = plans(archive)
                    staged = self._stage_all(archive, image_plans, work, budget)
                except EOFError as e:  # a compressed outer tarball cut short
                    raise ImageLoadError(f"invalid tar: unexpected EOF ({e})") from e
                except tarfile.ReadError as e:
                    if "unexpected end of data" in str(e):
                        raise ImageLoadError("invalid tar: unexpected EOF: the archive is cut short") from e
                    raise ImageLoadError(f"invalid tar: {e}") from e
                except (tarfile.TarError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as e:
                    raise ImageLoadError(f"invalid tar: {e}") from e
            return self._commit(image_plans, staged)
        finally:
            with contextlib.suppress(OSError):
                remove_tree(work)

    # -- loading -------------------------------------------------------------------------------

    def _stage_all(
        self, archive: Archive, plans: list[ImagePlan], work: Path, budget: Budget
    ) -> dict[str, tuple[Path, _Meta]]:
        staged: dict[str, tuple[Path, _Meta]] = {}
        for plan in plans:
            image_id = plan.image_id
            with self._lock:
                known = image_id in self._images
            if known or image_id in staged:
                continue
            staged[image_id] = self._stage(archive, plan, work / image_id.removeprefix("sha256:"), budget)
        return staged

    def _stage(self, archive: Archive, plan: ImagePlan, target: Path, budget: Budget) -> tuple[Path, _Meta]:
        try:
            config = json.loads(plan.config_bytes)
        except (ValueError, UnicodeDecodeError) as e:
            raise ImageLoadError(f"invalid image config {plan.config_name}: invalid JSON: {e}") from e
        diff_ids, created = _config_fields(config, plan.config_name)
        if len(diff_ids) != len(plan.layers):
            raise ImageLoadError(
                f"invalid image config {plan.config_name}: {len(diff_ids)} diff_ids for {len(plan.layers)} layers"
            )
        rootfs = target / "rootfs"
        rootfs.mkdir(parents=True)
        os.chmod(rootfs, 0o755)
        for n, (source, diff_id) in enumerate(zip(plan.layers, diff_ids), start=1):
            label = f"layer {n} ({source.member})"
            blob = HashingReader(archive.open(source.member))
            actual = apply_layer(rootfs, blob, label, budget)
            blob.drain()
            if source.digest is not None and blob.digest() != source.digest:
                raise ImageLoadError(f"{label}: content digest {blob.digest()} does not match {source.digest}")
            if actual != diff_id:
                raise ImageLoadError(
                    f"{label}: uncompressed digest {actual} does not match the config's diff_id {diff_id}"
                )
        (target / "config.json").write_bytes(plan.config_bytes)
        meta = _Meta(config=config, created=created, size=rootfs_size(rootfs), loaded=_now_rfc3339())
        return target, meta

    def _commit(self, plans: list[ImagePlan], staged: dict[str, tuple[Path, _Meta]]) -> list[str]:
        loaded: list[str] = []
        with self._lock:
            images = dict(self._images)
            tags = dict(self._tags)
            moved: list[Path] = []
            try:
                for image_id, (path, meta) in staged.items():
                    final = self._images_dir / image_id.removeprefix("sha256:")
                    if image_id in images:
                        continue  # another load committed it meanwhile
                    if final.exists():  # an orphan of a crashed load; replace it
                        remove_tree(final)
                    os.rename(path, final)
                    moved.append(final)
                    images[image_id] = meta
                for plan in plans:
                    for t in plan.tags:
                        tags[t] = plan.image_id
                        if t not in loaded:
                            loaded.append(t)
                    if not plan.tags and plan.image_id not in loaded:
                        loaded.append(plan.image_id)
                self._write_index(images, tags)
            except BaseException:
                for path in moved:
                    with contextlib.suppress(OSError):
                        remove_tree(path)
                raise
            self._images, self._tags = images, tags
        return loaded

    # -- index ---------------------------------------------------------------------------------

    def _resolve(self, ref: str) -> str:
        """Image id for a reference; caller holds the lock."""
        bare = ref.removeprefix("sha256:")
        if HEX64.match(bare) and "sha256:" + bare in self._images:
            return "sha256:" + bare
        try:
            name: str | None = normalize_ref(ref)
        except ImageError:
            name = None
        if name is not None and name in self._tags:
            return self._tags[name]
        if _HEX.match(bare):
            matches = [i for i in self._images if i.removeprefix("sha256:").startswith(bare)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AmbiguousImageRef(f"No such image: {ref} (multiple IDs found with provided prefix: {bare})")
        raise ImageNotFound(f"No such image: {name if name is not None else ref}")

    def _image(self, image_id: str) -> Image:
        meta = self._images[image_id]
        config = meta.config
        inner = config.get("config")
        return Image(
            id=image_id,
            repo_tags=sorted(t for t, i in self._tags.items() if i == image_id),
            created=meta.created,
            size=meta.size,
            architecture=str(config.get("architecture") or ""),
            os=str(config.get("os") or ""),
            config=dict(inner) if isinstance(inner, dict) else {},
            layers=list(config["rootfs"]["diff_ids"]),
            rootfs=self.rootfs_of(image_id),
        )

    def _read_index(self) -> None:
        if not self._index_path.exists():
            return
        try:
            doc = json.loads(self._index_path.read_bytes())
            entries = doc["images"]
            tags = doc["tags"]
        except (ValueError, KeyError, TypeError) as e:
            raise ImageError(f"corrupt image index {self._index_path}: {e}") from e
        for image_id, entry in entries.items():
            image_dir = self._images_dir / image_id.removeprefix("sha256:")
            try:
                config = json.loads((image_dir / "config.json").read_bytes())
            except (OSError, ValueError):
                continue  # its files are gone; forget it rather than serve a broken image
            self._images[image_id] = _Meta(
                config=config,
                created=str(entry.get("created") or config.get("created") or ""),
                size=int(entry.get("size") or 0),
                loaded=str(entry.get("loaded") or ""),
            )
        self._tags = {t: i for t, i in tags.items() if i in self._images}

    def _write_index(self, images: dict[str, _Meta], tags: dict[str, str]) -> None:
        doc = {
            "version": INDEX_VERSION,
            "images": {
                i: {"created": m.created, "size": m.size, "loaded": m.loaded} for i, m in sorted(images.items())
            },
            "tags": dict(sorted(tags.items())),
        }
        write_atomic(self._index_path, json.dumps(doc, indent=1))

    def _collect_garbage(self) -> None:
        """Drop what a crashed load or remove left: temp dirs and image dirs not in the index."""
        for entry in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                remove_tree(entry)
        for entry in self.root.glob(".index-*"):  # temp files of the index writer before fsutil
            entry.unlink(missing_ok=True)
        remove_stale_temps(self.root)
        for entry in self._images_dir.iterdir():
            if "sha256:" + entry.name not in self._images:
                with contextlib.suppress(OSError):
                    remove_tree(entry)
