"""Benchmark: attach round trip, one keystroke to its echo, through a lab daemon's attach API to
a TTY container (client -> daemon -> shim -> pty -> echo -> shim -> daemon -> client), against
the same keystroke echoed by a local pty (the kernel's part alone, the anchor).

Prints the medians and p99 of N keystrokes of each (goal: attach median <= 2 ms).
Usage: python bench/attach.py [--keys 300] [--lab NAME]
"""
from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.lab import Lab, down  # noqa: E402


def attach_socket(path: Path, cid: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.sendall((f"POST /v1.50/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
                  "Host: localhost\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"attach refused: {head[:200]!r}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    return sock


def round_trips(send, recv_fd: int, keys: int) -> list[float]:
    """Seconds from writing one byte to reading its echo, per keystroke."""
    times = []
    for i in range(keys):
        key = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
        start = time.perf_counter()
        send(key)
        got = b""
        while key not in got:
            ready, _, _ = select.select([recv_fd], [], [], 5.0)
            if not ready:
                raise TimeoutError("no echo within 5 s")
            got += os.read(recv_fd, 4096)
        times.append(time.perf_counter() - start)
        if i % 60 == 59:
            send(b"\x15")  # CTRL-u: the line discipline forgets the line, so it never fills up
            time.sleep(0.01)
            while select.select([recv_fd], [], [], 0.01)[0]:
                os.read(recv_fd, 4096)
    return times


def local_pty(keys: int) -> list[float]:
    master, slave = os.openpty()  # echo on: the line discipline answers each byte
    try:
        return round_trips(lambda b: os.write(master, b), master, keys)
    finally:
        os.close(master)
        os.close(slave)


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name}: median {statistics.median(times) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--lab", default="battach")
    args = parser.parse_args()
    lab = Lab.up(args.lab, 1, force=True)
    try:
        client = lab.client("h1")
        created = client.post("/containers/create", {"Image": "busybox", "Cmd": ["cat"], "Tty": True,
                                                     "OpenStdin": True})
        cid = created["Id"]
        client.post(f"/containers/{cid}/start")
        sock = attach_socket(lab.socket("h1"), cid)
        round_trips(sock.sendall, sock.fileno(), 30)  # warm-up
        attach = round_trips(sock.sendall, sock.fileno(), args.keys)
        anchor = local_pty(args.keys)
        sock.close()
        print(summary("shoal attach", attach))
        print(summary("local pty echo (anchor)", anchor))
        print(f"ratio of medians: {statistics.median(attach) / statistics.median(anchor):.1f}x; "
              f"goal: attach median <= 2 ms")
        client.delete(f"/containers/{cid}", {"force": True})
    finally:
        down(args.lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
