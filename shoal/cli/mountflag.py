"""`--mount type=...,source=...,target=...` parsed into a Mount object as the docker CLI does (opts/mount.go, with
its messages), for `shoal run/create` (HostConfig.Mounts) and `shoal service create` (TaskTemplate mounts)."""

from __future__ import annotations

import csv
import re
from typing import Any

from shoal.cli.format import UsageError

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_BARE_BOOLEANS = {"readonly", "ro", "volume-nocopy", "bind-nonrecursive"}
_RAM = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$", re.IGNORECASE)


def _bool(key: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"invalid value for {key}: {value}")


def _ram_bytes(key: str, value: str) -> int:
    """docker/go-units RAMInBytes: binary multiples, k/m/g/t/p, optional b/ib."""
    m = _RAM.match(value.strip())
    if not m:
        raise ValueError(f"invalid value for {key}: {value}")
    return int(float(m.group(1)) * 1024 ** "bkmgtp".index((m.group(2) or "b").lower()))


def parse_mount_flag(value: str) -> dict[str, Any]:
    """One --mount value -> the Engine API's Mount JSON; UsageError with the docker CLI's words on bad input."""
    try:
        return _parse(value)
    except ValueError as e:
        raise UsageError(f'invalid argument "{value}" for "--mount" flag: {e}') from None


def _parse(value: str) -> dict[str, Any]:
    fields = next(csv.reader([value])) if value else []
    mount: dict[str, Any] = {"Type": "volume"}
    bind: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    tmpfs: dict[str, Any] = {}
    for field in fields:
        key, sep, val = field.partition("=")
        key = key.strip().lower()
        if not sep:
            if key not in _BARE_BOOLEANS:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            val = "true"
        if key == "type":
            mount["Type"] = val.lower()
        elif key in ("source", "src"):
            mount["Source"] = val
        elif key in ("target", "dst", "destination"):
            mount["Target"] = val
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = _bool(key, val)
        elif key == "consistency":
            mount["Consistency"] = val.lower()
        elif key == "bind-propagation":
            bind["Propagation"] = val.lower()
        elif key == "bind-nonrecursive":
            bind["NonRecursive"] = _bool(key, val)
        elif key == "bind-recursive":
            bind["Recursive"] = val
        elif key == "volume-driver":
            volume.setdefault("DriverConfig", {})["Name"] = val
        elif key == "volume-label":
            lk, _, lv = val.partition("=")
            volume.setdefault("Labels", {})[lk] = lv
        elif key == "volume-opt":
            ok, osep, ov = val.partition("=")
            volume.setdefault("DriverConfig", {}).setdefault("Options", {})[ok] = ov if osep else ""
        elif key == "volume-nocopy":
            volume["NoCopy"] = _bool(key, val)
        elif key == "volume-subpath":
            volume["Subpath"] = val
        elif key == "tmpfs-size":
            tmpfs["SizeBytes"] = _ram_bytes(key, val)
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(val, 8)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
        else:
            raise ValueError(f"unexpected key '{key}' in '{field}'")
    if not mount.get("Target"):
        raise ValueError("target is required")
    kind = mount["Type"]
    for prefix, options, owner in (("volume", volume, "volume"), ("bind", bind, "bind"), ("tmpfs", tmpfs, "tmpfs")):
        if options and kind != owner:
            raise ValueError(f"cannot mix '{prefix}-*' options with mount type '{kind}'")
    recursive = bind.pop("Recursive", None)
    if recursive is not None:  # docker 28's bind-recursive
        if recursive == "disabled":
            bind["NonRecursive"] = True
        elif recursive == "writable":
            bind["ReadOnlyNonRecursive"] = True
        elif recursive == "readonly":
            if bind.get("Propagation") != "rprivate":
                raise ValueError("option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' to be specified in conjunction")
            bind["ReadOnlyForceRecursive"] = True
        elif recursive != "enabled":
            raise ValueError(f"invalid value for bind-recursive: {recursive}")
    if bind:
        mount["BindOptions"] = bind
    if volume:
        mount["VolumeOptions"] = volume
    if tmpfs:
        mount["TmpfsOptions"] = tmpfs
    return mount


def parse_tmpfs_flag(value: str) -> tuple[str, str]:
    """--tmpfs /run:size=64m,mode=1777 -> ("/run", "size=64m,mode=1777")."""
    path, _, options = value.partition(":")
    return path, options
