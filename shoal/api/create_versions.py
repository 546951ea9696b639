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


MAC_DEPRECATED = "The container-wide MacAddress field is now deprecated. It should be specified in EndpointsConfig instead."
MAC_CONFLICTS_WITH_MODE = "conflicting options: mac-address and the network mode"
MAC_NEEDS_MODE_ENDPOINT = ("if a container-wide MAC address is supplied, HostConfig.NetworkMode must match the identity "
                           "of a network in NetworkSettings.Networks")
MAC_MISMATCH = ("the container-wide MAC address must match the endpoint-specific MAC address for the main network, "
                "or be left empty")


def _set_ci(d: dict[str, Any], name: str, value: Any) -> None:
    """d[name] = value, replacing every spelling of name (moby's JSON decoding matched any)."""
    for key in [k for k in d if isinstance(k, str) and k.lower() == name.lower()]:
        del d[key]
    d[name] = value


def _object_at(d: dict[str, Any], name: str) -> dict[str, Any]:
    """d's object under name (any spelling), made when it is missing or null."""
    found = _get(d, name)
    if isinstance(found, dict):
        return found
    made: dict[str, Any] = {}
    _set_ci(d, name, made)
    return made


def migrate_container_mac(body: Any, version: str) -> list[str]:
    """moby's handleMACAddressBC on an adjusted body (changed in place): the container-wide Config.MacAddress becomes
    the main network's endpoint-specific MacAddress. Below API 1.44 it is every endpoint's (that version had one at
    create) and endpoint MACs without it are dropped (that version ignored them); from 1.44 it is deprecated: moved
    to the endpoint of HostConfig.NetworkMode with a warning, refused when it disagrees with that endpoint's.
    Returns the warnings for the create's response; raises InvalidParameter with moby's words."""
    if not isinstance(body, dict):
        return []
    mac = _get(body, "MacAddress")
    mac = mac if isinstance(mac, str) else ""
    mode = _get(_get(body, "HostConfig"), "NetworkMode")
    mode = mode if isinstance(mode, str) and mode not in ("", "default") else "bridge"  # moby's default, first
    by_mode = not (mode in ("host", "none") or mode.startswith("container:"))  # bridge or a user-defined network
    endpoints = _get(_get(body, "NetworkingConfig"), "EndpointsConfig")
    endpoints = {k: v for k, v in endpoints.items() if isinstance(v, dict)} if isinstance(endpoints, dict) else {}
    if version_before(version, "1.44"):
        if not mac:
            for ep in endpoints.values():
                drop_path(ep, ("MacAddress",))
            return []
        if not by_mode:
            raise InvalidParameter(MAC_CONFLICTS_WITH_MODE)
        if not endpoints:
            endpoints = {mode: _object_at(_object_at(_object_at(body, "NetworkingConfig"), "EndpointsConfig"), mode)}
        for ep in endpoints.values():
            _set_ci(ep, "MacAddress", mac)
        return []
    if not mac:
        return []
    if by_mode:
        if not endpoints:
            _object_at(_object_at(body, "NetworkingConfig"), "EndpointsConfig")[mode] = {"MacAddress": mac}
        else:
            names = (mode, "default") if mode == "bridge" else (mode,)  # the CLI's "default" is moby's "bridge"
            ep = next((endpoints[n] for n in names if n in endpoints), None)
            if ep is None:
                raise InvalidParameter(MAC_NEEDS_MODE_ENDPOINT)
            have = _get(ep, "MacAddress")
            if not have:
                _set_ci(ep, "MacAddress", mac)
            elif have != mac:
                raise InvalidParameter(MAC_MISMATCH)
    drop_path(body, ("MacAddress",))
    return [MAC_DEPRECATED]
