"""The local volume driver: named volumes under <data-dir>/volumes/<name>/_data with their
metadata (volume.json) written atomically; create, get, list, remove, and the first-mount copy.

Blocking (file system work): shoal.engine.container_mounts and shoal.api.routes_volumes call it
from the event loop for small steps and through a thread for copies. Which containers use a
volume is the engine's knowledge: callers pass it in (`users`).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.executor.rootfs import open_in_root
from agent.volumes.specs import MountSpecError, check_volume_name
from common.errdefs import Conflict, InvalidParameter, NotFound, SystemError_
from common.fsutil import fsync_dir, write_atomic
from common.timefmt import now_rfc3339

log = logging.getLogger(__name__)

DRIVER = "local"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"  # Docker 23+ marks anonymous volumes with it
META = "volume.json"
_CREATING = ".creating-"
_REMOVING = ".removing-"


@dataclass(slots=True)
class Volume:
    name: str
    path: Path  # the volume's directory; data in path/_data (or the bind device)
    created_at: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def mountpoint(self) -> str:
        device = self.options.get("device", "")
        if self.options.get("type") == "none" and device:  # `-o bind`: the host directory itself
            return device
        return str(self.path / "_data")

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def to_json(self, users: int | None = None) -> dict[str, Any]:
        """Docker's Volume object; UsageData only where the caller counted (system df, prune)."""
        data: dict[str, Any] = {
            "CreatedAt": self.created_at,
            "Driver": DRIVER,
            "Labels": dict(self.labels) or None,  # null when empty, as Docker 20.10 shows it
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": dict(self.options) or None,
            "Scope": "local",
        }
        if users is not None:
            data["UsageData"] = {"RefCount": users, "Size": -1}
        return data


def _check_options(options: dict[str, str]) -> None:
    """The local driver's options: only the bind form (`type=none,o=bind,device=/path`) is
    supported; tmpfs or block devices are refused, naming what is missing."""
    if not options:
        return
    unknown = sorted(set(options) - {"type", "o", "device"})
    if unknown:
        raise InvalidParameter(f"invalid option: {unknown[0]!r}")
    kind, device = options.get("type", ""), options.get("device", "")
    flags = [o for o in options.get("o", "").split(",") if o]
    if kind == "none" and "bind" in flags and set(flags) <= {"bind", "rbind"}:
        if not device.startswith("/"):
            raise InvalidParameter(f"invalid option: device {device!r} must be an absolute path for a bind volume")
        if not os.path.isdir(device):
            raise InvalidParameter(f"failed to mount local volume: mount {device}: no such file or directory")
        return
    raise InvalidParameter(
        f"shoal's local volume driver supports only bind options (type=none, o=bind, device=/path); got "
        + ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    )


class VolumeStore:
    """Volumes under root (<data-dir>/volumes). One instance per daemon; not thread-safe:
    callers serialise changes on the event loop."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.volumes: dict[str, Volume] = {}
        self.warnings: list[str] = []
        self.held: dict[str, int] = {}  # volumes a create in progress uses (shoal.engine.container_mounts)
        self._load()

    def _load(self) -> None:
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith((_CREATING, _REMOVING)):
                # A create or remove that a crash cut short: its volume never existed, or is gone.
                subprocess.run(["rm", "-rf", "--one-file-system", str(entry)], check=False)
                continue
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                meta = json.loads((entry / META).read_bytes())
                if not isinstance(meta, dict) or meta.get("Name") != entry.name:
                    raise ValueError("its name does not match its directory")
                volume = Volume(entry.name, entry, str(meta.get("CreatedAt", "")),
                                dict(meta.get("Labels") or {}), dict(meta.get("Options") or {}))
            except (OSError, ValueError, TypeError) as exc:
                message = f"WARNING: volume {entry.name}: cannot read {entry / META} ({exc}); ignored"
                log.error("%s", message)
                self.warnings.append(message)
                continue
            self.volumes[volume.name] = volume

    def get(self, name: str) -> Volume:
        volume = self.volumes.get(name)
        if volume is None:
            raise NotFound(f"get {name}: no such volume")
        return volume

    def list(self) -> list[Volume]:
        return sorted(self.volumes.values(), key=lambda v: v.name)

    def create(self, name: str = "", driver: str = "", labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, anonymous: bool = False) -> Volume:
        """A new volume, or the existing one of that name (as Docker: create is idempotent)."""
        if driver not in ("", DRIVER):
            raise NotFound(f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found')
        if not name:
            name = secrets.token_hex(32)
            anonymous = True
        try:
            check_volume_name(name)
        except MountSpecError as exc:
            raise InvalidParameter(f"create {name}: {exc.message}") from None
        existing = self.volumes.get(name)
        if existing is not None:
            return existing
        options = dict(options or {})
        _check_options(options)
        labels = dict(labels or {})
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        volume = Volume(name, self.root / name, now_rfc3339(), labels, options)
        staging = self.root / f"{_CREATING}{name}"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            (staging / "_data").mkdir(parents=True, mode=0o755)
            os.chmod(staging / "_data", 0o755)
            meta = {"Name": name, "CreatedAt": volume.created_at, "Labels": labels, "Options": options}
            write_atomic(staging / META, json.dumps(meta).encode(), mode=0o600)
            os.rename(staging, volume.path)  # the volume exists from here on, whole
            fsync_dir(self.root)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise SystemError_(f"create {name}: {exc.strerror or exc}") from exc
        self.volumes[name] = volume
        return volume

    def remove(self, name: str, users: list[str], force: bool = False) -> Path | None:
        """users: ids of the containers that use it (any state): a volume in use stays. The
        volume is gone when this returns; its files wait in the returned directory for
        purge() (slow for a big volume: callers run it off the event loop)."""
        volume = self.volumes.get(name)
        if volume is None:
            if force:
                return None
            raise NotFound(f"get {name}: no such volume")
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        aside = self.root / f"{_REMOVING}{name}-{secrets.token_hex(4)}"
        try:
            os.rename(volume.path, aside)  # gone at once; the files follow
            fsync_dir(self.root)
        except OSError as exc:
            raise SystemError_(f"remove {name}: {exc.strerror or exc}") from exc
        del self.volumes[name]
        return aside

    @staticmethod
    def purge(aside: Path | None) -> None:
        """Deletes what remove() set aside (a crash before: the next start does it)."""
        if aside is not None:
            # --one-file-system: never delete through a mount that appeared under the volume.
            subprocess.run(["rm", "-rf", "--one-file-system", str(aside)], check=False)


def is_empty(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True


def copy_image_content(image_rootfs: Path, destination: str, volume_dir: str) -> bool:
    """Docker's first-mount copy: what the image holds at `destination` goes into the empty
    volume. The path is resolved inside the image's root (a symlink in the image cannot point
    the copy at the host); cp -a copies symlinks as symlinks. True when something was copied."""
    if not is_empty(volume_dir):
        return False
    try:
        fd = open_in_root(image_rootfs, destination)
    except OSError:
        return False  # nothing there (or not reachable inside the root): an empty volume
    try:
        source = f"/proc/{os.getpid()}/fd/{fd}"
        if not os.path.isdir(source):
            return False
        result = subprocess.run(["cp", "-a", "--", f"{source}/.", volume_dir], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemError_(f"cannot copy the image's {destination} into volume {volume_dir}: "
                               f"{result.stderr.strip()}")
        return True
    finally:
        os.close(fd)
