"""The daemon's side of a container's stdio: options given to the shim at start, the client of
the shim's attach socket (agent/executor/shim.py speaks the other side), detach keys.

Used by agent.executor.runtime (start) and by the API's attach and resize routes.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

HELLO, STDIN, CLOSE_STDIN, RESIZE, EXIT = b"h", b"i", b"c", b"r", b"x"
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


@dataclass(slots=True)
class StdioOptions:
    """What the shim gives the container: a terminal or pipes, an open stdin, the log's caps."""

    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    log_max_size: int = -1  # bytes; -1: unlimited
    log_max_file: int = 1
    console_size: tuple[int, int] | None = None  # (rows, cols)


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def connect_unix(path: Path) -> socket.socket:
    """Connects to a unix socket whose path may be longer than sun_path allows (through the
    directory's /proc/self/fd entry)."""
    dirfd = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(f"/proc/self/fd/{dirfd}/{path.name}")
        except BaseException:
            sock.close()
            raise
    finally:
        os.close(dirfd)
    sock.setblocking(False)
    return sock


class ShimConnection:
    """One attach connection to a container's shim: output as (stream, bytes), stdin, resize."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.exit_code: int | None = None

    @classmethod
    async def open(cls, bundle: Path, stdin: bool = False, stdout: bool = False,
                   stderr: bool = False) -> "ShimConnection":
        """ConnectionError/FileNotFoundError when no shim serves the container (it exited)."""
        sock = connect_unix(bundle / "attach.sock")
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        conn = cls(reader, writer)
        conn._writer.write(frame(HELLO, b"".join(b"1" if f else b"0" for f in (stdin, stdout, stderr))))
        return conn

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """Until the shim closes the connection (after an EXIT frame when the container exited)."""
        while True:
            try:
                head = await self._reader.readexactly(5)
                payload = await self._reader.readexactly(int.from_bytes(head[1:], "big"))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            kind = head[:1]
            if kind == EXIT:
                with contextlib.suppress(ValueError):
                    self.exit_code = int(payload)
                continue
            yield head[0], payload

    async def send_stdin(self, data: bytes) -> None:
        self._writer.write(frame(STDIN, data))
        await self._writer.drain()

    async def close_stdin(self) -> None:
        self._writer.write(frame(CLOSE_STDIN, b""))
        await self._writer.drain()

    async def resize(self, rows: int, cols: int) -> None:
        self._writer.write(frame(RESIZE, f"{rows} {cols}".encode()))
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


# ---- detach keys (Docker's term.ToBytes and escape proxy) ---------------------------

def parse_detach_keys(spec: str) -> bytes:
    """"ctrl-p,ctrl-q" -> b"\\x10\\x11"; ValueError naming the key Docker would refuse."""
    keys = bytearray()
    for key in spec.split(","):
        low = key.strip().lower()
        if len(key) == 1:
            keys.append(ord(key))
        elif low.startswith("ctrl-") and len(low) == 6:
            c = low[5]
            if "a" <= c <= "z":
                keys.append(ord(c) - ord("a") + 1)
            elif c in "@[\\]^_":
                keys.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[c])
            else:
                raise ValueError(f"Invalid detach keys ({spec}) provided: unknown character '{key}'")
        else:
            raise ValueError(f"Invalid detach keys ({spec}) provided: unknown character '{key}'")
    if not keys:
        raise ValueError(f"Invalid detach keys ({spec}) provided")
    return bytes(keys)


class DetachScanner:
    """Finds the detach sequence in a stdin stream: feed() returns what to pass on and whether
    the sequence was typed. A partial match is held back until it is completed or broken."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes((byte,))
            if self.keys.startswith(candidate):
                if len(candidate) == len(self.keys):
                    return bytes(out), True
                self._held = candidate
                continue
            # Broken: the held bytes go through, then this one starts a new match or goes too.
            out += self._held
            self._held = b""
            if self.keys[:1] == bytes((byte,)):
                self._held = bytes((byte,))
            else:
                out.append(byte)
        return bytes(out), False
