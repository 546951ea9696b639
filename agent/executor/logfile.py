"""Reads a container's json-file log (written by agent/executor/shim.py, Docker's format): the
rotated files then the current one, tail/since/until, and follow.

Used by the engine's container_logs (shoal.engine.engine) for `GET /containers/{id}/logs`.
"""
from __future__ import annotations

import asyncio
import calendar
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

FOLLOW_POLL_SECONDS = 0.05
_STREAMS = {"stdout": 1, "stderr": 2}


@dataclass(slots=True)
class LogEntry:
    stream: int  # 1 stdout, 2 stderr
    data: bytes
    time_ns: int


def parse_time_ns(text: str) -> int:
    """RFC3339 with up to 9 fraction digits, UTC 'Z' or an offset -> ns since the epoch."""
    base, frac, zone = text, "", "Z"
    if text.endswith("Z"):
        base = text[:-1]
    else:
        zone = text[-6:]
        base = text[:-6]
    if "." in base:
        base, frac = base.split(".", 1)
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return secs * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def format_time_fixed(ns: int) -> str:
    """Docker's RFC3339NanoFixed (always 9 digits), the `--timestamps` prefix."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def parse_unix_time(text: str, name: str) -> int:
    """since/until as the API carries them: seconds[.nanoseconds] -> ns; ValueError naming it."""
    value = text.strip()
    secs, _, frac = value.partition(".")
    if not secs.lstrip("-").isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f'invalid value for "{name}": {text!r}')
    return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def decode_line(line: bytes) -> LogEntry | None:
    try:
        entry = json.loads(line)
        return LogEntry(_STREAMS.get(entry.get("stream"), 1), entry.get("log", "").encode(),
                        parse_time_ns(entry["time"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a torn or foreign line is skipped, as Docker's reader does


def log_files(path: Path) -> list[Path]:
    """Oldest first: PATH.N ... PATH.1, PATH."""
    rotated = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + [path]


@dataclass(slots=True)
class Query:
    stdout: bool = True
    stderr: bool = True
    tail: int | None = None  # None: all
    since_ns: int = 0
    until_ns: int = 0  # 0: no bound
    timestamps: bool = False

    def wants(self, entry: LogEntry) -> bool:
        if entry.stream == 1 and not self.stdout or entry.stream == 2 and not self.stderr:
            return False
        if self.since_ns and entry.time_ns < self.since_ns:
            return False
        return not (self.until_ns and entry.time_ns > self.until_ns)

    def render(self, entry: LogEntry) -> tuple[int, bytes]:
        if self.timestamps:
            return entry.stream, format_time_fixed(entry.time_ns).encode() + b" " + entry.data
        return entry.stream, entry.data


def _read_existing(path: Path) -> tuple[list[bytes], int, int]:
    """Every complete line of the log files; (lines, offset in the current file, its inode)."""
    lines: list[bytes] = []
    offset = inode = 0
    for file in log_files(path):
        try:
            with open(file, "rb") as f:
                data = f.read()
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            continue
        complete = data[: data.rfind(b"\n") + 1]
        lines.extend(complete.splitlines())
        if file == path:
            offset, inode = len(complete), st.st_ino
    return lines, offset, inode


async def read_log(path: Path, query: Query, follow: bool = False,
                   running: Callable[[], bool] = lambda: False) -> AsyncIterator[tuple[int, bytes]]:
    """(stream, bytes) as `docker logs` shows them; with follow, until running() is false."""
    lines, offset, inode = await asyncio.to_thread(_read_existing, path)
    chosen = deque(lines, maxlen=query.tail) if query.tail is not None else lines
    if query.tail == 0:
        chosen = []
    for line in chosen:
        entry = decode_line(line)
        if entry is not None and query.wants(entry):
            yield query.render(entry)
    while follow:
        alive = running()
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != inode or st.st_size < offset:  # rotated: the new file from its start
                    inode, offset = st.st_ino, 0
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        complete = data[: data.rfind(b"\n") + 1]
        offset += len(complete)
        for line in complete.splitlines():
            entry = decode_line(line)
            if entry is not None and query.wants(entry):
                if query.until_ns and entry.time_ns > query.until_ns:
                    return
                yield query.render(entry)
        if not alive:
            return
        if query.until_ns and time.time_ns() > query.until_ns:
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
