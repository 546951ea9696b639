"""The raft process's side of the control API front-ends: a unix socket the front-ends hand calls over
(manager/handoff.py) and the front-end processes themselves (manager/frontend.py), started and stopped by manager/node.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from manager.handoff import RaftSide

log = logging.getLogger(__name__)
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path less its NUL
STOP_WAIT_S = 5.0
READY_TIMEOUT_S = 60.0


class FrontendError(Exception):
    """A front-end did not come up (its address taken, a bad certificate...): the manager does not start."""


class Frontends:
    """cfg.frontends processes serving the control API on cfg.client_listen, each linked to this process."""

    def __init__(self, cfg: Any, servicer: Any) -> None:
        self.cfg = cfg
        self.servicer = servicer
        self.links: list[RaftSide] = []
        self.procs: list[asyncio.subprocess.Process] = []
        self._server: asyncio.AbstractServer | None = None
        self._tmp: str | None = None
        self.socket_path = ""

    def _path(self) -> str:
        # in the data dir (root-only, like swarmkit's control.sock) unless that path is too long for a unix socket
        path = str(Path(self.cfg.data_dir) / "control.sock")
        if len(path.encode()) > _SUN_PATH_MAX:
            self._tmp = tempfile.mkdtemp(prefix="shoal-control-")
            path = os.path.join(self._tmp, "control.sock")
        return path

    def _link(self) -> RaftSide:
        link = RaftSide(self.servicer)
        self.links.append(link)
        link.closed.add_done_callback(lambda _f: self.links.remove(link) if link in self.links else None)
        return link

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "manager.frontend", "--listen", self.cfg.client_listen, "--socket", self.socket_path,
                "--event-loop", self.cfg.event_loop]
        tls = self.cfg.tls
        if tls is not None:
            argv += ["--tls-ca", str(tls.ca), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        return argv

    async def start(self) -> None:
        self.socket_path = self._path()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # a previous run's, left by a kill -9
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._link, self.socket_path)
        os.chmod(self.socket_path, 0o600)
        for _ in range(self.cfg.frontends):
            self.procs.append(await asyncio.create_subprocess_exec(*self._argv(), stdin=asyncio.subprocess.DEVNULL))
        # each front-end connects once it serves: wait for all, so a started manager answers on client_listen
        deadline = loop.time() + READY_TIMEOUT_S
        while len(self.links) < self.cfg.frontends:
            dead = [p for p in self.procs if p.returncode is not None]
            if dead:
                raise FrontendError(f"control front-end exited with status {dead[0].returncode} (client address {self.cfg.client_listen})")
            if loop.time() > deadline:
                raise FrontendError(f"control front-ends not serving {self.cfg.client_listen} within {READY_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.cancel_all()
            if link.transport is not None:
                link.transport.close()  # the front-end sees the end of its link and exits
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), STOP_WAIT_S)
            except asyncio.TimeoutError:
                log.warning("control front-end %d did not stop: killing it", p.pid)
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        self.procs = []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
