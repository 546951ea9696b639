"""shoal.engine.publish.PortPublisher: each container's host ports in its own state file, so a
publish writes one small file; the allocator is rebuilt from those files at start."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.engine.errors import EngineError
from shoal.engine.publish import PortPublisher
from shoal.engine.records import ContainerRecord
from shoal.engine.state import StateDir

A, B = "a" * 64, "b" * 64


def container(cid: str, host_port: int = 0) -> ContainerRecord:
    binding = {"container_port": 80, "proto": "tcp", "host_ip": "127.0.0.1", "host_port": host_port,
               "host_port_end": 0}
    return ContainerRecord(id=cid, name=cid[:4], image="busybox", image_id="sha256:x", created="",
                           port_bindings=[binding])


def saved(state: StateDir) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((state.root / "ports").glob("*.json"))}


def test_publish_writes_only_that_containers_file_and_unpublish_deletes_it(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    ports = PortPublisher(state)
    first = ports.publish(container(A))[0]["host_port"]
    second = ports.publish(container(B))[0]["host_port"]
    assert saved(state) == {A: {"ports": [{"proto": "tcp", "host_ip": "127.0.0.1", "port": first}]},
                            B: {"ports": [{"proto": "tcp", "host_ip": "127.0.0.1", "port": second}]}}
    ports.unpublish(container(A))
    assert list(saved(state)) == [B]


def test_a_restart_rebuilds_the_allocator_from_the_container_files(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    port = PortPublisher(state).publish(container(A))[0]["host_port"]
    again = PortPublisher(state)
    assert again.allocator.allocated() == [("tcp", "127.0.0.1", port, A)]
    with pytest.raises(EngineError, match=f"Bind for 127.0.0.1:{port} failed: port is already allocated"):
        again.publish(container(B, host_port=port))


def test_the_single_allocator_file_of_earlier_versions_is_split_per_container(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save("ports", "allocator", {"low": 32768, "high": 60999, "last": {"tcp": 32800}, "used": [
        {"proto": "tcp", "host_ip": "", "port": 32800, "owner": A},
        {"proto": "udp", "host_ip": "", "port": 32801, "owner": A}]})
    ports = PortPublisher(state)
    assert ports.allocator.allocated() == [("tcp", "", 32800, A), ("udp", "", 32801, A)]
    assert saved(state) == {A: {"ports": [{"proto": "tcp", "host_ip": "", "port": 32800},
                                          {"proto": "udp", "host_ip": "", "port": 32801}]}}


def test_a_malformed_container_file_is_ignored_and_the_others_load(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save("ports", A, {"ports": "nope"})
    state.save("ports", B, {"ports": [{"proto": "tcp", "host_ip": "", "port": 33000}]})
    assert PortPublisher(state).allocator.allocated() == [("tcp", "", 33000, B)]
