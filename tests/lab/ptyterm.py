"""A program under a pseudo-terminal, as a person at a terminal runs it: send keys, wait for
text, resize the window. Used by the interactive lab tests (tests/lab/test_interactive.py)."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from collections.abc import Mapping, Sequence


class PtyProgram:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 rows: int = 30, cols: int = 100) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal is its stdio
            try:
                os.execvpe(argv[0], list(argv), dict(env or os.environ))
            finally:
                os._exit(127)
        self.resize(rows, cols, signal_child=False)
        self.output = b""
        self._seen = 0  # expect() looks after what the previous expect() matched
        self.status: int | None = None

    def resize(self, rows: int, cols: int, signal_child: bool = True) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if signal_child:
            os.kill(self.pid, signal.SIGWINCH)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _read(self, timeout: float) -> bool:
        """Reads what is there within timeout; False once the terminal is closed."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            return False
        self.output += data
        return bool(data)

    def expect(self, pattern: bytes, timeout: float = 15.0) -> re.Match[bytes]:
        """The first match of pattern in the output after the previous match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.output, self._seen)
            if found:
                self._seen = found.end()
                return found
            if time.monotonic() > deadline or not self._read(min(0.2, max(0.0, deadline - time.monotonic()))):
                if (found := regex.search(self.output, self._seen)) is not None:
                    self._seen = found.end()
                    return found
                raise AssertionError(f"{pattern!r} not seen within {timeout} s; output: {self.output[-2000:]!r}")

    def wait(self, timeout: float = 15.0) -> int:
        """The exit code, reading the output meanwhile; AssertionError if it does not exit."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s; output: {self.output[-2000:]!r}")
            self._read(0.05)
        while self._read(0.05):
            pass
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)
