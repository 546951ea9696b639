"""The node's image store: loads `docker save` / OCI tarballs, keeps unpacked rootfs and tags.

Unpacking is agent.images.unpack; the executor mounts an image's `rootfs` read-only under an overlay.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from agent.images.unpack import HashingReader, ImageError, ImageLoadError, apply_layer, rootfs_size
from common.errdefs import NotFound

__all__ = [
    "Image",
    "ImageError",
    "ImageLoadError",
    "ImageNotFound",
    "AmbiguousImageRef",
    "ImageStore",
    "normalize_ref",
]

INDEX_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

_OCI_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_REF_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"
_GOARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
}


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


def host_architecture() -> str:
    """The Go/OCI name of this machine's architecture ("amd64" on x86_64)."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_ref(ref: str) -> str:
    """Docker's familiar form of a reference: "busybox" -> "busybox:latest".

    "docker.io/library/" and "index.docker.io/" prefixes are dropped; a digest reference keeps its
    digest and gets no tag. Raises ImageError for a malformed reference.
    """
    if not ref or ref != ref.strip():
        raise ImageError(f"invalid reference format: {ref!r}")
    name, digest = ref, ""
    if "@" in name:
        name, digest = name.split("@", 1)
        if not _DIGEST.match(digest):
            raise ImageError(f"invalid reference format: {ref!r}")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise ImageError(f"invalid reference format: {ref!r}")
    domain, path = "", name
    first, sep, rest = name.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        domain, path = first, rest
        if not _DOMAIN.match(domain):
            raise ImageError(f"invalid reference format: {ref!r}")
    if domain in ("docker.io", "index.docker.io"):
        domain = ""
    if domain == "" and path.startswith("library/") and path.count("/") == 1:
        path = path[len("library/") :]
    components = path.split("/")
    for comp in components:
        if not _COMPONENT.match(comp):
            if comp.lower() != comp and _COMPONENT.match(comp.lower()):
                raise ImageError(f"invalid reference format: repository name ({ref}) must be lowercase")
            raise ImageError(f"invalid reference format: {ref!r}")
    full = f"{domain}/{path}" if domain else path
    if len(full) > 255:
        raise ImageError(
            f"invalid reference format: repository name ({ref}) must not be more than 255 characters"
        )
    if digest:
        return f"{full}:{tag}@{digest}" if tag else f"{full}@{digest}"
    return f"{full}:{tag or 'latest'}"


@dataclass(slots=True)
class _LayerSource:
    member: str  # member name in the outer tarball
    digest: str | None  # "sha256:..." of the blob bytes when the blob is named by digest


@dataclass(slots=True)
class _ImagePlan:
    config_bytes: bytes
    config_name: str
    tags: list[str]
    layers: list[_LayerSource]

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes).hexdigest()


@dataclass(slots=True)
class _Meta:
    """What the store remembers about one image besides its tags."""

    config: dict
    created: str
    size: int
    loaded: str


class _Archive:
    """Random access to the members of an outer (docker save / OCI layout) tarball."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        for info in tar.getmembers():
            self.members[_clean(info.name)] = info

    def has(self, name: str) -> bool:
        return _clean(name) in self.members

    def open(self, name: str) -> BinaryIO:
        info = self.members.get(_clean(name))
        if info is None:
            raise ImageLoadError(f"invalid tar: {name} not found")
        try:
            f = self.tar.extractfile(info)
        except (KeyError, tarfile.TarError) as e:
            raise ImageLoadError(f"invalid tar: {name}: {e}") from e
        if f is None:
            raise ImageLoadError(f"invalid tar: {name} is not a regular file")
        return f  # type: ignore[return-value]

    def read(self, name: str, digest: str | None = None) -> bytes:
        data = self.open(name).read()
        if digest is not None:
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise ImageLoadError(f"invalid tar: {name}: content digest {actual} does not match {digest}")
        return data

    def read_json(self, name: str, digest: str | None = None) -> Any:
        data = self.read(name, digest)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ImageLoadError(f"invalid tar: {name}: invalid JSON: {e}") from e


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable()) and stream.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _digest_of_blob_path(name: str) -> str | None:
    """The digest a member name promises: blobs/sha256/<hex> or <hex>.json (docker save configs)."""
    parts = _clean(name).split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256" and _HEX64.match(parts[2]):
        return "sha256:" + parts[2]
    if len(parts) == 1 and parts[0].endswith(".json") and _HEX64.match(parts[0][:-5]):
        return "sha256:" + parts[0][:-5]
    return None


def _blob_path(digest: Any, what: str) -> str:
    if not isinstance(digest, str) or ":" not in digest:
        raise ImageLoadError(f"invalid OCI layout: {what} has invalid digest {digest!r}")
    algo, hexpart = digest.split(":", 1)
    if algo != "sha256":
        raise ImageLoadError(f"invalid OCI layout: {what}: unsupported digest algorithm {algo!r}")
    if not _HEX64.match(hexpart):
        raise ImageLoadError(f"invalid OCI layout: {what} has invalid digest {digest!r}")
    return f"blobs/sha256/{hexpart}"


def _plans_from_docker_save(archive: _Archive) -> list[_ImagePlan]:
    manifest = archive.read_json("manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageLoadError("invalid tar: manifest.json must be a non-empty JSON array")
    plans = []
    for n, entry in enumerate(manifest):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ImageLoadError(f"invalid tar: manifest.json entry {n} has no Config")
        layers = entry.get("Layers") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ImageLoadError(f"invalid tar: manifest.json entry {n} has invalid Layers")
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImageLoadError(f"invalid tar: manifest.json entry {n} has invalid RepoTags")
        config_name = entry["Config"]
        plans.append(
            _ImagePlan(
                config_bytes=archive.read(config_name, _digest_of_blob_path(config_name)),
                config_name=config_name,
                tags=[_tag_from_archive(t) for t in tags],
                layers=[_LayerSource(member=p, digest=_digest_of_blob_path(p)) for p in layers],
            )
        )
    return plans


def _tag_from_archive(tag: str) -> str:
    try:
        return normalize_ref(tag)
    except ImageError as e:
        raise ImageLoadError(f"invalid tar: bad tag {tag!r}: {e.message}") from e


def _plans_from_oci(archive: _Archive) -> list[_ImagePlan]:
    layout = archive.read_json("oci-layout")
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise ImageLoadError("invalid OCI layout: oci-layout has no imageLayoutVersion")
    index = archive.read_json("index.json")
    descriptors = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descriptors, list) or not descriptors:
        raise ImageLoadError("invalid OCI layout: index.json lists no manifests")
    plans = []
    for n, desc in enumerate(descriptors):
        if not isinstance(desc, dict):
            raise ImageLoadError(f"invalid OCI layout: index.json manifest {n} is not an object")
        manifest = _resolve_manifest(archive, desc, f"index.json manifest {n}")
        config_desc = manifest.get("config")
        if not isinstance(config_desc, dict):
            raise ImageLoadError(f"invalid OCI layout: manifest {desc.get('digest')} has no config")
        config_name = _blob_path(config_desc.get("digest"), "config")
        layers = manifest.get("layers") or []
        if not isinstance(layers, list):
            raise ImageLoadError(f"invalid OCI layout: manifest {desc.get('digest')} has invalid layers")
        sources = []
        for i, layer in enumerate(layers):
            digest = layer.get("digest") if isinstance(layer, dict) else None
            sources.append(_LayerSource(member=_blob_path(digest, f"layer {i}"), digest=digest))
        plans.append(
            _ImagePlan(
                config_bytes=archive.read(config_name, config_desc["digest"]),
                config_name=config_name,
                tags=_oci_tags(desc.get("annotations") or {}),
                layers=sources,
            )
        )
    return plans


def _resolve_manifest(archive: _Archive, desc: dict, what: str) -> dict:
    """Follow a descriptor to an image manifest, choosing a platform when it is an index."""
    for _ in range(4):  # an index of indexes is legal; a deep one is not worth following
        name = _blob_path(desc.get("digest"), what)
        doc = archive.read_json(name, desc["digest"])
        if not isinstance(doc, dict):
            raise ImageLoadError(f"invalid OCI layout: {name} is not a JSON object")
        media = desc.get("mediaType") or doc.get("mediaType")
        if media not in _OCI_INDEX_TYPES and "manifests" not in doc:
            return doc
        desc = _pick_platform(doc.get("manifests") or [], name)
    raise ImageLoadError(f"invalid OCI layout: {what}: image indexes nested too deeply")


def _pick_platform(manifests: list, where: str) -> dict:
    candidates = [m for m in manifests if isinstance(m, dict)]
    arch = host_architecture()
    for m in candidates:
        plat = m.get("platform") or {}
        if plat.get("os") == "linux" and plat.get("architecture") == arch:
            return m
    for m in candidates:
        plat = m.get("platform") or {}
        if plat.get("os") != "unknown":  # skip attestation manifests
            return m
    raise ImageLoadError(f"invalid OCI layout: {where} lists no usable manifest")


def _oci_tags(annotations: dict) -> list[str]:
    name = annotations.get(_CONTAINERD_NAME)
    if not isinstance(name, str) or not name:
        # ref.name is often only a tag ("latest") without a repository; then there is no name.
        ref = annotations.get(_REF_NAME)
        name = ref if isinstance(ref, str) and (":" in ref or "/" in ref) else None
    return [_tag_from_archive(name)] if name else []


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

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
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

    def remove(self, ref: str, force: bool = False) -> list[str]:
        """Untag or delete; returns Docker's list of "Untagged: X" / "Deleted: ID" lines."""
        with self._lock:
            image_id = self._resolve(ref)
            try:
                by_tag = normalize_ref(ref) in self._tags
            except ImageError:
                by_tag = False
            tags = dict(self._tags)
            mine = sorted(t for t, i in tags.items() if i == image_id)
            if by_tag:
                untag = [normalize_ref(ref)]
            else:
                if len(mine) > 1 and not force:
                    short = image_id.removeprefix("sha256:")[:12]
                    raise ImageError(
                        f"conflict: unable to delete {short} (must be forced) - "
                        "image is referenced in multiple repositories"
                    )
                untag = mine
            for t in untag:
                del tags[t]
            result = [f"Untagged: {t}" for t in untag]
            images = dict(self._images)
            if not any(i == image_id for i in tags.values()):
                del images[image_id]
                result.append(f"Deleted: {image_id}")
            self._write_index(images, tags)
            self._images, self._tags = images, tags
        if image_id not in images:
            shutil.rmtree(self._images_dir / image_id.removeprefix("sha256:"), ignore_errors=True)
        return result

    def load(self, stream: BinaryIO) -> list[str]:
        """Load every image of a `docker save` or OCI-layout tarball; all or nothing."""
        work = Path(tempfile.mkdtemp(prefix="load-", dir=self._tmp))
        try:
            with contextlib.ExitStack() as stack:
                if not _seekable(stream):  # members are read in manifest order, not archive order
                    spool = work / "input.tar"
                    with open(spool, "wb") as out:
                        shutil.copyfileobj(stream, out, 1 << 20)
                    stream = stack.enter_context(open(spool, "rb"))
                try:
                    tar = stack.enter_context(tarfile.open(fileobj=stream, mode="r:*"))
                except (tarfile.TarError, EOFError, OSError) as e:
                    raise ImageLoadError(f"invalid tar: {e}") from e
                archive = _Archive(tar)
                plans = self._plans(archive)
                staged = self._stage_all(archive, plans, work)
            return self._commit(plans, staged)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- loading -------------------------------------------------------------------------------

    def _plans(self, archive: _Archive) -> list[_ImagePlan]:
        if archive.has("manifest.json"):
            return _plans_from_docker_save(archive)
        if archive.has("oci-layout") or archive.has("index.json"):
            return _plans_from_oci(archive)
        raise ImageLoadError(
            "invalid tar: manifest.json not found (neither a docker save archive nor an OCI image layout)"
        )

    def _stage_all(self, archive: _Archive, plans: list[_ImagePlan], work: Path) -> dict[str, tuple[Path, _Meta]]:
        staged: dict[str, tuple[Path, _Meta]] = {}
        for plan in plans:
            image_id = plan.image_id
            with self._lock:
                known = image_id in self._images
            if known or image_id in staged:
                continue
            staged[image_id] = self._stage(archive, plan, work / image_id.removeprefix("sha256:"))
        return staged

    def _stage(self, archive: _Archive, plan: _ImagePlan, target: Path) -> tuple[Path, _Meta]:
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
            actual = apply_layer(rootfs, blob, label)
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

    def _commit(self, plans: list[_ImagePlan], staged: dict[str, tuple[Path, _Meta]]) -> list[str]:
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
                        shutil.rmtree(final)
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
                    shutil.rmtree(path, ignore_errors=True)
                raise
            self._images, self._tags = images, tags
        return loaded

    # -- index ---------------------------------------------------------------------------------

    def _resolve(self, ref: str) -> str:
        """Image id for a reference; caller holds the lock."""
        bare = ref.removeprefix("sha256:")
        if _HEX64.match(bare) and "sha256:" + bare in self._images:
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
        fd, tmp = tempfile.mkstemp(prefix=".index-", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self._index_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _collect_garbage(self) -> None:
        """Drop what a crashed load or remove left: temp dirs and image dirs not in the index."""
        for entry in self._tmp.iterdir():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        for entry in self.root.glob(".index-*"):
            entry.unlink(missing_ok=True)
        for entry in self._images_dir.iterdir():
            if "sha256:" + entry.name not in self._images:
                shutil.rmtree(entry, ignore_errors=True)
