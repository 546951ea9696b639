"""The outer tarball of a load (`docker save` or OCI image layout): its members, bounded, and
the images it describes (config, layers, tags), each malformation refused by name.

Used by agent.images.store; layers themselves are applied by agent.images.unpack.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import re
import tarfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from agent.images.reference import normalize_ref
from agent.images.unpack import (
    BoundedTarInfo,
    Budget,
    HeaderTooLarge,
    ImageError,
    ImageLoadError,
    ImageTooLarge,
    compression_of,
)

HEX64 = re.compile(r"^[0-9a-f]{64}$")
_OCI_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_REF_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"
_TAR_OPEN_MODE = {"gzip": "r:gz", "bzip2": "r:bz2", "xz": "r:xz", "none": "r:"}
_GOARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
}


def host_architecture() -> str:
    """The Go/OCI name of this machine's architecture ("amd64" on x86_64)."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


@dataclass(slots=True)
class LayerSource:
    member: str  # member name in the outer tarball
    digest: str | None  # "sha256:..." of the blob bytes when the blob is named by digest


@dataclass(slots=True)
class ImagePlan:
    config_bytes: bytes
    config_name: str
    tags: list[str]
    layers: list[LayerSource]

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes).hexdigest()


class Archive:
    """Random access to the members of an outer (docker save / OCI layout) tarball."""

    def __init__(self, tar: tarfile.TarFile, budget: Budget) -> None:
        self.tar = tar
        self.budget = budget
        self.members: dict[str, tarfile.TarInfo] = {}
        last: tarfile.TarInfo | None = None
        while True:
            try:
                info = tar.next()
            except HeaderTooLarge as e:
                raise ImageTooLarge(f"invalid tar: {e.message}") from e
            except tarfile.ReadError as e:
                if "unexpected end of data" not in str(e) or last is None:
                    raise
                raise ImageLoadError(f"invalid tar: unexpected EOF: the archive ends inside {last.name!r}") from e
            if info is None:
                break
            budget.entry("invalid tar", info.name)
            self.members[_clean(info.name)] = info
            last = info
        self._check_end(last)

    def _check_end(self, last: tarfile.TarInfo | None) -> None:
        """tarfile stops quietly at a header cut short or at garbage after the last member;
        docker load's archive/tar says "unexpected EOF" / "invalid tar header" there."""
        fileobj = self.tar.fileobj
        assert fileobj is not None
        fileobj.seek(self.tar.offset)
        block = fileobj.read(tarfile.BLOCKSIZE)
        after = f" after {last.name!r}" if last is not None else ""
        if 0 < len(block) < tarfile.BLOCKSIZE:
            raise ImageLoadError(f"invalid tar: unexpected EOF: the archive is cut short in a header{after}")
        if block.strip(b"\0"):
            raise ImageLoadError(f"invalid tar: invalid tar header{after}")

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
        """A small member (manifest, config, index) read whole: bounded by max_json."""
        limit = self.budget.limits.max_json
        data = self.open(name).read(limit + 1)
        if len(data) > limit:
            raise ImageTooLarge(f"invalid tar: {name} is larger than {limit} bytes")
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


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _digest_of_blob_path(name: str) -> str | None:
    """The digest a member name promises: blobs/sha256/<hex> or <hex>.json (docker save configs)."""
    parts = _clean(name).split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256" and HEX64.match(parts[2]):
        return "sha256:" + parts[2]
    if len(parts) == 1 and parts[0].endswith(".json") and HEX64.match(parts[0][:-5]):
        return "sha256:" + parts[0][:-5]
    return None


def _blob_path(digest: Any, what: str) -> str:
    if not isinstance(digest, str) or ":" not in digest:
        raise ImageLoadError(f"invalid OCI layout: {what} has invalid digest {digest!r}")
    algo, hexpart = digest.split(":", 1)
    if algo != "sha256":
        raise ImageLoadError(f"invalid OCI layout: {what}: unsupported digest algorithm {algo!r}")
    if not HEX64.match(hexpart):
        raise ImageLoadError(f"invalid OCI layout: {what} has invalid digest {digest!r}")
    return f"blobs/sha256/{hexpart}"


def _plans_from_docker_save(archive: Archive) -> list[ImagePlan]:
    manifest = archive.read_json("manifest.json")
    if not isinstance(manifest, list):
        raise ImageLoadError(f"invalid tar: manifest.json must be a JSON array of images, not {json_type(manifest)}")
    if not manifest:
        raise ImageLoadError("invalid tar: manifest.json lists no images")
    plans = []
    for n, entry in enumerate(manifest):
        where = f"invalid tar: manifest.json entry {n}"
        if not isinstance(entry, dict):
            raise ImageLoadError(f"{where} must be a JSON object, not {json_type(entry)}")
        if "Config" not in entry:
            raise ImageLoadError(f"{where} has no Config")
        config_name = entry["Config"]
        if not isinstance(config_name, str):
            raise ImageLoadError(f"{where}: Config must be a string, not {json_type(config_name)}")
        layers = entry.get("Layers") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ImageLoadError(f"{where}: Layers must be an array of strings")
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImageLoadError(f"{where}: RepoTags must be an array of strings")
        if not archive.has(config_name):
            raise ImageLoadError(f"{where}: Config {config_name} is not in the archive")
        for layer in layers:
            if not archive.has(layer):
                raise ImageLoadError(f"{where}: layer {layer} is not in the archive")
        plans.append(
            ImagePlan(
                config_bytes=archive.read(config_name, _digest_of_blob_path(config_name)),
                config_name=config_name,
                tags=[_tag_from_archive(t) for t in tags],
                layers=[LayerSource(member=p, digest=_digest_of_blob_path(p)) for p in layers],
            )
        )
    return plans


def _tag_from_archive(tag: str) -> str:
    try:
        return normalize_ref(tag)
    except ImageError as e:
        raise ImageLoadError(f"invalid tar: bad tag {tag!r}: {e.message}") from e


def _plans_from_oci(archive: Archive) -> list[ImagePlan]:
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
            sources.append(LayerSource(member=_blob_path(digest, f"layer {i}"), digest=digest))
        plans.append(
            ImagePlan(
                config_bytes=archive.read(config_name, config_desc["digest"]),
                config_name=config_name,
                tags=_oci_tags(desc.get("annotations") or {}),
                layers=sources,
            )
        )
    return plans


def _resolve_manifest(archive: Archive, desc: dict, what: str) -> dict:
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


def open_archive(stack: contextlib.ExitStack, stream: BinaryIO, budget: Budget) -> Archive:
    """The outer tarball, its compression named by its first bytes (not by trying each)."""
    start = stream.tell()
    head = stream.read(6)
    stream.seek(start)
    if not head:
        raise ImageLoadError(
            "invalid tar: the input is empty (expected a docker save tarball or an OCI image layout)"
        )
    kind = compression_of(head)
    if kind == "zstd":
        raise ImageLoadError("invalid tar: zstd-compressed image tarballs are not supported")
    try:
        tar = stack.enter_context(tarfile.open(fileobj=stream, mode=_TAR_OPEN_MODE[kind], tarinfo=BoundedTarInfo))
    except HeaderTooLarge as e:
        raise ImageTooLarge(f"invalid tar: {e.message}") from e
    except tarfile.ReadError as e:
        if kind == "none":
            raise ImageLoadError(f"invalid tar: the input is not a tar archive (plain, gzip, bzip2 or xz): {e}") from e
        raise ImageLoadError(f"invalid tar: {kind}: {e}") from e
    return Archive(tar, budget)


def plans(archive: Archive) -> list[ImagePlan]:
    """The images a tarball holds, from its manifest.json (docker save) or index.json (OCI)."""
    if archive.has("manifest.json"):
        return _plans_from_docker_save(archive)
    if archive.has("oci-layout") or archive.has("index.json"):
        return _plans_from_oci(archive)
    raise ImageLoadError(
        "invalid tar: manifest.json not found (neither a docker save archive nor an OCI image layout)"
    )
