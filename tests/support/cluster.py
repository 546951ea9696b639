"""Test support: runs N managers as separate OS processes on 127.0.0.x for tests and benchmarks (`python -m manager run` each).
LocalCluster starts, kills, restarts and finds the leader; every process is killed on stop_all(), whatever happened."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from manager.transport import GRPC_OPTIONS, TLS_SERVER_NAME, TLSFiles
from proto import control_pb2, control_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(slots=True)
class Member:
    node_id: int
    addr: str
    data_dir: Path
    log_path: Path
    join: bool = False
    proc: subprocess.Popen[bytes] | None = None


@dataclass(slots=True)
class LocalCluster:
    """n managers, member i on 127.0.0.i (ids from 1). Use as a context manager or call stop_all()."""

    base_dir: Path
    tick_ms: int = 50
    storage: str = "sqlite"
    tls: dict[int, TLSFiles] | None = None  # per member id: mutual TLS on
    client_tls: TLSFiles | None = None
    extra_args: list[str] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    frontends: int = 0  # > 0: each manager also serves the control API from that many front-end processes
    client_addrs: dict[int, str] = field(default_factory=dict)  # with frontends: member id -> its --client-listen

    def start(self, n: int = 3, hold: frozenset[int] = frozenset()) -> dict[int, str]:
        """n founding members; those in `hold` are configured as founders but not started (spawn them later)."""
        if n < 1:
            raise ValueError(f"invalid cluster size {n}: need at least 1 manager")
        for i in range(1, n + 1):
            host = f"127.0.0.{i}"
            addr = f"{host}:{free_port(host)}"
            d = self.base_dir / f"m{i}"
            self.members[i] = Member(i, addr, d, self.base_dir / f"m{i}.log")
            if self.frontends:
                self.client_addrs[i] = f"{host}:{free_port(host)}"
        for i in self.members:
            if i not in hold:
                self._spawn(i)
        return self.addresses()

    def spawn(self, i: int) -> None:
        """Start member i's process (again) with its command line; its data dir is kept."""
        self._spawn(i)

    def addresses(self) -> dict[int, str]:
        return {i: m.addr for i, m in self.members.items()}

    def _argv(self, m: Member) -> list[str]:
        founders = {i: x.addr for i, x in self.members.items() if not x.join}
        peers = ",".join(f"{i}={a}" for i, a in sorted({**founders, m.node_id: m.addr}.items()))
        argv = [
            sys.executable, "-m", "manager", "run",
            "--id", str(m.node_id), "--listen", m.addr, "--peers", peers,
            "--data-dir", str(m.data_dir), "--tick-ms", str(self.tick_ms), "--storage", self.storage,
            *self.extra_args,
        ]
        if m.join:
            argv.append("--join")
        if m.node_id in self.client_addrs:
            argv += ["--client-listen", self.client_addrs[m.node_id], "--frontends", str(self.frontends)]
        if self.tls is not None:
            t = self.tls[m.node_id]
            argv += ["--tls-ca", str(t.ca), "--tls-cert", str(t.cert), "--tls-key", str(t.key)]
        return argv

    def _spawn(self, i: int) -> None:
        m = self.members[i]
        m.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(self._argv(m), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)

    def add(self, node_id: int) -> str:
        """Start a new empty member with --join (the leader must then add_member it)."""
        host = f"127.0.0.{node_id}"
        m = Member(node_id, f"{host}:{free_port(host)}", self.base_dir / f"m{node_id}", self.base_dir / f"m{node_id}.log", join=True)
        self.members[node_id] = m
        self._spawn(node_id)
        return m.addr

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.members[i].proc
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=30)

    def restart(self, i: int) -> None:
        self.kill(i)
        self._spawn(i)

    def alive(self, i: int) -> bool:
        p = self.members[i].proc
        return p is not None and p.poll() is None

    def channel(self, i: int) -> grpc.Channel:
        addr = self.members[i].addr
        if self.client_tls is None:
            return grpc.insecure_channel(addr, options=GRPC_OPTIONS)
        opts = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
        return grpc.secure_channel(addr, self.client_tls.channel_credentials(), options=opts)

    def status(self, i: int, timeout: float = 1.0) -> control_pb2.StatusResponse | None:
        if not self.alive(i):
            return None
        with self.channel(i) as ch:
            try:
                return control_pb2_grpc.ControlStub(ch).Status(control_pb2.StatusRequest(), timeout=timeout)
            except grpc.RpcError:
                return None

    def leader(self, timeout: float = 30.0) -> int:
        """The id of the leader that every live member agrees on (polls until the deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = [s for i in self.members if (s := self.status(i)) is not None]
            leaders = {s.leader_id for s in sts}
            if sts and len(leaders) == 1 and 0 not in leaders:
                lid = leaders.pop()
                if any(s.node_id == lid and s.role == "leader" for s in sts):
                    return lid
            time.sleep(0.05)
        raise TimeoutError(f"no agreed leader within {timeout}s; logs in {self.base_dir}")

    def stop_all(self) -> None:
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() is None:
                try:
                    os.killpg(m.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                m.proc.wait(timeout=30)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_for(fn, what: str, deadline: float = 30.0,
             errors: tuple[type[BaseException], ...] = (grpc.RpcError, OSError, ValueError, KeyError)):
    """fn()'s first truthy value within deadline seconds (an error of `errors` counts as not yet);
    AssertionError naming `what` otherwise. For tests that poll a cluster."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            value = fn()
        except errors:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
