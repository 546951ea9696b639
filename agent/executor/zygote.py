"""The shim fork server: one small long-lived process per daemon with agent/executor/shim.py already imported,
forking each spare shim instead of starting a Python for it (the daemon side is agent/executor/zygote_client.py).

Standalone script like shim.py (stdlib C modules only), started as `python -S -E zygote.py` with fd 0 a unix
stream socket to the daemon and nothing else open. A request is one byte `s` carrying (SCM_RIGHTS) the read end of
the new shim's job pipe; the answer is the shim's pid as ASCII digits and a newline (`0` when the fork failed).
The shim is forked twice and its middle parent exits at once: it is in its own session, reparented away, nobody's
child that could die (as a shim started by main() in shim.py). The zygote exits when the daemon's end closes.
"""
from __future__ import annotations

import gc
import os
import sys
import _signal
import _socket

import shim

REQUEST = b"s"
_FD_SPACE = _socket.CMSG_SPACE(4)
_FAILPOINT = os.environ.get("SHOAL_FAILPOINT", "")


def become_shim(job_fd: int) -> None:
    """In the grandchild: the job pipe as fd 0, /dev/null as 1 and 2, no other fd of the zygote, the signal state of
    a fresh `python -S -E shim.py`; then the shim's own life. Never returns."""
    try:
        os.dup2(job_fd, 0)
        devnull = os.open("/dev/null", os.O_RDWR)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.closerange(3, 0x7FFFFFFF)  # one close_range(2): the zygote's socket and anything else
        # The zygote changes neither; set both as a fresh interpreter has them anyway (runc and the container get
        # default dispositions from the shim's posix_spawn, as before).
        _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        shim.run_job()
    except BaseException:
        sys.excepthook(*sys.exc_info())  # into shim.log once run_job moved fd 2 there, else /dev/null
    finally:
        os._exit(1)


def fork_shim(job_fd: int) -> int:
    """The new shim's pid (0 when a fork failed); the zygote keeps no fd of it."""
    pid_r, pid_w = os.pipe()
    try:
        middle = os.fork()
    except OSError:
        os.close(pid_r)
        os.close(pid_w)
        return 0
    if middle == 0:
        try:
            os.close(pid_r)
            os.setsid()
            pid = os.fork()
            if pid == 0:
                os.close(pid_w)
                become_shim(job_fd)
            os.write(pid_w, b"%d" % pid)
        finally:
            os._exit(0)
    os.close(pid_w)
    data = b""
    while chunk := os.read(pid_r, 64):
        data += chunk
    os.close(pid_r)
    os.waitpid(middle, 0)
    return int(data) if data.isdigit() else 0


def serve(sock: _socket.socket) -> None:
    while True:
        try:
            msg, ancdata, _, _ = sock.recvmsg(16, _FD_SPACE)
        except InterruptedError:
            continue
        job_fd = shim.received_fd(ancdata)
        if not msg:  # the daemon went away (or closed its runtime)
            return
        pid = 0
        if msg == REQUEST and job_fd >= 0:
            pid = fork_shim(job_fd)
            if _FAILPOINT == "zygote-after-fork":  # as common/failpoint.hit (not importable here)
                os.kill(os.getpid(), _signal.SIGKILL)
        if job_fd >= 0:
            os.close(job_fd)
        sock.sendall(b"%d\n" % pid)


def main() -> None:
    os.chdir("/")  # pins no directory of the daemon's (a shim chdirs into its bundle)
    sock = _socket.socket(fileno=os.dup(0))  # non-inheritable; 0 becomes /dev/null (never the socket in a fork)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # What is imported stays out of collections, in the zygote and in every shim (never unfrozen there): a
    # collection does not touch, and so copy, the pages a fork shares.
    gc.freeze()
    try:
        serve(sock)
    except OSError:
        pass  # the daemon's end is broken: exit, the daemon starts another
    os._exit(0)


if __name__ == "__main__":
    main()
