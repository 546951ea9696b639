"""agent/executor/runtime._mkdir: Path.mkdir(parents=True, exist_ok=True) with fewer system calls."""
from __future__ import annotations

import pytest

from agent.executor.runtime import _mkdir


def test_a_directory_is_made_with_its_missing_parents(tmp_path):
    _mkdir(str(tmp_path / "a" / "b" / "upper"))
    assert (tmp_path / "a" / "b" / "upper").is_dir()


def test_an_existing_directory_is_no_error(tmp_path):
    (tmp_path / "upper").mkdir()
    _mkdir(str(tmp_path / "upper"))
    assert (tmp_path / "upper").is_dir()


def test_a_file_in_the_way_is_refused_as_path_mkdir_refuses_it(tmp_path):
    (tmp_path / "upper").write_text("x")
    with pytest.raises(FileExistsError):
        _mkdir(str(tmp_path / "upper"))
