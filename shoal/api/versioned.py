"""What the API version of a request changes in its body: moby drops the fields an older version did not have
(service_versions.py for service specs, create_versions.py for container creates)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shoal.api import params

EACH = "[]"  # in a path: every element of the list there
EACH_VALUE = "{}"  # in a path: every value of the map there (EndpointsConfig's networks)


def request_version(request: web.Request) -> str:
    """The request's API version (an unversioned path is the newest, as dockerd's default version)."""
    return request.match_info.get("api_version") or params.MAX_API_VERSION


def drop_path(node: Any, path: tuple[str, ...]) -> None:
    """Removes the field at path (names in any case, as moby's JSON decoding matches them; every spelling)."""
    if isinstance(node, list) and path and path[0] == EACH:
        for item in node:
            drop_path(item, path[1:])
        return
    if not isinstance(node, dict) or not path:
        return
    if path[0] == EACH_VALUE:
        for value in node.values():
            drop_path(value, path[1:])
        return
    for key in [k for k in node if isinstance(k, str) and k.lower() == path[0].lower()]:
        if len(path) > 1:
            drop_path(node[key], path[1:])
        else:
            del node[key]
