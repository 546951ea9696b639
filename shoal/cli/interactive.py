"""A hijacked attach/exec stream at the user's terminal, as the docker CLI does it: raw mode for
a TTY, stdin to the container, detach keys, resize on SIGWINCH, stdout/stderr demultiplexed.

Used by shoal.cli.runner (`run -i/-t`) and shoal.cli.container (`attach`, `exec -it`).
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import termios
import tty as ttymod
from collections.abc import Callable, Mapping
from typing import Any

from shoal.client import Client, FrameDecoder, Response

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


class Detached(Exception):
    """The user typed the detach keys (docker prints "read escape sequence")."""


def hijack(c: Client, path: str, query: Mapping[str, Any] | None = None, body: Any = None) -> Response:
    """POSTs with Connection: Upgrade; the response's body is then the raw connection."""
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Connection": "Upgrade", "Upgrade": "tcp"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    response = c.send("POST", path, query, body=data, headers=headers)
    # The connection now belongs to this stream: the client's next request opens another.
    c._stream = None  # noqa: SLF001
    c._last = None  # noqa: SLF001
    return response


def terminal_size() -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return None
    return size.lines, size.columns


def monitor_size(resize: Callable[[int, int], None]) -> None:
    """Sends the terminal's size now and on every SIGWINCH."""

    def send(*_: object) -> None:
        size = terminal_size()
        if size:
            try:
                resize(*size)
            except Exception:  # noqa: BLE001 - a failed resize must not end the session
                pass

    send()
    signal.signal(signal.SIGWINCH, send)


def stream(response: Response, tty: bool, send_stdin: bool, detach_keys: str = "") -> None:
    """Copies stdin to the connection and its output to stdout/stderr until the daemon closes
    it; raises Detached when the user types the detach keys (TTY only, as docker)."""
    from agent.executor.stdio import DetachScanner, parse_detach_keys

    sock = response._stream.sock  # noqa: SLF001 - the hijacked connection itself
    sock.settimeout(None)
    pending = bytes(response._stream.buf)  # noqa: SLF001 - bytes read with the headers
    response._stream.buf.clear()  # noqa: SLF001
    stdin_fd = sys.stdin.fileno()
    raw = tty and send_stdin and os.isatty(stdin_fd)
    saved = termios.tcgetattr(stdin_fd) if raw else None
    scanner = DetachScanner(parse_detach_keys(detach_keys or DEFAULT_DETACH_KEYS)) if tty and send_stdin else None
    decoder = None if tty else FrameDecoder()
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def emit(data: bytes) -> None:
        if decoder is None:
            out.write(data)
            out.flush()
            return
        for kind, payload in decoder.feed(data):
            target = err if kind in (2, 3) else out
            target.write(payload)
            target.flush()

    try:
        if raw:
            ttymod.setraw(stdin_fd, termios.TCSANOW)  # keep what was typed ahead
        if pending:
            emit(pending)
        reading_stdin = send_stdin
        while True:
            watch = [sock] + ([stdin_fd] if reading_stdin else [])
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                emit(data)
            if reading_stdin and stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    reading_stdin = False
                    sock.shutdown(1)  # SHUT_WR: the container's stdin ends (StdinOnce)
                    continue
                if scanner is not None:
                    data, detached = scanner.feed(data)
                    if data:
                        sock.sendall(data)
                    if detached:
                        raise Detached()
                else:
                    sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        sock.close()
