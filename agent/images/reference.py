"""Image references in Docker's familiar form: "busybox" is "busybox:latest", docker.io dropped.

Used by agent.images.store (tags, lookups) and agent.images.archive (tags inside tarballs).
"""
from __future__ import annotations

import re

from agent.images.unpack import ImageError

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


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
