"""A container create as a client of an older API version meant it (moby's postContainersCreate): fields that version
did not have are dropped, options it did not check are reset, and what it could not ask for is refused with moby's
words. Applies to the JSON body before create_fields.py and params.parse_container_create see it."""

from __future__ import annotations

import copy
import json
from typing import Any

from common.errdefs import InvalidParameter
from shoal.api.params import get_ci, version_before
from shoal.api.versioned import EACH, EACH_VALUE, drop_path

_OPTIONS_OF = {"VolumeOptions": "volume", "BindOptions": "bind", "TmpfsOptions": "tmpfs"}


def _get(d: Any, name: str) -> Any:
    """params.get_ci on what may not be an object (the parser refuses those with its own message)."""
    return get_ci(d, name) if isinstance(d, dict) else None


def _mounts(body: dict[str, Any]) -> list[dict[str, Any]]:
    mounts = _get(_get(body, "HostConfig"), "Mounts")
    return [m for m in mounts if isinstance(m, dict)] if isinstance(mounts, list) else []


def _mount_type(m: dict[str, Any]) -> str:
    kind = _get(m, "Type")
    return kind if isinstance(kind, str) else ""


def adjust_create_for_api_version(body: Any, version: str) -> Any:
    """body without what API `version` did not have; raises InvalidParameter (moby's words) for what it could not
    ask for. body itself is left as it was."""
    if not isinstance(body, dict):
        return body  # the parser refuses it with its own message
    out = copy.deepcopy(body)
    mounts = ("HostConfig", "Mounts", EACH)
    if version_before(version, "1.40"):
        drop_path(out, (*mounts, "BindOptions", "NonRecursive"))
    if version_before(version, "1.42"):
        drop_path(out, (*mounts, "BindOptions", "CreateMountpoint"))
        drop_path(out, ("HostConfig", "ConsoleSize"))  # not applied by a Linux daemon before 1.42
        for m in _mounts(out):  # options for another mount type were not checked then: dropped, not refused
            for options, kind in (("VolumeOptions", "volume"), ("TmpfsOptions", "tmpfs")):
                if _mount_type(m) != kind:
                    drop_path(m, (options,))
    else:
        for m in _mounts(out):
            for options, kind in _OPTIONS_OF.items():
                if _get(m, options) is not None and _mount_type(m) != kind:
                    raise InvalidParameter(
                        f"{options} must not be specified on mount type {json.dumps(_mount_type(m))}")
    if version_before(version, "1.43"):
        drop_path(out, ("HostConfig", "Annotations"))
    if version_before(version, "1.44"):
        drop_path(out, ("Healthcheck", "StartInterval"))
        for m in _mounts(out):
            if _mount_type(m) == "bind" and _get(_get(m, "BindOptions"), "ReadOnlyForceRecursive") is True:
                raise InvalidParameter("BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer")
        endpoints = _get(_get(out, "NetworkingConfig"), "EndpointsConfig")
        if isinstance(endpoints, dict) and len(endpoints) > 1:
            raise InvalidParameter(
                f"Container cannot be created with multiple network endpoints: {', '.join(map(str, endpoints))}")
    if version_before(version, "1.45"):
        for m in _mounts(out):
            if _get(_get(m, "VolumeOptions"), "Subpath") not in (None, ""):
                raise InvalidParameter("VolumeOptions.Subpath needs API v1.45 or newer")
    if version_before(version, "1.48"):
        drop_path(out, ("NetworkingConfig", "EndpointsConfig", EACH_VALUE, "GwPriority"))
        if any(_mount_type(m) == "image" for m in _mounts(out)):
            raise InvalidParameter('Mount type "Image" needs API v1.48 or newer')
    return out
