"""The seed guide's interactive steps, typed as a person would: `attach container1` under a
pseudo-terminal, `ifconfig`, `ping -w3 172.17.0.3`, `cat /etc/hosts`, then CTRL-p CTRL-q.
Used by scripts/demo.sh; prints the terminal session and exits non-zero if a step fails."""
from __future__ import annotations

import os
import pty
import re
import select
import sys
import time


def main(lab: str) -> int:
    argv = ["shoal", "lab", "exec", "--name", lab, "h1", "--", "shoal", "attach", "container1"]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    output = b""
    seen = 0  # each expect looks after what the previous one matched

    def expect(pattern: bytes, timeout: float = 15.0) -> None:
        nonlocal output, seen
        deadline = time.monotonic() + timeout
        while not (found := re.compile(pattern).search(output, seen)):
            if time.monotonic() > deadline:
                raise SystemExit(f"attach_walk: {pattern!r} not seen; got {output[-500:]!r}")
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    raise SystemExit(f"attach_walk: the terminal closed; got {output[-500:]!r}") from None
                output += data
                if b"\x1b[6n" in data:  # busybox's line editor asks where the cursor is: answer as a terminal does
                    os.write(fd, b"\x1b[1;1R")
                sys.stdout.write(data.decode(errors="replace").replace("\r\n", "\n"))
                sys.stdout.flush()
        seen = found.end()

    os.write(fd, b"\n")
    expect(rb"/ # ")
    for command, wanted in ((b"ifconfig eth0", rb"inet addr:172\.17\.0\.2"),
                            (b"ping -w3 172.17.0.3", rb" 0% packet loss"),
                            (b"cat /etc/hosts", rb"172\.17\.0\.2\s")):
        os.write(fd, command + b"\n")
        expect(wanted)
        expect(rb"/ # ")
    os.write(fd, b"\x10\x11")  # CTRL-p CTRL-q: detach, the container keeps running
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("\n(detached with CTRL-p CTRL-q)")
            return 0
        select.select([fd], [], [], 0.1)
        try:
            os.read(fd, 65536)
        except OSError:
            pass
    raise SystemExit("attach_walk: CTRL-p CTRL-q did not detach")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "demo"))
