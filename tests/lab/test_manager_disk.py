"""A manager whose disk fills stops cleanly, saying why: one `python -m manager run` on a 4 MiB tmpfs the
test mounts (and always unmounts); writes until SQLite cannot persist, then the process must exit 1 naming the cause."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from proto import control_pb2, control_pb2_grpc, objects_pb2
from tests.support.cluster import ROOT, free_port

pytestmark = pytest.mark.lab
DEADLINE = 30.0


def _status(addr: str) -> control_pb2.StatusResponse | None:
    with grpc.insecure_channel(addr) as ch:
        try:
            return control_pb2_grpc.ControlStub(ch).Status(control_pb2.StatusRequest(), timeout=1)
        except grpc.RpcError:
            return None


def test_a_manager_that_cannot_persist_stops_naming_the_cause(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "shoal-test-small", str(mnt)], check=True)
    proc = None
    try:
        addr = f"127.0.0.1:{free_port('127.0.0.1')}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "manager", "run", "--id", "1", "--listen", addr, "--data-dir", str(mnt / "m1"), "--tick-ms", "50"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + DEADLINE
        # leader, and every committed entry applied (the founding membership entry writes the cluster book):
        # the disk fills under the raft store's writes, not under that one's
        while (st := _status(addr)) is None or st.role != "leader" or st.applied < st.commit or st.commit == 0:
            assert time.monotonic() < deadline and proc.poll() is None, "the manager did not become leader"
            time.sleep(0.05)
        with open(mnt / "filler", "wb") as f:  # leave SQLite almost no room
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        with grpc.insecure_channel(addr) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            for n in range(200):
                spec = objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=f"c{n}"), data=b"x" * 200_000)
                try:
                    stub.CreateConfig(control_pb2.CreateConfigRequest(spec=spec), timeout=10)
                except grpc.RpcError:
                    break
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 1
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"manager 1 stopped: could not persist raft state: raft store {mnt / 'm1' / 'raft.db'}: ")
        assert last.endswith(": database or disk is full")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        subprocess.run(["umount", str(mnt)], check=False)
