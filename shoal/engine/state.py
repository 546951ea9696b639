"""Durable JSON state of the local engine: networks, address pools, containers, daemon id.

Every write is atomic and fsynced (temp file, fsync, rename, fsync dir) so a SIGKILL at any
instant leaves either the old or the new record. Used by shoal.engine.engine only.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateDir:
    """One JSON file per object under data_dir/{networks,containers,ipam}."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("networks", "containers", "ipam", "ports"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def daemon_id(self) -> str:
        path = self.root / "engine-id"
        if path.exists():
            return path.read_text().strip()
        new_id = secrets.token_hex(32)
        write_atomic(path, new_id.encode())
        return new_id

    def save(self, kind: str, object_id: str, data: dict[str, Any]) -> None:
        write_atomic(self.root / kind / f"{object_id}.json", json.dumps(data, indent=1).encode())

    def delete(self, kind: str, object_id: str) -> None:
        try:
            (self.root / kind / f"{object_id}.json").unlink()
        except FileNotFoundError:
            pass

    def load_all(self, kind: str) -> dict[str, dict[str, Any]]:
        loaded: dict[str, dict[str, Any]] = {}
        for path in sorted((self.root / kind).glob("*.json")):
            loaded[path.stem] = json.loads(path.read_text())
        return loaded
