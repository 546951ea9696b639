"""The per-container shim: starts the container with `runc run -d`, keeps its stdio (a pty from
runc's console socket, or pipes), writes the json-file log, serves attach clients, records the exit code.

Started ahead of need as a spare by agent.executor.runtime (job read from stdin); attach clients
speak agent.executor.stdio's frames. Standalone script: stdlib C modules only, no package imports.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import time
import sys
import _json
import _socket

# Frames on the attach socket: 1 byte type + 4 bytes big-endian length + payload.
# client -> shim: HELLO (JSON-ish "stdin stdout stderr" flags as b"101"), STDIN data,
# CLOSE_STDIN, RESIZE (b"rows cols"). shim -> client: 1 / 2 output, EXIT (b"code").
HELLO, STDIN, CLOSE_STDIN, RESIZE, EXIT = b"h", b"i", b"c", b"r", b"x"
HOLD_SECONDS = 5.0  # longest wait for the attach clients a start announced (then output flows anyway)
DRAIN_SECONDS = 2.0  # after the exit: the most time given to reading what is left in the pipes
MAX_PENDING = 1 << 20  # per client: beyond this, the container's output waits (backpressure)
LINE_LIMIT = 16 * 1024  # as Docker's copier: a longer line is logged in pieces
_PR_SET_CHILD_SUBREAPER = 36
_TIOCSWINSZ = 0x5414
_STREAM_NAMES = {1: "stdout", 2: "stderr"}
# Every signal but SIGKILL, SIGSTOP and glibc's two reserved real-time ones (32, 33).
_DEFAULT_SIGNALS = tuple(s for s in range(1, 65) if s not in (9, 19, 32, 33))


def received_fd(ancdata: list) -> int:
    """The first fd passed in a message's SCM_RIGHTS (-1 when none); any further one is closed. Also the zygote's."""
    fds = [int.from_bytes(data[i:i + 4], sys.byteorder)
           for level, kind, data in ancdata
           if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
           for i in range(0, len(data) - len(data) % 4, 4)]
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else -1


def rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def json_line(stream: int, data: bytes, ns: int) -> bytes:
    """One json-file entry as Docker's driver writes it."""
    text = _json.encode_basestring(data.decode("utf-8", "replace"))
    return f'{{"log":{text},"stream":"{_STREAM_NAMES[stream]}","time":"{rfc3339nano(ns)}"}}\n'.encode()


def parse_size(text: str) -> int:
    """Docker's --log-opt max-size: a number with an optional k/m/g unit (1024-based); -1 or
    empty: unlimited. ValueError naming the value otherwise."""
    value = text.strip().lower()
    if value in ("", "-1"):
        return -1
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    mult = 1
    if value.endswith("b"):
        value = value[:-1]
    if value and value[-1] in units:
        mult = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"invalid size: '{text}'") from None
    if number <= 0:
        raise ValueError(f"invalid size: '{text}'")
    return int(number * mult)


class JsonLog:
    """Docker's json-file driver: one entry per line of output, in the order read; rotates to
    PATH.1 .. PATH.(max_file-1) once the file has reached max_size (max_file 1: truncates)."""

    def __init__(self, path: str, max_size: int = -1, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._partial = {1: b"", 2: b""}
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: int, data: bytes) -> None:
        buf = self._partial[stream] + data
        ns = time.time_ns()
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._emit(stream, buf[start:end + 1], ns)
            start = end + 1
        rest = buf[start:]
        while len(rest) >= LINE_LIMIT:
            self._emit(stream, rest[:LINE_LIMIT], ns)
            rest = rest[LINE_LIMIT:]
        self._partial[stream] = rest

    def flush(self) -> None:
        """What is left without a newline (at the exit)."""
        ns = time.time_ns()
        for stream in (1, 2):
            if self._partial[stream]:
                self._emit(stream, self._partial[stream], ns)
                self._partial[stream] = b""

    def _emit(self, stream: int, line: bytes, ns: int) -> None:
        if self.max_size > 0 and self._size >= self.max_size:
            self._rotate()
        entry = json_line(stream, line, ns)
        try:
            os.write(self._fd, entry)
            self._size += len(entry)
        except OSError:
            pass  # a full disk loses log lines, never the container

    def _rotate(self) -> None:
        os.close(self._fd)
        for n in range(self.max_file - 1, 0, -1):
            src = self.path if n == 1 else f"{self.path}.{n - 1}"
            try:
                os.replace(src, f"{self.path}.{n}")
            except FileNotFoundError:
                pass
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o640)
        self._size = 0


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


class Client:
    __slots__ = ("sock", "fd", "inbuf", "out", "hello", "stdin", "stdout", "stderr", "closing")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.out = bytearray()
        self.hello = False
        self.stdin = self.stdout = self.stderr = False
        self.closing = False


class Shim:
    def __init__(self, job: dict[str, str]) -> None:
        self.job = job
        self.dir = job["bundle"]
        self.id = job["id"]
        self.tty = job.get("tty") == "1"
        self.open_stdin = job.get("stdin") == "1"
        self.stdin_once = job.get("stdin_once") == "1"
        self.hold = int(job.get("hold") or 0)
        self.ep = select.epoll()
        self.clients: dict[int, Client] = {}
        self.outputs: dict[int, int] = {}  # fd -> stream
        self.stdin_fd = -1
        self.stdin_buf = bytearray()
        self.stdin_closing = False
        self.master = -1
        self.masks: dict[int, int] = {}
        self.reading_output = False
        self.exit_code: int | None = None
        self.log = JsonLog(job["log"], int(job.get("log_max_size") or -1), int(job.get("log_max_file") or 1))

    # -- epoll bookkeeping --
    def _set(self, fd: int, mask: int) -> None:
        old = self.masks.get(fd)
        if old == mask:
            return
        if old is None:
            self.ep.register(fd, mask)
        else:
            self.ep.modify(fd, mask)
        self.masks[fd] = mask

    def _drop(self, fd: int) -> None:
        if self.masks.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    # -- start --
    def start(self) -> int:
        """Runs `runc run -d`; the container's pid, or -1 when runc failed (exit recorded)."""
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        for name in ("attach.sock", "console.sock"):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        listener.bind("attach.sock")  # relative: the shim runs in the bundle (paths may be long)
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        devnull = os.open("/dev/null", os.O_RDWR)
        actions = []
        parent_ends = []
        console = None
        if self.tty:
            console = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            console.bind("console.sock")
            console.listen(1)
            for fd in (0, 1, 2):
                actions.append((os.POSIX_SPAWN_DUP2, devnull, fd))
        else:
            if self.open_stdin:
                r, w = os.pipe()
                actions.append((os.POSIX_SPAWN_DUP2, r, 0))
                parent_ends.append(r)
                self.stdin_fd = w
            else:
                actions.append((os.POSIX_SPAWN_DUP2, devnull, 0))
            for stream in (1, 2):
                r, w = os.pipe()
                actions.append((os.POSIX_SPAWN_DUP2, w, stream))
                parent_ends.append(w)
                self.outputs[r] = stream
        argv = [self.job["runc"], "--root", self.job["root"], "--log", "runc.log", "--log-format", "json",
                "run", "-d", "--pid-file", "pid"]
        if console is not None:
            argv += ["--console-socket", "console.sock"]
        argv += ["--bundle", self.dir, self.id]
        # Python ignores SIGPIPE and SIGXFSZ; runc and the container get default dispositions.
        runc = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsigdef=_DEFAULT_SIGNALS)
        for fd in parent_ends + [devnull]:
            os.close(fd)
        if console is not None:
            self.master = self._receive_console(console, runc)
        _, status = os.waitpid(runc, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            if self.master >= 0:
                os.close(self.master)
            self._record_exit(code if code > 0 else 128 - code)
            return -1
        if self.master >= 0:
            self.outputs[self.master] = 1
            self.stdin_fd = os.dup(self.master)
            size = self.job.get("console_size", "")
            if size:
                self.resize(size.encode())
        with open("pid") as f:
            return int(f.read().split()[0])

    def _receive_console(self, console: _socket.socket, runc: int) -> int:
        """The pty master runc sends over the console socket (SCM_RIGHTS); -1 when runc exits first."""
        pidfd = os.pidfd_open(runc)
        ep = select.epoll()
        ep.register(console.fileno(), select.EPOLLIN)
        ep.register(pidfd, select.EPOLLIN)
        try:
            ready = {fd for fd, _ in ep.poll()}
            if console.fileno() in ready:
                conn, _ = console._accept()
                sock = _socket.socket(fileno=conn)
                _, ancdata, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(4 * 4))
                sock.close()
                return received_fd(ancdata)
            return -1
        finally:
            ep.close()
            os.close(pidfd)
            console.close()
            try:
                os.unlink("console.sock")
            except FileNotFoundError:
                pass

    # -- running --
    def serve(self, pid: int) -> None:
        pidfd = os.pidfd_open(pid)
        self._set(pidfd, select.EPOLLIN)
        self._set(self.listener.fileno(), select.EPOLLIN)
        for fd in list(self.outputs):
            os.set_blocking(fd, False)
        if self.stdin_fd >= 0:
            os.set_blocking(self.stdin_fd, False)
        hold_until = time.monotonic() + HOLD_SECONDS
        while self.exit_code is None:
            if not self.reading_output and (self._held() >= self.hold or time.monotonic() >= hold_until):
                self.reading_output = True
            self._update_output_interest()
            timeout = -1 if self.reading_output else max(0.0, hold_until - time.monotonic())
            for fd, events in self.ep.poll(timeout):
                if fd == pidfd:
                    self._reap(pid)
                elif fd == self.listener.fileno():
                    self._accept()
                elif fd in self.outputs:
                    self._read_output(fd)
                elif fd == self.stdin_fd:
                    self._flush_stdin()
                elif fd in self.clients:
                    self._client_event(self.clients[fd], events)
        self._drop(pidfd)
        os.close(pidfd)
        self._finish(hold_until)

    def _held(self) -> int:
        return sum(1 for c in self.clients.values() if c.hello and (c.stdin or c.stdout or c.stderr))

    def _update_output_interest(self) -> None:
        blocked = any(len(c.out) > MAX_PENDING for c in self.clients.values())
        for fd in self.outputs:
            if self.reading_output and not blocked:
                self._set(fd, select.EPOLLIN)
            else:
                self._drop(fd)

    def _reap(self, pid: int) -> None:
        while True:
            try:
                child, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if child == 0:
                return
            if child == pid:
                code = os.waitstatus_to_exitcode(status)
                self.exit_code = code if code >= 0 else 128 - code

    def _accept(self) -> None:
        while True:
            try:
                fd, _ = self.listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            sock = _socket.socket(fileno=fd)
            sock.setblocking(False)
            client = Client(sock)
            self.clients[client.fd] = client
            self._set(client.fd, select.EPOLLIN)

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's other side is closed
            data = b""
        if not data:
            self._drop(fd)
            del self.outputs[fd]
            os.close(fd)
            return
        self._deliver(self.outputs[fd], data)

    def _deliver(self, stream: int, data: bytes) -> None:
        self.log.write(stream, data)
        packet = None
        for client in list(self.clients.values()):
            if (client.stdout if stream == 1 else client.stderr) and not client.closing:
                packet = packet or frame(bytes((stream,)), data)
                self._send(client, packet)

    def _send(self, client: Client, packet: bytes) -> None:
        if not client.out:
            try:
                sent = client.sock.send(packet)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close_client(client)
                return
            packet = packet[sent:]
        if packet:
            client.out += packet
            self._set(client.fd, self._client_mask(client))

    def _client_mask(self, client: Client) -> int:
        # While the container's stdin is backed up, clients are not read (backpressure).
        return (0 if self._stdin_blocked() else select.EPOLLIN) | (select.EPOLLOUT if client.out else 0)

    def _stdin_blocked(self) -> bool:
        return len(self.stdin_buf) > MAX_PENDING

    def _refresh_clients(self) -> None:
        for client in self.clients.values():
            self._set(client.fd, self._client_mask(client))

    def _client_event(self, client: Client, events: int) -> None:
        if events & select.EPOLLOUT and client.out:
            try:
                sent = client.sock.send(client.out)
                del client.out[:sent]
            except BlockingIOError:
                pass
            except OSError:
                self._close_client(client)
                return
            if not client.out:
                self._set(client.fd, self._client_mask(client))
        if events & (select.EPOLLHUP | select.EPOLLERR) and self._stdin_blocked():
            self._close_client(client)
            return
        if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            if self._stdin_blocked():
                return  # the container does not read its stdin: the client waits
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_client(client)
                return
            client.inbuf += data
            self._parse(client)

    def _parse(self, client: Client) -> None:
        buf = client.inbuf
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + size:
                break
            kind, payload = bytes(buf[:1]), bytes(buf[5:5 + size])
            del buf[:5 + size]
            if kind == HELLO:
                client.hello = True
                flags = payload.ljust(3, b"0")
                client.stdin, client.stdout, client.stderr = (flags[i:i + 1] == b"1" for i in range(3))
            elif kind == STDIN and self.stdin_fd >= 0 and not self.stdin_closing:
                self.stdin_buf += payload
                self._flush_stdin()
                if self._stdin_blocked():
                    self._refresh_clients()
            elif kind == CLOSE_STDIN:
                client.stdin = False
                self._close_stdin_once()
            elif kind == RESIZE:
                self.resize(payload)

    def _close_client(self, client: Client) -> None:
        self.clients.pop(client.fd, None)
        self._drop(client.fd)
        client.sock.close()
        if client.stdin:
            self._close_stdin_once()

    def _close_stdin_once(self) -> None:
        # Docker's StdinOnce: the first attached stdin that ends closes the container's; never
        # a TTY's (the terminal stays, as with moby).
        if self.stdin_once and not self.tty and self.stdin_fd >= 0:
            self.stdin_closing = True
            self._flush_stdin()

    def _flush_stdin(self) -> None:
        if self.stdin_fd < 0:
            return
        was_blocked = self._stdin_blocked()
        self._write_stdin()
        if was_blocked and not self._stdin_blocked():
            self._refresh_clients()

    def _write_stdin(self) -> None:
        while self.stdin_buf:
            try:
                written = os.write(self.stdin_fd, self.stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # the container closed its stdin: what it did not read is dropped
                self.stdin_buf.clear()
                break
            del self.stdin_buf[:written]
        if self.stdin_buf:
            self._set(self.stdin_fd, select.EPOLLOUT)
            return
        self._drop(self.stdin_fd)
        if self.stdin_closing:
            os.close(self.stdin_fd)
            self.stdin_fd = -1

    def resize(self, payload: bytes) -> None:
        if self.master < 0:
            return
        try:
            rows, cols = (int(x) for x in payload.split()[:2])
            fcntl.ioctl(self.master, _TIOCSWINSZ, rows.to_bytes(2, "little") + cols.to_bytes(2, "little") + bytes(4))
        except (ValueError, OSError):
            pass

    # -- exit --
    def _finish(self, hold_until: float) -> None:
        # The process is gone: what it did not read of its stdin never will be.
        if self.stdin_fd >= 0:
            self._drop(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = -1
        self.stdin_buf.clear()
        self._refresh_clients()
        # Attach clients the start announced still get the whole output.
        while self._held() < self.hold and time.monotonic() < hold_until:
            for fd, events in self.ep.poll(max(0.0, hold_until - time.monotonic())):
                if fd == self.listener.fileno():
                    self._accept()
                elif fd in self.clients:
                    self._client_event(self.clients[fd], events)
        self.reading_output = True
        drain_until = time.monotonic() + DRAIN_SECONDS
        while self.outputs and time.monotonic() < drain_until:
            self._update_output_interest()
            for fd, events in self.ep.poll(max(0.0, drain_until - time.monotonic())):
                if fd in self.outputs:
                    self._read_output(fd)
                elif fd in self.clients:
                    self._client_event(self.clients[fd], events)
                elif fd == self.listener.fileno():
                    self._accept()
        self.log.flush()
        self._record_exit(self.exit_code or 0)
        self.listener.close()
        try:
            os.unlink("attach.sock")
        except FileNotFoundError:
            pass
        packet = frame(EXIT, str(self.exit_code).encode())
        for client in list(self.clients.values()):
            self._send(client, packet)
        flush_until = time.monotonic() + DRAIN_SECONDS
        while any(c.out for c in self.clients.values()) and time.monotonic() < flush_until:
            for fd, events in self.ep.poll(max(0.0, flush_until - time.monotonic())):
                if fd in self.clients:
                    self._client_event(self.clients[fd], events & ~select.EPOLLIN)
        for client in list(self.clients.values()):
            client.sock.close()

    def _record_exit(self, code: int) -> None:
        with open("exit.tmp", "w") as f:
            f.write(f"{code}\n")
        os.replace("exit.tmp", "exit")


def read_job(fd: int = 0) -> dict[str, str]:
    """Lines `key value` up to an empty line (or EOF: then the job is empty)."""
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    job = {}
    for line in data.decode().splitlines():
        if line:
            key, _, value = line.partition(" ")
            job[key] = value
    return job


def main() -> None:
    # Detach from the daemon: the parent prints the shim's pid and exits (the daemon reaps it),
    # the shim is reparented away and outlives the daemon.
    pid = os.fork()
    if pid:
        os.write(1, f"{pid}\n".encode())
        os._exit(0)
    run_job()


def run_job() -> None:
    """The shim's life once detached (started by main() above or forked by agent/executor/zygote.py): fd 0 is the job
    pipe, 1 and 2 anything (both are replaced). Never returns."""
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 1)
    job = read_job(0)  # a spare waits here until the daemon hands it a container
    os.dup2(devnull, 0)
    if "bundle" not in job:
        os._exit(0)  # the daemon went away (or retired the spare)
    os.chdir(job["bundle"])
    err = os.open("shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(err, 2)
    os.close(err)
    os.close(devnull)
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    shim = Shim(job)
    pid = shim.start()
    if pid > 0:
        shim.serve(pid)
    os._exit(0)


if __name__ == "__main__":
    main()
