"""tests/docker_client.py: which docker CLI the client tests run (explicit, PATH, private folder)."""
from __future__ import annotations

from pathlib import Path

from tests.docker_client import docker_client


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_docker_on_path_comes_before_the_private_client(tmp_path: Path) -> None:
    on_path = executable(tmp_path / "path" / "docker")
    executable(tmp_path / "ref" / "bin" / "docker")
    env = {"PATH": str(on_path.parent), "SHOAL_DOCKER_REF": str(tmp_path / "ref")}
    assert docker_client(env) == str(on_path)


def test_without_docker_on_path_the_private_client_is_used(tmp_path: Path) -> None:
    private = executable(tmp_path / "ref" / "bin" / "docker")
    env = {"PATH": str(tmp_path / "empty"), "SHOAL_DOCKER_REF": str(tmp_path / "ref")}
    assert docker_client(env) == str(private)


def test_an_explicit_client_wins_and_a_missing_one_is_none(tmp_path: Path) -> None:
    explicit = executable(tmp_path / "mine" / "docker")
    executable(tmp_path / "ref" / "bin" / "docker")
    env = {"PATH": str(tmp_path / "empty"), "SHOAL_DOCKER_REF": str(tmp_path / "ref")}
    assert docker_client({**env, "SHOAL_DOCKER_CLIENT": str(explicit)}) == str(explicit)
    assert docker_client({**env, "SHOAL_DOCKER_CLIENT": str(tmp_path / "nope")}) is None


def test_no_client_anywhere_is_none(tmp_path: Path) -> None:
    assert docker_client({"PATH": str(tmp_path), "SHOAL_DOCKER_REF": str(tmp_path / "ref")}) is None
