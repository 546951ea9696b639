"""Durable JSON state of the local engine: networks, address pools, containers, daemon id.

Writes go through common.fsutil.write_atomic (temp file, fsync, rename, fsync dir), so a SIGKILL
leaves the old or the new record. Every record write is made by one writer thread, in the order
asked (save waits for it, save_async lets the event loop go on meanwhile): a file creation and
fsync here take milliseconds under load, and the starts of a node's tasks used to queue behind
each other's on the event loop. A record that cannot be read is moved aside and reported
(`warnings`), never fatal for the rest. Used by shoal.engine.engine and agent.network.controller.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from common.fsutil import Sync, remove_stale_temps, write_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")

KINDS = ("networks", "containers", "ipam", "ports")
_REPLACE_WITHOUT_DIR_SYNC = frozenset({"containers", "ipam"})  # see StateDir.save
CORRUPT_SUFFIX = ".corrupt-"
_LEGACY_TEMP_SUFFIX = ".tmp"  # what the engine's own helper named its temp files before fsutil


class StateDir:
    """One JSON file per object under root/{networks,containers,ipam,ports}."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Problems found while loading (a record moved aside): shown by `docker info`.
        self.warnings: list[str] = []
        self.quarantined: dict[str, list[str]] = {}  # kind -> ids whose record was moved aside
        for sub in KINDS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.remove_stale_temps()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="state-writer")
        self._writer_thread: int | None = None

    def remove_stale_temps(self) -> int:
        """Temp files a crash left behind (ours only); returns how many were removed."""
        removed = 0
        for directory in (self.root, *(self.root / sub for sub in KINDS)):
            removed += remove_stale_temps(directory)
            for legacy in directory.glob(f".*.json{_LEGACY_TEMP_SUFFIX}"):
                legacy.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d stale temp file(s) under %s", removed, self.root)
        return removed

    def daemon_id(self) -> str:
        path = self.root / "engine-id"
        if path.exists():
            text = path.read_text().strip()
            if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
                return text
            self.quarantine(path, f"not a 64-hex engine id: {text[:80]!r}")
        new_id = secrets.token_hex(32)
        write_atomic(path, new_id.encode())
        return new_id

    def path(self, kind: str, object_id: str) -> Path:
        return self.root / kind / f"{object_id}.json"

    def save(self, kind: str, object_id: str, data: dict[str, Any] | Any) -> None:
        """data: a JSON object, or a dataclass record (saved as dataclasses.asdict would give it, without
        its deep copy: ~30 us instead of ~250 us for a container record). Compact JSON, as runc's
        config.json and moby's config.v2.json: the C encoder (an indent would take the Python one).
        Raises OSError (ENOSPC...) with the old record, if any, left intact."""
        write = self._write_job(kind, object_id, data)
        if threading.get_ident() == self._writer_thread:
            write()
        else:
            self._writer.submit(write).result()

    async def save_async(self, kind: str, object_id: str, data: dict[str, Any] | Any) -> None:
        """save, the event loop free while the writer thread writes: the record is encoded now (what
        data holds at the call), written after every save asked before it. Raises what save raises."""
        await asyncio.wrap_future(self._writer.submit(self._write_job(kind, object_id, data)))

    def _write_job(self, kind: str, object_id: str, data: dict[str, Any] | Any) -> Callable[[], None]:
        path = self.path(kind, object_id)
        payload = json.dumps(data, default=_record_fields).encode()

        def write() -> None:
            self._writer_thread = threading.get_ident()
            # A new record is made durable whole (file and directory). A container or IPAM record that
            # replaces one on disk skips the directory fsync (moby's AtomicWriteFile does the same for
            # config.v2.json): after a power cut the old or the new record is there, each whole, and
            # the restart reconciles either (no container survives a power cut; IPAM is rebuilt from
            # live endpoints). A kill -9 leaves the new one in both cases.
            sync: Sync = "file" if kind in _REPLACE_WITHOUT_DIR_SYNC and path.exists() else "all"
            write_atomic(path, payload, sync=sync)
        return write

    def delete(self, kind: str, object_id: str) -> None:
        """Through the writer, as save: a write of the record asked before is not made after it."""
        path = self.path(kind, object_id)
        if threading.get_ident() == self._writer_thread:
            path.unlink(missing_ok=True)
        else:
            self._writer.submit(path.unlink, missing_ok=True).result()

    def load_all(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every readable record of `kind` as a JSON object; the others are quarantined."""
        return self.load_records(kind, _as_object)

    def load_records(self, kind: str, parse: Callable[[dict[str, Any]], T]) -> dict[str, T]:
        """parse(json object) for every record of `kind`. A file that is not JSON, not an
        object, or that parse refuses (KeyError, TypeError, ValueError...) is moved aside."""
        loaded: dict[str, T] = {}
        for path in sorted((self.root / kind).glob("*.json")):
            try:
                data = json.loads(path.read_bytes())
                if not isinstance(data, dict):
                    raise TypeError(f"a JSON {type(data).__name__}, not an object")
                loaded[path.stem] = parse(data)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self.quarantine(path, f"{type(exc).__name__}: {exc}")
                self.quarantined.setdefault(kind, []).append(path.stem)
        return loaded

    def quarantine(self, path: Path, reason: str) -> Path:
        """Moves an unreadable record aside (kept for a human to look at) and records a warning."""
        aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        os.replace(path, aside)
        message = f"unreadable state file {path} moved to {aside}: {reason}"
        log.error("%s", message)
        self.warnings.append(f"WARNING: {message}")
        return aside


def _as_object(data: dict[str, Any]) -> dict[str, Any]:
    return data


def _record_fields(value: Any) -> dict[str, Any]:
    """json's hook for what it cannot encode itself: a dataclass record becomes its fields by name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
