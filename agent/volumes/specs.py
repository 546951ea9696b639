"""Parses a create's mount requests (HostConfig.Binds, HostConfig.Mounts, HostConfig.Tmpfs,
Config.Volumes) into MountPoints, refusing bad ones with Docker's messages. Pure.

shoal.engine.container_mounts resolves the volume names and checks bind sources on the disk;
agent.executor.mounts turns the result into OCI mounts.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
DEFAULT_PROPAGATION = "rprivate"
_RW_MODES = ("rw", "ro")
_LABEL_MODES = ("z", "Z")
_COPY_MODES = ("nocopy",)
_CONSISTENCY_MODES = ("consistent", "cached", "delegated")
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# Options mount(8) knows as flags for a tmpfs, and the tmpfs data keys; anything else is refused
# now rather than by the kernel at start.
TMPFS_FLAGS = frozenset((
    "ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async", "dirsync",
    "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "mand", "nomand",
))  # fmt: skip
TMPFS_DATA = frozenset(("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"))


class MountSpecError(ValueError):
    """A refused mount request; message is Docker's wording."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class MountPoint:
    """One user mount of a container, as kept in its record and shown by inspect's Mounts."""

    type: str  # bind | volume | tmpfs
    destination: str  # cleaned absolute path inside the container
    source: str = ""  # bind: the host path; volume: its _data directory once resolved
    name: str = ""  # volume name (generated for an anonymous volume)
    driver: str = ""  # "local" for volumes
    mode: str = ""  # the mode part of a -v spec, as given
    rw: bool = True
    propagation: str = ""  # binds only
    copy_data: bool = True  # volumes: fill an empty new volume from the image
    tmpfs_options: str = ""  # tmpfs: "size=...,mode=..." as Docker passes them
    anonymous: bool = False
    create_source: bool = False  # -v binds: a missing host directory is created (as Docker does)
    shown: bool = True  # HostConfig.Tmpfs entries are not in inspect's Mounts (as with Docker)
    volume_labels: dict[str, str] = field(default_factory=dict)  # --mount volume-label
    volume_options: dict[str, str] = field(default_factory=dict)  # --mount volume-opt

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MountPoint:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _clean(path: str) -> str:
    """Go's path.Clean for an absolute path (Python's normpath keeps a leading "//")."""
    if not path.startswith("/"):
        return posixpath.normpath(path) if path else path
    return "/" + posixpath.normpath(path).lstrip("/")


def _check_target(target: str) -> None:
    """Docker's order: empty, root, relative (messages without the type prefix)."""
    if target == "":
        raise ValueError("field Target must not be empty")
    if _clean(target.replace("\\", "/")) == "/":
        raise ValueError("invalid specification: destination can't be '/'")
    if not target.replace("\\", "/").startswith("/"):
        raise ValueError(f"invalid mount path: '{target}' mount path must be absolute")


def _config_error(kind: str, err: ValueError) -> MountSpecError:
    return MountSpecError(f'invalid mount config for type "{kind}": {err}')


def valid_mode(mode: str) -> bool:
    """moby's linuxValidMountMode: known options, at most one of each class."""
    if mode == "":
        return True
    counts = [0, 0, 0, 0, 0]
    for option in mode.split(","):
        for i, group in enumerate((_RW_MODES, _LABEL_MODES, PROPAGATIONS, _COPY_MODES, _CONSISTENCY_MODES)):
            if option in group:
                counts[i] += 1
                break
        else:
            return False
    return all(c <= 1 for c in counts)


def parse_bind(raw: str) -> MountPoint:
    """One HostConfig.Binds entry: `/host:/ctr[:mode]` (bind) or `name:/ctr[:mode]` (volume)."""
    parts = raw.split(":", 3)
    if parts[0] == "" or len(parts) > 3:
        raise MountSpecError(f"invalid volume specification: '{raw}'")
    mode = ""
    if len(parts) == 1:  # `/ctr` alone: an anonymous volume (the CLI sends it in Config.Volumes)
        source, target = "", parts[0]
    elif len(parts) == 2:
        if valid_mode(parts[1]):  # `/foo:rw`: a destination and a mode, no source
            raise MountSpecError(f"invalid volume specification: '{raw}'")
        source, target = parts
    else:
        source, target, mode = parts
    if not valid_mode(mode):
        raise MountSpecError(f"invalid mode: {mode}")
    options = mode.split(",") if mode else []
    kind = "bind" if source.startswith("/") else "volume"
    propagation = next((o for o in options if o in PROPAGATIONS), "")
    try:
        _check_target(target)
        if kind == "volume" and propagation:
            raise ValueError("field BindOptions must not be specified")
    except ValueError as exc:
        raise MountSpecError(f"invalid volume specification: '{raw}': {_config_error(kind, exc)}") from None
    point = MountPoint(type=kind, destination=_clean(target), mode=mode, rw="ro" not in options)
    if kind == "bind":
        point.source = _clean(source)
        point.propagation = propagation or DEFAULT_PROPAGATION
        point.create_source = True
    else:
        point.name = source
        point.driver = "local"
        point.copy_data = "nocopy" not in options
        point.anonymous = source == ""
    return point


def _get(data: Mapping[str, Any], key: str, default: Any = None) -> Any:
    lowered = key.lower()
    return next((v for k, v in data.items() if k.lower() == lowered), default)


def _object(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = _get(data, key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MountSpecError(f"invalid JSON: {where}.{key} must be an object")
    return value


def _string(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _get(data, key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MountSpecError(f"invalid JSON: {where}.{key} must be a string")
    return value


def _string_map(data: Mapping[str, Any] | None, key: str, where: str) -> dict[str, str]:
    value = _get(data or {}, key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MountSpecError(f"invalid JSON: {where}.{key} must be an object of strings")
    return dict(value)


def tmpfs_size_text(size: int) -> str:
    """Docker's rendering of TmpfsOptions.SizeBytes: the largest unit that divides it."""
    for suffix, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % divisor == 0:
            return f"{size // divisor}{suffix}"
    return str(size)


# Keys of a Mounts entry shoal applies (or that Docker ignores on Linux: Consistency); another
# key with a non-zero value is refused, never ignored.
_MOUNT_KEYS = {
    "": {"type", "source", "target", "readonly", "consistency", "bindoptions", "volumeoptions", "tmpfsoptions"},
    "BindOptions": {"propagation", "createmountpoint", "nonrecursive"},
    "VolumeOptions": {"nocopy", "labels", "driverconfig", "subpath"},
    "TmpfsOptions": {"sizebytes", "mode", "options"},
}


def _refuse_unknown(spec: Mapping[str, Any], section: str) -> None:
    for key, value in spec.items():
        if key.lower() not in _MOUNT_KEYS[section] and value not in (None, False, 0, "", [], {}):
            where = f"Mounts[].{section}.{key}" if section else f"Mounts[].{key}"
            raise MountSpecError(f"shoal does not support {where} yet (got {value!r})")


def parse_mount(spec: Mapping[str, Any]) -> MountPoint:
    """One HostConfig.Mounts entry (the JSON of `--mount`), checked as moby's linux parser does."""
    if not isinstance(spec, dict):
        raise MountSpecError("invalid JSON: each HostConfig.Mounts entry must be an object")
    _refuse_unknown(spec, "")
    where = "Mounts[]"
    kind = _string(spec, "Type", where)
    target = _string(spec, "Target", where)
    source = _string(spec, "Source", where)
    readonly = _get(spec, "ReadOnly", False)
    if not isinstance(readonly, bool):
        raise MountSpecError("invalid JSON: Mounts[].ReadOnly must be a boolean")
    bind_options = _object(spec, "BindOptions", where)
    volume_options = _object(spec, "VolumeOptions", where)
    tmpfs_options = _object(spec, "TmpfsOptions", where)
    for section, options in (("BindOptions", bind_options), ("VolumeOptions", volume_options),
                             ("TmpfsOptions", tmpfs_options)):
        _refuse_unknown(options or {}, section)
    try:
        _check_target(target)
        if kind == "bind":
            if source == "":
                raise ValueError("field Source must not be empty")
            propagation = _string(bind_options or {}, "Propagation", where)
            if propagation and propagation not in PROPAGATIONS:
                raise ValueError(f"invalid propagation mode: {propagation}")
            if volume_options is not None:
                raise ValueError("field VolumeOptions must not be specified")
            if not source.startswith("/"):
                raise ValueError(f"invalid mount path: '{source}' mount path must be absolute")
            if _get(bind_options or {}, "NonRecursive", False):
                raise ValueError("shoal does not support BindOptions.NonRecursive yet")
            # CreateMountpoint (API 1.44): a missing source is made at start, as for -v.
            create = _get(bind_options or {}, "CreateMountpoint", False) is True
            return MountPoint(type="bind", destination=_clean(target), source=_clean(source), rw=not readonly,
                              propagation=propagation or DEFAULT_PROPAGATION, create_source=create)
        if kind == "volume":
            if bind_options is not None:
                raise ValueError("field BindOptions must not be specified")
            if readonly and source == "":
                raise ValueError("must not set ReadOnly mode when using anonymous volumes")
            options = volume_options or {}
            if _string(options, "Subpath", where):
                raise ValueError("shoal does not support VolumeOptions.Subpath yet")
            driver_config = _object(options, "DriverConfig", where + ".VolumeOptions") or {}
            driver = _string(driver_config, "Name", where) or "local"
            nocopy = _get(options, "NoCopy", False)
            return MountPoint(type="volume", destination=_clean(target), name=source, driver=driver, rw=not readonly,
                              copy_data=not nocopy, anonymous=source == "",
                              volume_labels=_string_map(options, "Labels", where),
                              volume_options=_string_map(driver_config, "Options", where))
        if kind == "tmpfs":
            if bind_options is not None:
                raise ValueError("field BindOptions must not be specified")
            if source:
                raise ValueError("field Source must not be specified")
            return MountPoint(type="tmpfs", destination=_clean(target), rw=not readonly,
                              tmpfs_options=_tmpfs_data(tmpfs_options or {}, readonly))
        if kind in ("npipe", "cluster", "image"):
            raise ValueError(f"shoal does not support mounts of type {kind}")
        raise ValueError("mount type unknown")
    except ValueError as exc:
        raise _config_error(kind, exc) from None


def _tmpfs_data(options: Mapping[str, Any], readonly: bool) -> str:
    data = ["ro"] if readonly else []
    mode = _get(options, "Mode", 0) or 0
    size = _get(options, "SizeBytes", 0) or 0
    for name, value in (("Mode", mode), ("SizeBytes", size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"invalid JSON: TmpfsOptions.{name} must be a non-negative integer")
    if mode:
        data.append(f"mode={mode:o}")
    if size:
        data.append(f"size={tmpfs_size_text(size)}")
    for option in _get(options, "Options", None) or []:
        if not isinstance(option, list) or not 1 <= len(option) <= 2:
            raise ValueError("invalid option array length")
        if option[0] not in ("exec", "noexec"):
            raise ValueError(f"invalid option: {option[0]}")
        data.append("=".join(str(o) for o in option))
    return ",".join(data)


def parse_tmpfs(destination: str, data: str) -> MountPoint:
    """One HostConfig.Tmpfs entry (`--tmpfs /run:size=64m,mode=1777`)."""
    try:
        _check_target(destination)
    except ValueError as exc:
        raise MountSpecError(str(exc)) from None
    for option in filter(None, (data or "").split(",")):
        key = option.split("=", 1)[0]
        if ("=" in option and key not in TMPFS_DATA) or ("=" not in option and option not in TMPFS_FLAGS):
            raise MountSpecError(f"invalid tmpfs option {option!r} for {destination}")
    readonly = "ro" in (data or "").split(",")
    return MountPoint(type="tmpfs", destination=_clean(destination), tmpfs_options=data or "", rw=not readonly,
                      shown=False)


def parse_all(host_config: Mapping[str, Any], config_volumes: Mapping[str, Any] | None,
              image_volumes: Mapping[str, Any] | None) -> list[MountPoint]:
    """Every user mount of a create, in Docker's order: binds, then --mount, then --tmpfs, then
    the anonymous volumes of Config.Volumes and the image's Volumes not already covered.
    A destination given twice by binds, mounts or tmpfs is `Duplicate mount point: X`."""
    points: list[MountPoint] = []
    taken: set[str] = set()

    def add(point: MountPoint) -> None:
        if point.destination in taken:
            raise MountSpecError(f"Duplicate mount point: {point.destination}")
        taken.add(point.destination)
        points.append(point)

    binds = _get(host_config, "Binds") or []
    if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
        raise MountSpecError("invalid JSON: HostConfig.Binds must be a list of strings")
    for raw in binds:
        add(parse_bind(raw))
    mounts = _get(host_config, "Mounts") or []
    if not isinstance(mounts, list):
        raise MountSpecError("invalid JSON: HostConfig.Mounts must be a list")
    for spec in mounts:
        add(parse_mount(spec))
    tmpfs = _get(host_config, "Tmpfs") or {}
    if not isinstance(tmpfs, dict) or not all(isinstance(v, str) for v in tmpfs.values()):
        raise MountSpecError("invalid JSON: HostConfig.Tmpfs must be an object of strings")
    for destination, data in tmpfs.items():
        add(parse_tmpfs(destination, data))
    for source in (config_volumes, image_volumes):
        if source is None:
            continue
        if not isinstance(source, dict):
            raise MountSpecError("invalid JSON: Volumes must be an object")
        for destination in source:
            try:
                _check_target(destination)
            except ValueError as exc:
                raise MountSpecError(f"invalid volume specification: '{destination}': "
                                     f"{_config_error('volume', exc)}") from None
            cleaned = _clean(destination)
            if cleaned not in taken:  # an explicit mount wins over an anonymous volume
                taken.add(cleaned)
                points.append(MountPoint(type="volume", destination=cleaned, driver="local", anonymous=True))
    return points


def check_volume_name(name: str) -> None:
    """The local driver's rule for names, with its messages (without the `create NAME: ` prefix)."""
    if len(name) == 1:
        raise MountSpecError("volume name is too short, names should be at least two alphanumeric characters")
    if not VOLUME_NAME.fullmatch(name):
        raise MountSpecError(
            f'"{name}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" '
            "are allowed. If you intended to pass a host directory, use absolute path"
        )
