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


CHUNK = 1 << 20  # read a log this much at a time: never a whole (unbounded) file in memory


def _complete_end(path: Path) -> tuple[int, int]:
    """(offset just past the last complete line of the current file, its inode); (0, 0) if none."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            f.seek(max(0, size - 65536))
            window = f.read(size - max(0, size - 65536))
    except FileNotFoundError:
        return 0, 0
    return size - len(window) + window.rfind(b"\n") + 1, st.st_ino


def _tail_lines(files: list[Path], count: int, current_end: int) -> list[bytes]:
    """The last count lines of the files (oldest first), read backwards by blocks; the current
    file (the last one) only up to current_end."""
    lines: list[bytes] = []
    for file in reversed(files):
        try:
            with open(file, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                if file == files[-1]:
                    end = min(end, current_end)
                carry = b""
                pos = end
                while pos > 0 and len(lines) < count:
                    step = min(CHUNK, pos)
                    pos -= step
                    f.seek(pos)
                    block = f.read(step) + carry
                    parts = block.split(b"\n")
                    carry = parts[0]  # may continue in the block before
                    for line in reversed(parts[1:]):
                        if line:
                            lines.append(line)
                if pos == 0 and carry and len(lines) < count:
                    lines.append(carry)
        except FileNotFoundError:
            continue
        if len(lines) >= count:
            break
    return list(reversed(lines[:count]))


def _read_block(file: Path, offset: int) -> tuple[bytes, int, int]:
    """Complete lines from offset (at most about CHUNK bytes); (data, new offset, inode)."""
    with open(file, "rb") as f:
        return _read_block_of(f.fileno(), offset)


def _read_block_of(fd: int, offset: int) -> tuple[bytes, int, int]:
    """_read_block on an open file."""
    ino = os.fstat(fd).st_ino
    data = os.pread(fd, CHUNK, offset)
    complete = data[: data.rfind(b"\n") + 1]
    if not complete and len(data) == CHUNK:  # one line longer than a chunk: Docker caps lines at 16K
        complete = data
    return complete, offset + len(complete), ino


def _open_log(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


async def read_log(path: Path, query: Query, follow: bool = False,
                   running: Callable[[], bool] = lambda: False) -> AsyncIterator[tuple[int, bytes]]:
    """(stream, bytes) as `docker logs` shows them; with follow, until running() is false.

    A follow keeps the current file open: the container may be removed, its log with it, before the last lines were
    sent (docker-py's `containers.run(remove=True)` removes the container, then reads the follow stream it opened
    before; under load the 2026-12-04 CI run lost a line so). What was written is read from the open file."""
    held = _HeldFile()
    if follow:
        held.fd = await asyncio.to_thread(_open_log, path)
    try:
        async for item in _read_log(path, query, follow, running, held):
            yield item
    finally:
        held.close()


class _HeldFile:
    """The log file a follow reads, open (fd) or not (None)."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def _read_log(path: Path, query: Query, follow: bool, running: Callable[[], bool],
                    held: _HeldFile) -> AsyncIterator[tuple[int, bytes]]:
    files = log_files(path)
    offset = inode = 0
    if query.tail is not None:
        offset, inode = await asyncio.to_thread(_complete_end, path)  # then followed from there
        chosen = await asyncio.to_thread(_tail_lines, files, query.tail, offset) if query.tail > 0 else []
        for line in chosen:
            entry = decode_line(line)
            if entry is not None and query.wants(entry):
                yield query.render(entry)
    else:
        for file in files:
            pos = 0
            while True:
                try:
                    data, pos, ino = await asyncio.to_thread(_read_block, file, pos)
                except FileNotFoundError:
                    break
                if file == path:
                    offset, inode = pos, ino
                if not data:
                    break
                for line in data.splitlines():
                    entry = decode_line(line)
                    if entry is not None and query.wants(entry):
                        yield query.render(entry)
    while follow:
        alive = running()
        try:
            st = path.stat()
            if st.st_ino != inode or st.st_size < offset:  # rotated (or made since): the new file from its start
                inode, offset = st.st_ino, 0
        except FileNotFoundError:
            pass  # removed: what the open file holds is still read
        if held.fd is not None and os.fstat(held.fd).st_ino != inode:
            held.close()
        if held.fd is None:
            held.fd = await asyncio.to_thread(_open_log, path)
            if held.fd is not None and os.fstat(held.fd).st_ino != inode:  # replaced again meanwhile
                inode, offset = os.fstat(held.fd).st_ino, 0
        data = b""
        if held.fd is not None:
            data, offset, inode = await asyncio.to_thread(_read_block_of, held.fd, offset)
        for line in data.splitlines():
            entry = decode_line(line)
            if entry is not None and query.wants(entry):
                if query.until_ns and entry.time_ns > query.until_ns:
                    return
                yield query.render(entry)
        if len(data) >= CHUNK:
            continue  # more is there already
        if not alive:
            return
        if query.until_ns and time.time_ns() > query.until_ns:
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
