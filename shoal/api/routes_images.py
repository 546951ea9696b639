"""Image routes of the Docker API: list, inspect, load (docker save tarballs), remove, and the
registry routes shoal cannot serve (pull, distribution), answered with clear errors.

Calls the engine's image store (agent.images.store.ImageStore); converts with shoal.api.convert.
"""
from __future__ import annotations

import asyncio
import fnmatch
import json
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.api import convert, params
from shoal.api.server import ENGINE, JSON_TYPE, add_route, json_response
from shoal.engine.errors import InvalidParameter, NotFound, NotImplemented_

_IMAGE_FILTERS = ("reference", "dangling", "label", "before", "since")
_COPY_CHUNK = 1 << 20


def reference_matches(pattern: str, repo_tag: str) -> bool:
    """docker images' `reference` filter: the pattern matches name:tag or the name alone."""
    name = repo_tag.rsplit(":", 1)[0] if ":" in repo_tag.rsplit("/", 1)[-1] else repo_tag
    return fnmatch.fnmatchcase(repo_tag, pattern) or fnmatch.fnmatchcase(name, pattern)


def _label_matches(wanted: str, labels: dict[str, str]) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def filter_images(images: list[Any], filters: dict[str, list[str]]) -> list[tuple[Any, list[str]]]:
    """(image, the repo tags to show) of the images that pass; with a `reference` filter
    only the matching tags are shown, as moby does."""
    for key in filters:
        if key not in _IMAGE_FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")
    out = []
    for image in images:
        labels = (image.config or {}).get("Labels") or {}
        tags = list(image.repo_tags)
        if filters.get("reference"):
            tags = [t for t in tags if any(reference_matches(p, t) for p in filters["reference"])]
            if not tags:
                continue
        if filters.get("dangling"):
            dangling = params.bool_value(filters["dangling"][0])
            if dangling != (not image.repo_tags):
                continue
        if filters.get("label") and not all(_label_matches(w, labels) for w in filters["label"]):
            continue
        out.append((image, tags))
    return out


async def list_images(request: web.Request) -> web.Response:
    store = request.app[ENGINE].images
    filters = params.parse_filters(request.query.get("filters"))
    selected = filter_images(store.list(), filters)
    selected.sort(key=lambda pair: convert.unix_seconds(pair[0].created), reverse=True)
    return json_response([{**convert.image_summary(image), "RepoTags": tags} for image, tags in selected])


async def inspect_image(request: web.Request) -> web.Response:
    image = request.app[ENGINE].images.get(request.match_info["name"])
    return json_response(convert.image_inspect(image))


async def load_image(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    limit = engine.images.limits.max_bytes
    spool_dir = Path(engine.data_dir)
    # The tarball may be large: spool it to disk under the data dir, not to memory (/tmp
    # may be a tmpfs); an unnamed temp file, so a crash mid-upload leaves nothing.
    with tempfile.TemporaryFile(dir=spool_dir if spool_dir.is_dir() else None) as spool:
        size = 0
        while chunk := await request.content.read(_COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise InvalidParameter(
                    f"invalid tar: the image tarball is larger than the daemon's --max-image-size of {limit} bytes"
                )
            spool.write(chunk)
        spool.seek(0)
        # Unpacking layers is blocking file work; on the event loop it would stall the
        # daemon (and its raft timers) for the whole load.
        tags = await asyncio.to_thread(engine.images.load, spool)
    for image_id in dict.fromkeys(engine.images.get(tag).id for tag in tags):
        engine.emit_image(image_id, "load")  # moby: one per image, named by its id
    lines = [{"stream": f"Loaded image: {tag}\n"} for tag in tags]
    body = b"".join(json.dumps(line).encode() + b"\r\n" for line in lines)
    return web.Response(status=200, body=body, content_type=JSON_TYPE)


async def remove_image(request: web.Request) -> web.Response:
    """docker rmi: Docker's list of {"Untagged": ref} / {"Deleted": id}."""
    records = await request.app[ENGINE].remove_image(
        request.match_info["name"],
        force=params.bool_value(request.query.get("force")),
        noprune=params.bool_value(request.query.get("noprune")),
    )
    return json_response(records)


def familiar_reference(ref: str) -> str:
    """docker.io/library/busybox:latest -> busybox:latest (the CLI pulls fully qualified)."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


async def tag_image(request: web.Request) -> web.Response:
    repo = request.query.get("repo", "")
    if not repo:
        raise InvalidParameter("repository name must have at least one component: repo is empty")
    tag = request.query.get("tag", "")
    store = request.app[ENGINE].images
    image = store.get(request.match_info["name"])
    store.tag(image.id, f"{repo}:{tag}" if tag else repo)
    request.app[ENGINE].emit_image(image.id, "tag", familiar_reference(f"{repo}:{tag or 'latest'}"))
    return web.Response(status=201)


def _pull_reference(request: web.Request) -> str:
    image = request.query.get("fromImage", "")
    tag = request.query.get("tag", "")
    if not image:
        raise InvalidParameter("fromImage is required: shoal cannot import images (use docker load)")
    image = familiar_reference(image)
    if tag and "@" not in image:
        return f"{image}:{tag}" if not tag.startswith("sha256:") else f"{image}@{tag}"
    return image


async def pull_image(request: web.Request) -> web.Response:
    """No registry is reachable: an image already loaded is 'up to date', others fail."""
    ref = _pull_reference(request)
    try:
        request.app[ENGINE].images.get(ref)
    except NotFound:
        name = ref.split("@", 1)[0]
        name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        raise NotFound(
            f"pull access denied for {name}, repository does not exist or may require "
            f"'docker login': shoal has no registry; load the image with 'docker load'"
        ) from None
    display = ref if (":" in ref.rsplit("/", 1)[-1] or "@" in ref) else f"{ref}:latest"
    body = json.dumps({"status": f"Status: Image is up to date for {display}"}).encode() + b"\r\n"
    return web.Response(status=200, body=body, content_type=JSON_TYPE)


async def distribution_inspect(request: web.Request) -> web.Response:
    raise NotImplemented_(
        f"shoal has no registry: cannot resolve the digest of {request.match_info['name']}"
    )


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/images/json", list_images)
    add_route(app, "POST", "/images/load", load_image)
    add_route(app, "DELETE", r"/images/{name:.+}", remove_image)
    add_route(app, "POST", "/images/create", pull_image)
    add_route(app, "GET", r"/images/{name:.+}/json", inspect_image)
    add_route(app, "POST", r"/images/{name:.+}/tag", tag_image)
    add_route(app, "GET", r"/distribution/{name:.+}/json", distribution_inspect)
