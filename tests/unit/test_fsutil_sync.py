"""common/fsutil.write_atomic's sync levels and who asks for which: the fsyncs each write makes
(file, directory), recorded by path at the moment of the call; the content is whole in every case."""
from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from agent.executor import runtime as runtime_module
from agent.executor.runtime import RuncRuntime
from common.fsutil import write_atomic
from shoal.engine.state import StateDir


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths fsync'd, in order ("<dir>/" for a directory; the temp file's name as it was then)."""
    seen: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(path + "/" if os.path.isdir(path) else path)
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return seen


def test_sync_all_fsyncs_the_file_then_its_directory(tmp_path, fsyncs):
    write_atomic(tmp_path / "f", b"new")
    assert fsyncs == [f"{tmp_path}/.tmp-f.{os.getpid()}", f"{tmp_path}/"]
    assert (tmp_path / "f").read_bytes() == b"new"


def test_sync_file_fsyncs_the_file_only(tmp_path, fsyncs):
    (tmp_path / "f").write_bytes(b"old")
    write_atomic(tmp_path / "f", b"new", sync="file")
    assert fsyncs == [f"{tmp_path}/.tmp-f.{os.getpid()}"]
    assert (tmp_path / "f").read_bytes() == b"new"


def test_sync_none_fsyncs_nothing_and_still_replaces_whole(tmp_path, fsyncs):
    (tmp_path / "f").write_bytes(b"old")
    write_atomic(tmp_path / "f", b"new", sync="none")
    assert fsyncs == []
    assert (tmp_path / "f").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_a_new_container_record_is_made_durable_with_its_directory(tmp_path, fsyncs):
    state = StateDir(tmp_path)
    state.save("containers", "c1", {"id": "c1"})
    assert fsyncs == [f"{tmp_path}/containers/.tmp-c1.json.{os.getpid()}", f"{tmp_path}/containers/"]


@pytest.mark.parametrize("kind", ["containers", "ipam"])
def test_a_container_or_ipam_record_replacing_one_on_disk_skips_the_directory_fsync(tmp_path, fsyncs, kind):
    state = StateDir(tmp_path)
    state.save(kind, "x1", {"n": 1})
    fsyncs.clear()
    state.save(kind, "x1", {"n": 2})
    assert fsyncs == [f"{tmp_path}/{kind}/.tmp-x1.json.{os.getpid()}"]
    assert StateDir(tmp_path).load_all(kind) == {"x1": {"n": 2}}


@pytest.mark.parametrize("kind", ["networks", "ports"])
def test_a_network_or_ports_record_replacing_one_is_still_fsynced_with_its_directory(tmp_path, fsyncs, kind):
    state = StateDir(tmp_path)
    state.save(kind, "x1", {"n": 1})
    fsyncs.clear()
    state.save(kind, "x1", {"n": 2})
    assert fsyncs == [f"{tmp_path}/{kind}/.tmp-x1.json.{os.getpid()}", f"{tmp_path}/{kind}/"]


def test_the_runtimes_bundle_files_are_written_without_fsync(tmp_path, fsyncs):
    runtime_module._write_atomic(tmp_path / "config.json", "{}")
    assert fsyncs == []
    assert (tmp_path / "config.json").read_text() == "{}"
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644


def test_the_started_file_is_fsynced_with_its_directory(tmp_path, fsyncs):
    rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
    d = tmp_path / "state" / "c1"
    d.mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        (d / "pid").write_text(f"{proc.pid}")
        assert asyncio.run(rt._await_started("c1", os.getpid(), 0)) == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert fsyncs == [f"{d}/.tmp-started.{os.getpid()}", f"{d}/"]
    assert (d / "started").read_text().split()[0] == str(proc.pid)


def test_a_start_from_an_empty_image_file_is_refused_and_copies_nothing(tmp_path):
    rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
    d = tmp_path / "state" / "c1"
    for sub in ("upper", "work", "rootfs"):
        (d / sub).mkdir(parents=True)
    (d / "image").write_text("")  # what a power cut may leave of an unsynced write
    with pytest.raises(runtime_module.RuncError) as caught:
        asyncio.run(rt._ensure_rootfs("c1"))
    assert caught.value.message == "container c1: its image rootfs '' is not a directory: prepare it again"
    assert list((d / "rootfs").iterdir()) == []


def test_a_write_into_a_missing_directory_makes_it_and_fsyncs_it(tmp_path, fsyncs):
    target = tmp_path / "a" / "b" / "f"
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert fsyncs == [f"{tmp_path}/a/b/.tmp-f.{os.getpid()}", f"{tmp_path}/a/b/"]


def test_a_write_whose_directory_is_a_file_fails_as_mkdir_does_and_leaves_the_file(tmp_path):
    (tmp_path / "a").write_bytes(b"in the way")
    with pytest.raises(FileExistsError):
        write_atomic(tmp_path / "a" / "f", b"new")
    assert (tmp_path / "a").read_bytes() == b"in the way"


def test_a_write_into_an_existing_directory_makes_no_mkdir_call(tmp_path, monkeypatch):
    calls: list[str] = []
    real = os.mkdir
    monkeypatch.setattr(os, "mkdir", lambda p, *a, **k: calls.append(str(p)) or real(p, *a, **k))
    write_atomic(tmp_path / "f", b"new")
    assert calls == []
    assert (tmp_path / "f").read_bytes() == b"new"
