"""What a swarm node keeps on disk: <data-dir>/swarm/state.json (node id, role, addresses, managers) and
certificates/ (root CA, node cert and key, 0600), written atomically. Used by shoal/swarm/node.py."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.fsutil import write_atomic

STATE_FILE = "state.json"


@dataclass(slots=True)
class SwarmState:
    node_id: str
    cluster_id: str
    role: str  # "manager" | "worker"
    listen_addr: str  # host:port the manager binds
    advertise_addr: str  # host:port other nodes reach this manager at
    managers: list[str] = field(default_factory=list)  # host:port of managers, for the agent's failover
    raft_id: int = 0  # 0 for a worker


@dataclass(slots=True, frozen=True)
class SwarmPaths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def certs(self) -> Path:
        return self.root / "certificates"

    @property
    def ca(self) -> Path:
        return self.certs / "swarm-root-ca.crt"

    @property
    def cert(self) -> Path:
        return self.certs / "swarm-node.crt"

    @property
    def key(self) -> Path:
        return self.certs / "swarm-node.key"

    @property
    def raft(self) -> Path:
        return self.root / "raft"

    def load(self) -> SwarmState | None:
        try:
            raw = json.loads(self.state.read_text())
        except FileNotFoundError:
            return None
        return SwarmState(**raw)

    def save(self, st: SwarmState) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.state, json.dumps(asdict(st), indent=1) + "\n")
        os.chmod(self.state, 0o600)

    def write_secret(self, path: Path, data: bytes) -> None:
        """Keys and certificates: 0600, atomically (a crash leaves the old file or the new one)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, data)
        os.chmod(path, 0o600)

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def wipe_raft(self) -> None:
        shutil.rmtree(self.raft, ignore_errors=True)
