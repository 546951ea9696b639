"""Where a container's /etc files live: the exec root (tmpfs), or the data dir for a container whose files an older
daemon wrote there (its running processes have them bind-mounted from there)."""
from __future__ import annotations

from pathlib import Path

from agent.network.controller import NetworkController, NetworkOptions
from agent.network.sandbox import Sandboxes, SandboxOptions
from shoal.engine.state import StateDir

CID = "c" * 64


def sandboxes(tmp_path: Path) -> Sandboxes:
    options = SandboxOptions(data_dir=tmp_path / "data", etc_root=tmp_path / "run" / "containers")
    return Sandboxes(NetworkController(StateDir(tmp_path / "state"), NetworkOptions(), daemon_id="test"), options, {})


def test_a_container_keeps_its_etc_files_under_the_exec_root(tmp_path: Path) -> None:
    assert sandboxes(tmp_path).etc_dir(CID) == tmp_path / "run" / "containers" / CID


def test_a_container_whose_etc_files_are_in_the_data_dir_keeps_them_there(tmp_path: Path) -> None:
    (tmp_path / "data" / "containers" / CID).mkdir(parents=True)
    assert sandboxes(tmp_path).etc_dir(CID) == tmp_path / "data" / "containers" / CID


def test_removal_looks_in_both_places(tmp_path: Path) -> None:
    assert sandboxes(tmp_path).etc_dirs(CID) == [tmp_path / "run" / "containers" / CID,
                                                tmp_path / "data" / "containers" / CID]
